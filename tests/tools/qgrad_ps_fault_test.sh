#!/usr/bin/env bash
# Fault tolerance of qgrad-ps + qgrad-train --ps as processes on loopback:
#   - a reference run: 3 workers, no fault;
#   - the same run with faults: worker 2 killed (kill -9) in the middle: the server applies the
#     step with the other two after --timeout and names worker 2; worker 2 restarted rejoins;
#     then the server killed (kill -9) and restarted from its checkpoint on the same port: the
#     workers reconnect and continue from the checkpoint's step; all three finish with the same
#     parameters and a test accuracy within 0.03 of the reference;
#   - while that runs, a raw TCP client that sends nothing and one that sends garbage bytes;
#   - a damaged checkpoint: qgrad-ps refuses to start, naming the file;
#   - TLS: a worker that trusts the server's CA trains, a plaintext worker is refused.
# Usage: qgrad_ps_fault_test.sh path/to/qgrad-ps path/to/qgrad-train
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/testlib.sh"

PS=$(realpath "${1:?usage: qgrad_ps_fault_test.sh qgrad-ps qgrad-train}")
TRAIN=$(realpath "${2:?usage: qgrad_ps_fault_test.sh qgrad-ps qgrad-train}")
enter_scratch_dir  # everything this script starts goes into PIDS
PY=/usr/bin/python3
echo "token-$$-$RANDOM" >token

DATA="synthetic:kind=classification,rows=3000,test=500,dim=32,classes=4,seed=5"
RUN=(--model logistic --data "$DATA" --batch 16 --epochs 40 --lr 0.05 --seed 1
     --codec qsgd:bits=4 --ef --threads 1 --quiet --timeout 20)
STEPS=2520  # 3000 rows / 3 workers / batch 16 = 63 steps per epoch, 40 epochs

# start_server NAME LISTEN EXTRA...: sets PID and PORT.
start_server() {
  local name=$1 listen=$2
  shift 2
  : >"$name.out"  # exists before the loop below reads it (see qgrad_ps_test.sh)
  "$PS" --listen "$listen" --workers 3 --token-file token --metrics "$name.jsonl" --log-every 10 \
    --quiet "$@" >"$name.out" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^qgrad-ps: listening on 127.0.0.1:\([0-9]*\) .*/\1/p' "$name.out")
    [[ -n $PORT ]] && return 0
    kill -0 "$PID" 2>/dev/null || fail "qgrad-ps exited: $(cat "$name.out")"
    sleep 0.05
  done
  fail "qgrad-ps did not say where it listens: $(cat "$name.out")"
}

# start_worker TAG ID: sets WPID.
start_worker() {
  "$TRAIN" "${RUN[@]}" --ps "127.0.0.1:$PORT" --token-file token --worker-id "$2" --workers 3 \
    --metrics "$1.jsonl" >"$1.out" 2>&1 &
  WPID=$!
  PIDS+=("$WPID")
}

# applied NAME: the server's applied steps from its metrics (0 before the first record).
applied() {
  local line
  line=$(tail -n 1 "$1.jsonl" 2>/dev/null || true)
  [[ -z $line ]] && { echo 0; return; }
  "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["step"])' "$line"
}

# wait_for WHAT CONDITION...: polls CONDITION (a command) for up to 20 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 400); do
    "$@" && return 0
    sleep 0.05
  done
  fail "timed out waiting for $what"
}
at_least() { [[ $(applied "$1") -ge $2 ]]; }
says() { grep -qF -- "$2" "$1.out"; }

# finish PID TAG: the worker must exit 0.
finish() {
  local rc=0
  wait "$1" || rc=$?
  [[ $rc == 0 ]] || fail "worker $2 exited $rc: $(cat "$2.out")"
}

accuracy() {
  "$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["test_accuracy"])' "$1.jsonl"
}

# --- reference: no fault ---------------------------------------------------------------------
start_server ref 127.0.0.1:0 --timeout 1
REF=$PID
start_worker ref-w0 0; R0=$WPID
start_worker ref-w1 1; R1=$WPID
start_worker ref-w2 2; R2=$WPID
finish "$R0" ref-w0; finish "$R1" ref-w1; finish "$R2" ref-w2
kill -TERM "$REF"; wait "$REF" || fail "reference server did not stop cleanly"
REF_ACC=$(accuracy ref-w0)

# --- faults ------------------------------------------------------------------------------------
start_server one 127.0.0.1:0 --timeout 1 --checkpoint-dir ck --checkpoint-every 50
SERVER=$PID
start_worker w0 0; W0=$WPID
start_worker w1 1; W1=$WPID
start_worker w2 2; W2=$WPID
# Misbehaving TCP clients: one connects and sends nothing, one sends garbage; both stay
# connected for 3 s while the workers train.
"$PY" - "$PORT" >raw.out 2>&1 <<'PYEOF' &
import random, socket, sys, time
port = int(sys.argv[1])
silent = socket.create_connection(("127.0.0.1", port))
junk = socket.create_connection(("127.0.0.1", port))
random.seed(3)
junk.sendall(bytes(random.getrandbits(8) for _ in range(4096)))
time.sleep(3)
print("raw clients done")
PYEOF
RAW=$!
PIDS+=("$RAW")

