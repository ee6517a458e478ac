#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/zipml_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/simd/zipml_kernels.h"

static_assert(std::endian::native == std::endian::little,
              "the packed wire layout is defined on little-endian words");

HWY_BEFORE_NAMESPACE();
namespace qgrad::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using DU16 = hn::Rebind<uint16_t, DF>;
using DU8 = hn::Rebind<uint8_t, DF>;

constexpr size_t kZipmlMaxLanes = HWY_MAX_BYTES / sizeof(float);

// uniform_from_word of the element word (h << 16) | 0x8000 is (h + 1/2) / 65536, exactly the
// float 1.m with mantissa (h << 7) | 0x40, minus 1 (exact).
HWY_INLINE hn::Vec<DF> ZipmlUniform(const uint16_t* HWY_RESTRICT random) {
  const DF df;
  const DU du;
  const auto h = hn::PromoteTo(du, hn::LoadU(DU16(), random));
  const auto one_m = hn::BitCast(df, hn::Or(hn::ShiftLeft<7>(h), hn::Set(du, 0x3F800040u)));
  return hn::Sub(one_m, hn::Set(df, 1.0f));
}

// An integer-valued float k in [0, 2^22] plus 1.5 * 2^23 holds k in the low bits of its
// representation: the low byte is the index, without a conversion.
constexpr float kZipmlMagic = 12582912.0f;

// kRescaled: the bucket's prescale is not 1 (a product by 1 is exact, so skipping it changes
// nothing).
template <bool kRescaled>
HWY_INLINE void ZipmlEncodeVector(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random,
                                  hn::Vec<DF> lo, hn::Vec<DF> prescale, hn::Vec<DF> inv_step,
                                  hn::Vec<DF> top, uint8_t* HWY_RESTRICT index) {
  const DF df;
  const auto shifted = hn::Sub(hn::LoadU(df, x), lo);
  const auto t = hn::Min(hn::Mul(kRescaled ? hn::Mul(shifted, prescale) : shifted, inv_step), top);
  const auto low = hn::Floor(t);
  const auto up = hn::Lt(ZipmlUniform(random), hn::Sub(t, low));
  const auto k = hn::IfThenElse(up, hn::Add(low, hn::Set(df, 1.0f)), low);
  const auto bits = hn::BitCast(DU(), hn::Add(k, hn::Set(df, kZipmlMagic)));
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  // One vpmovdb instead of Highway 1.0's shuffle pair.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(index), _mm512_cvtepi32_epi8(bits.raw));
#else
  hn::StoreU(hn::TruncateTo(DU8(), bits), DU8(), index);
#endif
}

template <bool kRescaled>
HWY_INLINE void ZipmlEncode(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random,
                            size_t n, float lo, float prescale, float inv_step, float top,
                            const float* prefetch, uint8_t* HWY_RESTRICT index) {
  const DF df;
  const auto vlo = hn::Set(df, lo), vp = hn::Set(df, prescale), vi = hn::Set(df, inv_step),
             vt = hn::Set(df, top);
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  if (prefetch != nullptr) {
    for (; i + lanes <= n; i += lanes) {
      // To L2 (T1): a T0 prefetch evicts the current chunk from L1.
      __builtin_prefetch(prefetch + i, 0, 2);
      ZipmlEncodeVector<kRescaled>(x + i, random + i, vlo, vp, vi, vt, index + i);
    }
  }
  for (; i + lanes <= n; i += lanes)
    ZipmlEncodeVector<kRescaled>(x + i, random + i, vlo, vp, vi, vt, index + i);
  if (i == n) return;
  // The tail runs the same vector code on a copy padded with lo (index 0).
  HWY_ALIGN float xt[kZipmlMaxLanes];
  HWY_ALIGN uint16_t rt[kZipmlMaxLanes] = {};
  HWY_ALIGN uint8_t it[kZipmlMaxLanes];
  for (size_t l = 0; l < kZipmlMaxLanes; ++l) xt[l] = lo;
  std::memcpy(xt, x + i, (n - i) * sizeof(float));
  std::memcpy(rt, random + i, (n - i) * sizeof(uint16_t));
  ZipmlEncodeVector<kRescaled>(xt, rt, vlo, vp, vi, vt, it);
  std::memcpy(index + i, it, n - i);
}

