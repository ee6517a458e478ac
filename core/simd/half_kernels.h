// SIMD kernels (Highway, runtime dispatch) for the fp16 and bf16 codecs. Each lane gives exactly
// the bits of core/half.h's scalar functions (the same integer formulas, except that fp16's
// subnormal rounding is one exact IEEE addition), and the scalar tails call those functions, so
// the output bits are the same on every target (tests compare every compiled target against the
// scalar reference). 16-bit values are read and written as little-endian uint16 at unaligned
// byte addresses. Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qgrad::simd {

// out[i] = f32_to_f16_rne(x[i] * scale) with the magnitude bits capped at max_magnitude (the
// sign is kept). The fp16 codec passes a power-of-two scale, which makes x[i] * scale exact
// wherever the result can be a nonzero half.
void f32_to_f16_scaled(const float* x, size_t n, float scale, uint16_t max_magnitude,
                       std::byte* out);

// out[i] = f16_to_f32(h[i]).
void f16_to_f32(const std::byte* h, size_t n, float* out);

// out[i] += weight * (f16_to_f32(h[i]) * scale).
void f16_axpy(float weight, float scale, const std::byte* h, float* out, size_t n);

// out[i] = f32_to_bf16_saturating(x[i]). Returns the largest |x[i]| as float32 bits, so a result
// >= 0x7F800000 says that the range held a NaN or Inf.
uint32_t f32_to_bf16(const float* x, size_t n, std::byte* out);

// out[i] += weight * bf16_to_f32(h[i]).
void bf16_axpy(float weight, const std::byte* h, float* out, size_t n);

// max over i of (h[i] & 0x7FFF): the largest magnitude field of 16-bit floats (0 for n == 0).
uint16_t u16_max_magnitude(const std::byte* h, size_t n);

}  // namespace qgrad::simd
