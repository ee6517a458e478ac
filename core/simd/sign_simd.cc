// Highway kernels of core/simd/sign_kernels.h. Bits are produced and consumed 64 elements (one
// uint64 of sign bits, 128 bits of ternary codes) or one vector at a time; the scalar head and
// tail code computes the same predicates with the same float operations.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/sign_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cmath>
#include <cstring>

#include "core/philox.h"
#include "core/simd/sign_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace qgrad::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// A mask's lanes as the low bits of a word (at most 64 lanes).
template <class D, class M>
HWY_INLINE uint64_t MaskToBits(D d, M m) {
  uint8_t buf[8] = {};
  hn::StoreMaskBits(d, m, buf);
  uint64_t r;
  std::memcpy(&r, buf, 8);
  return r;
}

bool PackSigns(const float* HWY_RESTRICT x, size_t n, std::byte* HWY_RESTRICT bits) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const size_t N = hn::Lanes(df);
  uint8_t* out = reinterpret_cast<uint8_t*>(bits);
  const auto zero = hn::Zero(df);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  // Unsigned max of |x| as bits: NaN and Inf sort above every finite value.
  auto worst = hn::Zero(du);
  size_t i = 0;
  if (N >= 8 && N % 8 == 0) {
    // Each vector's mask is a whole number of bytes: store it in place.
    for (; i + N <= n; i += N) {
      const auto v = hn::LoadU(df, x + i);
      worst = hn::Max(worst, hn::And(hn::BitCast(du, v), abs_mask));
      hn::StoreMaskBits(df, hn::Lt(v, zero), out + i / 8);
    }
  } else if (N < 8 && 8 % N == 0) {
    for (; i + 8 <= n; i += 8) {
      uint32_t byte = 0;
      for (size_t j = 0; j < 8; j += N) {
        const auto v = hn::LoadU(df, x + i + j);
        worst = hn::Max(worst, hn::And(hn::BitCast(du, v), abs_mask));
        byte |= static_cast<uint32_t>(MaskToBits(df, hn::Lt(v, zero))) << j;
      }
      out[i / 8] = static_cast<uint8_t>(byte);
    }
  }
  uint32_t worst_bits = hn::GetLane(hn::MaxOfLanes(du, worst));
  if (i < n) std::memset(out + i / 8, 0, (n - i + 7) / 8);
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    b &= 0x7FFFFFFFu;
    worst_bits = b > worst_bits ? b : worst_bits;
    if (x[i] < 0.0f) out[i / 8] = static_cast<uint8_t>(out[i / 8] | (1u << (i % 8)));
  }
  return worst_bits < 0x7F800000u;
}

template <bool kAccumulate>
void ExpandSignsT(const uint8_t* HWY_RESTRICT bits, size_t first_bit, size_t n, float pos,
                  float neg, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const size_t N = hn::Lanes(df);
  const auto scalar = [&](size_t i) {
    const size_t b = first_bit + i;
    const float v = ((bits[b / 8] >> (b % 8)) & 1) ? neg : pos;
    if (kAccumulate) {
      out[i] += v;
    } else {
      out[i] = v;
    }
  };
  size_t i = 0;
  for (; i < n && (first_bit + i) % 8 != 0; ++i) scalar(i);
  if (N <= 32 && 64 % N == 0) {
    HWY_ALIGN uint32_t lane_bits[32];
    for (size_t k = 0; k < N; ++k) lane_bits[k] = 1u << k;
    const auto vbit = hn::Load(du, lane_bits);
    const auto vpos = hn::Set(df, pos), vneg = hn::Set(df, neg);
    for (; i + 64 <= n; i += 64) {
      uint64_t w;
      std::memcpy(&w, bits + (first_bit + i) / 8, 8);
      for (size_t j = 0; j < 64; j += N) {
        const auto m = hn::TestBit(hn::Set(du, static_cast<uint32_t>(w >> j)), vbit);
        const auto v = hn::IfThenElse(hn::RebindMask(df, m), vneg, vpos);
        if (kAccumulate) {
          hn::StoreU(hn::Add(hn::LoadU(df, out + i + j), v), df, out + i + j);
        } else {
          hn::StoreU(v, df, out + i + j);
        }
      }
    }
  }
  for (; i < n; ++i) scalar(i);
}

void ExpandSigns(const std::byte* HWY_RESTRICT bits, size_t first_bit, size_t n, float pos,
                 float neg, float* HWY_RESTRICT out, bool accumulate) {
  const auto* b = reinterpret_cast<const uint8_t*>(bits);
  if (accumulate) {
    ExpandSignsT<true>(b, first_bit, n, pos, neg, out);
  } else {
    ExpandSignsT<false>(b, first_bit, n, pos, neg, out);
  }
}

