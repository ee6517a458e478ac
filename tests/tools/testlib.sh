# Shared helpers of the command-line tests (sourced; the caller sets -euo pipefail and cds into
# a scratch folder).

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# enter_scratch_dir: cds into a new temporary folder, WORK, removed when the script exits, together
# with every process whose PID the script appended to PIDS (killed); a failing command is named
# with its line.
enter_scratch_dir() {
  WORK=$(mktemp -d)
  PIDS=()
  trap _leave_scratch_dir EXIT
  trap 'echo "FAIL: line $LINENO: $BASH_COMMAND exited $?" >&2' ERR
  cd "$WORK"
}
_leave_scratch_dir() {
  local pid
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}

# expect_error CODE NEEDLE... -- CMD...: CMD must exit with CODE and print every NEEDLE on stderr.
expect_error() {
  local code=$1
  shift
  local needles=()
  while [[ $1 != -- ]]; do
    needles+=("$1")
    shift
  done
  shift
  local rc=0
  "$@" >stdout.txt 2>stderr.txt || rc=$?
  [[ $rc == "$code" ]] || fail "'$*' exited $rc, expected $code; stderr: $(cat stderr.txt)"
  for needle in "${needles[@]}"; do
    grep -qF -- "$needle" stderr.txt || fail "'$*': stderr lacks '$needle': $(cat stderr.txt)"
  done
}
