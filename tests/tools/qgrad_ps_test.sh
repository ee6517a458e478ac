#!/usr/bin/env bash
# End-to-end test of qgrad-ps with qgrad-train --ps on loopback: bad flags; 4 worker processes
# training the Fashion-MNIST MLP for one epoch through 1 server (qsgd:bits=4) and through 2
# servers (fp32), each above the accuracy floor of the MPI path's one-epoch check, every worker
# with the same result and its own metrics, the servers' push counts equal to the steps; a wrong
# token and a worker of another run are refused with a message naming why, and the server keeps
# serving; SIGTERM stops the server cleanly with a summary.
# Usage: qgrad_ps_test.sh path/to/qgrad-ps path/to/qgrad-train
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/testlib.sh"

PS=$(realpath "${1:?usage: qgrad_ps_test.sh qgrad-ps qgrad-train}")
TRAIN=$(realpath "${2:?usage: qgrad_ps_test.sh qgrad-ps qgrad-train}")
enter_scratch_dir
PY=/usr/bin/python3
echo "token-$$-$RANDOM" >token
echo "not-the-token" >wrong
FLOOR=0.82  # the MPI path's one-epoch floor (scripts/convergence.py quick)

# start_server NAME WORKERS [FLAGS...]: starts qgrad-ps on a free port; sets PORT and PID.
start_server() {
  # The log exists before the server starts: the loop below may read it before the shell's
  # redirection of the background job has created it (sed would fail, and set -e end the test).
  : >"$1.out"
  "$PS" --listen 127.0.0.1:0 --workers "$2" --token-file token --metrics "$1.jsonl" "${@:3}" \
    >"$1.out" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^qgrad-ps: listening on 127.0.0.1:\([0-9]*\) .*/\1/p' "$1.out")
    [[ -n $PORT ]] && return 0
    kill -0 "$PID" 2>/dev/null || fail "qgrad-ps exited: $(cat "$1.out")"
    sleep 0.1
  done
  fail "qgrad-ps did not say where it listens: $(cat "$1.out")"
}

# stop_server PID: SIGTERM must end it with status 0.
stop_server() {
  local rc=0
  kill -TERM "$1"
  wait "$1" || rc=$?
  [[ $rc == 0 ]] || fail "qgrad-ps exited $rc after SIGTERM"
}

# train_workers TAG ADDRS FLAGS...: 4 workers; fails unless every one exits 0.
train_workers() {
  local tag=$1 addrs=$2
  shift 2
  local pids=() w rc worst=0
  for w in 0 1 2 3; do
    "$TRAIN" --ps "$addrs" --token-file token --worker-id "$w" --workers 4 \
      --metrics "$tag-w$w.jsonl" --threads 1 --quiet "$@" >"$tag-w$w.out" 2>&1 &
    pids+=($!)
  done
  for w in 0 1 2 3; do
    rc=0
    wait "${pids[$w]}" || rc=$?
    ((rc == 0)) || { worst=$rc; echo "worker $w exited $rc: $(cat "$tag-w$w.out")" >&2; }
  done
  ((worst == 0)) || fail "$tag: a worker failed"
}

# check_run TAG SERVERS...: same result on every worker, above the floor; servers counted every push.
check_run() {
  "$PY" - "$FLOOR" "$@" <<'PYEOF'
import json, sys
floor, tag, servers = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
def lines(path): return [json.loads(l) for l in open(path)]
workers = [lines(f"{tag}-w{w}.jsonl") for w in range(4)]
sums = [w[-1] for w in workers]
for w, s in enumerate(sums):
    assert s.get("summary") is True and s["world"] == 4 and s["strategy"].startswith("ps"), s
    assert s["test_accuracy"] == sums[0]["test_accuracy"], f"worker {w} ended apart: {s}"
    assert s["bytes_sent"] > 0 and s["bytes_received"] > 0, s
    assert all(r["rank"] == w for r in workers[w][:-1]), f"worker {w}'s records name another rank"
acc, steps = sums[0]["test_accuracy"], sums[0]["steps"]
assert acc >= floor, f"{tag}: accuracy {acc:.4f} below the floor {floor}"
for path in servers:
    s = lines(path)[-1]
    assert s.get("summary") is True and s["step"] == steps, (path, s)
    assert s["pushes"] == 4 * steps and s["duplicates"] == 0 and s["rejected"] == 0, (path, s)
print(f"{tag}: accuracy {100 * acc:.2f}%, {steps} steps, worker 0 pushed "
      f"{sums[0]['bytes_sent'] / 1e6:.1f} MB, pulled {sums[0]['bytes_received'] / 1e6:.1f} MB, "
      f"{1e3 * sums[0]['step_seconds']:.2f} ms per step")
PYEOF
}