void TernaryMasks(const float* HWY_RESTRICT x, size_t n, const uint32_t* HWY_RESTRICT words,
                  float s, uint64_t* HWY_RESTRICT pos, uint64_t* HWY_RESTRICT neg) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  if (N <= 64 && 64 % N == 0) {
    const auto vs = hn::Set(df, s);
    const auto inv24 = hn::Set(df, 1.0f / 16777216.0f);
    const auto zero = hn::Zero(df);
    for (; i + 64 <= n; i += 64) {
      uint64_t p = 0, q = 0;
      for (size_t j = 0; j < 64; j += N) {
        const auto v = hn::LoadU(df, x + i + j);
        const auto w = hn::ShiftRight<8>(hn::LoadU(du, words + i + j));
        // uniform_from_word in lanes: the 24-bit integer converts exactly.
        const auto u = hn::Mul(hn::ConvertTo(df, hn::BitCast(di, w)), inv24);
        const auto keep = hn::Lt(hn::Mul(u, vs), hn::Abs(v));
        const auto negative = hn::Lt(v, zero);
        p |= MaskToBits(df, hn::AndNot(negative, keep)) << j;
        q |= MaskToBits(df, hn::And(negative, keep)) << j;
      }
      pos[i / 64] = p;
      neg[i / 64] = q;
    }
  }
  if (i < n) {
    uint64_t p = 0, q = 0;
    for (size_t j = 0; i + j < n; ++j) {
      const float v = x[i + j];
      const bool keep = uniform_from_word(words[i + j]) * s < std::fabs(v);
      p |= static_cast<uint64_t>(keep && !(v < 0.0f)) << j;
      q |= static_cast<uint64_t>(keep && v < 0.0f) << j;
    }
    pos[i / 64] = p;
    neg[i / 64] = q;
  }
}

void AddTernary(const std::byte* HWY_RESTRICT codes, size_t first_code, size_t n, float pos,
                float neg, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const size_t N = hn::Lanes(df);
  const auto* c8 = reinterpret_cast<const uint8_t*>(codes);
  const auto scalar = [&](size_t i) {
    const size_t c = first_code + i;
    const uint32_t code = (c8[c / 4] >> (2 * (c % 4))) & 3u;
    out[i] += code == 1 ? pos : code == 2 ? neg : 0.0f;
  };
  size_t i = 0;
  for (; i < n && (first_code + i) % 4 != 0; ++i) scalar(i);
  if (N <= 16 && 16 % N == 0) {
    HWY_ALIGN uint32_t even[16], odd[16];
    for (size_t k = 0; k < N; ++k) {
      even[k] = 1u << (2 * k);
      odd[k] = 2u << (2 * k);
    }
    const auto veven = hn::Load(du, even), vodd = hn::Load(du, odd);
    const auto vpos = hn::Set(df, pos), vneg = hn::Set(df, neg);
    for (; i + 16 <= n; i += 16) {
      uint32_t w;
      std::memcpy(&w, c8 + (first_code + i) / 4, 4);
      for (size_t j = 0; j < 16; j += N) {
        const auto c = hn::Set(du, w >> (2 * j));
        const auto v =
            hn::IfThenElse(hn::RebindMask(df, hn::TestBit(c, veven)), vpos,
                           hn::IfThenElseZero(hn::RebindMask(df, hn::TestBit(c, vodd)), vneg));
        hn::StoreU(hn::Add(hn::LoadU(df, out + i + j), v), df, out + i + j);
      }
    }
  }
  for (; i < n; ++i) scalar(i);
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad::simd {
HWY_EXPORT(PackSigns);
HWY_EXPORT(ExpandSigns);
HWY_EXPORT(TernaryMasks);
HWY_EXPORT(AddTernary);

bool pack_signs(const float* x, size_t n, std::byte* bits) {
  return HWY_DYNAMIC_DISPATCH(PackSigns)(x, n, bits);
}
void expand_signs(const std::byte* bits, size_t first_bit, size_t n, float pos, float neg,
                  float* out, bool accumulate) {
  HWY_DYNAMIC_DISPATCH(ExpandSigns)(bits, first_bit, n, pos, neg, out, accumulate);
}
void ternary_masks(const float* x, size_t n, const uint32_t* words, float s, uint64_t* pos,
                   uint64_t* neg) {
  HWY_DYNAMIC_DISPATCH(TernaryMasks)(x, n, words, s, pos, neg);
}
void add_ternary(const std::byte* codes, size_t first_code, size_t n, float pos, float neg,
                 float* out) {
  HWY_DYNAMIC_DISPATCH(AddTernary)(codes, first_code, n, pos, neg, out);
}
}  // namespace qgrad::simd
#endif
