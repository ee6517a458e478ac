#!/usr/bin/env bash
# The main job, for now: installs what is missing, builds, runs the codec benchmark (every codec
# against memcpy, measured in the same run) and a qgrad-codec round trip on a gradient-like
# vector. Later issues replace it with training runs and a report.
#
#   scripts/demo.sh [--n N] [--threads T]     (defaults: 25M elements, 1 thread)
set -euo pipefail
cd "$(dirname "$0")/.."

n=25000000
threads=1
while (($#)); do
  case "$1" in
    --n) n=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (valid: --n N, --threads T)" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$(nproc)" qgrad-bench qgrad-codec

out=out/demo
mkdir -p "$out"
echo
echo "== 1. codec throughput and wire ratio (qgrad-bench codecs --n $n --threads $threads)"
build/bin/qgrad-bench codecs --n "$n" --threads "$threads" | tee "$out/bench.txt"

echo
echo "== 2. qgrad-codec round trip on a gradient-like vector ($n elements)"
build/bin/qgrad-codec gen --n "$n" --dist gradient --seed 1 "$out/grad.f32"
printf '%-48s %12s %8s %8s %12s\n' codec bytes bits/el ratio rel_L2_err
for spec in none fp16 bf16 qsgd qsgd:bits=2,bucket=128 sign sign:scale=l1 zipml \
            zipml:levels=optimal int8 int8:map=tree terngrad topk:ratio=0.01; do
  build/bin/qgrad-codec encode --codec "$spec" --seed 7 "$out/grad.f32" "$out/grad.qg"
  build/bin/qgrad-codec decode "$out/grad.qg" "$out/decoded.f32"
  build/bin/qgrad-codec stats --codec "$spec" --seed 7 --json "$out/grad.f32" |
    /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print("%-48s %12d %8.3f %7.2fx %12.4g" % (s["codec"], s["encoded_bytes"], s["bits_per_element"], s["ratio_vs_fp32"], s["relative_l2_error"]))'
done
rm -f "$out/grad.f32" "$out/grad.qg" "$out/decoded.f32"
echo
echo "demo: benchmark table in $out/bench.txt"
