#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/half_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <bit>
#include <cstring>

#include "core/half.h"
#include "core/simd/half_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace qgrad::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void store_u16(std::byte* p, uint16_t v) { std::memcpy(p, &v, 2); }

// core/half.h's f16_magnitude_rne, lane by lane. The two paths are computed for every lane and
// selected; lanes of the other path may wrap around, which the select discards. Comparisons are
// done as int32 (a <= 0x7FFFFFFF) because every target has signed 32-bit compares.
template <class DU>
hn::Vec<DU> F16MagnitudeRne(DU du, hn::Vec<DU> a) {
  const hn::RebindToSigned<DU> di;
  const auto lsb = hn::And(hn::ShiftRight<13>(a), hn::Set(du, 1u));
  auto normal = hn::ShiftRight<13>(
      hn::Sub(hn::Add(hn::Add(a, hn::Set(du, 0xFFFu)), lsb), hn::Set(du, 0x38000000u)));
  normal = hn::Min(normal, hn::Set(du, kF16Inf));

  // Subnormal halves: |x| + 0.5f lies in [0.5, 0.5 + 2^-14), where a float's ulp is 2^-24, so
  // the IEEE addition rounds |x| to the nearest multiple of 2^-24, ties to even: the same k as
  // the integer formula of half.h (which the tests check on every target), in two instructions
  // instead of three variable shifts. Float32 subnormals give 0.5 exactly, with or without DAZ.
  const hn::Rebind<float, DU> df;
  const auto sub = hn::Sub(hn::BitCast(du, hn::Add(hn::BitCast(df, a), hn::Set(df, 0.5f))),
                           hn::Set(du, 0x3F000000u));

  const auto ai = hn::BitCast(di, a);
  const auto is_sub = hn::RebindMask(du, hn::Lt(ai, hn::Set(di, 0x38800000)));
  const auto is_nan = hn::RebindMask(du, hn::Gt(ai, hn::Set(di, 0x7F800000)));
  return hn::IfThenElse(is_nan, hn::Set(du, kF16QuietNan), hn::IfThenElse(is_sub, sub, normal));
}

// core/half.h's f16_to_f32 on halves already widened to 32-bit lanes.
template <class DF, class DU>
hn::Vec<DF> F16ToF32(DF df, DU du, hn::Vec<DU> h) {
  const hn::RebindToSigned<DU> di;
  const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
  const auto em = hn::And(h, hn::Set(du, 0x7FFFu));
  const auto shifted = hn::ShiftLeft<13>(em);
  const auto emi = hn::BitCast(di, em);
  const auto normal = hn::IfThenElse(hn::RebindMask(du, hn::Lt(emi, hn::Set(di, kF16Inf))),
                                     hn::Add(shifted, hn::Set(du, 0x38000000u)),
                                     hn::Add(shifted, hn::Set(du, 0x70000000u)));
  const auto sub = hn::BitCast(du, hn::Mul(hn::ConvertTo(df, emi), hn::Set(df, 0x1p-24f)));
  const auto bits =
      hn::IfThenElse(hn::RebindMask(du, hn::Lt(emi, hn::Set(di, 0x400))), sub, normal);
  return hn::BitCast(df, hn::Or(bits, sign));
}

}  // namespace

void F32ToF16Scaled(const float* HWY_RESTRICT x, size_t n, float scale, uint16_t max_magnitude,
                    std::byte* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint16_t, decltype(df)> d16;
  const size_t N = hn::Lanes(df);
  const auto vscale = hn::Set(df, scale);
  const auto cap = hn::Set(du, max_magnitude);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  const auto sign_mask = hn::Set(du, 0x8000u);
  uint16_t* out16 = reinterpret_cast<uint16_t*>(out);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto u = hn::BitCast(du, hn::Mul(hn::LoadU(df, x + i), vscale));
    const auto mag = hn::Min(F16MagnitudeRne(du, hn::And(u, abs_mask)), cap);
    const auto h = hn::Or(mag, hn::And(hn::ShiftRight<16>(u), sign_mask));
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, h)), d16, out16 + i);
  }
  for (; i < n; ++i) {
    const uint32_t u = std::bit_cast<uint32_t>(x[i] * scale);
    uint32_t mag = f16_magnitude_rne(u & 0x7FFFFFFFu);
    mag = mag < max_magnitude ? mag : max_magnitude;
    store_u16(out + 2 * i, static_cast<uint16_t>(mag | ((u >> 16) & 0x8000u)));
  }
}

void F16ToF32Array(const std::byte* HWY_RESTRICT h, size_t n, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint16_t, decltype(df)> d16;
  const size_t N = hn::Lanes(df);
  const uint16_t* h16 = reinterpret_cast<const uint16_t*>(h);
  size_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(F16ToF32(df, du, hn::PromoteTo(du, hn::LoadU(d16, h16 + i))), df, out + i);
  for (; i < n; ++i) out[i] = ::qgrad::f16_to_f32(load_u16(h + 2 * i));
}

