#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/int8_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cstring>

#include "core/simd/int8_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace qgrad::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using DU16 = hn::Rebind<uint16_t, DF>;
using DI8 = hn::Rebind<int8_t, DF>;
using DU8 = hn::Rebind<uint8_t, DF>;

// Room for one vector of any target on a padded copy of a tail.
constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// uniform_from_word of the element word (h << 16) | 0x8000 is (h + 1/2) / 65536, exactly the
// float 1.m with mantissa (h << 7) | 0x40, minus 1 (exact).
HWY_INLINE hn::Vec<DF> Uniform(const uint16_t* HWY_RESTRICT random) {
  const DF df;
  const DU du;
  const auto h = hn::PromoteTo(du, hn::LoadU(DU16(), random));
  const auto one_m = hn::BitCast(df, hn::Or(hn::ShiftLeft<7>(h), hn::Set(du, 0x3F800040u)));
  return hn::Sub(one_m, hn::Set(df, 1.0f));
}

// An integer-valued float k with |k| <= 2^22 plus 1.5 * 2^23 holds k (two's complement) in the
// low bits of its representation: the low byte is the int8 code, without a conversion.
constexpr float kMagic = 12582912.0f;

HWY_INLINE void StoreLowBytes(hn::Vec<DF> k, int8_t* HWY_RESTRICT codes) {
  const DF df;
  const auto bits = hn::BitCast(DU(), hn::Add(k, hn::Set(df, kMagic)));
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  // One vpmovdb instead of Highway 1.0's shuffle pair.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(bits.raw));
#else
  hn::StoreU(hn::TruncateTo(DU8(), bits), DU8(), reinterpret_cast<uint8_t*>(codes));
#endif
}

HWY_INLINE hn::Mask<DF> RoundUp(const uint16_t* HWY_RESTRICT random, hn::Vec<DF> frac,
                                bool stochastic) {
  const DF df;
  return stochastic ? hn::Lt(Uniform(random), frac) : hn::Ge(frac, hn::Set(df, 0.5f));
}

// kRescaled: the bucket's prescale is not 1 (|x| * 1 is exact, so skipping it changes nothing).
template <bool kStochastic, bool kRescaled>
HWY_INLINE void EncodeLinearVector(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random,
                                   hn::Vec<DF> prescale, hn::Vec<DF> inv,
                                   int8_t* HWY_RESTRICT codes) {
  const DF df;
  const auto v = hn::LoadU(df, x);
  const auto scaled = kRescaled ? hn::Mul(hn::Abs(v), prescale) : hn::Abs(v);
  const auto a = hn::Min(hn::Mul(scaled, inv), hn::Set(df, 127.0f));
  const auto low = hn::Floor(a);
  const auto up = RoundUp(random, hn::Sub(a, low), kStochastic);
  StoreLowBytes(hn::CopySign(hn::IfThenElse(up, hn::Add(low, hn::Set(df, 1.0f)), low), v), codes);
}

HWY_INLINE void EncodeTableVector(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random,
                                  float prescale, float inv, bool stochastic,
                                  const Int8MagnitudeTables& t, int8_t* HWY_RESTRICT codes) {
  const DF df;
  const DI di;
  const auto v = hn::LoadU(df, x);
  const auto a = hn::Min(hn::Mul(hn::Mul(hn::Abs(v), hn::Set(df, prescale)), hn::Set(df, inv)),
                         hn::Set(df, 1.0f));
  const auto key =
      hn::Max(hn::Sub(hn::ShiftRight<kInt8KeyShift>(hn::BitCast(di, a)), hn::Set(di, kInt8KeyBase)),
              hn::Zero(di));
  const auto start = hn::GatherIndex(di, t.start, key);
  const auto next = hn::GatherIndex(df, t.magnitude, hn::Add(start, hn::Set(di, 1)));
  const auto j =
      hn::Add(start, hn::IfThenElseZero(hn::RebindMask(di, hn::Ge(a, next)), hn::Set(di, 1)));
  const auto frac = hn::Mul(hn::Sub(a, hn::GatherIndex(df, t.magnitude, j)),
                            hn::GatherIndex(df, t.inverse_gap, j));
  const auto up = RoundUp(random, frac, stochastic);
  const auto k = hn::Add(j, hn::IfThenElseZero(hn::RebindMask(di, up), hn::Set(di, 1)));
  const auto negative = hn::RebindMask(di, hn::Lt(v, hn::Zero(df)));
  const auto signed_k = hn::IfThenElse(negative, hn::Neg(k), k);
  hn::StoreU(hn::TruncateTo(DU8(), hn::BitCast(DU(), signed_k)), DU8(),
             reinterpret_cast<uint8_t*>(codes));
}

