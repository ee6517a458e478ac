// SIMD kernels of the int8 codec (core/codecs/int8.h): rounding a bucket to signed 8-bit codes on
// the linear map (k/127) or on a magnitude table (the dynamic tree map), and adding decoded codes
// into an output. Runtime dispatch (Highway); every target computes the same elementwise IEEE
// float operations in the same order, so the codes are bit-identical on every target, and tails
// shorter than a vector go through the same vector code on a padded copy.
//
// Rounding is on the magnitude a = min(|x| * prescale * inv, top) (prescale, inv and top are the
// codec's per-bucket scale factors): with j the largest magnitude index whose magnitude is <= a
// and frac = the position of a between magnitudes j and j + 1, the code is sign(x) * (j + up),
// up = (u < frac) for stochastic rounding, u = uniform_from_word(element word) built from the
// 16-bit random halves given in `random` (see core/philox.h), and up = (frac >= 1/2) for nearest
// rounding. Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qgrad::simd {

// Tables of a non-uniform magnitude map with 128 magnitudes m[0] = 0 < ... < m[127] = 1.
struct Int8MagnitudeTables {
  // m[0..127], plus m[128] = +inf as a sentinel.
  const float* magnitude;
  // 1 / (m[j+1] - m[j]) for j < 127, and 0 for j = 127.
  const float* inverse_gap;
  // For key k = max(bits(a) >> kInt8KeyShift - kInt8KeyBase, 0): the largest j with
  // m[j] <= the smallest float of key k (kInt8Keys entries). Valid only for maps with at most one
  // magnitude strictly inside any key's range (checked where the tables are built).
  const int32_t* start;
};
// Keys are the float's exponent and top 6 mantissa bits, from 2^-20 (key 0) up to 1.0.
inline constexpr int kInt8KeyShift = 17;
inline constexpr int32_t kInt8KeyBase = (127 - 20) << 6;
inline constexpr int32_t kInt8Keys = (127 << 6) - kInt8KeyBase + 1;

// codes[i] for x[0, n) on the linear map: a = min(|x| * prescale * inv, 127), j = floor(a).
// `random` holds n 16-bit halves (element i's half at random[i]); unused (may be null) when
// `stochastic` is false. Unless null, `prefetch` points to n floats to pull into the cache while
// the arithmetic runs (the next chunk's input: its absmax pass then does not wait on memory).
void int8_encode_linear(const float* x, const uint16_t* random, size_t n, float prescale, float inv,
                        bool stochastic, const float* prefetch, int8_t* codes);

// codes[i] for x[0, n) on the magnitude map `t`: a = min(|x| * prescale * inv, 1),
// frac = (a - m[j]) * inverse_gap[j].
void int8_encode_table(const float* x, const uint16_t* random, size_t n, float prescale, float inv,
                       bool stochastic, const Int8MagnitudeTables& t, const float* prefetch,
                       int8_t* codes);

// out[i] += scale * codes[i].
void int8_decode_linear(const int8_t* codes, size_t n, float scale, float* out);

// out[i] += scale * value[uint8(codes[i])], value: 256 entries indexed by the code's byte.
void int8_decode_table(const int8_t* codes, size_t n, float scale, const float* value, float* out);

// Whether any of codes[0, n) equals `code`.
bool int8_contains(const int8_t* codes, size_t n, int8_t code);

}  // namespace qgrad::simd