# --- bad flags: exit 2 naming what is wrong ---------------------------------------------------
expect_error 2 "--workers" -- "$PS" --listen 127.0.0.1:0 --token-file token
expect_error 2 "cannot read" "missing.txt" -- "$PS" --listen 127.0.0.1:0 --workers 2 \
  --token-file missing.txt
expect_error 2 "HOST:PORT" -- "$PS" --listen nowhere --workers 2 --token-file token
expect_error 2 "--mode must be sync or async" -- "$PS" --listen 127.0.0.1:0 --workers 2 \
  --token-file token --mode fast
expect_error 2 "--max-staleness needs --mode async" -- "$PS" --listen 127.0.0.1:0 --workers 2 \
  --token-file token --max-staleness 3
expect_error 2 "--timeout and --quorum are for --mode sync" -- "$PS" --listen 127.0.0.1:0 \
  --workers 2 --token-file token --mode async --timeout 5
expect_error 2 "--downlink-codec needs --mode sync" -- "$PS" --listen 127.0.0.1:0 --workers 2 \
  --token-file token --mode async --downlink-codec qsgd:bits=8
expect_error 2 "--token-file" -- "$TRAIN" --ps 127.0.0.1:1 --workers 2 --worker-id 0
expect_error 2 "--worker-id" -- "$TRAIN" --ps 127.0.0.1:1 --token-file token --workers 2 \
  --worker-id 2
expect_error 2 "go with --ps" -- "$TRAIN" --workers 2
expect_error 2 "workers write no checkpoints" -- "$TRAIN" --ps 127.0.0.1:1 --token-file token --workers 1 \
  --worker-id 0 --checkpoint-dir ck

# --- 1 server, qsgd:bits=4 with error feedback; 2 servers, fp32 -----------------------------
MLP=(--model mlp --data fashion-mnist --batch 64 --epochs 1 --seed 1 --optimizer sgd --lr 0.1
     --momentum 0.9 --lr-schedule cosine)
start_server one 4
ONE=$PID ONE_PORT=$PORT
train_workers qsgd "127.0.0.1:$ONE_PORT" "${MLP[@]}" --codec qsgd:bits=4 --ef
stop_server "$ONE"
grep -q "stopped by SIGTERM after 235 applied steps" one.out || fail "no summary line: $(cat one.out)"
check_run qsgd one.jsonl

start_server a 4
A=$PID A_PORT=$PORT
start_server b 4
B=$PID B_PORT=$PORT
train_workers fp32 "127.0.0.1:$A_PORT,127.0.0.1:$B_PORT" "${MLP[@]}" --codec none
stop_server "$A"
stop_server "$B"
check_run fp32 a.jsonl b.jsonl

# --- refusals: wrong token; a worker of another run; the server goes on ----------------------
SMALL=(--model mlp --hidden 16 --data synthetic:kind=classification,rows=400,test=100,dim=8,classes=3,seed=2
       --batch 16 --epochs 1 --quiet --timeout 20)
start_server refuse 2
R=$PID R_PORT=$PORT
expect_error 1 "UNAUTHENTICATED" "wrong token" "127.0.0.1:$R_PORT" -- \
  "$TRAIN" "${SMALL[@]}" --ps "127.0.0.1:$R_PORT" --token-file wrong --worker-id 0 --workers 2