wait_for "300 applied steps" at_least one 300
kill -9 "$W2"
wait "$W2" 2>/dev/null || true
wait_for "the server to go on without worker 2" says one "missing workers 2"
KILLED_AT=$(applied one)
wait_for "progress without worker 2" at_least one $((KILLED_AT + 100))
start_worker w2b 2; W2=$WPID
wait_for "worker 2 to rejoin" says one "worker 2 registered again"
wait_for "1200 applied steps" at_least one 1200
kill -9 "$SERVER"
wait "$SERVER" 2>/dev/null || true
BEFORE=$(applied one)
sleep 0.3
start_server two "127.0.0.1:$PORT" --timeout 1 --checkpoint-dir ck --checkpoint-every 50
SERVER=$PID
says two "resumed from the checkpoint" || fail "no resume line: $(cat two.out)"
RESUMED=$(sed -n 's/.*resumed from the checkpoint .* at step \([0-9]*\).*/\1/p' two.out)
# Its latest checkpoint: a multiple of 50, at most 50 steps before the step seen before the kill
# (the metrics lag the server by up to one 0.2 s poll, so only the lower bound is sharp).
[[ $RESUMED -ge $((BEFORE - 50)) && $((RESUMED % 50)) == 0 && $RESUMED -lt $STEPS ]] ||
  fail "resumed at step $RESUMED; the server was killed after step $BEFORE"
finish "$W0" w0; finish "$W1" w1; finish "$W2" w2b
wait "$RAW" || fail "raw clients: $(cat raw.out)"
kill -0 "$SERVER" || fail "the server died"
kill -TERM "$SERVER"; wait "$SERVER" || fail "the restarted server did not stop cleanly"
grep -qF "stopped by SIGTERM after $STEPS applied steps" two.out || fail "summary: $(cat two.out)"

"$PY" - "$REF_ACC" "$STEPS" <<'PYEOF'
import json, sys
ref, steps = float(sys.argv[1]), int(sys.argv[2])
last = {t: json.loads(open(f"{t}.jsonl").read().splitlines()[-1]) for t in ("w0", "w1", "w2b")}
acc = {t: r["test_accuracy"] for t, r in last.items()}
# Every worker ends with the servers' parameters: the same accuracy, to the bit.
assert len(set(acc.values())) == 1, acc
assert abs(acc["w0"] - ref) <= 0.03, (acc, ref)
assert all(r["steps"] == steps for r in last.values()), last
print(f"faulted run: accuracy {acc['w0']:.4f}, reference {ref:.4f}")
PYEOF

# --- a damaged checkpoint is refused, naming the file ----------------------------------------
"$PY" - <<'PYEOF'
with open("ck/ps-server.qgck", "r+b") as f:
    f.seek(40)
    b = f.read(1)
    f.seek(40)
    f.write(bytes([b[0] ^ 0xFF]))
PYEOF
expect_error 1 "cannot resume from the checkpoint" "ck/ps-server.qgck" -- \
  "$PS" --listen 127.0.0.1:0 --workers 3 --token-file token --checkpoint-dir ck
# --- TLS: a worker that trusts the server's CA trains; a plaintext one is refused ------------
expect_error 2 "--tls-cert and --tls-key go together" -- \
  "$PS" --listen 127.0.0.1:0 --workers 1 --token-file token --tls-cert token
expect_error 2 "--tls-ca: cannot read 'absent.pem'" -- \
  "$TRAIN" "${RUN[@]}" --ps 127.0.0.1:1 --token-file token --worker-id 0 --workers 1 \
  --tls-ca absent.pem
if command -v openssl >/dev/null; then
  KEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  {
    openssl req -x509 "${KEY[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=qgrad-ca
    openssl req "${KEY[@]}" -keyout server.key -out server.csr -subj /CN=localhost
    echo "subjectAltName=IP:127.0.0.1" >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
      -days 2 -extfile san.ext
  } >openssl.out 2>&1 || fail "openssl: $(cat openssl.out)"
  "$PS" --listen 127.0.0.1:0 --workers 1 --token-file token --tls-cert server.pem \
    --tls-key server.key --quiet >tls.out 2>&1 &
  TLS=$!
  PIDS+=("$TLS")
  for _ in $(seq 100); do grep -q "listening on" tls.out && break; sleep 0.05; done
  grep -q "; TLS" tls.out || fail "qgrad-ps does not say TLS: $(cat tls.out)"
  TLS_PORT=$(sed -n 's/^qgrad-ps: listening on 127.0.0.1:\([0-9]*\) .*/\1/p' tls.out)
  SHORT=(--model logistic --data "$DATA" --batch 16 --epochs 1 --seed 1 --threads 1 --quiet)
  "$TRAIN" "${SHORT[@]}" --timeout 3 --ps "127.0.0.1:$TLS_PORT" --token-file token \
    --worker-id 0 --workers 1 >plain.out 2>&1 && fail "a plaintext worker got through TLS"
  grep -q "UNAVAILABLE" plain.out || fail "plaintext worker: $(cat plain.out)"
  "$TRAIN" "${SHORT[@]}" --ps "127.0.0.1:$TLS_PORT" --token-file token --worker-id 0 \
    --workers 1 --tls-ca ca.pem --metrics tls-w0.jsonl >tls-w0.out 2>&1 ||
    fail "worker over TLS: $(cat tls-w0.out)"
  kill -TERM "$TLS"; wait "$TLS" || fail "TLS server did not stop cleanly"
  grep -qF "stopped by SIGTERM after 188 applied steps" tls.out || fail "TLS summary: $(cat tls.out)"
else
  echo "qgrad_ps_fault_test: no openssl command; TLS part skipped"
fi
echo "qgrad_ps_fault_test: all checks passed"
