#include "core/codecs/fp16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "core/simd/half_kernels.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float from_bits(uint32_t b) { return std::bit_cast<float>(b); }

using namespace qgrad::testing;

// Independent references: the value of a half from its definition, and the nearest half found
// by binary search over the (monotonic) positive halves, ties to the even pattern.
double f16_value(uint16_t h) {
  const int exponent = (h >> 10) & 31;
  const int mantissa = h & 1023;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (exponent == 31) return mantissa ? std::nan("") : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

uint16_t f16_reference(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isnan(x)) return sign | kF16QuietNan;
  const double a = std::fabs(static_cast<double>(x));
  // Rounding treats Inf (0x7C00) as the next value after 0x7BFF, 2^16.
  const auto value = [](uint32_t h) { return h == 0x7C00 ? 65536.0 : f16_value(h); };
  if (a >= 65536.0) return sign | kF16Inf;
  uint32_t lo = 0, hi = 0x7C00;  // value(lo) <= a < value(hi)
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    (value(mid) <= a ? lo : hi) = mid;
  }
  const double down = a - value(lo), up = value(hi) - a;
  const uint32_t h = down < up ? lo : up < down ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<uint16_t>(sign | h);
}

uint16_t bf16_reference(float x) {
  const uint32_t u = bits_of(x);
  const uint16_t sign = (u >> 16) & 0x8000;
  if (std::isnan(x)) return sign | kBf16QuietNan;
  const uint32_t a = u & 0x7FFFFFFF;
  if (a == 0x7F800000) return sign | 0x7F80;
  const uint32_t lo = a >> 16, hi = lo + 1;
  const double v = from_bits(a);
  const double vlo = from_bits(lo << 16);
  const double vhi = hi == 0x7F80 ? std::ldexp(1.0, 128) : from_bits(hi << 16);
  const double down = v - vlo, up = vhi - v;
  uint32_t h = down < up ? lo : up < down ? hi : (lo % 2 == 0 ? lo : hi);
  if (h > kBf16MaxFinite) h = kBf16MaxFinite;
  return static_cast<uint16_t>(sign | h);
}

// Floats that probe every rounding boundary of fp16: each half, the midpoints to its
// neighbours, one float ulp either side of both, both signs; the overflow edge; float
// subnormals; and random bit patterns.
std::vector<float> f16_probe_floats() {
  std::vector<float> xs;
  const auto add = [&](float v) {
    for (float s : {v, std::nextafter(v, 0.0f), std::nextafter(v, INFINITY)}) {
      xs.push_back(s);
      xs.push_back(-s);
    }
  };
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const double v = f16_value(static_cast<uint16_t>(h));
    const double next = h + 1 == 0x7C00 ? 65536.0 : f16_value(static_cast<uint16_t>(h + 1));
    add(static_cast<float>(v));
    add(static_cast<float>((v + next) / 2));  // exact: at most 12 significant bits
  }
  for (float v : {65504.0f, 65519.0f, 65520.0f, 65536.0f, 1e6f, FLT_MAX, INFINITY, 0x1p-25f,
                  0x1p-26f, 0x1.8p-25f, 0x1p-24f, FLT_MIN, FLT_TRUE_MIN, 0x1p-140f})
    add(v);
  xs.push_back(std::nanf(""));
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) xs.push_back(from_bits(static_cast<uint32_t>(rng())));
  return xs;
}

TEST(HalfConversion, F16ToF32AllHalvesMatchDefinition) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    const double want = f16_value(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << h;
      ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
    }
    // Every non-NaN half survives the round trip bit for bit.
    if (!std::isnan(want)) {
      ASSERT_EQ(f32_to_f16_rne(got), h) << std::hex << h;
    }
  }
}

TEST(HalfConversion, F32ToF16MatchesNearestEvenSearch) {
  for (float x : f16_probe_floats())
    ASSERT_EQ(f32_to_f16_rne(x), f16_reference(x)) << std::hexfloat << x;
}

