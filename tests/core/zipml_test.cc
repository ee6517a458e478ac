#include "core/codecs/zipml.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/zipml_kernels.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

using namespace qgrad::testing;

std::vector<float> uniform_levels_of(std::span<const float> x, int bits) {
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  return uniform_levels(*lo, *hi, 1 << bits);
}

// The levels a payload sends for bucket b (uniform: rebuilt from lo and hi).
std::vector<float> payload_levels(std::span<const std::byte> payload, bool optimal, int bits,
                                  size_t bucket, size_t n, size_t b) {
  const std::byte* body = payload.data() + kHeaderBytes;
  if (!optimal)
    return uniform_levels(load_f32(body + 8 * b), load_f32(body + 8 * b + 4), 1 << bits);
  const size_t full = std::min(size_t{1} << bits, bucket);
  const size_t m = std::min(size_t{1} << bits, std::min(bucket, n - b * bucket));
  std::vector<float> levels(m);
  for (size_t k = 0; k < m; ++k) levels[k] = load_f32(body + 4 * (b * full + k));
  return levels;
}

// Neighbouring levels of x: the largest level <= x and the next one (or x's own level).
std::pair<double, double> around(const std::vector<float>& levels, float x) {
  const size_t j =
      static_cast<size_t>(std::upper_bound(levels.begin(), levels.end(), x) - levels.begin()) - 1;
  if (j + 1 >= levels.size()) return {levels[j], levels[j]};
  return {levels[j], levels[j + 1]};
}

TEST(ZipmlLevels, StochasticRoundingFact15) {
  // x = 0.3 between levels 0.25 and 0.5: up with probability 0.2, variance 0.01
  // (docs/algorithms.md, "ZipML").
  const std::vector<float> x{0.3f}, levels{0.25f, 0.5f};
  EXPECT_NEAR(stochastic_rounding_variance(x, levels), 0.01, 1e-8);
  // Through the codec: a bucket {0, 0.3, 1.75} with 3 bits has levels 0.25 apart.
  const auto codec = make_codec("zipml:bits=3,bucket=3");
  const std::vector<float> in{0.0f, 0.3f, 1.75f};
  const int kDraws = 4000;
  int ups = 0;
  double sum = 0, sum_sq = 0;
  for (int k = 0; k < kDraws; ++k) {
    const auto y = decode(*codec, codec->encode(in, RngKey{.seed = 15, .step = uint64_t(k)}), 3);
    ASSERT_EQ(y[0], 0.0f);
    ASSERT_EQ(y[2], 1.75f);
    ASSERT_TRUE(y[1] == 0.25f || y[1] == 0.5f) << y[1];
    ups += y[1] == 0.5f;
    sum += y[1];
    sum_sq += static_cast<double>(y[1]) * y[1];
  }
  EXPECT_NEAR(ups / double(kDraws), 0.2, 5 * std::sqrt(0.16 / kDraws));
  EXPECT_NEAR(sum / kDraws, 0.3, 5 * std::sqrt(0.01 / kDraws));
  // Sample variance of a two-point variable: sd of the estimator sqrt((mu4 - s^4) / K).
  const double var = sum_sq / kDraws - (sum / kDraws) * (sum / kDraws);
  const double mu4 = std::pow(0.25, 4) * 0.16 * (1 - 3 * 0.16);
  EXPECT_NEAR(var, 0.01, 5 * std::sqrt((mu4 - 1e-4) / kDraws));
}

