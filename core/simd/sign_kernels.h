// SIMD kernels for the 1-bit (sign) and 2-bit (ternary) codecs: turn float predicates into packed
// bit streams and packed streams back into out += value. Highway, runtime dispatch; every target
// gives the same bits and the same floats (comparisons and single IEEE multiplies only).
//
// Bit streams are little-endian: element i of a stream is bit (i % 8) of byte i / 8 (sign), or
// bits 2(i % 4) and 2(i % 4) + 1 of byte i / 4 (ternary: code = bit0 | bit1 << 1).
// Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qgrad::simd {

// bits[0, ceil(n/8)) = the sign bits of x[0, n): 1 iff x[i] < 0 (so -0.0 and +0.0 give 0); the
// unused high bits of the last byte are 0. Returns false iff some x[i] is NaN or Inf (the bits
// are then meaningless).
bool pack_signs(const float* x, size_t n, std::byte* bits);

// For i in [0, n), with b = bit (first_bit + i) of `bits`:
//   accumulate: out[i] += b ? neg : pos;   otherwise: out[i] = b ? neg : pos.
void expand_signs(const std::byte* bits, size_t first_bit, size_t n, float pos, float neg,
                  float* out, bool accumulate);

// TernGrad's keep decisions for x[0, n) with scale s > 0 and the elements' random words:
// keep_i = uniform_from_word(words[i]) * s < |x[i]|. Writes ceil(n/64) words to each of
// `pos` (kept and x[i] >= 0) and `neg` (kept and x[i] < 0), element i at bit i % 64 of word
// i / 64; bits past n are 0.
void ternary_masks(const float* x, size_t n, const uint32_t* words, float s, uint64_t* pos,
                   uint64_t* neg);

// For i in [0, n), with c = the 2-bit code (first_code + i) of `codes`:
// out[i] += c == 1 ? pos : c == 2 ? neg : 0. Code 3 must have been rejected by the caller.
void add_ternary(const std::byte* codes, size_t first_code, size_t n, float pos, float neg,
                 float* out);

}  // namespace qgrad::simd
