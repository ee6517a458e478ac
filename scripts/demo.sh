#!/usr/bin/env bash
# The main job: installs what is missing, builds, then trains the Fashion-MNIST MLP (784-256-10)
# on 4 ranks three times, uncompressed (fp32), with 4-bit QSGD and with 1-bit signs and a
# majority vote (Signum), every rank behind an emulated 1 Gbit/s link, and prints them side by
# side: test accuracy, bytes on the wire per rank, compression ratio against the fp32 ring
# allreduce, time. Ends with a qgrad-report of the three runs (plots, table, index.html) in
# out/demo/report/.
#
#   scripts/demo.sh [--epochs E] [--ranks N] [--link RATE|none] [--codecs]
#   (defaults: 3 epochs, 4 ranks, --link 1gbit; `none`: no emulated link, the exchange is a
#   memory copy). --codecs also runs the codec benchmark (every codec against memcpy).
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=3
ranks=4
codecs=0
link=1gbit
while (($#)); do
  case "$1" in
    --epochs) epochs=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --link) link=$2; shift 2 ;;
    --codecs) codecs=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (valid: --epochs E, --ranks N, --link RATE, --codecs)" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$(nproc)" qgrad-train qgrad-bench qgrad-codec

out=out/demo
mkdir -p "$out"
if ((codecs)); then
  echo
  echo "== codec throughput and wire ratio (qgrad-bench codecs --n 25000000)"
  build/bin/qgrad-bench codecs --n 25000000 | tee "$out/bench.txt"
fi

# name | flags
runs=(
  "fp32|--codec none --optimizer sgd --lr 0.1 --momentum 0.9 --lr-schedule cosine"
  "qsgd-4bit|--codec qsgd:bits=4 --optimizer sgd --lr 0.1 --momentum 0.9 --lr-schedule cosine"
  "sign-majority|--codec sign --optimizer signum --lr 0.001 --momentum 0.9 --lr-schedule cosine"
)
link_flags=()
[[ $link == none ]] || link_flags=(--link "$link")
rm -f "$out"/*.jsonl  # the report reads every metrics file here
for run in "${runs[@]}"; do
  name=${run%%|*}
  read -r -a flags <<<"${run#*|}"
  echo
  echo "== $name: build/bin/qgrad-train --model mlp --data fashion-mnist --ranks $ranks --batch 64 --epochs $epochs ${link_flags[*]} --eval-every 50 ${flags[*]}"
  build/bin/qgrad-train --model mlp --data fashion-mnist --ranks "$ranks" --batch 64 \
    --epochs "$epochs" --seed 1 "${link_flags[@]}" --eval-every 50 "${flags[@]}" \
    --metrics "$out/$name.jsonl"
done

echo
echo "== Fashion-MNIST MLP, $ranks ranks, batch 64 per rank, $epochs epochs"
/usr/bin/python3 - "$out" "${runs[@]%%|*}" <<'PYEOF'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
rows = []
for name in names:
    with open(os.path.join(out, name + ".jsonl")) as f:
        rows.append((name, json.loads(f.read().splitlines()[-1])))
fp32 = rows[0][1]
print(f"{'run':15} {'codec':40} {'test acc':>9} {'vs fp32':>8} {'MB/rank':>9} {'ratio':>7} "
      f"{'ms/step':>8}")
for name, s in rows:
    print(f"{name:15} {s['codec'][:40]:40} {100 * s['test_accuracy']:8.2f}% "
          f"{100 * (s['test_accuracy'] - fp32['test_accuracy']):+8.2f} "
          f"{s['bytes_sent'] / 1e6:9.1f} {s['compression_ratio']:6.1f}x "
          f"{1e3 * s['step_seconds']:8.2f}")
print("\nratio: bytes the fp32 ring allreduce would have sent / bytes sent. ms/step: wall time of"
      "\nthe ranks sharing this machine's cores, with the emulated link's delay (--link).")
PYEOF
echo
echo "== qgrad-report: plots and tables"
scripts/qgrad-report "$out" --out "$out/report" --title "qgrad demo: Fashion-MNIST MLP, link $link"
echo
echo "demo: metrics in $out/*.jsonl; report in $out/report/index.html (summary.md, *.png)"