TEST(ZipmlLevels, VarianceOptimalLevelsFact17) {
  const std::vector<float> x{0.0f, 0.1f, 0.2f, 0.9f, 1.0f};
  const auto levels = optimal_levels(x, 3);
  EXPECT_EQ(levels, (std::vector<float>{0.0f, 0.2f, 1.0f}));
  EXPECT_NEAR(stochastic_rounding_variance(x, levels), 0.08, 1e-7);
  EXPECT_NEAR(stochastic_rounding_variance(x, std::vector<float>{0.0f, 0.5f, 1.0f}), 0.14, 1e-7);
  EXPECT_NEAR(stochastic_rounding_variance(x, std::vector<float>{0.0f, 0.1f, 1.0f}), 0.16, 1e-7);
  EXPECT_NEAR(stochastic_rounding_variance(x, std::vector<float>{0.0f, 0.9f, 1.0f}), 0.22, 1e-7);
}

// The minimum over every choice of `count` levels among the distinct values that keeps min and max.
double brute_force_variance(const std::vector<float>& x, size_t count) {
  std::vector<float> d = x;
  std::sort(d.begin(), d.end());
  d.erase(std::unique(d.begin(), d.end()), d.end());
  if (d.size() <= count) return 0.0;
  double best = INFINITY;
  const size_t inner = d.size() - 2;
  for (uint32_t mask = 0; mask < (1u << inner); ++mask) {
    if (static_cast<size_t>(__builtin_popcount(mask)) != count - 2) continue;
    std::vector<float> levels{d.front()};
    for (size_t i = 0; i < inner; ++i)
      if (mask >> i & 1) levels.push_back(d[i + 1]);
    levels.push_back(d.back());
    best = std::min(best, stochastic_rounding_variance(x, levels));
  }
  return best;
}

TEST(ZipmlLevels, OptimalLevelsMatchABruteForceSearch) {
  std::mt19937 gen(17);
  for (int trial = 0; trial < 400; ++trial) {
    const size_t n = 2 + gen() % 9;
    const size_t count = 3 + gen() % 2;
    std::vector<float> x(n);
    std::exponential_distribution<float> dist(1.0f);
    for (auto& v : x) v = trial % 3 == 0 ? std::round(dist(gen) * 4) / 4 : dist(gen) - 0.5f;
    const auto levels = optimal_levels(x, static_cast<int>(count));
    ASSERT_EQ(levels.size(), count);
    EXPECT_TRUE(std::is_sorted(levels.begin(), levels.end()));
    EXPECT_EQ(levels.front(), *std::min_element(x.begin(), x.end()));
    EXPECT_EQ(levels.back(), *std::max_element(x.begin(), x.end()));
    const double best = brute_force_variance(x, count);
    EXPECT_NEAR(stochastic_rounding_variance(x, levels), best, 1e-9 * (1 + best)) << trial;
  }
}

TEST(ZipmlLevels, OptimalNeverLosesToUniformAndWinsOnSkewedData) {
  std::mt19937 gen(19);
  const auto draw = [&](int kind, size_t n) {
    std::vector<float> v(n);
    std::normal_distribution<float> normal;
    std::exponential_distribution<float> expo(1.0f);
    std::lognormal_distribution<float> lognormal(0.0f, 1.5f);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (auto& x : v) {
      switch (kind) {
        case 0:
          x = normal(gen);
          break;
        case 1:
          x = uniform(gen);
          break;
        case 2:
          x = expo(gen);
          break;
        case 3:
          x = lognormal(gen);
          break;
        default:
          x = (gen() % 2 ? 10.0f : -10.0f) + normal(gen);  // bimodal
      }
    }
    return v;
  };
  for (int kind = 0; kind < 5; ++kind) {
    for (const int bits : {1, 2, 4, 8}) {
      for (const size_t max_candidates : {size_t{8}, size_t{64}}) {
        const auto x = draw(kind, 512);
        const int count = 1 << bits;
        const double uniform = stochastic_rounding_variance(x, uniform_levels_of(x, bits));
        const double optimal =
            stochastic_rounding_variance(x, optimal_levels(x, count, max_candidates));
        EXPECT_LE(optimal, uniform * (1 + 1e-9)) << kind << " bits " << bits;
        // Skewed gradients (exponential, log-normal) gain the most.
        if ((kind == 2 || kind == 3) && bits == 4 && max_candidates == 64) {
          EXPECT_LT(optimal, 0.7 * uniform) << kind;
        }
      }
    }
  }
}

