#!/usr/bin/env bash
# Checks that every tracked C++ file is formatted as .clang-format says (Google, 100 columns).
# Prints the files that are not and exits 1; `scripts/check-format.sh --fix` formats them.
#
#   scripts/check-format.sh [--fix] [--root DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fix=0
while (($#)); do
  case "$1" in
    --fix) fix=1 ;;
    --root) root=$2; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "check-format.sh: unknown argument '$1' (valid: --fix, --root DIR)" >&2; exit 2 ;;
  esac
  shift
done
cd "$root"
command -v clang-format >/dev/null || { echo "check-format.sh: clang-format is not installed" \
  "(scripts/install-deps.sh installs it)" >&2; exit 2; }
# The layer checker's fixture tree is data, not code of the build.
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.h.in' | grep -v '^tests/tools/layers_fixtures/')
if ((fix)); then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  printf 'not formatted (run scripts/check-format.sh --fix):\n' >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted as .clang-format says"
