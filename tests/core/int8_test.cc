#include "core/codecs/int8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

const char* const kModes[] = {"int8", "int8:rounding=nearest", "int8:map=tree",
                              "int8:map=tree,rounding=nearest"};

using namespace qgrad::testing;

// The codec's own neighbours of x in a bucket of absmax m: the decoded values of codes j and j+1
// around x (by magnitude), with the values of int8_code_values.
struct Neighbours {
  double low, high;
};
Neighbours neighbours(const std::array<float, 255>& values, float x, float m, bool linear) {
  const auto scaled = [&](int k) {
    // The decoder's arithmetic: linear k * (m / 127), tree m * c(k).
    return linear ? static_cast<double>(static_cast<float>(k) * (m / 127.0f))
                  : static_cast<double>(m * values[static_cast<size_t>(k + 127)]);
  };
  const float a = std::fabs(x) / m;
  int j = 0;
  while (j < 127 && values[static_cast<size_t>(j + 1 + 127)] <= a) ++j;
  const int k = j == 127 ? 127 : j + 1;
  Neighbours nb{scaled(j), scaled(k)};
  if (x < 0) nb = {-nb.high, -nb.low};
  return nb;
}

TEST(Int8Map, TreeHas255SymmetricCodesWithZeroAndOne) {
  const auto v = int8_code_values(Int8Map::kTree);
  for (size_t i = 1; i < v.size(); ++i) ASSERT_LT(v[i - 1], v[i]) << i;  // 255 distinct
  EXPECT_EQ(v[127], 0.0f);
  EXPECT_EQ(v[254], 1.0f);
  EXPECT_EQ(v[0], -1.0f);
  for (int k = 1; k <= 127; ++k) EXPECT_EQ(v[127 + k], -v[127 - k]) << k;
  // The dropped pair +-5.5e-7 leaves 3.25e-6 (i = 1: midpoint of [0.1, 0.55] times 1e-5).
  EXPECT_FLOAT_EQ(v[128], 3.25e-6f);
  EXPECT_FLOAT_EQ(v[253], 0.99296875f);
  // Every other magnitude is a bitsandbytes create_dynamic_map(signed=True) value.
  std::vector<double> tree;
  for (int i = 1; i <= 6; ++i) {
    const int count = 1 << i;
    for (int k = 0; k < count; ++k) {
      const double lo = 0.1 + 0.9 * k / count, hi = 0.1 + 0.9 * (k + 1) / count;
      tree.push_back(std::pow(10.0, i - 6) * (lo + hi) / 2);
    }
  }
  std::sort(tree.begin(), tree.end());
  ASSERT_EQ(tree.size(), 126u);
  for (size_t k = 0; k < tree.size(); ++k)
    EXPECT_FLOAT_EQ(v[128 + k], static_cast<float>(tree[k])) << k;
}

TEST(Int8Map, LinearIsSymmetricWithAnExactZero) {
  const auto v = int8_code_values(Int8Map::kLinear);
  EXPECT_EQ(v[127], 0.0f);
  for (int k = 1; k <= 127; ++k) {
    EXPECT_EQ(v[127 + k], -v[127 - k]);
    EXPECT_NEAR(v[127 + k], k / 127.0, 1e-7);
  }
}

TEST(Int8Codec, SpecAndFlags) {
  EXPECT_EQ(make_codec("int8")->spec().str(), "int8:map=linear,rounding=stochastic,bucket=512");
  EXPECT_TRUE(make_codec("int8")->unbiased());
  EXPECT_TRUE(make_codec("int8:map=tree")->unbiased());
  EXPECT_FALSE(make_codec("int8:rounding=nearest")->unbiased());
  EXPECT_FALSE(make_codec("int8:map=tree,rounding=nearest")->unbiased());
}