TEST(ZipmlLevels, BadArgumentsThrow) {
  EXPECT_THROW(optimal_levels(std::vector<float>{}, 4), InvalidArgument);
  EXPECT_THROW(optimal_levels(std::vector<float>{1.0f, NAN}, 4), InvalidArgument);
  EXPECT_THROW(optimal_levels(std::vector<float>{1.0f, 2.0f}, 1), InvalidArgument);
  EXPECT_THROW(optimal_levels(std::vector<float>{1.0f}, 0), InvalidArgument);
  EXPECT_EQ(optimal_levels(std::vector<float>{3.0f, 3.0f}, 1), std::vector<float>{3.0f});
  EXPECT_EQ(optimal_levels(std::vector<float>{2.0f, 1.0f}, 4),
            (std::vector<float>{1.0f, 2.0f, 2.0f, 2.0f}));
  EXPECT_THROW(stochastic_rounding_variance(std::vector<float>{3.0f}, std::vector<float>{0, 1}),
               InvalidArgument);
  EXPECT_THROW(stochastic_rounding_variance(std::vector<float>{0.5f}, std::vector<float>{1, 0}),
               InvalidArgument);
}

TEST(ZipmlPacking, MatchesABitByBitReference) {
  std::mt19937 gen(23);
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t n : {0, 1, 5, 8, 9, 31, 64, 65, 127, 1000, 4099}) {
      std::vector<uint8_t> index(n);
      for (auto& v : index) v = static_cast<uint8_t>(gen() & ((1u << bits) - 1));
      std::vector<uint8_t> expected((n * bits + 7) / 8, 0);
      for (size_t i = 0; i < n; ++i)
        for (int k = 0; k < bits; ++k)
          if (index[i] >> k & 1)
            expected[(i * bits + k) / 8] |= uint8_t(1u << ((i * bits + k) % 8));
      // Guard bytes around the output catch writes beyond ceil(n * bits / 8).
      std::vector<uint8_t> packed(expected.size() + 16, 0xAB);
      simd::zipml_pack(index.data(), n, bits, packed.data() + 8);
      ASSERT_TRUE(std::equal(expected.begin(), expected.end(), packed.begin() + 8))
          << bits << " " << n;
      for (size_t g = 0; g < 8; ++g) {
        ASSERT_EQ(packed[g], 0xAB);
        ASSERT_EQ(packed[8 + expected.size() + g], 0xAB) << bits << " " << n;
      }
      std::vector<uint8_t> unpacked(n + 8, 0xCD);
      simd::zipml_unpack(expected.data(), n, bits, unpacked.data());
      ASSERT_TRUE(std::equal(index.begin(), index.end(), unpacked.begin())) << bits << " " << n;
      for (size_t g = n; g < n + 8; ++g) ASSERT_EQ(unpacked[g], 0xCD);
    }
  }
}

TEST(ZipmlCodec, SpecAndFlags) {
  EXPECT_EQ(make_codec("zipml")->spec().str(), "zipml:bits=4,levels=uniform,bucket=512");
  EXPECT_TRUE(make_codec("zipml")->unbiased());
  EXPECT_TRUE(make_codec("zipml:levels=optimal")->unbiased());
}

