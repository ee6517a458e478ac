#!/usr/bin/env bash
# netlab.sh: run an MPI program across emulated links of a given bandwidth.
#
#   scripts/netlab.sh --hosts N --rate RATE [--burst B] [--launcher-only] -- PROGRAM ARGS...
#
# Builds N network namespaces ("hosts", one hostname each, 198.18.0.1..N on a bridge in a
# switch namespace), shapes every host's uplink and downlink with `tc tbf` at RATE (tc syntax:
# 100mbit, 1gbit, ...), and runs PROGRAM as an `mpirun` job with one rank per host over TCP.
# Everything it made is torn down on exit, also when the job fails or is interrupted.
# Latency cannot be added here (the kernel has no netem): use the in-process rate limiter.
# Needs root (ip netns, tc). Example:
#   scripts/netlab.sh --hosts 4 --rate 1gbit -- build/bin/qgrad-bench allreduce --sizes 25000000
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
hosts="" rate="" burst="256kb" mpirun_extra=()
while (($#)); do
  case "$1" in
    --hosts) hosts=${2:-}; shift 2 ;;
    --rate) rate=${2:-}; shift 2 ;;
    --burst) burst=${2:-}; shift 2 ;;
    --mca) mpirun_extra+=(--mca "$2" "$3"); shift 3 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "netlab: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
(($#)) || { echo "netlab: no PROGRAM given after --" >&2; usage >&2; exit 2; }
[[ "$hosts" =~ ^[0-9]+$ ]] && ((hosts >= 1 && hosts <= 64)) ||
  { echo "netlab: --hosts must be an integer in [1, 64], got '$hosts'" >&2; exit 2; }
[[ "$rate" =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps)$ ]] ||
  { echo "netlab: --rate must be a tc rate like 100mbit or 1gbit, got '$rate'" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "netlab: needs root (ip netns, tc)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "netlab: mpirun not found; run scripts/install-deps.sh" >&2; exit 2; }

program=$1; shift
if [[ "$program" != /* ]]; then  # ip netns exec needs absolute paths to be reliable
  program=$(command -v "$program" || true)
  [[ -n "$program" ]] || { echo "netlab: program not found" >&2; exit 2; }
  program=$(realpath "$program")
fi
[[ -x "$program" ]] || { echo "netlab: '$program' is not executable" >&2; exit 2; }

tag="qg$$"           # unique per run: concurrent labs do not collide
sw="${tag}sw"        # switch namespace with the bridge
launcher="${tag}l"   # mpirun runs here; its own link is not shaped
work=$(mktemp -d "/tmp/netlab.${tag}.XXXX")
ns_of() { echo "${tag}h$1"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ns in $(ip netns list 2>/dev/null | awk -v t="$tag" 'index($1, t) == 1 {print $1}'); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
attach() {  # attach NS at ADDRESS to the bridge through veth PORT
  local ns=$1 addr=$2 port=$3
  ip netns add "$ns"
  ip link add eth0 netns "$ns" type veth peer name "$port" netns "$sw"
  ip -n "$sw" link set "$port" master br0
  ip -n "$sw" link set "$port" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}
for i in $(seq 1 "$hosts"); do
  attach "$(ns_of "$i")" "198.18.0.$i" "p$i"
  ip netns exec "$(ns_of "$i")" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
  ip netns exec "$sw" tc qdisc add dev "p$i" root tbf rate "$rate" burst "$burst" latency 50ms
done
attach "$launcher" "198.18.0.200" "pl"

# Open MPI's remote launch agent: "agent [opts] HOST CMD..." runs CMD in HOST's namespace with
# a hostname of its own (without a UTS namespace per host, Open MPI's daemons share session
# directories and ~5-10% of launches hang; docs/environment.md, "Emulated links").
cat > "$work/nsrsh" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift;; *) break;; esac; done
host=\$1; shift
ns=${tag}h\${host##*.}
exec ip netns exec "\$ns" unshare --uts /bin/sh -c "hostname \$ns; \$*"
AGENT
chmod +x "$work/nsrsh"

hostlist=$(seq -s, -f "198.18.0.%g" 1 "$hosts")
echo "netlab: $hosts hosts at $rate (tbf, uplink and downlink), hosts $hostlist" >&2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# In the background + wait: bash runs a trap only after a foreground child ends, but `wait`
# returns at once on a signal, so an interrupted lab is torn down promptly.
ip netns exec "$launcher" unshare --uts /bin/sh -c "hostname ${launcher}; exec mpirun \
  --mca plm_rsh_agent $work/nsrsh --mca plm_rsh_no_tree_spawn 1 \
  --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 \
  ${mpirun_extra[*]:-} --host $hostlist -np $hosts $(printf '%q ' "$program" "$@")" &
job=$!
rc=0
wait "$job" || rc=$?
echo "netlab: job exited with status $rc; tearing down" >&2
exit "$rc"
