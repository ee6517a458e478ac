// SIMD kernels of the QSGD codec (core/codecs/qsgd.h has the maths and the wire layout): one
// bucket segment's quantization to codes, the codes' dequantize-accumulate, and the packers of
// the dense layouts. Every vector kernel's scalar tail calls the inline scalar reference below,
// which performs the same float operations in the same order (the build uses -ffp-contract=off),
// so the codes and the decoded values are identical on every SIMD target.
// Thread-safe: pure functions.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace qgrad::simd {

// A code is level | (x < 0 ? sign_bit : 0), level in [0, s]. The sign bit of a zero level is
// kept as it falls (decoding it adds -0, which leaves any sum unchanged); sgn(-0) = sgn(0) = +1.
struct QsgdQuantParams {
  float scale = 0;     // the bucket's scale (> 0)
  float prescale = 1;  // a power of two: 1, or 2^64 / 2^-64 for tiny / huge scales
  float inv = 0;       // float(s) / (scale * prescale), rounded up if needed; see below
  float qinv = 0;      // inv * 65536 (exact)
  float levels = 0;    // float(s)
  float qlevels = 0;   // float(s) * 65536
  uint32_t sign_bit = 0;
  bool prescaled = false;
};

// Scales outside [2^-100, 2^100] would make s / scale overflow or go subnormal: the arithmetic
// then runs on scale * prescale, a power-of-two rescaling.
inline float qsgd_prescale(float scale) {
  return scale < 0x1p-100f ? 0x1p64f : scale > 0x1p100f ? 0x1p-64f : 1.0f;
}

// Parameters for a bucket with scale > 0 and s levels; `bits` places the sign bit. inv is the
// smallest float >= float(s) / (scale * prescale) (the quotient or its successor) with
// (scale * prescale) * inv >= s, so the largest element gets r = min(s, ...) = s exactly.
QsgdQuantParams qsgd_quant_params(float scale, int s, int bits);

// The quantization rule, from its definition: r = min(s, (|x| * prescale) * inv); level =
// floor(r) + 1 iff uniform_from_word(word) < r - floor(r). (The reference for tests; the kernels
// use qsgd_quantize_half.)
inline uint32_t qsgd_quantize_one(float x, uint32_t word, const QsgdQuantParams& p) {
  const float a = std::fabs(x);
  float r = p.prescaled ? (a * p.prescale) * p.inv : a * p.inv;
  r = r < p.levels ? r : p.levels;
  const float floor_r = std::floor(r);
  const float frac = r - floor_r;
  const float u = static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
  const float level = u < frac ? floor_r + 1.0f : floor_r;
  return static_cast<uint32_t>(level) | (x < 0.0f ? p.sign_bit : 0u);
}

// The same rule for an element word (h << 16) | 0x8000 (core/philox.h), in integers. With
// q = 65536 r, uniform (h + 0.5) / 65536 < frac(r) iff h < ceil(q - 0.5) - 65536 floor(r), so
// level = (M + 65535 - h) >> 16 with M = ceil(q - 0.5); q - 0.5 is exact because q < 2^23, and
// adding 2^23 leaves M in the low mantissa bits.
inline uint32_t qsgd_quantize_half(float x, uint32_t h, const QsgdQuantParams& p) {
  const float a = std::fabs(x);
  float q = p.prescaled ? (a * p.prescale) * p.qinv : a * p.qinv;
  q = q < p.qlevels ? q : p.qlevels;
  const float m = std::ceil(q - 0.5f) + 8388608.0f;
  const uint32_t level = (std::bit_cast<uint32_t>(m) - 0x4B000000u + 65535u - h) >> 16;
  return level | (x < 0.0f ? p.sign_bit : 0u);
}

struct QsgdDequantParams {
  float scale = 0;      // the bucket's scale: the magnitude of level s, exactly
  float unit = 0;       // (scale * prescale) / float(s)
  float postscale = 1;  // 1 / prescale (used when prescaled)
  float weight = 1;
  uint32_t levels = 0;      // s
  uint32_t level_mask = 0;  // 2^(bits-1) - 1
  int sign_shift = 0;       // 32 - bits: moves the sign bit of a code to bit 31
  bool prescaled = false;
};

// Decoding parameters for a bucket's scale (any finite value >= 0).
QsgdDequantParams qsgd_dequant_params(float scale, float weight, int s, int bits);

// The decoded value of a code: sgn * (level == s ? scale : (level * unit) [* postscale]).
inline float qsgd_value(uint32_t code, const QsgdDequantParams& p) {
  const uint32_t level = code & p.level_mask;
  const float lf = static_cast<float>(static_cast<int32_t>(level));
  float m = p.prescaled ? (lf * p.unit) * p.postscale : lf * p.unit;
  if (level == p.levels) m = p.scale;
  return ((code << p.sign_shift) & 0x80000000u) != 0 ? -m : m;
}

// codes[i] = qsgd_quantize_half(v[i], halves[i], p) for i < n, where halves[i] is element i's
// 16 random bits: the raw Philox words of philox_fill_raw viewed as uint16 (low half first).
void qsgd_quantize(const float* v, const uint16_t* halves, size_t n, const QsgdQuantParams& p,
                   uint32_t* codes);

// Fused quantize + pack for the byte-aligned fast paths: bits == 8 (one byte per code, any n) or
// bits in {2, 4} (n a multiple of the group size G = 512 / bits; writes n * bits / 8 bytes of
// the sliced layout below, for elements whose index is a multiple of G).
void qsgd_quantize_pack(const float* v, const uint16_t* halves, size_t n, const QsgdQuantParams& p,
                        int bits, std::byte* out);

// Fused unpack + dequantize-accumulate, the inverse of qsgd_quantize_pack (same conditions):
// out[i] += p.weight * qsgd_value(code i, p); returns the largest level seen.
uint32_t qsgd_unpack_add(const std::byte* in, size_t n, const QsgdDequantParams& p, int bits,
                         float* out);

// out[i] += p.weight * qsgd_value(codes[i], p) for i < n; returns the largest level seen (0 if
// n == 0) so the caller can reject levels above s.
uint32_t qsgd_dequantize_add(const uint32_t* codes, size_t n, const QsgdDequantParams& p,
                             float* out);

// Sliced layout for bits in {2, 4}: a group of 16 little-endian 32-bit words holds
// G = 16 * 32 / bits codes; code 16 * k + j of the group sits in word j at bits [bits*k,
// bits*(k+1)). pack writes groups * 64 bytes; unpack reads them and writes groups * G codes.
void qsgd_pack_sliced(const uint32_t* codes, size_t groups, int bits, std::byte* out);
void qsgd_unpack_sliced(const std::byte* in, size_t groups, int bits, uint32_t* codes);

}  // namespace qgrad::simd