TEST(ZipmlCodec, ExactBodySize) {
  for (const bool optimal : {false, true}) {
    for (const int bits : {1, 3, 4, 8}) {
      for (const size_t bucket : {2, 7, 512}) {
        const auto codec =
            make_codec("zipml:bits=" + std::to_string(bits) + ",bucket=" + std::to_string(bucket) +
                       (optimal ? ",levels=optimal" : ""));
        for (const size_t n : {0, 1, 2, 7, 9, 511, 512, 513, 1029}) {
          const auto x = normal_vector(n, static_cast<uint32_t>(n + bits));
          const size_t buckets = (n + bucket - 1) / bucket;
          size_t meta = 8 * buckets;
          if (optimal) {
            meta = 0;
            for (size_t b = 0; b < buckets; ++b)
              meta += 4 * std::min(size_t{1} << bits, std::min(bucket, n - b * bucket));
          }
          const auto payload = codec->encode(x, RngKey{.seed = 2});
          EXPECT_EQ(payload.size(), kHeaderBytes + meta + (n * bits + 7) / 8)
              << codec->spec().str() << " n=" << n;
          EXPECT_EQ(payload.size(), codec->max_encoded_bytes(n));
        }
      }
    }
  }
  // 4 bits + 64 bits per bucket of 512: 7.76x smaller than fp32 at 25M elements.
  const size_t n = 25'000'000;
  EXPECT_NEAR(4.0 * n / make_codec("zipml")->max_encoded_bytes(n), 32.0 / (4 + 64.0 / 512), 1e-3);
}

TEST(ZipmlCodec, DecodesToLevelsInsideTheBucketRange) {
  std::vector<float> x = normal_vector(512 * 3 + 100, 29);
  for (size_t i = 512; i < 1024; ++i) x[i] = std::exp(x[i] * 2);  // a skewed bucket
  for (size_t i = 1024; i < 1536; ++i) x[i] = -7.25f;             // a constant bucket
  for (const bool optimal : {false, true}) {
    for (const int bits : {1, 2, 4, 8}) {
      const auto codec =
          make_codec("zipml:bits=" + std::to_string(bits) + (optimal ? ",levels=optimal" : ""));
      const auto payload = codec->encode(x, RngKey{.seed = 3});
      const auto y = decode(*codec, payload, x.size());
      for (size_t b = 0; b * 512 < x.size(); ++b) {
        const auto levels = payload_levels(payload, optimal, bits, 512, x.size(), b);
        const size_t len = std::min<size_t>(512, x.size() - b * 512);
        const auto [lo, hi] = std::minmax_element(x.begin() + b * 512, x.begin() + b * 512 + len);
        EXPECT_EQ(levels.front(), *lo);
        EXPECT_EQ(levels.back(), *hi);
        for (size_t i = b * 512; i < b * 512 + len; ++i) {
          ASSERT_GE(y[i], *lo);
          ASSERT_LE(y[i], *hi);
          const auto [below, above] = around(levels, x[i]);
          ASSERT_TRUE(y[i] == static_cast<float>(below) || y[i] == static_cast<float>(above))
              << "bits " << bits << " x=" << x[i] << " y=" << y[i];
        }
      }
      for (size_t i = 1024; i < 1536; ++i) ASSERT_EQ(y[i], -7.25f);  // exact
    }
  }
}