# Worker 0 gives the server its model, then waits for worker 1 in its first step.
"$TRAIN" "${SMALL[@]}" --ps "127.0.0.1:$R_PORT" --token-file token --worker-id 0 --workers 2 \
  --metrics ok-w0.jsonl >ok-w0.out 2>&1 &
W0=$!
for _ in $(seq 100); do grep -q "model adopted" refuse.out && break; sleep 0.1; done
grep -q "model adopted" refuse.out || fail "worker 0 did not register: $(cat ok-w0.out)"
expect_error 1 "FAILED_PRECONDITION" "run.hidden: worker 1 has '32'" -- \
  "$TRAIN" "${SMALL[@]}" --hidden 32 --ps "127.0.0.1:$R_PORT" --token-file token --worker-id 1 \
  --workers 2
expect_error 1 "FAILED_PRECONDITION" "run.lr" -- \
  "$TRAIN" "${SMALL[@]}" --lr 0.5 --ps "127.0.0.1:$R_PORT" --token-file token --worker-id 1 \
  --workers 2
# The right worker 1 still trains with worker 0: the refusals left nothing behind.
"$TRAIN" "${SMALL[@]}" --ps "127.0.0.1:$R_PORT" --token-file token --worker-id 1 --workers 2 \
  --metrics ok-w1.jsonl >ok-w1.out 2>&1 || fail "worker 1 failed: $(cat ok-w1.out)"
rc=0
wait "$W0" || rc=$?
[[ $rc == 0 ]] || fail "worker 0 exited $rc: $(cat ok-w0.out)"
stop_server "$R"
"$PY" - <<'PYEOF'
import json
a, b = (json.loads(open(f"ok-w{w}.jsonl").read().splitlines()[-1]) for w in (0, 1))
assert a["summary"] and b["summary"] and a["test_accuracy"] == b["test_accuracy"], (a, b)
s = json.loads(open("refuse.jsonl").read().splitlines()[-1])
assert s["rejected"] >= 3 and s["pushes"] == 2 * a["steps"], s
PYEOF
# --- async mode: 2 workers, every push applied once, staleness in the summary -----------------
start_server async 2 --mode async --max-staleness 1000
A=$PID
APIDS=()
for w in 0 1; do
  "$TRAIN" "${SMALL[@]}" --ps "127.0.0.1:$PORT" --token-file token --worker-id "$w" --workers 2 \
    --metrics "async-w$w.jsonl" >"async-w$w.out" 2>&1 &
  APIDS+=($!)
done
for w in 0 1; do
  rc=0
  wait "${APIDS[$w]}" || rc=$?
  [[ $rc == 0 ]] || fail "async worker $w exited $rc: $(cat "async-w$w.out")"
done
stop_server "$A"
grep -q "^qgrad-ps: async: .* pushes applied, 0 refused as stale; staleness max" async.out ||
  fail "no async summary line: $(cat async.out)"
"$PY" - <<'PYEOF'
import json
ws = [json.loads(open(f"async-w{w}.jsonl").read().splitlines()[-1]) for w in (0, 1)]
s = json.loads(open("async.jsonl").read().splitlines()[-1])
sent = sum(w["steps"] for w in ws)
assert s["summary"] and s["async_applied"] == sent and s["step"] == sent, (s, sent)
assert s["pushes"] == sent and s["stale_refused"] == 0 and s["rejected"] == 0, s
assert s["staleness_max"] <= 1000 and s["staleness_mean"] <= s["staleness_max"], s
# Accuracy is train_ps_training_test's to check: here each worker evaluates the version it
# pulled last, and one that finished first holds an early one.
print(f"async: {sent} pushes applied, staleness max {s['staleness_max']}, "
      f"mean {s['staleness_mean']:.2f}")
PYEOF
echo "qgrad_ps_test: all checks passed"
