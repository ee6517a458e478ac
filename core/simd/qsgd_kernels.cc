#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/qsgd_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cmath>
#include <cstring>

#include "core/simd/qsgd_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace qgrad::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// qsgd_quantize_half on a vector of lanes (same operations, same order).
template <class D, bool kPrescaled>
struct Quantizer {
  using DU = hn::RebindToUnsigned<D>;
  using D16 = hn::Rebind<uint16_t, DU>;
  using VF = hn::Vec<D>;
  using VU = hn::Vec<DU>;

  explicit Quantizer(const QsgdQuantParams& p)
      : qinv(hn::Set(D(), p.qinv)),
        pre(hn::Set(D(), p.prescale)),
        qlevels(hn::Set(D(), p.qlevels)),
        half(hn::Set(D(), 0.5f)),
        magic(hn::Set(D(), 8388608.0f)),
        offset(hn::Set(DU(), 65535u - 0x4B000000u)),
        sign_bit(hn::Set(DU(), p.sign_bit)) {}

  HWY_INLINE VU operator()(const float* HWY_RESTRICT v, const uint16_t* HWY_RESTRICT h) const {
    const D df;
    const DU du;
    const auto x = hn::LoadU(df, v);
    const auto a = hn::Abs(x);
    auto q = kPrescaled ? hn::Mul(hn::Mul(a, pre), qinv) : hn::Mul(a, qinv);
    q = hn::Min(q, qlevels);
    const auto m = hn::BitCast(du, hn::Add(hn::Ceil(hn::Sub(q, half)), magic));
    const auto level =
        hn::ShiftRight<16>(hn::Sub(hn::Add(m, offset), hn::PromoteTo(du, hn::LoadU(D16(), h))));
    const auto negative = hn::RebindMask(du, hn::Lt(x, hn::Zero(df)));
    return hn::IfThenElse(negative, hn::Or(level, sign_bit), level);
  }

  VF qinv, pre, qlevels, half, magic;
  VU offset, sign_bit;
};

template <bool kPrescaled>
void QuantizeT(const float* HWY_RESTRICT v, const uint16_t* HWY_RESTRICT halves, size_t n,
               const QsgdQuantParams& p, uint32_t* HWY_RESTRICT codes) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const Quantizer<decltype(df), kPrescaled> quantize(p);
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(quantize(v + i, halves + i), du, codes + i);
  for (; i < n; ++i) codes[i] = qsgd_quantize_half(v[i], halves[i], p);
}

void Quantize(const float* HWY_RESTRICT v, const uint16_t* HWY_RESTRICT halves, size_t n,
              const QsgdQuantParams& p, uint32_t* HWY_RESTRICT codes) {
  if (p.prescaled) {
    QuantizeT<true>(v, halves, n, p, codes);
  } else {
    QuantizeT<false>(v, halves, n, p, codes);
  }
}

// Quantize and pack in registers: the sliced layout is defined on 16 words, never on the vector
// width (a vector covers 16 / N words of a group), so every target writes the same bytes.
template <bool kPrescaled, int kBits>
void QuantizePackSlicedT(const float* HWY_RESTRICT v, const uint16_t* HWY_RESTRICT halves,
                         size_t groups, const QsgdQuantParams& p, std::byte* HWY_RESTRICT out) {
  constexpr int kPerWord = 32 / kBits;
  const hn::CappedTag<float, 16> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const Quantizer<decltype(df), kPrescaled> quantize(p);
  const size_t N = hn::Lanes(df);
  for (size_t g = 0; g < groups; ++g) {
    const size_t base = g * 16 * kPerWord;
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + 64 * g);
    for (size_t j = 0; j < 16; j += N) {
      auto acc = quantize(v + base + j, halves + base + j);
      for (int k = 1; k < kPerWord; ++k) {
        const size_t at = base + 16 * static_cast<size_t>(k) + j;
        acc = hn::Or(acc, hn::ShiftLeftSame(quantize(v + at, halves + at), kBits * k));
      }
      hn::StoreU(acc, du, dst + j);
    }
  }
}

