# Shared helpers of the command-line tests (sourced; the caller sets -euo pipefail and cds into
# a scratch folder).

fail() {
  echo "FAIL: $*" >&2
  exit 1
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