// Runs `vector_fn(x, random, codes)` over [0, n), the tail on zero-padded copies so that it goes
// through exactly the same operations.
template <class Fn>
HWY_INLINE void EncodeLoop(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random,
                           size_t n, bool stochastic, const float* prefetch,
                           int8_t* HWY_RESTRICT codes, const Fn& vector_fn) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  if (prefetch != nullptr) {
    for (; i + lanes <= n; i += lanes) {
      // To L2 (T1): a T0 prefetch evicts the current chunk from L1.
      __builtin_prefetch(prefetch + i, 0, 2);
      vector_fn(x + i, stochastic ? random + i : nullptr, codes + i);
    }
  }
  for (; i + lanes <= n; i += lanes) vector_fn(x + i, stochastic ? random + i : nullptr, codes + i);
  if (i == n) return;
  HWY_ALIGN float xt[kMaxLanes] = {};
  HWY_ALIGN uint16_t rt[kMaxLanes] = {};
  HWY_ALIGN int8_t ct[kMaxLanes] = {};
  std::memcpy(xt, x + i, (n - i) * sizeof(float));
  if (stochastic) std::memcpy(rt, random + i, (n - i) * sizeof(uint16_t));
  vector_fn(xt, rt, ct);
  std::memcpy(codes + i, ct, n - i);
}

template <bool kStochastic, bool kRescaled>
HWY_INLINE void EncodeLinear(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random,
                             size_t n, float prescale, float inv, const float* prefetch,
                             int8_t* HWY_RESTRICT codes) {
  const DF df;
  const auto vp = hn::Set(df, prescale), vi = hn::Set(df, inv);
  EncodeLoop(x, random, n, kStochastic, prefetch, codes,
             [&](const float* xv, const uint16_t* rv, int8_t* cv) {
               EncodeLinearVector<kStochastic, kRescaled>(xv, rv, vp, vi, cv);
             });
}

void Int8EncodeLinear(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random, size_t n,
                      float prescale, float inv, bool stochastic, const float* prefetch,
                      int8_t* HWY_RESTRICT codes) {
  if (stochastic) {
    if (prescale == 1.0f)
      return EncodeLinear<true, false>(x, random, n, prescale, inv, prefetch, codes);
    return EncodeLinear<true, true>(x, random, n, prescale, inv, prefetch, codes);
  }
  if (prescale == 1.0f)
    return EncodeLinear<false, false>(x, random, n, prescale, inv, prefetch, codes);
  EncodeLinear<false, true>(x, random, n, prescale, inv, prefetch, codes);
}

void Int8EncodeTable(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random, size_t n,
                     float prescale, float inv, bool stochastic, const Int8MagnitudeTables& t,
                     const float* prefetch, int8_t* HWY_RESTRICT codes) {
  EncodeLoop(x, random, n, stochastic, prefetch, codes,
             [&](const float* xv, const uint16_t* rv, int8_t* cv) {
               EncodeTableVector(xv, rv, prescale, inv, stochastic, t, cv);
             });
}

template <class Fn>
HWY_INLINE void DecodeLoop(const int8_t* HWY_RESTRICT codes, size_t n, float* HWY_RESTRICT out,
                           const Fn& vector_fn) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) vector_fn(codes + i, out + i);
  if (i == n) return;
  HWY_ALIGN int8_t ct[kMaxLanes] = {};
  HWY_ALIGN float ot[kMaxLanes] = {};
  std::memcpy(ct, codes + i, n - i);
  std::memcpy(ot, out + i, (n - i) * sizeof(float));
  vector_fn(ct, ot);
  std::memcpy(out + i, ot, (n - i) * sizeof(float));
}