TEST(Int8Codec, ExactBodySize) {
  for (const size_t bucket : {1, 7, 512}) {
    for (const char* mode : kModes) {
      const auto codec = make_codec(with_param(mode, "bucket=" + std::to_string(bucket)));
      for (const size_t n : {0, 1, 2, 7, 511, 512, 513, 1025, 4099}) {
        const auto x = normal_vector(n, static_cast<uint32_t>(n));
        const auto payload = codec->encode(x, RngKey{.seed = 1});
        const size_t buckets = (n + bucket - 1) / bucket;
        EXPECT_EQ(payload.size(), kHeaderBytes + 4 * buckets + n) << mode << " n=" << n;
        EXPECT_EQ(payload.size(), codec->max_encoded_bytes(n));
      }
    }
  }
}

TEST(Int8Codec, WireRatioAt25M) {
  const size_t n = 25'000'000;
  const double ratio = 4.0 * n / static_cast<double>(make_codec("int8")->max_encoded_bytes(n));
  EXPECT_GE(ratio, 3.9);
  EXPECT_NEAR(ratio, 32.0 / (8.0 + 32.0 / 512), 1e-3);
}

TEST(Int8Codec, LinearRoundTripErrorBounds) {
  // Buckets of very different scales, a tail bucket, and a bucket with an exact zero.
  std::vector<float> x = normal_vector(512 * 5 + 77, 3);
  for (size_t i = 0; i < 512; ++i) x[i] *= 1e-30f;
  for (size_t i = 512; i < 1024; ++i) x[i] *= 1e20f;
  x[2000] = 0.0f;
  for (const bool nearest : {false, true}) {
    const auto codec = make_codec(nearest ? "int8:rounding=nearest" : "int8");
    const auto y = decode(*codec, codec->encode(x, RngKey{.seed = 5}), x.size());
    for (size_t b = 0; b * 512 < x.size(); ++b) {
      const size_t len = std::min<size_t>(512, x.size() - b * 512);
      float m = 0;
      for (size_t i = 0; i < len; ++i) m = std::max(m, std::fabs(x[b * 512 + i]));
      const double bound = (nearest ? m / 254.0 : m / 127.0) * (1 + 1e-5);
      for (size_t i = b * 512; i < b * 512 + len; ++i)
        ASSERT_LE(std::fabs(static_cast<double>(y[i]) - x[i]), bound) << i;
    }
    EXPECT_EQ(y[2000], 0.0f);
  }
}

TEST(Int8Codec, RoundsToANeighbourAndNearestPicksTheCloser) {
  // A bucket whose absmax is 1 puts a = |x| straight on the map: probe every code, its float
  // neighbours, the midpoints and log-uniform values, for both maps.
  std::mt19937 gen(11);
  for (const bool linear : {true, false}) {
    const auto values = int8_code_values(linear ? Int8Map::kLinear : Int8Map::kTree);
    std::vector<float> x;
    for (int k = 0; k < 255; ++k) {
      const float v = values[static_cast<size_t>(k)];
      x.insert(x.end(), {v, std::nextafter(v, -2.0f), std::nextafter(v, 2.0f)});
      if (k + 1 < 255) x.push_back((v + values[static_cast<size_t>(k + 1)]) / 2);
    }
    std::uniform_real_distribution<float> exponent(-9.0f, 0.0f);
    for (int i = 0; i < 20000; ++i)
      x.push_back((i % 2 ? -1.0f : 1.0f) * std::pow(10.0f, exponent(gen)));
    for (auto& v : x) v = std::clamp(v, -1.0f, 1.0f);
    // Buckets of 64: each starts with 1.0 so that every absmax is exactly 1.
    std::vector<float> in;
    for (size_t i = 0; i < x.size(); ++i) {
      if (in.size() % 64 == 0) in.push_back(1.0f);
      in.push_back(x[i]);
    }
    const std::string map = linear ? "linear" : "tree";
    for (const bool nearest : {false, true}) {
      const auto codec = make_codec("int8:map=" + map +
                                    ",bucket=64,rounding=" + (nearest ? "nearest" : "stochastic"));
      const auto y = decode(*codec, codec->encode(in, RngKey{.seed = 2}), in.size());
      for (size_t i = 0; i < in.size(); ++i) {
        const Neighbours nb = neighbours(values, in[i], 1.0f, linear);
        ASSERT_TRUE(y[i] == static_cast<float>(nb.low) || y[i] == static_cast<float>(nb.high))
            << map << " x=" << in[i] << " y=" << y[i] << " low=" << nb.low << " high=" << nb.high;
        if (nearest) {
          const double gap = nb.high - nb.low;
          const double err = std::fabs(y[i] - static_cast<double>(in[i]));
          ASSERT_LE(err, gap / 2 * (1 + 1e-5) + 1e-12) << map << " x=" << in[i];
        }
      }
    }
  }
}

