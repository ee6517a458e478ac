#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/philox.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

using namespace qgrad::testing;

float scale_of(const std::vector<std::byte>& p, size_t j) {
  return load_f32(p.data() + kHeaderBytes + 4 * j);
}

// P[keep] under the codec's rule (u * s < |g|) over all 2^16 values of an element's random
// half-word: the exact probability the code uses, not the ideal |g| / s.
double keep_probability(float g, float s) {
  size_t kept = 0;
  for (uint32_t h = 0; h < 65536; ++h)
    kept += uniform_from_word((h << 16) | 0x8000u) * s < std::fabs(g);
  return kept / 65536.0;
}

TEST(TernGrad, ExactBodySize) {
  for (size_t bucket : {1, 7, 512}) {
    const auto codec = make_codec("terngrad:bucket=" + std::to_string(bucket));
    for (size_t n : {0, 1, 3, 4, 5, 511, 512, 513, 1025}) {
      const auto p = codec->encode(normal_vector(n, 1), RngKey{});
      EXPECT_EQ(p.size(), kHeaderBytes + 4 * ceil_div(n, bucket) + ceil_div(n, 4))
          << bucket << " " << n;
    }
  }
  // 2 bits per element + 32 bits per bucket of 512: 2.0625 bits.
  EXPECT_EQ(make_codec("terngrad")->max_encoded_bytes(512 * 1000), kHeaderBytes + 4000 + 128000);
}

TEST(TernGrad, Properties) {
  EXPECT_TRUE(make_codec("terngrad")->unbiased());
  EXPECT_FALSE(make_codec("terngrad:clip=2.5")->unbiased());
  EXPECT_EQ(make_codec("terngrad")->aggregation(), Aggregation::kMean);
}

// The codec against a scalar model of the spec: element i keeps iff
// uniform_from_word(philox_word(key, i)) * s < |g_i|, and decodes to +-s.
TEST(TernGrad, MatchesScalarModelOfTheSpec) {
  for (size_t bucket : {7, 64, 512, 100000}) {
    const auto codec = make_codec("terngrad:bucket=" + std::to_string(bucket));
    const size_t n = 150001;
    auto v = normal_vector(n, 31);
    for (size_t i = 0; i < n; i += 97) v[i] = 0.0f;
    v[5] = -0.0f;
    const RngKey key{.seed = 5, .step = 2, .rank = 1, .tensor = 3, .bucket = 4};
    const auto p = codec->encode(v, key);
    const auto out = decode(*codec, p, n);
    for (size_t j = 0; j < ceil_div(n, bucket); ++j) {
      const size_t lo = j * bucket, hi = std::min(n, lo + bucket);
      float m = 0;
      for (size_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(v[i]));
      ASSERT_EQ(scale_of(p, j), m) << bucket << " bucket " << j;
      for (size_t i = lo; i < hi; ++i) {
        const bool keep = uniform_from_word(philox_word(key, i)) * m < std::fabs(v[i]);
        const float want = keep ? (v[i] < 0 ? -m : m) : 0.0f;
        ASSERT_EQ(out[i], want) << bucket << " element " << i;
      }
    }
  }
}

TEST(TernGrad, PapersFact18) {
  const auto codec = make_codec("terngrad");
  const std::vector<float> g = {0.1f, -0.3f, 0.2f};
  const float s = 0.3f;
  const double want_p[] = {1.0 / 3, 1.0, 2.0 / 3};
  double exact_var = 0;
  std::vector<double> p(3);
  for (size_t k = 0; k < 3; ++k) {
    p[k] = keep_probability(g[k], s);
    EXPECT_NEAR(p[k], want_p[k], 1.0 / 65536) << k;
    exact_var += double{s} * s * p[k] * (1 - p[k]);
  }
  EXPECT_NEAR(exact_var, 0.04, 1e-5);  // sum_k s|g_k| - g_k^2
  const int draws = 20000;
  std::vector<double> sum(3, 0.0);
  double sq_err = 0;
  std::vector<size_t> kept(3, 0);
  for (int t = 0; t < draws; ++t) {
    const auto payload = codec->encode(g, RngKey{.seed = 1, .step = static_cast<uint64_t>(t)});
    EXPECT_EQ(payload.size(), kHeaderBytes + 4 + 1);  // 4 ternary codes per byte
    ASSERT_EQ(scale_of(payload, 0), s);
    const auto q = decode(*codec, payload, 3);
    for (size_t k = 0; k < 3; ++k) {
      ASSERT_TRUE(q[k] == 0.0f || q[k] == (g[k] < 0 ? -s : s)) << q[k];
      kept[k] += q[k] != 0.0f;
      sum[k] += q[k];
      sq_err += (q[k] - double{g[k]}) * (q[k] - double{g[k]});
    }
  }
  for (size_t k = 0; k < 3; ++k) {
    const double mean = s * p[k] * (g[k] < 0 ? -1 : 1);
    const double sigma = s * std::sqrt(p[k] * (1 - p[k]) / draws);
    EXPECT_NEAR(sum[k] / draws, mean, 5 * sigma + 1e-12) << k;
    EXPECT_NEAR(sum[k] / draws, g[k], 5 * sigma + s / 65536.0) << k;
  }
  EXPECT_EQ(kept[1], static_cast<size_t>(draws));  // the bucket's max is always kept
  // (Q - g)^2 takes (s - |g|)^2 with probability p, g^2 otherwise.
  double var_of_sq = 0, mean_sq = 0;
  for (size_t k = 0; k < 3; ++k) {
    const double a = (s - std::fabs(g[k])) * (s - std::fabs(g[k])), b = double{g[k]} * g[k];
    mean_sq += a * p[k] + b * (1 - p[k]);
    var_of_sq += (a - b) * (a - b) * p[k] * (1 - p[k]);
  }
  EXPECT_NEAR(mean_sq, exact_var, 1e-6);
  EXPECT_NEAR(sq_err / draws, exact_var, 5 * std::sqrt(var_of_sq / draws));
}