template <bool kPrescaled>
void QuantizePackBytesT(const float* HWY_RESTRICT v, const uint16_t* HWY_RESTRICT halves, size_t n,
                        const QsgdQuantParams& p, std::byte* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(di)> d8;
  const Quantizer<decltype(df), kPrescaled> quantize(p);
  const size_t N = hn::Lanes(df);
  uint8_t* dst = reinterpret_cast<uint8_t*>(out);
  size_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::DemoteTo(d8, hn::BitCast(di, quantize(v + i, halves + i))), d8, dst + i);
  for (; i < n; ++i) dst[i] = static_cast<uint8_t>(qsgd_quantize_half(v[i], halves[i], p));
}

void QuantizePack(const float* HWY_RESTRICT v, const uint16_t* HWY_RESTRICT halves, size_t n,
                  const QsgdQuantParams& p, int bits, std::byte* HWY_RESTRICT out) {
  if (bits == 8) {
    p.prescaled ? QuantizePackBytesT<true>(v, halves, n, p, out)
                : QuantizePackBytesT<false>(v, halves, n, p, out);
  } else if (bits == 4) {
    p.prescaled ? QuantizePackSlicedT<true, 4>(v, halves, n / 128, p, out)
                : QuantizePackSlicedT<false, 4>(v, halves, n / 128, p, out);
  } else {
    p.prescaled ? QuantizePackSlicedT<true, 2>(v, halves, n / 256, p, out)
                : QuantizePackSlicedT<false, 2>(v, halves, n / 256, p, out);
  }
}

// qsgd_value, then out += weight * value, on a vector of lanes; tracks the largest level.
template <class D, bool kPrescaled>
struct Dequantizer {
  using DU = hn::RebindToUnsigned<D>;
  using VF = hn::Vec<D>;
  using VU = hn::Vec<DU>;

  explicit Dequantizer(const QsgdDequantParams& p)
      : scale(hn::Set(D(), p.scale)),
        unit(hn::Set(D(), p.unit)),
        post(hn::Set(D(), p.postscale)),
        weight(hn::Set(D(), p.weight)),
        levels(hn::Set(DU(), p.levels)),
        mask(hn::Set(DU(), p.level_mask)),
        sign(hn::Set(DU(), 0x80000000u)),
        most(hn::Zero(DU())),
        sign_shift(p.sign_shift) {}

  HWY_INLINE void operator()(VU c, float* HWY_RESTRICT out) {
    const D df;
    const DU du;
    const hn::RebindToSigned<D> di;
    const auto level = hn::And(c, mask);
    const auto lf = hn::ConvertTo(df, hn::BitCast(di, level));
    auto m = kPrescaled ? hn::Mul(hn::Mul(lf, unit), post) : hn::Mul(lf, unit);
    m = hn::IfThenElse(hn::RebindMask(df, hn::Eq(level, levels)), scale, m);
    const auto value = hn::BitCast(
        df, hn::Xor(hn::BitCast(du, m), hn::And(hn::ShiftLeftSame(c, sign_shift), sign)));
    hn::StoreU(hn::Add(hn::LoadU(df, out), hn::Mul(weight, value)), df, out);
    most = hn::Max(most, level);
  }

  uint32_t top() const { return hn::GetLane(hn::MaxOfLanes(DU(), most)); }

  VF scale, unit, post, weight;
  VU levels, mask, sign, most;
  int sign_shift;
};

template <bool kPrescaled>
uint32_t DequantizeAddT(const uint32_t* HWY_RESTRICT codes, size_t n, const QsgdDequantParams& p,
                        float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  Dequantizer<decltype(df), kPrescaled> add(p);
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) add(hn::LoadU(du, codes + i), out + i);
  uint32_t top = add.top();
  for (; i < n; ++i) {
    out[i] += p.weight * qsgd_value(codes[i], p);
    const uint32_t level = codes[i] & p.level_mask;
    top = level > top ? level : top;
  }
  return top;
}

uint32_t DequantizeAdd(const uint32_t* HWY_RESTRICT codes, size_t n, const QsgdDequantParams& p,
                       float* HWY_RESTRICT out) {
  return p.prescaled ? DequantizeAddT<true>(codes, n, p, out)
                     : DequantizeAddT<false>(codes, n, p, out);
}