void F16Axpy(float weight, float scale, const std::byte* HWY_RESTRICT h, float* HWY_RESTRICT out,
             size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint16_t, decltype(df)> d16;
  const size_t N = hn::Lanes(df);
  const auto vw = hn::Set(df, weight);
  const auto vscale = hn::Set(df, scale);
  const uint16_t* h16 = reinterpret_cast<const uint16_t*>(h);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = F16ToF32(df, du, hn::PromoteTo(du, hn::LoadU(d16, h16 + i)));
    hn::StoreU(hn::Add(hn::LoadU(df, out + i), hn::Mul(vw, hn::Mul(v, vscale))), df, out + i);
  }
  for (; i < n; ++i) out[i] += weight * (::qgrad::f16_to_f32(load_u16(h + 2 * i)) * scale);
}

uint32_t F32ToBf16(const float* HWY_RESTRICT x, size_t n, std::byte* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint16_t, decltype(df)> d16;
  const size_t N = hn::Lanes(df);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  const auto one = hn::Set(du, 1u);
  const auto inf = hn::Set(di, 0x7F800000);
  uint16_t* out16 = reinterpret_cast<uint16_t*>(out);
  auto vmax = hn::Zero(du);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto u = hn::BitCast(du, hn::LoadU(df, x + i));
    const auto a = hn::And(u, abs_mask);
    vmax = hn::Max(vmax, a);
    auto mag = hn::ShiftRight<16>(
        hn::Add(hn::Add(a, hn::Set(du, 0x7FFFu)), hn::And(hn::ShiftRight<16>(a), one)));
    mag = hn::Min(mag, hn::Set(du, kBf16MaxFinite));
    const auto ai = hn::BitCast(di, a);
    mag = hn::IfThenElse(hn::RebindMask(du, hn::Eq(ai, inf)), hn::Set(du, 0x7F80u), mag);
    mag = hn::IfThenElse(hn::RebindMask(du, hn::Gt(ai, inf)), hn::Set(du, kBf16QuietNan), mag);
    const auto h = hn::Or(mag, hn::And(hn::ShiftRight<16>(u), hn::Set(du, 0x8000u)));
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, h)), d16, out16 + i);
  }
  uint32_t best = hn::GetLane(hn::MaxOfLanes(du, vmax));
  for (; i < n; ++i) {
    const uint32_t a = std::bit_cast<uint32_t>(x[i]) & 0x7FFFFFFFu;
    best = a > best ? a : best;
    store_u16(out + 2 * i, f32_to_bf16_saturating(x[i]));
  }
  return best;
}

void Bf16Axpy(float weight, const std::byte* HWY_RESTRICT h, float* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint16_t, decltype(df)> d16;
  const size_t N = hn::Lanes(df);
  const auto vw = hn::Set(df, weight);
  const uint16_t* h16 = reinterpret_cast<const uint16_t*>(h);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, h16 + i))));
    hn::StoreU(hn::Add(hn::LoadU(df, out + i), hn::Mul(vw, v)), df, out + i);
  }
  for (; i < n; ++i) out[i] += weight * bf16_to_f32(load_u16(h + 2 * i));
}

uint16_t U16MaxMagnitude(const std::byte* HWY_RESTRICT h, size_t n) {
  const hn::ScalableTag<uint16_t> d16;
  const size_t N = hn::Lanes(d16);
  const auto mask = hn::Set(d16, uint16_t{0x7FFF});
  const uint16_t* h16 = reinterpret_cast<const uint16_t*>(h);
  auto vmax = hn::Zero(d16);
  size_t i = 0;
  for (; i + N <= n; i += N) vmax = hn::Max(vmax, hn::And(hn::LoadU(d16, h16 + i), mask));
  uint16_t best = hn::GetLane(hn::MaxOfLanes(d16, vmax));
  for (; i < n; ++i) {
    const uint16_t m = load_u16(h + 2 * i) & 0x7FFFu;
    best = m > best ? m : best;
  }
  return best;
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad::simd {
HWY_EXPORT(F32ToF16Scaled);
HWY_EXPORT(F16ToF32Array);
HWY_EXPORT(F16Axpy);
HWY_EXPORT(F32ToBf16);
HWY_EXPORT(Bf16Axpy);
HWY_EXPORT(U16MaxMagnitude);

void f32_to_f16_scaled(const float* x, size_t n, float scale, uint16_t max_magnitude,
                       std::byte* out) {
  HWY_DYNAMIC_DISPATCH(F32ToF16Scaled)(x, n, scale, max_magnitude, out);
}
void f16_to_f32(const std::byte* h, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(F16ToF32Array)(h, n, out);
}
void f16_axpy(float weight, float scale, const std::byte* h, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(F16Axpy)(weight, scale, h, out, n);
}
uint32_t f32_to_bf16(const float* x, size_t n, std::byte* out) {
  return HWY_DYNAMIC_DISPATCH(F32ToBf16)(x, n, out);
}
void bf16_axpy(float weight, const std::byte* h, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Bf16Axpy)(weight, h, out, n);
}
uint16_t u16_max_magnitude(const std::byte* h, size_t n) {
  return HWY_DYNAMIC_DISPATCH(U16MaxMagnitude)(h, n);
}
}  // namespace qgrad::simd
#endif