TEST(HalfConversion, KnownRoundingCases) {
  EXPECT_EQ(f32_to_f16_rne(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16_rne(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16_rne(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16_rne(65519.99f), 0x7BFF);
  EXPECT_EQ(f32_to_f16_rne(65520.0f), 0x7C00);  // tie between 0x7BFF (odd) and 2^16: even wins
  EXPECT_EQ(f32_to_f16_rne(1.0f + 0x1p-11f), 0x3C00);      // tie, even is down
  EXPECT_EQ(f32_to_f16_rne(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie, even is up
  EXPECT_EQ(f32_to_f16_rne(0x1p-24f), 0x0001);             // smallest subnormal
  EXPECT_EQ(f32_to_f16_rne(0x1p-25f), 0x0000);             // tie to even (0)
  EXPECT_EQ(f32_to_f16_rne(0x1.000002p-25f), 0x0001);      // just above the tie
  EXPECT_EQ(f32_to_f16_rne(0x1.8p-24f), 0x0002);           // tie 1.5 -> 2
  EXPECT_EQ(f32_to_f16_rne(0x1.ff8p-15f), 0x03FF);         // largest subnormal half
  EXPECT_EQ(f32_to_f16_rne(0x1.ffcp-15f), 0x0400);         // tie: up into the normals
  EXPECT_EQ(f32_to_f16_rne(FLT_TRUE_MIN), 0x0000);
  EXPECT_EQ(f32_to_f16_rne(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16_rne(std::nanf("")), kF16QuietNan);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0xFC00), -INFINITY);
}

#if defined(__FLT16_MANT_DIG__)
// The compiler's own _Float16 conversion is a third, independent opinion.
TEST(HalfConversion, AgreesWithCompilerFloat16) {
  for (float x : f16_probe_floats()) {
    if (std::isnan(x)) continue;
    const _Float16 c = static_cast<_Float16>(x);
    uint16_t want;
    std::memcpy(&want, &c, 2);
    ASSERT_EQ(f32_to_f16_rne(x), want) << std::hexfloat << x;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 c;
    const auto h16 = static_cast<uint16_t>(h);
    std::memcpy(&c, &h16, 2);
    if (!std::isnan(static_cast<float>(c))) {
      ASSERT_EQ(bits_of(f16_to_f32(h16)), bits_of(static_cast<float>(c))) << std::hex << h;
    }
  }
}
#endif

TEST(HalfConversion, Bf16MatchesNearestEvenAndSaturates) {
  std::vector<float> xs;
  for (uint32_t h = 0; h < 0x7F80; ++h) {
    for (uint32_t u : {h << 16, (h << 16) | 0x8000, (h << 16) | 0x7FFF, (h << 16) | 0x8001}) {
      xs.push_back(from_bits(u));
      xs.push_back(-from_bits(u));
    }
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 100000; ++i) xs.push_back(from_bits(static_cast<uint32_t>(rng())));
  for (float x : xs) ASSERT_EQ(f32_to_bf16_saturating(x), bf16_reference(x)) << std::hexfloat << x;
  EXPECT_EQ(f32_to_bf16_saturating(FLT_MAX), kBf16MaxFinite);
  EXPECT_EQ(f32_to_bf16_saturating(-FLT_MAX), 0x8000 | kBf16MaxFinite);
  EXPECT_EQ(f32_to_bf16_saturating(INFINITY), 0x7F80);
  EXPECT_EQ(f32_to_bf16_saturating(1.0f + 0x1p-8f), 0x3F80);  // tie, even is down
  EXPECT_EQ(f32_to_bf16_saturating(1.0f + 3 * 0x1p-8f), 0x3F82);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
}

TEST(HalfKernels, EveryTargetMatchesScalar) {
  std::vector<float> xs = f16_probe_floats();
  std::vector<std::byte> got(2 * xs.size() + 1);  // written from offset 1
  std::vector<uint16_t> halves(65536);
  for (uint32_t h = 0; h < 65536; ++h) halves[h] = static_cast<uint16_t>(h);
  int targets = 0;
  for_each_simd_target([&](const char* target) {
    ++targets;
    SCOPED_TRACE(target);
    // Odd output addresses (unaligned 16-bit stores), several input offsets (tail lengths).
    struct Pass {
      size_t offset;
      float scale;
      uint16_t cap;
    };
    for (const Pass& pass :
         {Pass{0, 1.0f, 0xFFFF}, Pass{3, 0x1p-20f, 0xFFFF}, Pass{1, 0x1p20f, 0x77FF}}) {
      const size_t offset = pass.offset;
      const size_t n = xs.size() - offset;
      simd::f32_to_f16_scaled(xs.data() + offset, n, pass.scale, pass.cap, got.data() + 1);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, got.data() + 1 + 2 * i, 2);
        uint16_t want = f32_to_f16_rne(xs[offset + i] * pass.scale);
        if ((want & 0x7FFF) > pass.cap) want = static_cast<uint16_t>((want & 0x8000) | pass.cap);
        ASSERT_EQ(h, want) << std::hexfloat << xs[offset + i] << " scale " << pass.scale;
      }
      const uint32_t max_bits = simd::f32_to_bf16(xs.data() + offset, n, got.data() + 1);
      uint32_t want_max = 0;
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, got.data() + 1 + 2 * i, 2);
        ASSERT_EQ(h, f32_to_bf16_saturating(xs[offset + i])) << std::hexfloat << xs[offset + i];
        want_max = std::max(want_max, bits_of(xs[offset + i]) & 0x7FFFFFFF);
      }
      EXPECT_EQ(max_bits, want_max);
    }
    std::vector<std::byte> hb(2 * 65536 + 1);
    std::memcpy(hb.data() + 1, halves.data(), 2 * 65536);
    std::vector<float> out(65536);
    simd::f16_to_f32(hb.data() + 1, 65536, out.data());
    for (uint32_t h = 0; h < 65536; ++h) {
      const float want = f16_to_f32(static_cast<uint16_t>(h));
      if (std::isnan(want))
        ASSERT_TRUE(std::isnan(out[h]));
      else
        ASSERT_EQ(bits_of(out[h]), bits_of(want)) << std::hex << h;
    }
    // axpy: out = 1 + w * (half * scale), finite halves only.
    for (size_t n : {0, 1, 7, 31, 1000}) {
      std::vector<float> acc(n, 1.0f), acc_bf(n, 1.0f);
      std::vector<uint16_t> hs(n);
      for (size_t i = 0; i < n; ++i) hs[i] = static_cast<uint16_t>((i * 2654435761u) & 0xFBFF);
      if (n > 0) std::memcpy(hb.data() + 1, hs.data(), 2 * n);
      simd::f16_axpy(0.5f, 0x1p-3f, hb.data() + 1, acc.data(), n);
      simd::bf16_axpy(-0.25f, hb.data() + 1, acc_bf.data(), n);
      uint16_t want_max = 0;
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(acc[i], 1.0f + 0.5f * (f16_to_f32(hs[i]) * 0x1p-3f)) << i;
        ASSERT_EQ(acc_bf[i], 1.0f + -0.25f * bf16_to_f32(hs[i])) << i;
        want_max = std::max<uint16_t>(want_max, hs[i] & 0x7FFF);
      }
      EXPECT_EQ(simd::u16_max_magnitude(hb.data() + 1, n), want_max);
    }
  });
  EXPECT_GE(targets, 1);
}