TEST(TernGrad, UnbiasedWithExactVariance) {
  const auto codec = make_codec("terngrad:bucket=128");
  const size_t n = 300;  // two full buckets and a tail of 44
  const auto g = normal_vector(n, 12);
  const int draws = 3000;
  std::vector<double> sum(n, 0.0);
  double sq_err = 0;
  std::vector<float> s(ceil_div(n, 128));
  for (int t = 0; t < draws; ++t) {
    const auto payload = codec->encode(g, RngKey{.seed = 9, .step = static_cast<uint64_t>(t)});
    for (size_t j = 0; j < s.size(); ++j) s[j] = scale_of(payload, j);
    const auto q = decode(*codec, payload, n);
    for (size_t i = 0; i < n; ++i) {
      sum[i] += q[i];
      sq_err += (q[i] - double{g[i]}) * (q[i] - double{g[i]});
    }
  }
  double mean_sq = 0, var_of_sq = 0;
  for (size_t i = 0; i < n; ++i) {
    const double si = s[i / 128], p = keep_probability(g[i], s[i / 128]);
    const double sigma = si * std::sqrt(p * (1 - p) / draws);
    // The exact mean of the code, and g itself up to the 2^-16 granularity of the words.
    EXPECT_NEAR(sum[i] / draws, si * p * (g[i] < 0 ? -1 : 1), 5 * sigma + 1e-12) << i;
    EXPECT_NEAR(sum[i] / draws, g[i], 5 * sigma + si / 65536.0) << i;
    // Per coordinate s|g| - g^2, with the code's own probability.
    EXPECT_NEAR(si * si * p * (1 - p), si * std::fabs(g[i]) - double{g[i]} * g[i],
                si * si / 32768.0);
    const double a = (si - std::fabs(g[i])) * (si - std::fabs(g[i])), b = double{g[i]} * g[i];
    mean_sq += a * p + b * (1 - p);
    var_of_sq += (a - b) * (a - b) * p * (1 - p);
  }
  EXPECT_NEAR(sq_err / draws, mean_sq, 5 * std::sqrt(var_of_sq / draws));
}

TEST(TernGrad, ClippingUsesStdDevAndCapsAtTheMax) {
  const auto codec = make_codec("terngrad:bucket=1000,clip=2.5");
  auto g = normal_vector(1000, 4);
  g[10] = 40.0f;  // outliers beyond 2.5 std
  g[20] = -30.0f;
  double mean = 0, var = 0;
  for (float x : g) mean += x;
  mean /= 1000;
  for (float x : g) var += (x - mean) * (x - mean);
  const double want = 2.5 * std::sqrt(var / 1000);
  const auto p = codec->encode(g, RngKey{.seed = 3});
  const float s = scale_of(p, 0);
  EXPECT_NEAR(s, want, 1e-5 * want);
  ASSERT_LT(s, 30.0f);
  const auto q = decode(*codec, p, 1000);
  EXPECT_EQ(q[10], s);  // clipped values are always kept, at +-s
  EXPECT_EQ(q[20], -s);
  for (size_t i = 0; i < 1000; ++i) ASSERT_TRUE(q[i] == 0.0f || std::fabs(q[i]) == s);
  // When c * std exceeds the max nothing is clipped and the scale is the max.
  const std::vector<float> flat = {1.0f, -1.0f, 1.0f, -1.0f, 0.5f};
  const auto pf = make_codec("terngrad:clip=100")->encode(flat, RngKey{});
  EXPECT_EQ(scale_of(pf, 0), 1.0f);
}

TEST(TernGrad, ZeroAndConstantBucketsDecodeToZeros) {
  const auto codec = make_codec("terngrad:bucket=4");
  std::vector<float> v = {1, -2, 3, 4, 0, 0, 0, 0, 0, -0.0f, 0};
  const auto p = codec->encode(v, RngKey{});
  EXPECT_EQ(scale_of(p, 1), 0.0f);
  EXPECT_EQ(scale_of(p, 2), 0.0f);
  const auto q = decode(*codec, p, v.size());
  for (size_t i = 4; i < v.size(); ++i) EXPECT_EQ(q[i], 0.0f) << i;
  // Under clipping a constant bucket has std 0: scale 0, zeros, no NaN.
  const auto clip = make_codec("terngrad:clip=2.5");
  const std::vector<float> c(100, 3.0f);
  const auto pc = clip->encode(c, RngKey{});
  EXPECT_EQ(scale_of(pc, 0), 0.0f);
  for (float x : decode(*clip, pc, c.size())) EXPECT_EQ(x, 0.0f);
}