void ZipmlUniformEncode(const float* HWY_RESTRICT x, const uint16_t* HWY_RESTRICT random, size_t n,
                        float lo, float prescale, float inv_step, float top, const float* prefetch,
                        uint8_t* HWY_RESTRICT index) {
  if (prescale == 1.0f) {
    ZipmlEncode<false>(x, random, n, lo, prescale, inv_step, top, prefetch, index);
  } else {
    ZipmlEncode<true>(x, random, n, lo, prescale, inv_step, top, prefetch, index);
  }
}

HWY_INLINE void ZipmlDecodeVector(const uint8_t* HWY_RESTRICT index, float lo, float step, float hi,
                                  float weight, float* HWY_RESTRICT out) {
  const DF df;
  const auto j = hn::ConvertTo(df, hn::BitCast(DI(), hn::PromoteTo(DU(), hn::LoadU(DU8(), index))));
  const auto level =
      hn::Min(hn::Add(hn::Set(df, lo), hn::Mul(j, hn::Set(df, step))), hn::Set(df, hi));
  hn::StoreU(hn::Add(hn::LoadU(df, out), hn::Mul(hn::Set(df, weight), level)), df, out);
}

void ZipmlUniformDecode(const uint8_t* HWY_RESTRICT index, size_t n, float lo, float step, float hi,
                        float weight, float* HWY_RESTRICT out) {
  const size_t lanes = hn::Lanes(DF());
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) ZipmlDecodeVector(index + i, lo, step, hi, weight, out + i);
  if (i == n) return;
  HWY_ALIGN uint8_t it[kZipmlMaxLanes] = {};
  HWY_ALIGN float ot[kZipmlMaxLanes] = {};
  std::memcpy(it, index + i, n - i);
  std::memcpy(ot, out + i, (n - i) * sizeof(float));
  ZipmlDecodeVector(it, lo, step, hi, weight, ot);
  std::memcpy(out + i, ot, (n - i) * sizeof(float));
}

// Min and max with the non-finite check fused in (the max of |x|'s bits reaches the exponent of
// Inf only for Inf or NaN): one pass instead of a finiteness pass plus a min/max pass.
bool ZipmlRange(const float* HWY_RESTRICT x, size_t n, float* lo, float* hi) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(df);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  auto vlo = hn::Set(df, x[0]), vhi = vlo;
  auto vlo2 = vlo, vhi2 = vlo;
  auto bits = hn::Zero(du), bits2 = bits;
  size_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    const auto v = hn::LoadU(df, x + i), w = hn::LoadU(df, x + i + lanes);
    vlo = hn::Min(vlo, v);
    vhi = hn::Max(vhi, v);
    vlo2 = hn::Min(vlo2, w);
    vhi2 = hn::Max(vhi2, w);
    bits = hn::Max(bits, hn::And(hn::BitCast(du, v), abs_mask));
    bits2 = hn::Max(bits2, hn::And(hn::BitCast(du, w), abs_mask));
  }
  float l = hn::GetLane(hn::MinOfLanes(df, hn::Min(vlo, vlo2)));
  float h = hn::GetLane(hn::MaxOfLanes(df, hn::Max(vhi, vhi2)));
  uint32_t b = hn::GetLane(hn::MaxOfLanes(du, hn::Max(bits, bits2)));
  for (; i < n; ++i) {
    uint32_t xb;
    std::memcpy(&xb, x + i, 4);
    xb &= 0x7FFFFFFFu;
    b = xb > b ? xb : b;
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
  }
  // Which zero a min or max of -0 and +0 is depends on the order of the reduction: make it +0.
  *lo = l + 0.0f;
  *hi = h + 0.0f;
  return b < 0x7F800000u;
}