void Int8DecodeLinear(const int8_t* HWY_RESTRICT codes, size_t n, float scale,
                      float* HWY_RESTRICT out) {
  const DF df;
  const DI di;
  const auto vs = hn::Set(df, scale);
  DecodeLoop(codes, n, out, [&](const int8_t* c, float* o) {
    const auto k = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(DI8(), c)));
    hn::StoreU(hn::Add(hn::LoadU(df, o), hn::Mul(vs, k)), df, o);
  });
}

void Int8DecodeTable(const int8_t* HWY_RESTRICT codes, size_t n, float scale,
                     const float* HWY_RESTRICT value, float* HWY_RESTRICT out) {
  const DF df;
  const DI di;
  const DU du;
  const auto vs = hn::Set(df, scale);
  DecodeLoop(codes, n, out, [&](const int8_t* c, float* o) {
    const auto byte = hn::PromoteTo(du, hn::LoadU(DU8(), reinterpret_cast<const uint8_t*>(c)));
    const auto v = hn::GatherIndex(df, value, hn::BitCast(di, byte));
    hn::StoreU(hn::Add(hn::LoadU(df, o), hn::Mul(vs, v)), df, o);
  });
}

bool Int8Contains(const int8_t* HWY_RESTRICT codes, size_t n, int8_t code) {
  const hn::ScalableTag<int8_t> d8;
  const size_t lanes = hn::Lanes(d8);
  const auto target = hn::Set(d8, code);
  size_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    const auto m0 = hn::Or(hn::VecFromMask(d8, hn::Eq(hn::LoadU(d8, codes + i), target)),
                           hn::VecFromMask(d8, hn::Eq(hn::LoadU(d8, codes + i + lanes), target)));
    const auto m1 =
        hn::Or(hn::VecFromMask(d8, hn::Eq(hn::LoadU(d8, codes + i + 2 * lanes), target)),
               hn::VecFromMask(d8, hn::Eq(hn::LoadU(d8, codes + i + 3 * lanes), target)));
    if (!hn::AllFalse(d8, hn::MaskFromVec(hn::Or(m0, m1)))) return true;
  }
  for (; i < n; ++i)
    if (codes[i] == code) return true;
  return false;
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad::simd {
HWY_EXPORT(Int8EncodeLinear);
HWY_EXPORT(Int8EncodeTable);
HWY_EXPORT(Int8DecodeLinear);
HWY_EXPORT(Int8DecodeTable);
HWY_EXPORT(Int8Contains);

void int8_encode_linear(const float* x, const uint16_t* random, size_t n, float prescale, float inv,
                        bool stochastic, const float* prefetch, int8_t* codes) {
  HWY_DYNAMIC_DISPATCH(Int8EncodeLinear)(x, random, n, prescale, inv, stochastic, prefetch, codes);
}
void int8_encode_table(const float* x, const uint16_t* random, size_t n, float prescale, float inv,
                       bool stochastic, const Int8MagnitudeTables& t, const float* prefetch,
                       int8_t* codes) {
  HWY_DYNAMIC_DISPATCH(Int8EncodeTable)
  (x, random, n, prescale, inv, stochastic, t, prefetch, codes);
}
void int8_decode_linear(const int8_t* codes, size_t n, float scale, float* out) {
  HWY_DYNAMIC_DISPATCH(Int8DecodeLinear)(codes, n, scale, out);
}
void int8_decode_table(const int8_t* codes, size_t n, float scale, const float* value, float* out) {
  HWY_DYNAMIC_DISPATCH(Int8DecodeTable)(codes, n, scale, value, out);
}
bool int8_contains(const int8_t* codes, size_t n, int8_t code) {
  return HWY_DYNAMIC_DISPATCH(Int8Contains)(codes, n, code);
}
}  // namespace qgrad::simd
#endif