TEST(Int8Codec, NearestIsIdempotent) {
  std::vector<float> x = normal_vector(3000, 7);
  for (size_t i = 0; i < 512; ++i) x[i] *= 1e-3f;  // small magnitudes exercise the tree's bottom
  for (const char* spec : {"int8:map=tree,rounding=nearest", "int8:rounding=nearest"}) {
    const auto codec = make_codec(spec);
    const auto first = codec->encode(x, RngKey{});
    const auto y = decode(*codec, first, x.size());
    const auto second = codec->encode(y, RngKey{});
    const size_t codes = kHeaderBytes + 4 * ((x.size() + 511) / 512);
    // The codes always repeat; the tree map keeps the absmax exactly (code 127 is 1.0), so its
    // payload repeats byte for byte and decodes to the same values.
    EXPECT_TRUE(std::equal(first.begin() + codes, first.end(), second.begin() + codes)) << spec;
    if (std::string(spec).find("tree") != std::string::npos) {
      EXPECT_EQ(first, second);
      EXPECT_EQ(decode(*codec, second, x.size()), y);
    }
  }
}

TEST(Int8Codec, StochasticRoundingIsUnbiasedWithTheExactVariance) {
  // 512 coordinates over six decades (the tree's bottom codes too), K independent keys. Each
  // coordinate's mean is checked within 5 sigma, and so are two sums over all of them (plain
  // and sign-weighted), which catch a bias of a fraction of a percent of a gap.
  std::vector<float> x(512);
  std::mt19937 gen(21);
  std::uniform_real_distribution<float> exponent(-6.0f, 0.0f);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = (i % 3 == 0 ? -1.0f : 1.0f) * 3.0f * std::pow(10.0f, exponent(gen));
  x[5] = 3.0f;
  const float m = 3.0f;
  const int kDraws = 2000;
  for (const bool linear : {true, false}) {
    const char* name = linear ? "linear" : "tree";
    const auto values = int8_code_values(linear ? Int8Map::kLinear : Int8Map::kTree);
    const auto codec = make_codec(linear ? "int8" : "int8:map=tree");
    std::vector<double> sum(x.size()), sum_sq(x.size());
    for (int k = 0; k < kDraws; ++k) {
      const auto y =
          decode(*codec, codec->encode(x, RngKey{.seed = 9, .step = uint64_t(k)}), x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        sum[i] += y[i];
        sum_sq[i] += static_cast<double>(y[i]) * y[i];
      }
    }
    double total_var = 0, total_emp = 0, var_of_emp = 0, bias = 0, signed_bias = 0, slack = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const Neighbours nb = neighbours(values, x[i], m, linear);
      const double var = (x[i] - nb.low) * (nb.high - x[i]);
      const double gap = nb.high - nb.low;
      const double mean = sum[i] / kDraws;
      // Beyond 5 sigma: the 2^-17-of-a-gap resolution of 16-bit uniforms and float rounding of
      // the rounding position.
      const double systematic = gap * 0x1p-16 + 1e-6 * m;
      EXPECT_NEAR(mean, x[i], 5 * std::sqrt(std::max(var, 0.0) / kDraws) + systematic)
          << name << " " << i << " x=" << x[i];
      bias += mean - x[i];
      signed_bias += (x[i] < 0 ? -1 : 1) * (mean - x[i]);
      slack += systematic;
      const double p = gap > 0 ? (x[i] - nb.low) / gap : 0;
      total_var += var;
      total_emp += sum_sq[i] / kDraws - mean * mean;
      // Variance of a two-point sample variance: (mu4 - sigma^4) / K, mu4 = g^4 pq (1 - 3pq).
      const double pq = p * (1 - p);
      var_of_emp += (std::pow(gap, 4) * pq * (1 - 3 * pq) - var * var) / kDraws;
    }
    const double sigma_sum = std::sqrt(total_var / kDraws);
    EXPECT_LE(std::fabs(bias), 5 * sigma_sum + slack) << name;
    EXPECT_LE(std::fabs(signed_bias), 5 * sigma_sum + slack) << name;
    EXPECT_NEAR(total_emp, total_var, 5 * std::sqrt(var_of_emp) + 1e-9) << name;
    EXPECT_GT(total_var, 0.0);
  }
}