TEST(ZipmlCodec, UnbiasedWithTheExactVariance) {
  // Skewed values in buckets of 128 (the last one short), K independent keys. Each coordinate's
  // mean is checked within 5 sigma, and so are two sums over all of them (plain and
  // sign-weighted), which catch a bias of a fraction of a percent of a gap.
  std::vector<float> x = random_vector(500, 31, std::lognormal_distribution<float>(0.0f, 1.5f));
  for (size_t i = 0; i < x.size(); i += 3) x[i] = -x[i];
  const size_t kBucket = 128;
  const int kDraws = 2000;
  for (const bool optimal : {false, true}) {
    const char* name = optimal ? "optimal" : "uniform";
    const auto codec =
        make_codec(std::string("zipml:bits=3,bucket=128") + (optimal ? ",levels=optimal" : ""));
    std::vector<double> sum(x.size()), sum_sq(x.size());
    for (int k = 0; k < kDraws; ++k) {
      const auto payload = codec->encode(x, RngKey{.seed = 7, .step = uint64_t(k)});
      const auto y = decode(*codec, payload, x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        sum[i] += y[i];
        sum_sq[i] += static_cast<double>(y[i]) * y[i];
      }
    }
    const auto payload = codec->encode(x, RngKey{});
    double total_var = 0, total_emp = 0, var_of_emp = 0, bias = 0, signed_bias = 0, slack = 0;
    for (size_t b = 0; b * kBucket < x.size(); ++b) {
      const auto levels = payload_levels(payload, optimal, 3, kBucket, x.size(), b);
      const size_t len = std::min(kBucket, x.size() - b * kBucket);
      const std::span<const float> bucket(x.data() + b * kBucket, len);
      double bucket_var = 0;
      for (size_t i = b * kBucket; i < b * kBucket + len; ++i) {
        const auto [below, above] = around(levels, x[i]);
        const double gap = above - below;
        const double var = (x[i] - below) * (above - x[i]);
        bucket_var += var;
        const double mean = sum[i] / kDraws;
        // Beyond 5 sigma: the 2^-17-of-a-gap resolution of 16-bit uniforms and float rounding
        // of the rounding position.
        const double systematic = gap * (0x1p-16 + 1e-5);
        EXPECT_NEAR(mean, x[i], 5 * std::sqrt(std::max(var, 0.0) / kDraws) + systematic)
            << name << " " << i;
        bias += mean - x[i];
        signed_bias += (x[i] < 0 ? -1 : 1) * (mean - x[i]);
        slack += systematic;
        const double p = gap > 0 ? (x[i] - below) / gap : 0;
        const double pq = p * (1 - p);
        total_emp += sum_sq[i] / kDraws - mean * mean;
        var_of_emp += (std::pow(gap, 4) * pq * (1 - 3 * pq) - var * var) / kDraws;
      }
      EXPECT_NEAR(bucket_var, stochastic_rounding_variance(bucket, levels),
                  1e-9 * (1 + bucket_var));
      total_var += bucket_var;
    }
    const double sigma_sum = std::sqrt(total_var / kDraws);
    EXPECT_LE(std::fabs(bias), 5 * sigma_sum + slack) << name;
    EXPECT_LE(std::fabs(signed_bias), 5 * sigma_sum + slack) << name;
    EXPECT_GT(total_var, 0.0);
    EXPECT_NEAR(total_emp, total_var, 5 * std::sqrt(var_of_emp) + 1e-9) << name;
  }
}

TEST(ZipmlCodec, OptimalLevelsHaveLessVarianceThanUniformOnSkewedGradients) {
  const auto x = random_vector(512 * 4, 37, std::lognormal_distribution<float>(0.0f, 1.5f));
  double uniform = 0, optimal = 0;
  const auto u = make_codec("zipml:bits=4"), o = make_codec("zipml:bits=4,levels=optimal");
  const auto pu = u->encode(x, RngKey{}), po = o->encode(x, RngKey{});
  for (size_t b = 0; b < 4; ++b) {
    const std::span<const float> bucket(x.data() + 512 * b, 512);
    uniform += stochastic_rounding_variance(bucket, payload_levels(pu, false, 4, 512, x.size(), b));
    optimal += stochastic_rounding_variance(bucket, payload_levels(po, true, 4, 512, x.size(), b));
  }
  EXPECT_LT(optimal, 0.7 * uniform);
}

TEST(ZipmlCodec, SameBytesForEveryThreadCount) {
  const auto x = normal_vector(3 * 131072 + 3 * 4096 + 517, 41);
  const auto small = normal_vector(20000 + 13, 43);
  const char* const specs[] = {
      "zipml",        "zipml:bits=3,bucket=513", "zipml:bits=1,bucket=3",
      "zipml:bits=8", "zipml:levels=optimal",    "zipml:levels=optimal,bits=2,bucket=100"};
  for (const char* spec : specs) {
    const auto codec = make_codec(spec);
    const auto& in = std::string(spec).find("optimal") != std::string::npos ? small : x;
    set_num_threads(1);
    const auto ref = codec->encode(in, RngKey{.seed = 5, .step = 2});
    const auto ref_out = decode(*codec, ref, in.size());
    for_each_thread_count([&](int threads) {
      EXPECT_EQ(codec->encode(in, RngKey{.seed = 5, .step = 2}), ref) << spec << " " << threads;
      EXPECT_EQ(decode(*codec, ref, in.size()), ref_out) << spec << " " << threads;
    });
  }
}

