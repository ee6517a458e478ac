// Portable conversions between float32 and the two 16-bit float formats qgrad sends:
// IEEE 754 binary16 ("fp16": 1 sign, 5 exponent, 10 mantissa bits) and bfloat16 (1 sign,
// 8 exponent, 7 mantissa bits: the top half of a float32).
//
// Integer bit manipulation only (plus, in f16_to_f32, an int->float conversion and a multiply by
// a power of two that are exact), so every compiler, SIMD target and GPU gives the same bits. The
// Highway kernels in core/simd/half_kernels.cc give exactly these bits lane by lane (tests check
// every compiled target against these functions).
//
// f32 -> f16 rounds to nearest, ties to even (IEEE's default), including into the subnormal
// range: a float32 x with |x| < 2^-14 becomes k * 2^-24 with k = RNE(|x| * 2^24). Values whose
// rounding reaches 2^16 (|x| >= 65520) become Inf; NaN becomes the quiet NaN 0x7E00, sign kept.
// f32 -> bf16 rounds to nearest even and saturates finite values at the largest finite bf16
// (0x7F7F = 3.3895e38) instead of rounding them up to Inf; NaN becomes 0x7FC0 (sign kept).
// Thread-safe: pure functions.
#pragma once

#include <bit>
#include <cstdint>

namespace qgrad {

inline constexpr uint16_t kF16Inf = 0x7C00;
inline constexpr uint16_t kF16QuietNan = 0x7E00;
inline constexpr uint16_t kBf16MaxFinite = 0x7F7F;
inline constexpr uint16_t kBf16QuietNan = 0x7FC0;

// The f16 magnitude bits (sign cleared) of RNE(|x|) where `a` = bits of |x| (a <= 0x7FFFFFFF).
// Normal halves: subtracting 112 << 23 rebiases the exponent (127 -> 15) and the mantissa loses
// its low 13 bits; adding 0xFFF plus the kept lsb before the shift is round-half-to-even, and the
// carry runs into the exponent exactly as it should (0x7BFF + 1 ulp = 0x7C00 = Inf).
// Subnormal halves: the value is m * 2^(E - 150) with m the 24-bit significand, i.e. m >> s
// units of 2^-24 with s = 126 - E >= 14; the same +(half - 1) + lsb trick rounds it. s is capped
// at 31 (m < 2^24, so any s >= 25 rounds to 0, and float32 zeros/subnormals land there too).
constexpr uint32_t f16_magnitude_rne(uint32_t a) {
  if (a > 0x7F800000u) return kF16QuietNan;
  if (a >= 0x38800000u) {
    const uint32_t h = (a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
    return h < kF16Inf ? h : kF16Inf;
  }
  const uint32_t exponent = a >> 23;
  const uint32_t s = exponent == 0 ? 31u : (126u - exponent < 31u ? 126u - exponent : 31u);
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  return (m + ((1u << (s - 1)) - 1u) + ((m >> s) & 1u)) >> s;
}

constexpr uint16_t f32_to_f16_rne(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  return static_cast<uint16_t>(((u >> 16) & 0x8000u) | f16_magnitude_rne(u & 0x7FFFFFFFu));
}

// Normal and Inf/NaN halves move their exponent field by 112 (or to 255); subnormal halves are
// k * 2^-24, computed as float(k) * 2^-24, both steps exact.
constexpr float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  uint32_t bits;
  if (em >= kF16Inf) {
    bits = (em << 13) + 0x70000000u;
  } else if (em >= 0x400u) {
    bits = (em << 13) + 0x38000000u;
  } else {
    bits = std::bit_cast<uint32_t>(static_cast<float>(em) * 0x1p-24f);
  }
  return std::bit_cast<float>(bits | sign);
}

// bf16 magnitude bits of RNE(|x|), saturating finite values at kBf16MaxFinite. a <= 0x7FFFFFFF,
// so a + 0x8000 cannot wrap.
constexpr uint32_t bf16_magnitude_rne_saturating(uint32_t a) {
  if (a > 0x7F800000u) return kBf16QuietNan;
  if (a == 0x7F800000u) return 0x7F80u;
  const uint32_t h = (a + 0x7FFFu + ((a >> 16) & 1u)) >> 16;
  return h < kBf16MaxFinite ? h : kBf16MaxFinite;
}

constexpr uint16_t f32_to_bf16_saturating(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  return static_cast<uint16_t>(((u >> 16) & 0x8000u) |
                               bf16_magnitude_rne_saturating(u & 0x7FFFFFFFu));
}

constexpr float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t{h} << 16); }

}  // namespace qgrad
