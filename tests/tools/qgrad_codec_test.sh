#!/usr/bin/env bash
# End-to-end test of qgrad-codec: gen -> encode -> decode -> stats, determinism, and the exit
# codes and messages of bad input. Usage: qgrad_codec_test.sh path/to/qgrad-codec
# Exits 0 on success, 1 on the first failed check.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/testlib.sh"

BIN=$(realpath "${1:?usage: qgrad_codec_test.sh path/to/qgrad-codec}")
[[ -x $BIN ]] || { echo "FAIL: $BIN is not an executable" >&2; exit 1; }
STOCHASTIC=${QGRAD_TEST_STOCHASTIC_CODEC:-qsgd:bits=4}
enter_scratch_dir

# No output and no temporary file may be left behind by a failed command.
expect_absent() {
  for f in "$@"; do
    [[ ! -e $f && ! -e $f.tmp ]] || fail "$f or $f.tmp was left behind"
  done
}

size_of() { stat -c %s "$1"; }

# --- gen: deterministic, right size -----------------------------------------------------------
"$BIN" gen --n 10000 --seed 1 g.f32
[[ $(size_of g.f32) == 40000 ]] || fail "gen wrote $(size_of g.f32) bytes, expected 40000"
"$BIN" gen --n 10000 --seed 1 g2.f32
cmp -s g.f32 g2.f32 || fail "gen with the same seed wrote different files"
"$BIN" gen --n 10000 --seed 2 g3.f32
! cmp -s g.f32 g3.f32 || fail "gen with another seed wrote the same file"
for dist in lognormal sparse; do
  "$BIN" gen --n 1000 --dist "$dist" --seed 1 "$dist.f32"
  [[ $(size_of "$dist.f32") == 4000 ]] || fail "gen --dist $dist wrote the wrong size"
done
"$BIN" gen --n 0 empty.f32
[[ $(size_of empty.f32) == 0 ]] || fail "gen --n 0 is not empty"

# --- encode / decode round trip -----------------------------------------------------------------
"$BIN" encode --codec fp16 g.f32 a.qg
# 48-byte header + 3 int8 exponents (buckets of 4096) + 2 bytes per element.
[[ $(size_of a.qg) == $((48 + 3 + 20000)) ]] || fail "fp16 payload has $(size_of a.qg) bytes"
"$BIN" encode --codec fp16 --threads 3 g.f32 b.qg
cmp -s a.qg b.qg || fail "encode with 3 threads gave other bytes"
"$BIN" encode --codec fp16 --seed 99 g.f32 c.qg
cmp -s a.qg c.qg || fail "the deterministic fp16 codec depends on the seed"
"$BIN" decode a.qg d.f32
[[ $(size_of d.f32) == 40000 ]] || fail "decode wrote $(size_of d.f32) bytes"
"$BIN" encode --codec none g.f32 n.qg
"$BIN" decode n.qg n.f32
cmp -s g.f32 n.f32 || fail "none did not round-trip exactly"
"$BIN" encode --codec bf16 empty.f32 e.qg
"$BIN" decode e.qg e.f32
[[ $(size_of e.f32) == 0 ]] || fail "empty round trip is not empty"
expect_absent a.qg.tmp d.f32.tmp

# --- stats --------------------------------------------------------------------------------------
"$BIN" stats --codec fp16 g.f32 >stats.txt
for needle in "elements           10000" "bits per element" "ratio vs fp32" "relative L2 error" \
  "encode" "decode"; do
  grep -qF "$needle" stats.txt || fail "stats output lacks '$needle': $(cat stats.txt)"
done
"$BIN" stats --codec fp16 --json g.f32 >stats.json
for key in '"elements":10000' '"encoded_bytes":20051' '"codec":"fp16:bucket=4096"' \
  '"relative_l2_error":' '"encode_seconds":' '"decode_seconds":' '"bits_per_element":'; do
  grep -qF "$key" stats.json || fail "stats --json lacks $key: $(cat stats.json)"
done
[[ $(wc -l <stats.json) == 1 ]] || fail "stats --json printed more than one line"
# fp16's relative L2 error is about 2^-12; anything near 1e-3 would be a bug.
err=$(sed -E 's/.*"relative_l2_error":([^,}]*).*/\1/' stats.json)
awk -v e="$err" 'BEGIN { exit !(e > 0 && e < 5e-4) }' || fail "fp16 relative L2 error $err"
err=$("$BIN" stats --codec none --json g.f32 | sed -E 's/.*"relative_l2_error":([^,}]*).*/\1/')
[[ $err == 0 || $err == 0.0 ]] || fail "none has relative L2 error $err"
if command -v python3 >/dev/null; then
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' stats.json ||
    fail "stats --json is not valid JSON"