// ------------------------------------------------------------------------------------------
// The codecs.

std::vector<float> round_trip(const Codec& codec, std::span<const float> v) {
  return decode(codec, codec.encode(v, RngKey{}), v.size());
}

void put_u16(std::byte* p, uint16_t v) { std::memcpy(p, &v, 2); }

TEST(Fp16Codec, BucketExponent) {
  EXPECT_EQ(fp16_bucket_exponent(0.0f), 0);
  EXPECT_EQ(fp16_bucket_exponent(1.0f), -14);
  EXPECT_EQ(fp16_bucket_exponent(1.999f), -14);
  EXPECT_EQ(fp16_bucket_exponent(0x1p15f), 1);
  EXPECT_EQ(fp16_bucket_exponent(1e6f), 19 - 14);  // 2^19 <= 1e6 < 2^20
  EXPECT_EQ(fp16_bucket_exponent(FLT_MAX), kFp16MaxExponent);
  EXPECT_EQ(fp16_bucket_exponent(0x1p-112f), kFp16MinExponent);
  EXPECT_EQ(fp16_bucket_exponent(0x1p-113f), kFp16MinExponent);  // clamped
  EXPECT_EQ(fp16_bucket_exponent(FLT_TRUE_MIN), kFp16MinExponent);
}

TEST(Fp16Codec, ExactBodySize) {
  for (int bucket : {1, 7, 64, 4096}) {
    const auto codec = make_codec("fp16:bucket=" + std::to_string(bucket));
    for (size_t n : {0, 1, 6, 7, 8, 4095, 4096, 4097, 10000}) {
      const auto v = normal_vector(n, 1);
      const size_t nb = (n + bucket - 1) / bucket;
      EXPECT_EQ(codec->encode(v, RngKey{}).size(), kHeaderBytes + nb + 2 * n) << bucket << " " << n;
      EXPECT_EQ(codec->max_encoded_bytes(n), kHeaderBytes + nb + 2 * n);
    }
  }
  const auto bf16 = make_codec("bf16");
  for (size_t n : {0, 1, 7, 100000})
    EXPECT_EQ(bf16->encode(normal_vector(n, 2), RngKey{}).size(), kHeaderBytes + 2 * n);
}