TEST(ZipmlCodec, SameBytesOnEverySimdTarget) {
  std::vector<float> x = normal_vector(4096 + 45, 47);
  for (size_t i = 0; i < 100; ++i) x[i] = 1.0f + x[i] * 1e-26f;  // a range below 2^-64: rescaled
  // Buckets whose min (or max) is a zero of either sign: which one a reduction returns depends on
  // its order, the payload must not.
  for (size_t i = 100; i < 200; ++i)
    x[i] = i % 7 == 0 ? -0.0f : (i % 5 == 0 ? 0.0f : std::fabs(x[i]));
  for (size_t i = 200; i < 300; ++i)
    x[i] = i % 3 == 0 ? 0.0f : (i % 4 == 0 ? -0.0f : -std::fabs(x[i]));
  for (const char* spec : {"zipml:bucket=100", "zipml:bits=3,bucket=100", "zipml:bits=8"}) {
    const auto codec = make_codec(spec);
    const auto ref = codec->encode(x, RngKey{.seed = 6});
    const auto ref_out = decode(*codec, ref, x.size());
    for_each_simd_target([&](const char* target) {
      EXPECT_EQ(codec->encode(x, RngKey{.seed = 6}), ref) << spec << " " << target;
      EXPECT_EQ(decode(*codec, ref, x.size()), ref_out) << spec << " " << target;
    });
  }
}

TEST(ZipmlCodec, SmallSizes) {
  for (const char* spec :
       {"zipml:bucket=4", "zipml:bucket=4,levels=optimal", "zipml:bits=1,bucket=3"}) {
    const auto codec = make_codec(spec);
    const auto empty = codec->encode(std::vector<float>{}, RngKey{});
    EXPECT_EQ(empty.size(), kHeaderBytes);
    EXPECT_TRUE(decode(*codec, empty, 0).empty());
    for (const float v : {-2.5f, 0.0f, 1e-40f}) {
      const std::vector<float> one{v};
      EXPECT_EQ(decode(*codec, codec->encode(one, RngKey{}), 1), one) << spec;
    }
    const std::vector<float> x{0, 0, 0, 0, 1, -2, 0.5f, 3, 4, 4, 4};
    const auto y = decode(*codec, codec->encode(x, RngKey{.seed = 8}), x.size());
    for (size_t i : {0, 1, 2}) EXPECT_EQ(y[i], 0.0f) << spec;  // an all-zero bucket
    for (size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(std::isfinite(y[i]));
  }
}

TEST(ZipmlCodec, TinyAndWideRanges) {
  // A range far below 2^-64 (denormal differences) still rounds between its own min and max.
  std::vector<float> tiny(300);
  for (size_t i = 0; i < tiny.size(); ++i) tiny[i] = static_cast<float>(i % 17) * 1e-43f;
  for (const char* spec : {"zipml", "zipml:bits=2", "zipml:levels=optimal"}) {
    const auto codec = make_codec(spec);
    const auto y = decode(*codec, codec->encode(tiny, RngKey{}), tiny.size());
    for (float v : y) {
      ASSERT_GE(v, 0.0f);
      ASSERT_LE(v, 16e-43f);
    }
  }
  // A range wider than float: uniform levels cannot be stepped, optimal levels can.
  const std::vector<float> wide{-3e38f, 0.0f, 1.0f, 3e38f};
  EXPECT_THROW(make_codec("zipml")->encode(wide, RngKey{}), InvalidArgument);
  const auto codec = make_codec("zipml:levels=optimal,bits=1");
  const auto y = decode(*codec, codec->encode(wide, RngKey{}), wide.size());
  EXPECT_EQ(y[0], -3e38f);
  EXPECT_EQ(y[3], 3e38f);
  for (float v : y) EXPECT_TRUE(v == -3e38f || v == 3e38f);
}

TEST(ZipmlCodec, DecodeAddAccumulatesWithAWeight) {
  const auto x = normal_vector(1000, 53);
  for (const char* spec : {"zipml", "zipml:levels=optimal"}) {
    const auto codec = make_codec(spec);
    const auto payload = codec->encode(x, RngKey{.seed = 1});
    const auto y = decode(*codec, payload, x.size());
    std::vector<float> out(x.size(), 0.25f);
    codec->decode_add(payload, out, -1.5f);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(out[i], 0.25f + -1.5f * y[i]) << i;
    std::vector<float> residual(x.size());
    codec->residual(x, payload, residual);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(residual[i], x[i] - y[i]);
  }
}

TEST(ZipmlCodec, NonFiniteInputNamesTheIndex) {
  for (const char* spec : {"zipml", "zipml:levels=optimal"}) {
    for (const float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> x = normal_vector(5000, 2);
      x[4321] = bad;
      try {
        make_codec(spec)->encode(x, RngKey{});
        ADD_FAILURE() << "no error for " << bad;
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("4321"), std::string::npos) << e.what();
      }
    }
  }
}

