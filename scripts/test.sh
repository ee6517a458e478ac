#!/usr/bin/env bash
# Installs what is missing, builds qgrad (Release) into build/, runs every test with CTest, then
# builds the unit tests of core, comm and optim with AddressSanitizer + UndefinedBehaviorSanitizer
# into build-asan/ and runs them too. Exits non-zero on any failure.
#
#   scripts/test.sh              everything (what CI runs)
#   scripts/test.sh --no-asan    skip the sanitizer build (quicker local runs)
set -euo pipefail
cd "$(dirname "$0")/.."

asan=1
for arg in "$@"; do
  case "$arg" in
    --no-asan) asan=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg' (valid: --no-asan)" >&2; exit 2 ;;
  esac
done

jobs=$(nproc)
start=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$1" $(( $(date +%s) - start )); }

step "dependencies"
scripts/install-deps.sh

step "configure + build (Release) into build/"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$jobs"

step "tests (CTest, Release)"
ctest --test-dir build --output-on-failure -j"$jobs"

if ((asan)); then
  step "configure + build unit tests with ASan + UBSan into build-asan/"
  # -O1 -g1: the sanitizers' recommended optimisation level, and line tables only (enough for
  # symbolized reports with file:line); half the compile time of -O2 -g, which dominated CI.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DQGRAD_SANITIZE="address;undefined" -DQGRAD_BUILD_BENCH=OFF -DQGRAD_BUILD_TOOLS=OFF >/dev/null
  ninja -C build-asan -j"$jobs"
  step "tests (CTest, ASan + UBSan, label unit)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" -L unit
fi

step "all tests passed"