template <bool kPrescaled, int kBits>
uint32_t UnpackAddSlicedT(const std::byte* HWY_RESTRICT in, size_t groups,
                          const QsgdDequantParams& p, float* HWY_RESTRICT out) {
  constexpr int kPerWord = 32 / kBits;
  const hn::CappedTag<float, 16> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  Dequantizer<decltype(df), kPrescaled> add(p);
  const size_t N = hn::Lanes(df);
  const auto mask = hn::Set(du, (1u << kBits) - 1);
  for (size_t g = 0; g < groups; ++g) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(in + 64 * g);
    float* o = out + g * 16 * kPerWord;
    for (size_t j = 0; j < 16; j += N) {
      const auto w = hn::LoadU(du, src + j);
      add(hn::And(w, mask), o + j);
      for (int k = 1; k < kPerWord; ++k)
        add(hn::And(hn::ShiftRightSame(w, kBits * k), mask), o + 16 * static_cast<size_t>(k) + j);
    }
  }
  return groups > 0 ? add.top() : 0;
}

template <bool kPrescaled>
uint32_t UnpackAddBytesT(const std::byte* HWY_RESTRICT in, size_t n, const QsgdDequantParams& p,
                         float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint8_t, decltype(du)> d8;
  Dequantizer<decltype(df), kPrescaled> add(p);
  const size_t N = hn::Lanes(df);
  const uint8_t* src = reinterpret_cast<const uint8_t*>(in);
  size_t i = 0;
  for (; i + N <= n; i += N) add(hn::PromoteTo(du, hn::LoadU(d8, src + i)), out + i);
  uint32_t top = i > 0 ? add.top() : 0;
  for (; i < n; ++i) {
    out[i] += p.weight * qsgd_value(src[i], p);
    const uint32_t level = src[i] & p.level_mask;
    top = level > top ? level : top;
  }
  return top;
}

uint32_t UnpackAdd(const std::byte* HWY_RESTRICT in, size_t n, const QsgdDequantParams& p, int bits,
                   float* HWY_RESTRICT out) {
  if (bits == 8) {
    return p.prescaled ? UnpackAddBytesT<true>(in, n, p, out)
                       : UnpackAddBytesT<false>(in, n, p, out);
  }
  if (bits == 4) {
    return p.prescaled ? UnpackAddSlicedT<true, 4>(in, n / 128, p, out)
                       : UnpackAddSlicedT<false, 4>(in, n / 128, p, out);
  }
  return p.prescaled ? UnpackAddSlicedT<true, 2>(in, n / 256, p, out)
                     : UnpackAddSlicedT<false, 2>(in, n / 256, p, out);
}

// The sliced layout is defined on 16 words, never on the vector width: a vector covers 16 / N
// words (or all of them), so every target writes the same bytes.
template <int kBits>
void PackSlicedT(const uint32_t* HWY_RESTRICT codes, size_t groups, std::byte* HWY_RESTRICT out) {
  constexpr int kPerWord = 32 / kBits;
  const hn::CappedTag<uint32_t, 16> du;
  const size_t N = hn::Lanes(du);
  for (size_t g = 0; g < groups; ++g) {
    const uint32_t* c = codes + g * 16 * kPerWord;
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + 64 * g);
    for (size_t j = 0; j < 16; j += N) {
      auto acc = hn::LoadU(du, c + j);
      for (int k = 1; k < kPerWord; ++k)
        acc = hn::Or(acc, hn::ShiftLeftSame(hn::LoadU(du, c + 16 * k + j), kBits * k));
      hn::StoreU(acc, du, dst + j);
    }
  }
}

template <int kBits>
void UnpackSlicedT(const std::byte* HWY_RESTRICT in, size_t groups, uint32_t* HWY_RESTRICT codes) {
  constexpr int kPerWord = 32 / kBits;
  const hn::CappedTag<uint32_t, 16> du;
  const size_t N = hn::Lanes(du);
  const auto mask = hn::Set(du, (1u << kBits) - 1);
  for (size_t g = 0; g < groups; ++g) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(in + 64 * g);
    uint32_t* c = codes + g * 16 * kPerWord;
    for (size_t j = 0; j < 16; j += N) {
      const auto w = hn::LoadU(du, src + j);
      hn::StoreU(hn::And(w, mask), du, c + j);
      for (int k = 1; k < kPerWord; ++k)
        hn::StoreU(hn::And(hn::ShiftRightSame(w, kBits * k), mask), du, c + 16 * k + j);
    }
  }
}