TEST(ZipmlCodec, CorruptBodiesWithValidChecksumsAreRejected) {
  const auto x = normal_vector(515, 59);
  const auto expect_corrupt = [&](const Codec& codec, std::vector<std::byte> p, const char* what) {
    reseal(p);
    std::vector<float> out(x.size(), 1.0f);
    EXPECT_THROW(codec.decode_add(p, out, 1.0f), CorruptPayload) << what;
    EXPECT_EQ(out, std::vector<float>(x.size(), 1.0f)) << what << ": out was modified";
  };
  {
    const auto codec = make_codec("zipml");
    const auto good = codec->encode(x, RngKey{.seed = 6});
    const auto with = [&](size_t offset, float v) {
      auto p = good;
      store_f32(p.data() + kHeaderBytes + offset, v);
      return p;
    };
    expect_corrupt(*codec, with(0, NAN), "lo NaN");
    expect_corrupt(*codec, with(12, INFINITY), "hi Inf");
    expect_corrupt(*codec, with(8, 1e30f), "lo > hi");
    auto wide = with(0, -3e38f);
    store_f32(wide.data() + kHeaderBytes + 4, 3e38f);
    expect_corrupt(*codec, wide, "range overflow");
    auto p = good;
    p.pop_back();
    std::vector<float> out(x.size());
    EXPECT_THROW(codec->decode_add(p, out, 1.0f), CorruptPayload);
  }
  {
    // Optimal: bucket 0 sends 16 levels, the 3-element tail bucket 3.
    const auto codec = make_codec("zipml:levels=optimal");
    const auto good = codec->encode(x, RngKey{.seed = 6});
    auto p = good;
    store_f32(p.data() + kHeaderBytes + 4 * 5, NAN);
    expect_corrupt(*codec, p, "level NaN");
    p = good;
    store_f32(p.data() + kHeaderBytes + 4 * 5, 1e30f);
    expect_corrupt(*codec, p, "decreasing levels");
    p = good;
    store_f32(p.data() + kHeaderBytes + 4 * 17, -1e30f);
    expect_corrupt(*codec, p, "decreasing tail levels");
    // Element 514's index is the low nibble of the last byte: 15 >= the tail's 3 levels.
    p = good;
    p.back() |= std::byte{0x0F};
    expect_corrupt(*codec, p, "index beyond the tail's levels");
  }
}

}  // namespace
}  // namespace qgrad