TEST(Int8Codec, SameBytesForEveryThreadCount) {
  // Several parallel tasks (a task is 32 chunks of 4096), a tail bucket and a tail chunk.
  const auto x = normal_vector(3 * 131072 + 4096 * 3 + 515, 17);
  for (const char* mode : kModes) {
    for (const char* bucket : {"bucket=512", "bucket=513", "bucket=3"}) {
      const auto codec = make_codec(with_param(mode, bucket));
      set_num_threads(1);
      const auto ref = codec->encode(x, RngKey{.seed = 3, .step = 1});
      const auto ref_out = decode(*codec, ref, x.size());
      for_each_thread_count([&](int threads) {
        EXPECT_EQ(codec->encode(x, RngKey{.seed = 3, .step = 1}), ref)
            << mode << bucket << " " << threads;
        EXPECT_EQ(decode(*codec, ref, x.size()), ref_out) << mode << bucket;
      });
    }
  }
}

TEST(Int8Codec, SameBytesOnEverySimdTarget) {
  std::vector<float> x = normal_vector(4096 + 37, 23);
  for (size_t i = 0; i < 100; ++i) x[i] *= 1e-25f;  // a bucket that takes the 2^64 rescale
  for (const char* mode : kModes) {
    const auto codec = make_codec(with_param(mode, "bucket=100"));
    const auto ref = codec->encode(x, RngKey{.seed = 4});
    const auto ref_out = decode(*codec, ref, x.size());
    for_each_simd_target([&](const char* target) {
      EXPECT_EQ(codec->encode(x, RngKey{.seed = 4}), ref) << mode << " " << target;
      EXPECT_EQ(decode(*codec, ref, x.size()), ref_out) << mode << " " << target;
    });
  }
}

