#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cstring>

#include "core/simd/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace qgrad::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr size_t kPartials = 16;

size_t FindNonfinite(const float* HWY_RESTRICT x, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const size_t N = hn::Lanes(df);
  const auto exp_mask = hn::Set(du, 0x7F800000u);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto bits = hn::BitCast(du, hn::LoadU(df, x + i));
    const auto bad = hn::Eq(hn::And(bits, exp_mask), exp_mask);
    if (!hn::AllFalse(du, bad)) return i + static_cast<size_t>(hn::FindFirstTrue(du, bad));
  }
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    if ((b & 0x7F800000u) == 0x7F800000u) return i;
  }
  return n;
}

// |x| as bits orders like |x| as float, and NaN/Inf (exponent all ones) sort above every finite
// value: an unsigned max of the bits is an absmax with a built-in non-finite check.
float AbsMax(const float* HWY_RESTRICT x, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const size_t N = hn::Lanes(df);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  auto m = hn::Zero(du);
  size_t i = 0;
  for (; i + N <= n; i += N)
    m = hn::Max(m, hn::And(hn::BitCast(du, hn::LoadU(df, x + i)), abs_mask));
  uint32_t best = hn::GetLane(hn::MaxOfLanes(du, m));
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    b &= 0x7FFFFFFFu;
    best = b > best ? b : best;
  }
  float out;
  std::memcpy(&out, &best, 4);
  return out;
}

// Fixed-association sum of f(x_i): partial p accumulates elements i with i % 16 == p.
template <bool kSquare>
float CanonicalSum(const float* HWY_RESTRICT x, size_t n) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  HWY_ALIGN float partial[kPartials] = {};
  if (N <= kPartials && kPartials % N == 0) {
    // kPartials / N vectors of accumulators; vector j holds partials [j*N, (j+1)*N).
    constexpr size_t kMaxVectors = kPartials;
    hn::Vec<decltype(df)> acc[kMaxVectors];
    const size_t vectors = kPartials / N;
    for (size_t j = 0; j < vectors; ++j) acc[j] = hn::Zero(df);
    size_t i = 0;
    for (; i + kPartials <= n; i += kPartials) {
      for (size_t j = 0; j < vectors; ++j) {
        const auto v = hn::LoadU(df, x + i + j * N);
        acc[j] = hn::Add(acc[j], kSquare ? hn::Mul(v, v) : hn::Abs(v));
      }
    }
    for (size_t j = 0; j < vectors; ++j) hn::Store(acc[j], df, partial + j * N);
    for (size_t p = 0; i < n; ++i, ++p)
      partial[p] += kSquare ? x[i] * x[i] : (x[i] < 0 ? -x[i] : x[i]);
  } else {
    for (size_t i = 0; i < n; ++i)
      partial[i % kPartials] += kSquare ? x[i] * x[i] : (x[i] < 0 ? -x[i] : x[i]);
  }
  for (size_t width = kPartials / 2; width > 0; width /= 2)
    for (size_t p = 0; p < width; ++p) partial[p] += partial[p + width];
  return partial[0];
}

float SumSquares(const float* HWY_RESTRICT x, size_t n) { return CanonicalSum<true>(x, n); }
float SumAbs(const float* HWY_RESTRICT x, size_t n) { return CanonicalSum<false>(x, n); }

void AxpyBytes(float w, const std::byte* HWY_RESTRICT x, float* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const auto vw = hn::Set(df, w);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(df, reinterpret_cast<const float*>(x) + i);
    hn::StoreU(hn::Add(hn::LoadU(df, out + i), hn::Mul(vw, v)), df, out + i);
  }
  for (; i < n; ++i) {
    float v;
    std::memcpy(&v, x + 4 * i, 4);
    out[i] += w * v;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad::simd {
HWY_EXPORT(FindNonfinite);
HWY_EXPORT(AbsMax);
HWY_EXPORT(SumSquares);
HWY_EXPORT(SumAbs);
HWY_EXPORT(AxpyBytes);

size_t find_nonfinite(const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(FindNonfinite)(x, n);
}
float absmax(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(AbsMax)(x, n); }
float sum_squares(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(SumSquares)(x, n); }
float sum_abs(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(SumAbs)(x, n); }
void axpy_bytes(float w, const std::byte* x, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(AxpyBytes)(w, x, out, n);
}
}  // namespace qgrad::simd
#endif