TEST(TernGrad, EmptyInput) {
  const auto codec = make_codec("terngrad");
  const auto p = codec->encode(std::span<const float>(), RngKey{});
  EXPECT_EQ(p.size(), kHeaderBytes);
  std::vector<float> out;
  codec->decode_add(p, out, 1.0f);
}

TEST(TernGrad, DecodeAccumulates) {
  const auto codec = make_codec("terngrad:bucket=33");
  const auto v = normal_vector(1000, 5);
  const auto p = codec->encode(v, RngKey{.seed = 2});
  const auto once = decode(*codec, p, v.size());
  auto out = normal_vector(v.size(), 6);
  const auto start = out;
  codec->decode_add(p, out, 2.5f);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(out[i], start[i] + 2.5f * once[i]) << i;
}

TEST(TernGrad, NonFiniteInputNamesTheIndex) {
  for (const char* spec : {"terngrad", "terngrad:clip=2.5", "terngrad:bucket=100000"}) {
    const auto codec = make_codec(spec);
    for (float bad : {std::nanf(""), INFINITY}) {
      for (size_t at : {0, 777, 149999}) {
        auto v = normal_vector(150000, 1);
        v[at] = bad;
        try {
          codec->encode(v, RngKey{});
          FAIL() << spec << " accepted a non-finite value at " << at;
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("element " + std::to_string(at) + " "),
                    std::string::npos)
              << e.what();
        }
      }
    }
  }
}

TEST(TernGrad, SameBytesForAnyThreadCount) {
  for (const char* spec :
       {"terngrad", "terngrad:bucket=7", "terngrad:bucket=100000", "terngrad:clip=2.5"}) {
    const auto codec = make_codec(spec);
    const size_t n = 300001;
    const auto v = normal_vector(n, 21);
    const RngKey key{.seed = 11, .step = 3};
    set_num_threads(1);
    const auto want = codec->encode(v, key);
    const auto want_out = decode(*codec, want, n);
    for_each_thread_count([&](int t) {
      EXPECT_EQ(codec->encode(v, key), want) << spec << " threads " << t;
      EXPECT_EQ(decode(*codec, want, n), want_out) << spec << " threads " << t;
    });
    EXPECT_NE(codec->encode(v, RngKey{.seed = 11, .step = 4}), want) << "the key is ignored";
  }
}

TEST(TernGrad, SameBytesOnEverySimdTarget) {
  for (const char* spec : {"terngrad", "terngrad:bucket=7"}) {
    const auto codec = make_codec(spec);
    const size_t n = 10007;
    const auto v = normal_vector(n, 8);
    std::vector<std::byte> want;
    std::vector<float> want_out;
    for_each_simd_target([&](const char* target) {
      const auto p = codec->encode(v, RngKey{.seed = 4});
      std::vector<float> out = normal_vector(n, 2);
      codec->decode_add(p, out, 0.3f);
      if (want.empty()) {
        want = p;
        want_out = out;
      }
      EXPECT_EQ(p, want) << spec << " " << target;
      EXPECT_EQ(out, want_out) << spec << " " << target;
    });
  }
}

TEST(TernGrad, CorruptBodiesAreRejectedAndLeaveOutputUntouched) {
  const auto codec = make_codec("terngrad:bucket=4");
  const size_t n = 10;  // scales at 0, 4, 8; codes at 12..14 (2 codes in the last byte)
  const auto p = codec->encode(normal_vector(n, 1), RngKey{});
  const std::vector<float> start(n, 1.0f);
  const auto expect_corrupt = [&](const std::vector<std::byte>& q) {
    std::vector<float> out = start;
    EXPECT_THROW(codec->decode_add(q, out, 1.0f), CorruptPayload);
    EXPECT_EQ(out, start);
  };
  for (int shift : {0, 2, 4, 6}) {
    expect_corrupt(tampered(p, [shift](std::span<std::byte> b) {
      b[13] |= std::byte{static_cast<unsigned char>(3u << shift)};
    }));
  }
  expect_corrupt(tampered(p, [](std::span<std::byte> b) { b[14] |= std::byte{0x10}; }));  // pad
  for (float bad : {std::nanf(""), -INFINITY, -0.5f})
    expect_corrupt(tampered(p, [bad](std::span<std::byte> b) { store_f32(b.data() + 8, bad); }));
  expect_corrupt(std::vector<std::byte>(p.begin(), p.end() - 1));
  std::vector<float> wrong(n + 1);
  EXPECT_THROW(codec->decode_add(p, wrong, 1.0f), CorruptPayload);
  std::vector<float> out(n);
  EXPECT_THROW(make_codec("terngrad")->decode_add(p, out, 1.0f), CorruptPayload);  // params
}

}  // namespace
}  // namespace qgrad