TEST(Fp16Codec, KnownBytes) {
  // One bucket of {1, -0.5, 3}: absmax 3 -> e = 1 - 14 = -13; halves of x * 2^13.
  const auto codec = make_codec("fp16");
  const std::vector<float> v = {1.0f, -0.5f, 3.0f};
  const auto p = codec->encode(v, RngKey{});
  ASSERT_EQ(p.size(), kHeaderBytes + 1 + 6);
  EXPECT_EQ(static_cast<int8_t>(p[kHeaderBytes]), -13);
  const auto half_at = [&](size_t i) {
    uint16_t h;
    std::memcpy(&h, p.data() + kHeaderBytes + 1 + 2 * i, 2);
    return h;
  };
  EXPECT_EQ(half_at(0), f32_to_f16_rne(0x1p13f));
  EXPECT_EQ(half_at(1), f32_to_f16_rne(-0x1p12f));
  EXPECT_EQ(half_at(2), f32_to_f16_rne(3 * 0x1p13f));
  EXPECT_EQ(round_trip(*codec, v), v);  // exactly representable
}

TEST(Fp16Codec, HugeGradientsStayFiniteWithinHalfUlp) {
  const auto codec = make_codec("fp16:bucket=256");
  for (float magnitude : {1e6f, 3e38f, 1e-20f, 1.0f}) {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(0.5f, 1.0f);
    std::vector<float> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 2 ? -1.0f : 1.0f) * magnitude * u(rng);
    const auto out = round_trip(*codec, v);
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_TRUE(std::isfinite(out[i])) << magnitude << " " << i;
      ASSERT_LE(std::fabs(out[i] - v[i]), 0x1p-11f * std::fabs(v[i])) << magnitude << " " << i;
    }
  }
  // FLT_MAX would round up to 2^15 * 2^113 = Inf; the top bucket saturates instead. 1.0 is
  // far below the bucket's scale (2^113 * 2^-25) and flushes to zero.
  const std::vector<float> extreme = {FLT_MAX, -FLT_MAX, 3.4e38f, 1.0f, 0.0f};
  const auto out = round_trip(*codec, extreme);
  for (size_t i = 0; i < extreme.size(); ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;
  for (size_t i = 0; i < 3; ++i)
    EXPECT_LE(std::fabs(out[i] - extreme[i]), 0x1p-11f * std::fabs(extreme[i])) << i;
  EXPECT_EQ(out[0], 32752.0f * 0x1p113f);
  EXPECT_EQ(out[3], 0.0f);
}

TEST(Fp16Codec, RoundTripErrorBoundPerBucket) {
  // Mixed scales across buckets, wide dynamic range inside buckets.
  const size_t bucket = 512;
  const auto codec = make_codec("fp16:bucket=512");
  std::vector<float> v = normal_vector(5000, 4);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] *=
        std::ldexp(1.0f, static_cast<int>((i / bucket) * 7 % 40) - 20 - static_cast<int>(i % 37));
  const auto out = round_trip(*codec, v);
  for (size_t b = 0; b * bucket < v.size(); ++b) {
    float a = 0;
    for (size_t i = b * bucket; i < std::min(v.size(), (b + 1) * bucket); ++i)
      a = std::max(a, std::fabs(v[i]));
    const int e = fp16_bucket_exponent(a);
    for (size_t i = b * bucket; i < std::min(v.size(), (b + 1) * bucket); ++i) {
      // Half an ulp: relative 2^-11 for normal halves, 2^(e-25) absolute for subnormal ones.
      const float bound = std::max(0x1p-11f * std::fabs(v[i]), std::ldexp(1.0f, e - 25));
      ASSERT_LE(std::fabs(out[i] - v[i]), bound) << i;
    }
  }
}