void PackSliced(const uint32_t* HWY_RESTRICT codes, size_t groups, int bits,
                std::byte* HWY_RESTRICT out) {
  if (bits == 2) {
    PackSlicedT<2>(codes, groups, out);
  } else {
    PackSlicedT<4>(codes, groups, out);
  }
}

void UnpackSliced(const std::byte* HWY_RESTRICT in, size_t groups, int bits,
                  uint32_t* HWY_RESTRICT codes) {
  if (bits == 2) {
    UnpackSlicedT<2>(in, groups, codes);
  } else {
    UnpackSlicedT<4>(in, groups, codes);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad::simd {
HWY_EXPORT(Quantize);
HWY_EXPORT(QuantizePack);
HWY_EXPORT(DequantizeAdd);
HWY_EXPORT(UnpackAdd);
HWY_EXPORT(PackSliced);
HWY_EXPORT(UnpackSliced);

void qsgd_quantize(const float* v, const uint16_t* halves, size_t n, const QsgdQuantParams& p,
                   uint32_t* codes) {
  HWY_DYNAMIC_DISPATCH(Quantize)(v, halves, n, p, codes);
}

QsgdDequantParams qsgd_dequant_params(float scale, float weight, int s, int bits) {
  QsgdDequantParams p;
  const float pre = qsgd_prescale(scale);
  p.scale = scale;
  p.unit = (scale * pre) / static_cast<float>(s);
  p.postscale = 1.0f / pre;
  p.prescaled = pre != 1.0f;
  p.weight = weight;
  p.levels = static_cast<uint32_t>(s);
  p.level_mask = (1u << (bits - 1)) - 1;
  p.sign_shift = 32 - bits;
  return p;
}

QsgdQuantParams qsgd_quant_params(float scale, int s, int bits) {
  QsgdQuantParams p;
  p.scale = scale;
  p.levels = static_cast<float>(s);
  p.qlevels = p.levels * 65536.0f;
  p.sign_bit = 1u << (bits - 1);
  p.prescale = qsgd_prescale(scale);
  p.prescaled = p.prescale != 1.0f;
  const float scaled = scale * p.prescale;
  // Rounding is monotone: with scaled * inv >= s, every |x| <= scale has r <= min(s, ...) and
  // the largest element lands on s itself.
  float inv = p.levels / scaled;
  while (scaled * inv < p.levels) inv = std::nextafter(inv, HUGE_VALF);
  p.inv = inv;
  p.qinv = p.inv * 65536.0f;
  return p;
}

void qsgd_quantize_pack(const float* v, const uint16_t* halves, size_t n, const QsgdQuantParams& p,
                        int bits, std::byte* out) {
  HWY_DYNAMIC_DISPATCH(QuantizePack)(v, halves, n, p, bits, out);
}
uint32_t qsgd_unpack_add(const std::byte* in, size_t n, const QsgdDequantParams& p, int bits,
                         float* out) {
  return HWY_DYNAMIC_DISPATCH(UnpackAdd)(in, n, p, bits, out);
}
uint32_t qsgd_dequantize_add(const uint32_t* codes, size_t n, const QsgdDequantParams& p,
                             float* out) {
  return HWY_DYNAMIC_DISPATCH(DequantizeAdd)(codes, n, p, out);
}
void qsgd_pack_sliced(const uint32_t* codes, size_t groups, int bits, std::byte* out) {
  HWY_DYNAMIC_DISPATCH(PackSliced)(codes, groups, bits, out);
}
void qsgd_unpack_sliced(const std::byte* in, size_t groups, int bits, uint32_t* codes) {
  HWY_DYNAMIC_DISPATCH(UnpackSliced)(in, groups, bits, codes);
}
}  // namespace qgrad::simd
#endif