// 4-bit fields: a 16-bit lane holds two indices (lo | hi << 8); (v | v >> 4) & 0xFF packs them.
// Returns how many indices were packed (a multiple of 2 * lanes); the caller packs the rest.
size_t ZipmlPack4(const uint8_t* HWY_RESTRICT index, size_t n, uint8_t* HWY_RESTRICT out) {
  const hn::ScalableTag<uint16_t> d16;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const size_t lanes = hn::Lanes(d16);
  const auto low_byte = hn::Set(d16, uint16_t{0xFF});
  size_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    const auto v = hn::LoadU(d16, reinterpret_cast<const uint16_t*>(index + i));
    hn::StoreU(hn::TruncateTo(d8, hn::And(hn::Or(v, hn::ShiftRight<4>(v)), low_byte)), d8,
               out + i / 2);
  }
  return i;
}

size_t ZipmlUnpack4(const uint8_t* HWY_RESTRICT in, size_t n, uint8_t* HWY_RESTRICT index) {
  const hn::ScalableTag<uint16_t> d16;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const size_t lanes = hn::Lanes(d16);
  const auto low_nibble = hn::Set(d16, uint16_t{0x0F});
  const auto high_nibble = hn::Set(d16, uint16_t{0xF0});
  size_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    const auto v = hn::PromoteTo(d16, hn::LoadU(d8, in + i / 2));
    const auto pair = hn::Or(hn::And(v, low_nibble), hn::ShiftLeft<4>(hn::And(v, high_nibble)));
    hn::StoreU(pair, d16, reinterpret_cast<uint16_t*>(index + i));
  }
  return i;
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad::simd {
namespace {

// Packing 8 indices of B bits held in the 8 bytes of a word: each stage merges neighbouring
// fields of width f at stride s into fields of width 2f at stride 2s, until one field of 8B bits
// is left in the low bits.
constexpr uint64_t field_mask(int width, int stride, int offset) {
  uint64_t m = 0;
  for (int at = 0; at < 64; at += stride) m |= ((uint64_t{1} << width) - 1) << (at + offset);
  return m;
}

// One packing stage: fields of width F at stride S become fields of width 2F at stride 2S.
template <int F, int S>
uint64_t pack_stage(uint64_t x) {
  x = (x & field_mask(F, 2 * S, 0)) | ((x >> (S - F)) & field_mask(F, 2 * S, F));
  if constexpr (2 * S < 64) return pack_stage<2 * F, 2 * S>(x);
  return x;
}

// One unpacking stage: fields of width 2F at stride 2S become fields of width F at stride S.
template <int F, int S>
uint64_t unpack_stage(uint64_t x) {
  x = (x & field_mask(F, 2 * S, 0)) | ((x << (S - F)) & field_mask(F, 2 * S, S));
  if constexpr (S > 8) return unpack_stage<F / 2, S / 2>(x);
  return x;
}

template <int B>
uint64_t pack_word(uint64_t x) {
  return pack_stage<B, 8>(x);
}

template <int B>
uint64_t unpack_word(uint64_t x) {
  return unpack_stage<4 * B, 32>(x);
}

// Whole words are stored and loaded where they stay inside the call's bytes (a partial-word
// memcpy costs a store-forwarding stall per group); the bytes a store writes beyond its group are
// rewritten by the next group's store.
template <int B>
void pack_groups(const uint8_t* index, size_t n, uint8_t* out) {
  const size_t bytes = (n * B + 7) / 8;
  size_t g = 0;
  for (; g + 8 <= n && g / 8 * B + 8 <= bytes; g += 8) {
    uint64_t x;
    std::memcpy(&x, index + g, 8);
    x = pack_word<B>(x);
    std::memcpy(out + g / 8 * B, &x, 8);
  }
  for (; g < n; g += 8) {
    uint64_t x = 0;
    std::memcpy(&x, index + g, std::min<size_t>(8, n - g));
    x = pack_word<B>(x);
    std::memcpy(out + g / 8 * B, &x, (std::min<size_t>(8, n - g) * B + 7) / 8);
  }
}

template <int B>
void unpack_groups(const uint8_t* in, size_t n, uint8_t* index) {
  const size_t bytes = (n * B + 7) / 8;
  constexpr uint64_t kLow = (uint64_t{1} << (8 * B)) - 1;
  size_t g = 0;
  for (; g + 8 <= n && g / 8 * B + 8 <= bytes; g += 8) {
    uint64_t x;
    std::memcpy(&x, in + g / 8 * B, 8);
    x = unpack_word<B>(x & kLow);
    std::memcpy(index + g, &x, 8);
  }
  for (; g < n; g += 8) {
    uint64_t x = 0;
    std::memcpy(&x, in + g / 8 * B, (std::min<size_t>(8, n - g) * B + 7) / 8);
    x = unpack_word<B>(x);
    std::memcpy(index + g, &x, std::min<size_t>(8, n - g));
  }
}

}  // namespace

HWY_EXPORT(ZipmlRange);
HWY_EXPORT(ZipmlUniformEncode);
HWY_EXPORT(ZipmlUniformDecode);
HWY_EXPORT(ZipmlPack4);
HWY_EXPORT(ZipmlUnpack4);

bool zipml_range(const float* x, size_t n, float* lo, float* hi) {
  return HWY_DYNAMIC_DISPATCH(ZipmlRange)(x, n, lo, hi);
}

void zipml_uniform_encode(const float* x, const uint16_t* random, size_t n, float lo,
                          float prescale, float inv_step, float top, const float* prefetch,
                          uint8_t* index) {
  HWY_DYNAMIC_DISPATCH(ZipmlUniformEncode)
  (x, random, n, lo, prescale, inv_step, top, prefetch, index);
}

void zipml_uniform_decode(const uint8_t* index, size_t n, float lo, float step, float hi,
                          float weight, float* out) {
  HWY_DYNAMIC_DISPATCH(ZipmlUniformDecode)(index, n, lo, step, hi, weight, out);
}

void zipml_pack(const uint8_t* index, size_t n, int bits, uint8_t* out) {
  if (n == 0) return;  // the pointers may be null
  switch (bits) {
    case 1:
      return pack_groups<1>(index, n, out);
    case 2:
      return pack_groups<2>(index, n, out);
    case 3:
      return pack_groups<3>(index, n, out);
    case 4: {
      const size_t done = HWY_DYNAMIC_DISPATCH(ZipmlPack4)(index, n, out);
      return pack_groups<4>(index + done, n - done, out + done / 2);
    }
    case 5:
      return pack_groups<5>(index, n, out);
    case 6:
      return pack_groups<6>(index, n, out);
    case 7:
      return pack_groups<7>(index, n, out);
    default:
      std::memcpy(out, index, n);
  }
}

void zipml_unpack(const uint8_t* in, size_t n, int bits, uint8_t* index) {
  if (n == 0) return;  // the pointers may be null
  switch (bits) {
    case 1:
      return unpack_groups<1>(in, n, index);
    case 2:
      return unpack_groups<2>(in, n, index);
    case 3:
      return unpack_groups<3>(in, n, index);
    case 4: {
      const size_t done = HWY_DYNAMIC_DISPATCH(ZipmlUnpack4)(in, n, index);
      return unpack_groups<4>(in + done / 2, n - done, index + done);
    }
    case 5:
      return unpack_groups<5>(in, n, index);
    case 6:
      return unpack_groups<6>(in, n, index);
    case 7:
      return unpack_groups<7>(in, n, index);
    default:
      std::memcpy(index, in, n);
  }
}

}  // namespace qgrad::simd
#endif
