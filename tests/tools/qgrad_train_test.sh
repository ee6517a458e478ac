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
enter_scratch_dir
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

expect_error 2 "--link" "link rate '100mb'" "unit" -- "$BIN" "${BASE[@]}" --link 100mb
expect_error 2 "--link" "unknown key 'jitter'" -- "$BIN" "${BASE[@]}" --link 1gbit,jitter=3

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

# --- --link: the emulated link's delay is in the metrics' seconds and exchange times ----------
# 200 kbit/s = 25 kB/s, no burst: each collective takes at least its bytes / 25e3 s, and the
# 2 ms latency per collective at least 2 ms. Sleeping only overshoots, so these are lower bounds.
"$BIN" "${BASE[@]}" --ranks 3 --link 200kbit,latency=2000 --metrics link.jsonl
"$PY" - link.jsonl <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
s = lines[-1]
assert s["summary"] is True and s["link"] == "200kbit,latency=2000", s
wire = s["bytes_sent"] / 25e3
assert s["seconds"] >= wire + s["steps"] * 0.002, (s["seconds"], wire)
assert s["exchange_s"] * s["steps"] >= wire + s["steps"] * 0.002, (s["exchange_s"], wire)
assert s["step_seconds"] >= 0.002, s
# The link changes time, not bits: the same records as an unlimited run apart from timings.
timing = {"seconds", "samples_per_second", "compute_s", "encode_s", "exchange_s", "decode_s",
          "update_s", "wait_s", "step_seconds", "link"}
plain = [json.loads(l) for l in open("a.jsonl")]
strip = lambda recs: [{k: v for k, v in r.items() if k not in timing} for r in recs]
assert strip(lines) == strip(plain), "--link changed what was trained"
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
# Every field that changes the results must match (train/run_identity.h), e.g. these two.
expect_error 1 "belongs to another run" "warmup_steps = '0', this run has '3'" -- \
  "$BIN" "${BASE[@]}" --ranks 2 --checkpoint-dir ck --resume --warmup-steps 3
expect_error 1 "belongs to another run" "data_bits = '0', this run has '2'" -- \
  "$BIN" "${BASE[@]}" --ranks 2 --checkpoint-dir ck --resume --data-bits 2
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
