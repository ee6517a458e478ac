// SIMD kernels of the zipml codec (core/codecs/zipml.h): stochastic rounding of a bucket to the
// uniform levels lo + j * step, adding decoded levels into an output, and packing b-bit level
// indices into bytes. Runtime dispatch (Highway); every target computes the same elementwise IEEE
// float operations in the same order (tails go through the same vector code on a padded copy), so
// the indices are bit-identical on every target. Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qgrad::simd {

// lo = min and hi = max of x[0, n) (n >= 1), a zero min or max as +0 whatever the order of the
// reduction; returns whether every element is finite (if not, lo and hi are meaningless).
bool zipml_range(const float* x, size_t n, float* lo, float* hi);

// index[i] for x[0, n): t = min((x - lo) * prescale * inv_step, top), j = floor(t), index = j + 1
// iff u < t - j, u = uniform_from_word of element i's word, whose 16 random bits are random[i]
// (see core/philox.h). Requires x >= lo and top <= 255. Unless null, `prefetch` points to n floats
// to pull into the cache while the arithmetic runs (the next chunk's input).
void zipml_uniform_encode(const float* x, const uint16_t* random, size_t n, float lo,
                          float prescale, float inv_step, float top, const float* prefetch,
                          uint8_t* index);

// out[i] += weight * min(lo + index[i] * step, hi).
void zipml_uniform_decode(const uint8_t* index, size_t n, float lo, float step, float hi,
                          float weight, float* out);

// Packs n indices of `bits` bits (1..8; each index < 2^bits) LSB-first: index i occupies bits
// [i*bits, (i+1)*bits) of out, bit 0 being the lowest bit of out[0]. Writes ceil(n*bits/8)
// bytes; the unused high bits of the last byte are zero.
void zipml_pack(const uint8_t* index, size_t n, int bits, uint8_t* out);

// The inverse: reads ceil(n*bits/8) bytes of `in` and writes n indices.
void zipml_unpack(const uint8_t* in, size_t n, int bits, uint8_t* index);

}  // namespace qgrad::simd
