// SIMD Philox4x32-10: each vector lane runs one independent Philox instance, so a vector of N
// lanes produces 4N words per pass. The words are bit-identical to philox4x32 (core/philox.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/simd/philox_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>

#include "core/philox.h"

HWY_BEFORE_NAMESPACE();
namespace qgrad {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
// One lane: the scalar reference, a whole block (4 words) per call.
void PhiloxFillRaw(const RngKey& key, uint64_t first, size_t n, uint32_t* HWY_RESTRICT out) {
  const PhiloxKey k = philox_key(key);
  for (size_t i = 0; i < n;) {
    const uint64_t index = first + i;
    const PhiloxCounter w = philox4x32(philox_counter(key, index / 4), k);
    for (size_t lane = index % 4; lane < 4 && i < n; ++lane, ++i) out[i] = w[lane];
  }
}
#else
// Each 64-bit lane holds one Philox instance's 32-bit word in its low half. MulEven multiplies
// the low halves into a full 64-bit product, so hi = product >> 32 and lo = product need no
// shuffles. The high halves of `lo` carry garbage that only ever flows into high halves, which
// MulEven ignores; the output takes the low halves.
void PhiloxFillRaw(const RngKey& key, uint64_t first, size_t n, uint32_t* HWY_RESTRICT out) {
  const PhiloxKey k = philox_key(key);
  size_t done = 0;
  while (done < n && (first + done) % 4 != 0) {  // head up to a block boundary
    out[done] = philox_raw_word(key, first + done);
    ++done;
  }
  const hn::ScalableTag<uint64_t> d64;
  const hn::Repartition<uint32_t, decltype(d64)> d32;
  const hn::Half<decltype(d32)> dh;  // lanes(d64) words
  const size_t lanes = hn::Lanes(d64);
  const auto m0 = hn::Set(d32, kPhiloxM0);
  const auto m1 = hn::Set(d32, kPhiloxM1);
  const auto iota = hn::Iota(d64, 0);
  // Two vectors of instances per pass keep both multiply pipes busy.
  while (n - done >= 8 * lanes) {
    const uint64_t block = (first + done) / 4;
    if (static_cast<uint32_t>(block) > 0xFFFFFFFFu - 2 * lanes) break;  // lo32 wraps: scalar
    const auto base = hn::Set(d64, static_cast<uint32_t>(block));
    hn::Vec<decltype(d64)> c0[2] = {hn::Add(base, iota),
                                    hn::Add(base, hn::Add(iota, hn::Set(d64, lanes)))};
    hn::Vec<decltype(d64)> c1[2], c2[2], c3[2];
    for (int v = 0; v < 2; ++v) {
      c1[v] = hn::Set(d64, static_cast<uint32_t>(block >> 32));
      c2[v] = hn::Set(d64, key.bucket);
      c3[v] = hn::Set(d64, key.tensor);
    }
    uint32_t k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
      }
      const auto vk0 = hn::Set(d64, k0), vk1 = hn::Set(d64, k1);
      for (int v = 0; v < 2; ++v) {
        const auto p0 = hn::MulEven(hn::BitCast(d32, c0[v]), m0);
        const auto p1 = hn::MulEven(hn::BitCast(d32, c2[v]), m1);
        c0[v] = hn::Xor(hn::Xor(hn::ShiftRight<32>(p1), c1[v]), vk0);
        c1[v] = p1;
        c2[v] = hn::Xor(hn::Xor(hn::ShiftRight<32>(p0), c3[v]), vk1);
        c3[v] = p0;
      }
    }
    for (int v = 0; v < 2; ++v) {
      // Keep the low halves (TruncateTo) and write block b's four words consecutively.
      hn::StoreInterleaved4(hn::TruncateTo(dh, c0[v]), hn::TruncateTo(dh, c1[v]),
                            hn::TruncateTo(dh, c2[v]), hn::TruncateTo(dh, c3[v]), dh,
                            out + done + v * 4 * lanes);
    }
    done += 8 * lanes;
  }
  for (; done < n; ++done) out[done] = philox_raw_word(key, first + done);
}
#endif  // HWY_TARGET == HWY_SCALAR

// Element words: raw words in chunks on the stack, each split into two 16-bit halves.
void PhiloxFill(const RngKey& key, uint64_t first, size_t n, uint32_t* HWY_RESTRICT out) {
  size_t done = 0;
  if (n > 0 && first % 2 == 1) {  // odd head: the high half of a raw word
    out[0] = philox_word(key, first);
    done = 1;
  }
  constexpr size_t kChunk = 1024;  // raw words per pass
  HWY_ALIGN uint32_t raw[kChunk];
  const hn::ScalableTag<uint16_t> d16;
  const size_t lanes16 = hn::Lanes(d16);
  const auto centre = hn::Set(d16, uint16_t{0x8000});
  while (n - done >= 2) {
    const uint64_t element = first + done;  // even
    const size_t words = std::min(kChunk, (n - done) / 2);
    PhiloxFillRaw(key, element / 2, words, raw);
    // As 16-bit lanes, raw = [lo0, hi0, lo1, hi1, ...]; element words as 16-bit lanes are
    // [0x8000, lo0, 0x8000, hi0, ...]: interleave a constant with the raw halves.
    const uint16_t* halves = reinterpret_cast<const uint16_t*>(raw);
    uint16_t* dst = reinterpret_cast<uint16_t*>(out + done);
    size_t h = 0;
    for (; h + lanes16 <= 2 * words; h += lanes16)
      hn::StoreInterleaved2(centre, hn::LoadU(d16, halves + h), d16, dst + 2 * h);
    for (; h < 2 * words; ++h) {
      dst[2 * h] = 0x8000;
      dst[2 * h + 1] = halves[h];
    }
    done += 2 * words;
  }
  if (done < n) out[done] = philox_word(key, first + done);
}

}  // namespace HWY_NAMESPACE
}  // namespace qgrad
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qgrad {
HWY_EXPORT(PhiloxFill);
HWY_EXPORT(PhiloxFillRaw);

void philox_fill_raw(const RngKey& key, uint64_t first, size_t n, uint32_t* out) {
  HWY_DYNAMIC_DISPATCH(PhiloxFillRaw)(key, first, n, out);
}

void philox_fill(const RngKey& key, uint64_t first, size_t n, uint32_t* out) {
  HWY_DYNAMIC_DISPATCH(PhiloxFill)(key, first, n, out);
}
}  // namespace qgrad
#endif