fi

"$BIN" list >list.txt
for name in none fp16 bf16 qsgd sign zipml int8 terngrad topk bucket; do
  grep -qw "$name" list.txt || fail "list lacks $name"
done

# --- errors: exit code 2, a message naming the problem, no output left behind ------------------
expect_error 2 "unknown codec 'qsgdx'" "fp16" "topk" -- "$BIN" encode --codec qsgdx g.f32 x.qg
expect_error 2 "unknown key 'bits'" "bucket" -- "$BIN" encode --codec fp16:bits=3 g.f32 x.qg
expect_error 2 "bad value" "expected integer in [1, " -- \
  "$BIN" encode --codec fp16:bucket=0 g.f32 x.qg
expect_error 2 "unknown codec" -- "$BIN" stats --codec nope g.f32
expect_absent x.qg

head -c 60 a.qg >t.qg
expect_error 2 "corrupt payload" "t.qg" -- "$BIN" decode t.qg t.f32
head -c 20 a.qg >t2.qg
expect_error 2 "corrupt payload" "shorter than the 48-byte" -- "$BIN" decode t2.qg t.f32
cp a.qg flip.qg
printf '\x01' | dd of=flip.qg bs=1 seek=100 conv=notrunc status=none
expect_error 2 "corrupt payload" "checksum" -- "$BIN" decode flip.qg t.f32
expect_error 2 "corrupt payload" "magic" -- "$BIN" decode g.f32 t.f32
expect_absent t.f32

expect_error 2 "missing.f32" "No such file" -- "$BIN" encode --codec fp16 missing.f32 x.qg
expect_error 2 "missing.qg" "No such file" -- "$BIN" decode missing.qg x.f32
expect_error 2 "missing.f32" "No such file" -- "$BIN" stats --codec fp16 missing.f32
mkdir adir
expect_error 2 "directory" -- "$BIN" encode --codec fp16 adir x.qg
printf 'abc' >odd.f32
expect_error 2 "odd.f32" "not a multiple of 4" -- "$BIN" encode --codec fp16 odd.f32 x.qg
printf '\x00\x00\x80\x3f\x00\x00\xc0\x7f' >nan.f32  # {1.0, NaN}
expect_error 2 "element 1" "NaN" -- "$BIN" encode --codec bf16 nan.f32 x.qg
expect_error 2 "cannot create" -- "$BIN" encode --codec fp16 g.f32 no/such/dir/x.qg
expect_absent x.qg x.f32

expect_error 2 "subcommand" -- "$BIN"
expect_error 2 "" -- "$BIN" frobnicate
expect_error 2 "--codec" -- "$BIN" encode g.f32 x.qg
expect_error 2 "" -- "$BIN" encode --codec fp16 --threads 0 g.f32 x.qg
expect_error 2 "" -- "$BIN" gen --n 10 --dist uniform x.f32
"$BIN" --help >/dev/null || fail "--help failed"

# --- a stochastic codec: same seed, same bytes; another seed, other bytes -----------------------
rc=0
"$BIN" encode --codec "$STOCHASTIC" --seed 5 g.f32 s1.qg 2>stderr.txt || rc=$?
[[ $rc == 0 ]] || fail "encode --codec $STOCHASTIC failed: $(cat stderr.txt)"
"$BIN" encode --codec "$STOCHASTIC" --seed 5 --threads 2 g.f32 s2.qg
cmp -s s1.qg s2.qg || fail "$STOCHASTIC: same seed gave different bytes"
"$BIN" encode --codec "$STOCHASTIC" --seed 6 g.f32 s3.qg
! cmp -s s1.qg s3.qg || fail "$STOCHASTIC: another seed gave the same bytes"
"$BIN" encode --codec "$STOCHASTIC" --seed 5 --step 1 g.f32 s4.qg
! cmp -s s1.qg s4.qg || fail "$STOCHASTIC: another step gave the same bytes"
"$BIN" decode s1.qg s.f32
[[ $(size_of s.f32) == 40000 ]] || fail "decode of $STOCHASTIC wrote the wrong size"

echo "PASS"
