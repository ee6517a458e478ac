#!/usr/bin/env bash
# End-to-end test of qgrad-train: exit codes and messages of bad flags, missing data, checkpoints
# of another run and a diverging run; metrics with a summary; and, where mpiexec exists, that
# `mpirun -np 4` and `--ranks 4` give the same records bit for bit.
# Usage: qgrad_train_test.sh path/to/qgrad-train [path/to/mpiexec]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/testlib.sh"

BIN=$(realpath "${1:?usage: qgrad_train_test.sh path/to/qgrad-train [mpiexec]}")
MPIEXEC=${2:-}
[[ -x $BIN ]] || fail "$BIN is not an executable"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND exited $?" >&2' ERR
cd "$WORK"
PY=/usr/bin/python3

DATA="synthetic:kind=classification,rows=600,test=200,dim=20,classes=3,seed=4"
BASE=(--model logistic --data "$DATA" --batch 16 --epochs 2 --lr 0.05 --momentum 0.9
      --codec qsgd:bits=4 --ef --seed 7 --log-every 5 --quiet)

# --- bad flags: exit 2, the message names what is wrong -------------------------------------
expect_error 2 "unknown model 'resnet'" "valid: linear" -- "$BIN" --model resnet
expect_error 2 "qsgd" "bits" -- "$BIN" --codec qsgd:bits=99
expect_error 2 "--lr-schedule" "unknown schedule" -- "$BIN" --lr-schedule exponential
expect_error 2 "--batch" -- "$BIN" "${BASE[@]}" --batch 0
expect_error 2 "--adversarial" -- "$BIN" "${BASE[@]}" --ranks 2 --adversarial 3
expect_error 2 "--resume needs --checkpoint-dir" -- "$BIN" "${BASE[@]}" --resume
expect_error 2 "ZipML" -- "$BIN" --model mlp --data "$DATA" --data-bits 2 --quiet
expect_error 2 "nan policy" "skip-step" -- "$BIN" "${BASE[@]}" --nan sometimes
expect_error 2 "unknown data source" -- "$BIN" "${BASE[@]}" --data imagenet

# --- a missing data set names the Debian package --------------------------------------------
expect_error 1 "dataset-fashion-mnist" -- "$BIN" --model logistic \
  --data fashion-mnist:dir="$WORK/nowhere" --quiet

# --- a run: metrics end with a summary; same flags, same records --------------------------------
"$BIN" "${BASE[@]}" --ranks 3 --metrics a.jsonl
"$BIN" "${BASE[@]}" --ranks 3 --metrics b.jsonl
"$PY" - a.jsonl b.jsonl <<'PYEOF'
import json, sys
timing = {"seconds", "samples_per_second", "compute_s", "encode_s", "exchange_s", "decode_s",
          "update_s", "wait_s", "step_seconds"}
def records(path):
    return [{k: v for k, v in json.loads(l).items() if k not in timing} for l in open(path)]
a, b = records(sys.argv[1]), records(sys.argv[2])
assert a == b, "two runs with the same seed wrote different records"
s = a[-1]
assert s["summary"] is True and s["world"] == 3 and s["steps"] == 2 * 13, s
assert 0.5 < s["test_accuracy"] <= 1 and s["bytes_sent"] > 0, s
assert s["compression_ratio"] > 1, s  # 63 parameters: headers weigh
PYEOF

# --- checkpoints: another run's checkpoint is refused; the same flags resume ------------------
"$BIN" "${BASE[@]}" --ranks 2 --checkpoint-dir ck --max-steps 10
[[ -f ck/LATEST && -f ck/step-10/rank-0.qgck && -f ck/step-10/rank-1.qgck ]] ||
  fail "checkpoint files missing: $(find ck)"
expect_error 1 "belongs to another run" "model = 'logistic'" -- \
  "$BIN" "${BASE[@]}" --model svm --data "${DATA/classes=3/classes=2}" --ranks 2 \
  --checkpoint-dir ck --resume
expect_error 1 "belongs to another run" "world" -- \
  "$BIN" "${BASE[@]}" --ranks 3 --checkpoint-dir ck --resume
expect_error 1 "no checkpoint" -- "$BIN" "${BASE[@]}" --ranks 2 --checkpoint-dir empty --resume
"$BIN" "${BASE[@]}" --ranks 2 --checkpoint-dir ck --resume --metrics resumed.jsonl
[[ $(cat ck/LATEST) == 38 ]] || fail "LATEST is '$(cat ck/LATEST)', expected 38 (2 epochs of 19 steps)"

# A damaged checkpoint is named, not loaded.
printf 'garbage' >>ck/step-38/rank-1.qgck
expect_error 1 "rank-1.qgck" -- "$BIN" "${BASE[@]}" --ranks 2 --epochs 3 --checkpoint-dir ck \
  --resume

# --- divergence: a clear error, no summary written --------------------------------------------
expect_error 1 "finite" "skip-step" -- "$BIN" --model linear \
  --data synthetic:kind=regression,rows=400,dim=8 --lr 1000 --batch 4 --ranks 2 --metrics nan.jsonl --quiet
! grep -q summary nan.jsonl || fail "a failed run wrote a summary"

# --- mpirun -np 4 gives the bits of --ranks 4 -------------------------------------------------
if [[ -n $MPIEXEC ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  for model in logistic mlp; do
    extra=()
    [[ $model == mlp ]] && extra=(--model mlp --hidden 16 --codec int8 --strategy allgather)
    "$BIN" "${BASE[@]}" "${extra[@]}" --ranks 4 --metrics "local-$model.jsonl"
    "$MPIEXEC" --allow-run-as-root --oversubscribe -np 4 \
      "$BIN" "${BASE[@]}" "${extra[@]}" --metrics "mpi-$model.jsonl" >mpi.txt 2>&1 ||
      fail "mpirun -np 4 qgrad-train failed: $(cat mpi.txt)"
    "$PY" - "local-$model.jsonl" "mpi-$model.jsonl" <<'PYEOF'
import json, sys
timing = {"seconds", "samples_per_second", "compute_s", "encode_s", "exchange_s", "decode_s",
          "update_s", "wait_s", "step_seconds"}
def records(path):
    return [{k: v for k, v in json.loads(l).items() if k not in timing} for l in open(path)]
a, b = records(sys.argv[1]), records(sys.argv[2])
assert len(a) == len(b) and len(a) > 3, (len(a), len(b))
for x, y in zip(a, b):
    assert x == y, f"--ranks 4 and mpirun -np 4 differ:\n{x}\n{y}"
PYEOF
  done
  # A missing data set under mpirun: every rank agrees, one message, exit 1.
  expect_error 1 "dataset-fashion-mnist" -- "$MPIEXEC" --allow-run-as-root --oversubscribe \
    -np 2 "$BIN" --model logistic --data fashion-mnist:dir="$WORK/nowhere" --quiet
fi
echo "qgrad-train end-to-end: all checks passed"
