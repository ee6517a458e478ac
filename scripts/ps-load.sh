#!/usr/bin/env bash
# Load run of the parameter server on loopback: starts qgrad-ps, runs qgrad-ps-load
# (W synthetic workers, each a PsExchange on a small model, random gradients from fixed seeds)
# for S synchronous steps, and prints the figures: time, steps/s, pushes counted against pushes
# sent (no lost update), the server's resident memory at step ~100 and at the end (flat within
# the tolerance). Exit status 0 when every check holds. It builds nothing.
#
#   scripts/ps-load.sh [--workers 16] [--steps 1000] [--elements 20000] [--codec qsgd:bits=4]
#                      [--sample-step 100] [--downlink SPEC] [--bin build/bin]
#   --downlink: qgrad-ps --downlink-codec SPEC (pulls carry encoded updates, not fp32)
set -euo pipefail
cd "$(dirname "$0")/.."
workers=16 steps=1000 elements=20000 codec=qsgd:bits=4 sample=100 bin=build/bin downlink=()
while (($#)); do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --elements) elements=$2; shift 2 ;;
    --codec) codec=$2; shift 2 ;;
    --sample-step) sample=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --downlink) downlink=(--downlink-codec "$2"); shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "ps-load.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for b in qgrad-ps qgrad-ps-load; do
  [[ -x $bin/$b ]] || { echo "ps-load.sh: $bin/$b not found (build with -DQGRAD_WITH_PS=ON)" >&2; exit 2; }
done
work=$(mktemp -d)
server=""
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "load-$$-$RANDOM" >"$work/token"
: >"$work/ps.out"  # exists before the loop below reads it
"$bin/qgrad-ps" --listen 127.0.0.1:0 --workers "$workers" --token-file "$work/token" --quiet \
  "${downlink[@]}" >"$work/ps.out" 2>&1 &
server=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^qgrad-ps: listening on 127.0.0.1:\([0-9]*\) .*/\1/p' "$work/ps.out")
  [[ -n $port ]] && break
  sleep 0.05
done
[[ -n $port ]] || { echo "ps-load.sh: qgrad-ps did not start: $(cat "$work/ps.out")" >&2; exit 1; }
rc=0
"$bin/qgrad-ps-load" --ps "127.0.0.1:$port" --token-file "$work/token" --workers "$workers" \
  --steps "$steps" --elements "$elements" --codec "$codec" --sample-step "$sample" \
  --server-pid "$server" || rc=$?
kill -TERM "$server"
wait "$server" || true
server=""
tail -n 1 "$work/ps.out"
exit "$rc"