TEST(Fp16Codec, TinyAndZeroBuckets) {
  const auto codec = make_codec("fp16:bucket=4");
  // clang-format off
  const std::vector<float> v = {0, 0, -0.0f, 0,                          // all zero
                                1e-36f, -2e-36f, 0, 5e-37f,              // clamped exponent
                                FLT_TRUE_MIN, 0, 0, 0,                   // subnormal float
                                0x1p-140f, 0x1p-130f, 0x1p-120f, 0x1p-113f};
  // clang-format on
  const auto p = codec->encode(v, RngKey{});
  EXPECT_EQ(static_cast<int8_t>(p[kHeaderBytes + 0]), 0);
  EXPECT_EQ(static_cast<int8_t>(p[kHeaderBytes + 1]), kFp16MinExponent);
  EXPECT_EQ(static_cast<int8_t>(p[kHeaderBytes + 2]), kFp16MinExponent);
  std::vector<float> out(v.size(), 0.0f);
  codec->decode_add(p, out, 1.0f);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(out[i], 0.0f);
  for (size_t i = 4; i < v.size(); ++i) {
    // Clamped buckets: x * 2^126 is at most 2^14, half an ulp of the half at that scale.
    const float scaled = std::fabs(v[i]) * 0x1p126f;
    const float ulp_half =
        std::max(std::ldexp(1.0f, std::ilogb(std::max(scaled, 0x1p-14f)) - 11), 0x1p-25f);
    EXPECT_LE(std::fabs(out[i] - v[i]) * 0x1p126f, ulp_half) << i;
    EXPECT_TRUE(std::isfinite(out[i]));
  }
  EXPECT_EQ(out[8], FLT_TRUE_MIN);  // 2^-149 * 2^126 = 2^-23, an exact subnormal half
}

TEST(Fp16Codec, DecodeAddAccumulatesWithWeight) {
  for (const char* spec : {"fp16:bucket=100", "bf16"}) {
    SCOPED_TRACE(spec);
    const auto codec = make_codec(spec);
    const auto v = normal_vector(1001, 5);
    const auto p = codec->encode(v, RngKey{});
    const auto once = round_trip(*codec, v);
    std::vector<float> acc(v.size(), 2.0f);
    codec->decode_add(p, acc, 0.5f);
    codec->decode_add(p, acc, -3.0f);
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_EQ(acc[i], (2.0f + 0.5f * once[i]) + -3.0f * once[i]);
  }
}

TEST(Fp16Codec, SameBytesForEveryThreadCountAndTarget) {
  const auto v = normal_vector(150001, 6);  // more than two parallel chunks
  for (const char* spec : {"fp16:bucket=1000", "fp16", "fp16:bucket=1", "bf16"}) {
    SCOPED_TRACE(spec);
    const auto codec = make_codec(spec);
    set_num_threads(1);
    const auto reference = codec->encode(v, RngKey{});
    std::vector<float> decoded(v.size(), 0.0f);
    codec->decode_add(reference, decoded, 0.75f);
    for_each_thread_count([&](int threads) {
      EXPECT_EQ(codec->encode(v, RngKey{}), reference) << threads;
      std::vector<float> again(v.size(), 0.0f);
      codec->decode_add(reference, again, 0.75f);
      EXPECT_EQ(again, decoded) << threads;
    });
    for_each_simd_target([&](const char* target) {
      EXPECT_EQ(codec->encode(v, RngKey{}), reference) << target;
      std::vector<float> again(v.size(), 0.0f);
      codec->decode_add(reference, again, 0.75f);
      EXPECT_EQ(again, decoded) << target;
    });
  }
}