TEST(Int8Codec, SmallSizesAndZeroBuckets) {
  for (const char* mode : kModes) {
    const auto codec = make_codec(with_param(mode, "bucket=4"));
    // n = 0: a header and an empty body.
    const auto empty = codec->encode(std::vector<float>{}, RngKey{});
    EXPECT_EQ(empty.size(), kHeaderBytes);
    EXPECT_TRUE(decode(*codec, empty, 0).empty());
    // n = 1: the only element is its bucket's absmax.
    for (const float v : {-2.5f, 3e-30f, 1e-40f}) {
      const std::vector<float> one{v};
      const auto y = decode(*codec, codec->encode(one, RngKey{}), 1);
      // Within float rounding of the scale (a denormal scale keeps only a few digits).
      EXPECT_NEAR(y[0], v, std::max(std::fabs(v) * 1e-6, 1e-43)) << mode;
    }
    // An all-zero bucket decodes to exact zeros next to a non-zero one; odd size.
    const std::vector<float> x{0, 0, 0, 0, 1, -2, 0.5f, 0, 0, -0.0f, 0};
    const auto y = decode(*codec, codec->encode(x, RngKey{.seed = 8}), x.size());
    for (size_t i : {0, 1, 2, 3, 7, 8, 9, 10}) EXPECT_EQ(y[i], 0.0f) << mode << " " << i;
    for (float v : y) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(Int8Codec, DenormalBucketsRoundWithinBounds) {
  std::vector<float> x = normal_vector(512, 29, 1e-39f);  // denormal magnitudes
  for (const char* mode : kModes) {
    const auto codec = make_codec(mode);
    const auto y = decode(*codec, codec->encode(x, RngKey{}), x.size());
    float m = 0;
    for (float v : x) m = std::max(m, std::fabs(v));
    // The widest gap: 1/127 (linear), 0.9/64 (tree's top decade).
    const double gap = std::string(mode).find("tree") != std::string::npos ? 0.9 / 64 : 1 / 127.0;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_TRUE(std::isfinite(y[i]));
      // Decoding multiplies by a denormal scale, so allow a few of its ulps.
      ASSERT_LE(std::fabs(y[i] - x[i]), m * gap * 1.01 + 1e-44) << mode << " " << i;
    }
  }
}

TEST(Int8Codec, DecodeAddAccumulatesWithAWeight) {
  const auto x = normal_vector(1000, 31);
  for (const char* mode : kModes) {
    const auto codec = make_codec(mode);
    const auto payload = codec->encode(x, RngKey{.seed = 1});
    const auto y = decode(*codec, payload, x.size());
    std::vector<float> out(x.size(), 0.25f);
    codec->decode_add(payload, out, -1.5f);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(out[i], 0.25f - 1.5f * y[i], 1e-6f) << i;
    // The residual of error feedback: in - decode.
    std::vector<float> residual(x.size());
    codec->residual(x, payload, residual);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(residual[i], x[i] - y[i]);
  }
}

TEST(Int8Codec, NonFiniteInputNamesTheIndex) {
  for (const char* mode : kModes) {
    const auto codec = make_codec(mode);
    for (const float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> x = normal_vector(5000, 2);
      x[4321] = bad;
      try {
        codec->encode(x, RngKey{});
        ADD_FAILURE() << "no error for " << bad;
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("4321"), std::string::npos) << e.what();
      }
    }
  }
}

TEST(Int8Codec, CorruptBodiesWithValidChecksumsAreRejected) {
  const auto x = normal_vector(700, 41);
  for (const char* mode : kModes) {
    const auto codec = make_codec(mode);
    const auto good = codec->encode(x, RngKey{.seed = 6});
    const size_t codes = kHeaderBytes + 4 * 2;
    const auto expect_corrupt = [&](std::vector<std::byte> p, const char* what) {
      reseal(p);
      std::vector<float> out(x.size(), 1.0f);
      EXPECT_THROW(codec->decode_add(p, out, 1.0f), CorruptPayload) << mode << ": " << what;
    };
    auto p = good;
    p[codes + 650] = std::byte{0x80};  // code -128, in the second bucket
    expect_corrupt(p, "code -128");
    p = good;
    p[codes] = std::byte{0x80};
    expect_corrupt(p, "code -128 first");
    for (const float scale : {NAN, INFINITY, -1.0f}) {
      p = good;
      store_f32(p.data() + kHeaderBytes + 4, scale);
      expect_corrupt(p, "bad absmax");
    }
    // A flipped code without resealing: the CRC catches it.
    p = good;
    p[codes + 3] ^= std::byte{1};
    std::vector<float> out(x.size());
    EXPECT_THROW(codec->decode_add(p, out, 1.0f), CorruptPayload);
    // Truncated.
    p = good;
    p.pop_back();
    EXPECT_THROW(codec->decode_add(p, out, 1.0f), CorruptPayload);
    // The other codes of a single-chunk payload are not added when one is invalid.
    p = good;
    p[codes + 699] = std::byte{0x80};
    reseal(p);
    std::vector<float> untouched(x.size(), 1.0f);
    EXPECT_THROW(codec->decode_add(p, untouched, 1.0f), CorruptPayload);
    EXPECT_EQ(untouched, std::vector<float>(x.size(), 1.0f));
  }
}

}  // namespace
}  // namespace qgrad
