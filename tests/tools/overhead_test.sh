#!/usr/bin/env bash
# scripts/overhead.sh end to end on a short run: both programs run under mpirun, their step times
# are read back and compared, and --max-ratio turns the comparison into an exit code. (The
# overhead itself is measured with many rounds on a quiet machine, never asserted here.)
# Usage: overhead_test.sh path/to/bin-dir (holding qgrad-train and qgrad-torch-baseline)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/testlib.sh"

BIN=$(realpath "${1:?usage: overhead_test.sh path/to/bin-dir}")
SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts" && pwd)/overhead.sh
enter_scratch_dir

expect_error 2 "--baseline-order must be shuffled or sequential" -- \
  bash "$SCRIPT" --bin "$BIN" --baseline-order random
expect_error 2 "--warmup must be" -- bash "$SCRIPT" --bin "$BIN" --steps 10 --warmup 10
expect_error 2 "qgrad-train not found" -- bash "$SCRIPT" --bin "$WORK"

# A bound no run can meet: exit 1, after the table and the ratio.
rc=0
bash "$SCRIPT" --bin "$BIN" --np 2 --steps 40 --warmup 10 --repeat 1 --out "$WORK/out" \
  --max-ratio 0.01 >run.txt 2>&1 || rc=$?
[[ $rc == 1 ]] || fail "--max-ratio 0.01 exited $rc, expected 1: $(cat run.txt)"
grep -qE '^qgrad/baseline = [0-9]+\.[0-9]+$' run.txt || fail "no ratio line: $(cat run.txt)"
grep -qE '^median +[0-9.]+ +[0-9.]+ +[0-9.]+' run.txt || fail "no medians: $(cat run.txt)"
grep -q '"order":"shuffled"' "$WORK/out/baseline.1.json" || fail "baseline did not shuffle"
[[ -s "$WORK/out/qgrad.1.jsonl" ]] || fail "qgrad-train wrote no metrics"
echo "overhead_test: ok"