TEST(Fp16Codec, RejectsCraftedBodiesWithValidChecksums) {
  const auto codec = make_codec("fp16:bucket=4");
  // Bucket 0: absmax 1 (e = -14); bucket 1: zeros (e = 0); bucket 2: FLT_MAX (e = 113).
  const std::vector<float> v = {1, 0.5f, -0.25f, 0, 0, 0, 0, 0, FLT_MAX, 1, 2, 3};
  const auto good = codec->encode(v, RngKey{});
  ASSERT_EQ(static_cast<int8_t>(good[kHeaderBytes + 2]), kFp16MaxExponent);
  const size_t nb = 3;
  const auto half = [&](size_t i) { return nb + 2 * i; };
  const std::vector<std::pair<const char*, std::function<void(std::byte*)>>> edits = {
      {"exponent above range", [](std::byte* b) { b[0] = std::byte{114}; }},
      {"exponent below range", [](std::byte* b) { b[0] = static_cast<std::byte>(int8_t{-127}); }},
      {"halves below 2^14 at an unclamped exponent",
       [&](std::byte* b) {
         for (size_t i = 0; i < 4; ++i) put_u16(b + half(i), 0x3C00);
       }},
      {"zero bucket with an exponent", [](std::byte* b) { b[1] = std::byte{5}; }},
      {"Inf half", [&](std::byte* b) { put_u16(b + half(1), 0x7C00); }},
      {"NaN half", [&](std::byte* b) { put_u16(b + half(2), 0xFE01); }},
      {"half above 2^15", [&](std::byte* b) { put_u16(b + half(3), 0x7801); }},
      {"2^15 at the top exponent", [&](std::byte* b) { put_u16(b + half(8), 0x7800); }},
  };
  for (const auto& [what, edit] : edits) {
    SCOPED_TRACE(what);
    const auto bad = tampered(good, [&](std::span<std::byte> body) { edit(body.data()); });
    std::vector<float> out(v.size(), 7.0f);
    EXPECT_THROW(codec->decode_add(bad, out, 1.0f), CorruptPayload);
    EXPECT_EQ(out, std::vector<float>(v.size(), 7.0f)) << "output changed before the throw";
  }
  // The untouched payload still decodes, and the top bucket stays finite.
  std::vector<float> out(v.size(), 0.0f);
  codec->decode_add(good, out, 1.0f);
  for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

TEST(Bf16Codec, SaturatesAndBoundsRelativeError) {
  const auto codec = make_codec("bf16");
  std::vector<float> v = normal_vector(10000, 8);
  v.insert(v.end(), {FLT_MAX, -FLT_MAX, 3.3961e38f, 1e-40f, 0.0f, -0.0f, FLT_MIN});
  const auto out = round_trip(*codec, v);
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_TRUE(std::isfinite(out[i])) << i;
    if (std::fabs(v[i]) >= FLT_MIN && std::fabs(v[i]) <= 3.3895e38f) {
      ASSERT_LE(std::fabs(out[i] - v[i]), 0x1p-8f * std::fabs(v[i])) << i;
    }
  }
  EXPECT_EQ(out[10000], bf16_to_f32(kBf16MaxFinite));
  EXPECT_EQ(out[10001], -bf16_to_f32(kBf16MaxFinite));
}

TEST(Bf16Codec, RejectsInfAndNanPatterns) {
  const auto codec = make_codec("bf16");
  const auto good = codec->encode(normal_vector(100, 9), RngKey{});
  for (uint16_t bad_half : {uint16_t{0x7F80}, uint16_t{0xFF80}, uint16_t{0x7FC0}}) {
    const auto bad =
        tampered(good, [&](std::span<std::byte> b) { put_u16(b.data() + 2 * 57, bad_half); });
    std::vector<float> out(100, 0.0f);
    EXPECT_THROW(codec->decode_add(bad, out, 1.0f), CorruptPayload);
  }
}

TEST(Fp16Codec, NonFiniteInputNamesTheIndex) {
  for (const char* spec : {"fp16:bucket=64", "bf16"}) {
    const auto codec = make_codec(spec);
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      auto v = normal_vector(1000, 10);
      v[777] = bad;
      try {
        codec->encode(v, RngKey{});
        ADD_FAILURE() << spec << " accepted a non-finite input";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("777"), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace qgrad
