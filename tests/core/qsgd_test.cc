#include "core/codecs/qsgd.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/codec_registry.h"
#include "core/elias.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/philox.h"
#include "core/simd/kernels.h"
#include "core/simd/qsgd_kernels.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

using Bytes = std::vector<std::byte>;

using namespace qgrad::testing;

// This file's inputs come from std::mt19937_64 (the other codec tests use std::mt19937).
using Rng64 = std::mt19937_64;

int levels_of(const CodecSpec& spec) {
  const auto l = spec.get_int("levels");
  return l > 0 ? static_cast<int>(l) : (1 << (spec.get_int("bits") - 1)) - 1;
}

// The code of element i read straight from a dense body, following the layout in qsgd.h.
uint32_t dense_code(std::span<const std::byte> codes, size_t n, int bits, size_t i) {
  const uint32_t mask = (1u << bits) - 1;
  if (bits == 2 || bits == 4) {
    const size_t group = 512 / bits;
    if (i < n / group * group) {
      const size_t g = i / group, e = i % group;
      const uint32_t word = load_u32(codes.data() + 64 * g + 4 * (e % 16));
      return (word >> (bits * (e / 16))) & mask;
    }
  }
  // Linear: element i at bits [bits*i, bits*(i+1)), least significant bit first.
  uint32_t code = 0;
  for (int b = 0; b < bits; ++b) {
    const size_t bit = i * bits + b;
    code |= ((static_cast<uint8_t>(codes[bit / 8]) >> (bit % 8)) & 1u) << b;
  }
  return code;
}

TEST(Qsgd, SpecAndLevelsValidation) {
  EXPECT_EQ(make_codec("qsgd")->spec().str(),
            "qsgd:bits=4,levels=0,bucket=512,norm=max,coding=dense");
  EXPECT_NO_THROW(make_codec("qsgd:bits=3,levels=3"));
  EXPECT_NO_THROW(make_codec("qsgd:bits=8,levels=127"));
  try {
    make_codec("qsgd:bits=3,levels=4");
    FAIL() << "levels=4 with bits=3 must be rejected";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("needs bits >= 4"), std::string::npos) << e.what();
  }
  try {
    make_codec("qsgd:bits=2,levels=100");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("needs bits >= 8"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(make_codec("qsgd")->unbiased());
}

TEST(Qsgd, ExactVarianceMatchesPaperFacts) {
  // The paper's bounds (docs/algorithms.md, "QSGD").
  const std::vector<float> a = {3, 4}, b = {1, -2, 3, -4};
  EXPECT_NEAR(qsgd_exact_variance(a, 1, true), 10.0, 1e-12);
  EXPECT_NEAR(qsgd_exact_variance(a, 2, true), 2.5, 1e-12);
  EXPECT_NEAR(qsgd_exact_variance(b, 1, true), 24.772, 5e-4);
  EXPECT_NEAR(qsgd_exact_variance(b, 3, true), 2.3934, 5e-5);
  EXPECT_NEAR(qsgd_exact_variance(a, 1, false), 3.0, 1e-12);
  // s = 1: variance = ||v||_2 ||v||_1 - ||v||_2^2.
  const double l2 = std::sqrt(30.0);
  EXPECT_NEAR(qsgd_exact_variance(b, 1, true), l2 * 10.0 - 30.0, 1e-9);
  std::vector<double> per(2);
  qsgd_coordinate_variances(a, 1, false, per);
  EXPECT_EQ(per[1], 0.0);  // max-norm: the largest coordinate is exact
  EXPECT_NEAR(per[0], 16.0 * 0.75 * 0.25, 1e-12);
  EXPECT_EQ(qsgd_exact_variance(std::vector<float>{0, 0, 0}, 3, true), 0.0);
}

TEST(Qsgd, LemmaBoundHoldsForExactVariance) {
  // E||Q(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2 for norm=l2 (Lemma 3.1 with bucket d).
  std::mt19937_64 rng(11);
  for (int s : {1, 2, 3, 7, 16, 127}) {
    for (size_t d : {1, 2, 3, 4, 16, 100, 512}) {
      std::vector<std::vector<float>> cases;
      cases.push_back(normal_vector<Rng64>(d, rng()));
      cases.emplace_back(d, 1.0f);  // every coordinate equal: r_i = s / sqrt(d)
      std::vector<float> sparse(d, 0.0f);
      sparse[rng() % d] = 5.0f;
      sparse[rng() % d] = -1.0f;
      cases.push_back(sparse);
      // Every r_i at a half level: p_i (1 - p_i) = 1/4, the worst case per coordinate.
      std::vector<float> half(d);
      for (auto& x : half) x = static_cast<float>(rng() % 4) + 0.5f;
      cases.push_back(half);
      std::vector<float> tiny(d, 1e-3f);
      tiny[0] = 1e3f;
      cases.push_back(tiny);
      for (const auto& v : cases) {
        double norm2 = 0;
        for (float x : v) norm2 += static_cast<double>(x) * x;
        const double bound = std::min(d / double(s * s), std::sqrt(double(d)) / s) * norm2;
        EXPECT_LE(qsgd_exact_variance(v, s, true), bound * (1 + 1e-12) + 1e-300)
            << "s=" << s << " d=" << d;
      }
    }
  }
}

// The kernels' integer form of the rounding rule equals its definition for every 16-bit draw,
// including fractions exactly on the draws' grid (k / 65536 and (k + 0.5) / 65536).
TEST(Qsgd, IntegerRoundingRuleEqualsDefinition) {
  std::mt19937_64 rng(5);
  for (int s : {1, 2, 3, 7, 63, 127}) {
    for (float scale : {float(s), 1.0f, 0.3f, 1e-30f, 1e-41f, 7e35f, 3e38f}) {
      const simd::QsgdQuantParams p = simd::qsgd_quant_params(scale, s, 8);
      std::vector<float> xs = {0.0f, -0.0f, scale, -scale, std::nextafter(scale, 0.0f)};
      for (int i = 0; i < 300; ++i) {
        xs.push_back(std::uniform_real_distribution<float>(-scale, scale)(rng));
        if (scale == float(s)) {  // r == |x|: put r on and between the grid of the draws
          const float k = static_cast<float>(rng() % 65536) + (rng() % 2 ? 0.5f : 0.0f);
          xs.push_back(static_cast<float>(rng() % s) + k / 65536.0f);
        }
      }
      for (float x : xs) {
        for (uint32_t h : {0u, 1u, 32767u, 32768u, 65534u, 65535u}) {
          ASSERT_EQ(simd::qsgd_quantize_half(x, h, p),
                    simd::qsgd_quantize_one(x, (h << 16) | 0x8000u, p))
              << "x=" << x << " h=" << h << " s=" << s << " scale=" << scale;
        }
        for (int j = 0; j < 20; ++j) {
          const uint32_t h = static_cast<uint32_t>(rng() % 65536);
          ASSERT_EQ(simd::qsgd_quantize_half(x, h, p),
                    simd::qsgd_quantize_one(x, (h << 16) | 0x8000u, p))
              << "x=" << x << " h=" << h << " s=" << s << " scale=" << scale;
        }
      }
      // The vector kernel (and its scalar tail) against the same rule.
      std::vector<uint16_t> halves(xs.size());
      for (auto& h : halves) h = static_cast<uint16_t>(rng());
      std::vector<uint32_t> codes(xs.size());
      simd::qsgd_quantize(xs.data(), halves.data(), xs.size(), p, codes.data());
      for (size_t i = 0; i < xs.size(); ++i)
        ASSERT_EQ(codes[i],
                  simd::qsgd_quantize_one(xs[i], (uint32_t{halves[i]} << 16) | 0x8000u, p))
            << i;
      // The largest magnitude always lands on level s exactly.
      EXPECT_EQ(simd::qsgd_quantize_one(scale, 0xFFFF8000u, p), static_cast<uint32_t>(s));
    }
  }
}

// Codes in the body == the documented rule computed from philox_word, for every layout.
TEST(Qsgd, BodyMatchesScalarReferenceAndLayout) {
  std::mt19937_64 rng(21);
  for (int bits = 2; bits <= 8; ++bits) {
    for (size_t bucket : {512, 100, 7, 256}) {
      for (const char* norm : {"max", "l2"}) {
        const std::string text = "qsgd:bits=" + std::to_string(bits) +
                                 ",bucket=" + std::to_string(bucket) + ",norm=" + norm;
        const auto c = make_codec(text);
        const int s = levels_of(c->spec());
        const size_t n = 1 + rng() % 3000;
        std::vector<float> v = normal_vector<Rng64>(n, rng());
        // Ties: with an element equal to s the scale is s, inv is 1 and r = |x| exactly, so
        // fractions of (k + 0.5) / 65536 and k / 65536 hit the rounding rule's edges.
        if (std::string(norm) == "max" && n > bucket) {
          v[0] = static_cast<float>(s);
          for (size_t i = 1; i < std::min(bucket, n); ++i) {
            const float whole = static_cast<float>(rng() % s);
            const float k = static_cast<float>(rng() % 65536) + (rng() % 2 ? 0.5f : 0.0f);
            v[i] = (whole + k / 65536.0f) * (rng() % 2 ? 1.0f : -1.0f);
          }
        }
        if (n > 2 * bucket)  // a zero bucket
          std::fill(v.begin() + bucket, v.begin() + 2 * bucket, 0.0f);
        const RngKey key{.seed = rng(), .step = 3, .rank = 1, .tensor = 2, .bucket = 5};
        const Bytes payload = c->encode(v, key);
        const std::span<const std::byte> body = std::span(payload).subspan(kHeaderBytes);
        const size_t nb = (n + bucket - 1) / bucket;
        ASSERT_EQ(body.size(), 4 * nb + (n * bits + 7) / 8) << text;
        const auto codes = body.subspan(4 * nb);
        for (size_t b = 0; b < nb; ++b) {
          const size_t b0 = b * bucket, len = std::min(bucket, n - b0);
          float scale = simd::absmax(v.data() + b0, len);
          if (std::string(norm) == "l2") scale = std::sqrt(simd::sum_squares(v.data() + b0, len));
          ASSERT_EQ(std::bit_cast<uint32_t>(load_f32(body.data() + 4 * b)),
                    std::bit_cast<uint32_t>(scale))
              << text << " bucket " << b;
          const simd::QsgdQuantParams p = simd::qsgd_quant_params(scale, s, bits);
          for (size_t i = b0; i < b0 + len; ++i) {
            const uint32_t want =
                scale == 0 ? 0u : simd::qsgd_quantize_one(v[i], philox_word(key, i), p);
            ASSERT_EQ(dense_code(codes, n, bits, i), want) << text << " element " << i;
          }
        }
        if (n * bits % 8 != 0) {  // zero padding
          EXPECT_EQ(static_cast<uint8_t>(codes.back()) >> (n * bits % 8), 0) << text;
        }
      }
    }
  }
}

class QsgdAll : public ::testing::TestWithParam<std::string> {};

TEST_P(QsgdAll, RoundTripErrorBoundSignsAndMaxCoordinate) {
  const auto c = make_codec(GetParam());
  const int s = levels_of(c->spec());
  const bool l2 = c->spec().get("norm") == "l2";
  const auto bucket = static_cast<size_t>(c->spec().get_int("bucket"));
  for (size_t n : {1, 2, 7, 511, 512, 513, 1031, 5000}) {
    std::vector<float> v = normal_vector<Rng64>(n, n * 31 + 7, 0.01f);
    for (size_t i = 0; i < n; i += 5) v[i] = 0.0f;
    if (n > 600) std::fill(v.begin() + 512, v.begin() + 600, 0.0f);
    const Bytes payload = c->encode(v, RngKey{.seed = n});
    const std::vector<float> q = decode(*c, payload, n);
    for (size_t b0 = 0; b0 < n; b0 += bucket) {
      const size_t len = std::min(bucket, n - b0);
      double scale = 0;
      for (size_t i = b0; i < b0 + len; ++i)
        scale = l2 ? scale + double(v[i]) * v[i] : std::max(scale, std::fabs(double(v[i])));
      if (l2) scale = std::sqrt(scale);
      for (size_t i = b0; i < b0 + len; ++i) {
        ASSERT_TRUE(std::isfinite(q[i]));
        EXPECT_LE(std::fabs(double(q[i]) - v[i]), scale / s * (1 + 1e-5)) << GetParam() << " " << i;
        EXPECT_LE(std::fabs(q[i]), scale * (1 + 1e-6));
        if (q[i] != 0.0f) {
          EXPECT_EQ(std::signbit(q[i]), std::signbit(v[i])) << i;
        }
        if (v[i] == 0.0f) {
          EXPECT_EQ(q[i], 0.0f);
        }
        if (!l2 && std::fabs(double(v[i])) == scale) {
          EXPECT_EQ(q[i], v[i]) << "max coordinate";
        }
      }
    }
  }
}

TEST_P(QsgdAll, ThreadCountDoesNotChangeBytes) {
  const auto c = make_codec(GetParam());
  const size_t n = 300'001;  // several chunks for every bucket size used here
  const std::vector<float> v = normal_vector<Rng64>(n, 5);
  const RngKey key{.seed = 9, .step = 2};
  set_num_threads(1);
  const Bytes ref = c->encode(v, key);
  const std::vector<float> ref_out = decode(*c, ref, n);
  for_each_thread_count([&](int t) {
    EXPECT_EQ(c->encode(v, key), ref) << t << " threads";
    const std::vector<float> out = decode(*c, ref, n);
    EXPECT_EQ(std::memcmp(out.data(), ref_out.data(), 4 * n), 0) << t << " threads";
  });
}

TEST_P(QsgdAll, EverySimdTargetGivesTheSameBytes) {
  const auto c = make_codec(GetParam());
  const size_t n = 20'011;
  std::vector<float> v = normal_vector<Rng64>(n, 17);
  v[100] = 1e-40f;  // subnormal and huge scales take the prescaled paths
  for (size_t i = 0; i < 512; ++i) v[i] *= 1e-38f;
  for (size_t i = 1024; i < 1536; ++i) v[i] *= 1e35f;
  const RngKey key{.seed = 4};
  const Bytes ref = c->encode(v, key);
  const std::vector<float> ref_out = decode(*c, ref, n);
  const size_t targets = for_each_simd_target([&](const char* target) {
    EXPECT_EQ(c->encode(v, key), ref) << target;
    const std::vector<float> out = decode(*c, ref, n);
    EXPECT_EQ(std::memcmp(out.data(), ref_out.data(), 4 * n), 0) << target;
  });
  EXPECT_GE(targets, 1u);
}

TEST_P(QsgdAll, ChangingOneBucketLeavesTheOthersAlone) {
  const auto c = make_codec(GetParam());
  const auto bucket = static_cast<size_t>(c->spec().get_int("bucket"));
  const size_t n = 5 * bucket + bucket / 3;
  const std::vector<float> v = normal_vector<Rng64>(n, 8);
  std::vector<float> w = v;
  for (size_t i = 2 * bucket; i < 3 * bucket; ++i) w[i] = w[i] * 7.0f + 0.5f;
  const RngKey key{.seed = 12};
  const std::vector<float> a = decode(*c, c->encode(v, key), n);
  const std::vector<float> b = decode(*c, c->encode(w, key), n);
  for (size_t i = 0; i < n; ++i) {
    if (i / bucket == 2) continue;
    ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i])) << i;
  }
}

TEST_P(QsgdAll, DecodeAddAccumulatesWithWeight) {
  const auto c = make_codec(GetParam());
  const size_t n = 2049;
  const std::vector<float> v = normal_vector<Rng64>(n, 3);
  const Bytes payload = c->encode(v, RngKey{.seed = 1});
  const std::vector<float> q = decode(*c, payload, n);
  std::vector<float> base = normal_vector<Rng64>(n, 4), out = base;
  c->decode_add(payload, out, -0.37f);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], base[i] + -0.37f * q[i]) << i;
  std::vector<float> r(n);
  c->residual(v, payload, r);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(r[i], v[i] - q[i]) << i;
}

TEST_P(QsgdAll, ZeroInputDecodesToExactZeros) {
  const auto c = make_codec(GetParam());
  for (size_t n : {0, 1, 600}) {
    const std::vector<float> v(n, 0.0f);
    const Bytes payload = c->encode(v, RngKey{});
    const std::vector<float> q = decode(*c, payload, n);
    for (float x : q) ASSERT_EQ(x, 0.0f);
  }
}

TEST_P(QsgdAll, NonFiniteInputIsNamed) {
  const auto c = make_codec(GetParam());
  std::vector<float> v = normal_vector<Rng64>(5000, 2);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> w = v;
    w[1234] = bad;
    w[4000] = bad;
    try {
      c->encode(w, RngKey{});
      FAIL() << "non-finite input accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("element 1234"), std::string::npos) << e.what();
    }
  }
}

TEST_P(QsgdAll, ExtremeScalesStayFiniteAndBounded) {
  const auto c = make_codec(GetParam());
  const int s = levels_of(c->spec());
  const auto bucket = static_cast<size_t>(c->spec().get_int("bucket"));
  for (float magnitude : {1e-45f, 1e-40f, 1e-30f, 1e-12f, 1e12f, 1e30f, 3e38f}) {
    std::vector<float> v = normal_vector<Rng64>(3 * bucket + 5, 6);
    float top = 0;
    for (float& x : v) {
      x = std::clamp(x, -3.0f, 3.0f) / 3.0f * magnitude;
      top = std::max(top, std::fabs(x));
    }
    const std::vector<float> q = decode(*c, c->encode(v, RngKey{.seed = 2}), v.size());
    const bool l2 = c->spec().get("norm") == "l2";
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_TRUE(std::isfinite(q[i])) << magnitude;
      if (q[i] != 0.0f) {
        ASSERT_EQ(std::signbit(q[i]), std::signbit(v[i]));
      }
      // l2 scales can be sqrt(bucket) times the largest element (capped at FLT_MAX).
      const double scale = l2 ? std::min(double(top) * std::sqrt(double(bucket)), 3.5e38) : top;
      ASSERT_LE(std::fabs(double(q[i]) - v[i]), scale / s * 1.001 + 1e-44) << magnitude << " " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Specs, QsgdAll,
                         ::testing::Values("qsgd", "qsgd:bits=2", "qsgd:bits=8", "qsgd:bits=3",
                                           "qsgd:bits=5,levels=9", "qsgd:bits=4,bucket=100",
                                           "qsgd:bits=2,bucket=7,norm=l2",
                                           "qsgd:bits=8,bucket=1000,norm=l2",
                                           "qsgd:bits=6,levels=1,bucket=64", "qsgd:norm=l2",
                                           "qsgd:coding=elias",
                                           "qsgd:bits=2,norm=l2,coding=elias,bucket=4096",
                                           "qsgd:bits=3,levels=2,bucket=33,coding=elias"),
                         [](const auto& info) { return param_name(info.param); });

// Mean over K keys of decode(encode(v)) per coordinate, within 5 sigma of v, sigma from the exact
// per-coordinate variance (plus the 2^-17 rounding-probability offset of 16-bit randomness).
TEST(Qsgd, UnbiasedPerCoordinate) {
  for (const char* text : {"qsgd:bits=3,bucket=128", "qsgd:bits=3,bucket=128,norm=l2",
                           "qsgd:bits=2,bucket=64,norm=l2"}) {
    const auto c = make_codec(text);
    const int s = levels_of(c->spec());
    const bool l2 = c->spec().get("norm") == "l2";
    const auto bucket = static_cast<size_t>(c->spec().get_int("bucket"));
    const size_t n = 300, K = 2000;
    const std::vector<float> v = normal_vector<Rng64>(n, 99);
    std::vector<double> sum(n, 0.0), var(n);
    for (size_t k = 0; k < K; ++k) {
      const std::vector<float> q = decode(*c, c->encode(v, RngKey{.seed = 1000 + k}), n);
      for (size_t i = 0; i < n; ++i) sum[i] += q[i];
    }
    for (size_t b0 = 0; b0 < n; b0 += bucket) {
      const size_t len = std::min(bucket, n - b0);
      qsgd_coordinate_variances(std::span(v).subspan(b0, len), s, l2,
                                std::span(var).subspan(b0, len));
    }
    for (size_t b0 = 0; b0 < n; b0 += bucket) {
      const size_t len = std::min(bucket, n - b0);
      double scale = 0;
      for (size_t i = b0; i < b0 + len; ++i)
        scale = l2 ? scale + double(v[i]) * v[i] : std::max(scale, std::fabs(double(v[i])));
      if (l2) scale = std::sqrt(scale);
      for (size_t i = b0; i < b0 + len; ++i) {
        const double mean = sum[i] / K;
        const double tol = 5 * std::sqrt(var[i] / K) + scale / s * (0x1p-17 + 1e-6);
        EXPECT_NEAR(mean, v[i], tol) << text << " coordinate " << i;
      }
    }
  }
}

// Monte Carlo of ||Q(v) - v||^2 against the exact variance, within 5 standard errors of the
// estimator: Var(||Q - v||^2) = sum_i u^4 p_i (1 - p_i) (1 - 2 p_i)^2, u = scale / s.
TEST(Qsgd, MonteCarloVarianceMatchesExactFormula) {
  struct Case {
    std::vector<float> v;
    const char* spec;
    int s;
    bool l2;
    double paper;  // the paper's value (docs/algorithms.md, "QSGD")
  };
  const Case cases[] = {
      {{3, 4}, "qsgd:bits=2,norm=l2", 1, true, 10.0},
      {{3, 4}, "qsgd:bits=3,levels=2,norm=l2", 2, true, 2.5},
      {{1, -2, 3, -4}, "qsgd:bits=2,norm=l2", 1, true, 24.772},
      {{1, -2, 3, -4}, "qsgd:bits=3,norm=l2", 3, true, 2.3934},
      {{3, 4}, "qsgd:bits=2,norm=max", 1, false, 3.0},
  };
  for (const auto& cs : cases) {
    const auto c = make_codec(cs.spec);
    const double exact = qsgd_exact_variance(cs.v, cs.s, cs.l2);
    EXPECT_NEAR(exact, cs.paper, 5e-4) << cs.spec;
    double scale = 0;
    for (float x : cs.v)
      scale = cs.l2 ? scale + double(x) * x : std::max(scale, std::fabs(double(x)));
    if (cs.l2) scale = std::sqrt(scale);
    const double u = scale / cs.s;
    double est_var = 0;
    for (float x : cs.v) {
      const double r = cs.s * std::fabs(double(x)) / scale, p = r - std::floor(r);
      est_var += std::pow(u, 4) * p * (1 - p) * (1 - 2 * p) * (1 - 2 * p);
    }
    const size_t K = 40000;
    double total = 0;
    std::vector<double> mean(cs.v.size(), 0.0);
    for (size_t k = 0; k < K; ++k) {
      const std::vector<float> q =
          decode(*c, c->encode(cs.v, RngKey{.seed = k, .step = 77}), cs.v.size());
      for (size_t i = 0; i < q.size(); ++i) {
        total += (double(q[i]) - cs.v[i]) * (double(q[i]) - cs.v[i]);
        mean[i] += q[i];
      }
    }
    const double tol = 5 * std::sqrt(est_var / K) + cs.v.size() * u * u * 0x1p-16 + 1e-5 * exact;
    EXPECT_NEAR(total / K, exact, tol) << cs.spec;
    std::vector<double> per(cs.v.size());
    qsgd_coordinate_variances(cs.v, cs.s, cs.l2, per);
    for (size_t i = 0; i < cs.v.size(); ++i)
      EXPECT_NEAR(mean[i] / K, cs.v[i], 5 * std::sqrt(per[i] / K) + u * 1e-4) << cs.spec;
  }
}

TEST(Qsgd, DenseSizeIsTheDesignedBitCount) {
  for (int bits = 2; bits <= 8; ++bits) {
    for (size_t bucket : {1, 7, 128, 512}) {
      const auto c =
          make_codec("qsgd:bits=" + std::to_string(bits) + ",bucket=" + std::to_string(bucket));
      for (size_t n : {0, 1, 2, 7, 8, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1031, 4099}) {
        const size_t nb = (n + bucket - 1) / bucket;
        const size_t want = kHeaderBytes + 4 * nb + (n * bits + 7) / 8;
        const std::vector<float> v = normal_vector<Rng64>(n, n + bits);
        EXPECT_EQ(c->encode(v, RngKey{}).size(), want) << bits << " " << bucket << " " << n;
        EXPECT_EQ(c->max_encoded_bytes(n), want);
      }
    }
  }
}

TEST(Qsgd, WireRatioAt25MElements) {
  const auto c = make_codec("qsgd");
  const size_t n = 25'000'000;
  const size_t bytes = c->max_encoded_bytes(n);  // == the exact size for dense coding
  EXPECT_EQ(bytes, kHeaderBytes + 4 * ((n + 511) / 512) + n / 2);
  const double ratio = 4.0 * n / bytes;
  EXPECT_GE(ratio, 7.8);
  EXPECT_NEAR(ratio, 32.0 / 4.0625, 0.01);
}

TEST(Qsgd, EliasDecodesToTheSameValuesAsDense) {
  for (const char* params :
       {"bits=4", "bits=2,norm=l2", "bits=3,bucket=100", "bits=8,bucket=1000,norm=l2",
        "bits=5,levels=3,bucket=7", "bits=2,norm=l2,bucket=4096"}) {
    const auto dense = make_codec(std::string("qsgd:") + params);
    const auto elias = make_codec(std::string("qsgd:") + params + ",coding=elias");
    for (size_t n : {1, 100, 513, 20000}) {
      std::vector<float> v = normal_vector<Rng64>(n, n);
      for (size_t i = 0; i < n; i += 3) v[i] = 0.0f;
      const RngKey key{.seed = 5, .rank = 3};
      const std::vector<float> base = normal_vector<Rng64>(n, 77);
      std::vector<float> a = base, b = base;
      dense->decode_add(dense->encode(v, key), a, 0.5f);
      elias->decode_add(elias->encode(v, key), b, 0.5f);
      ASSERT_EQ(std::memcmp(a.data(), b.data(), 4 * n), 0) << params << " n=" << n;
    }
  }
}

TEST(Qsgd, EliasIsSparseForOneLevelL2) {
  const auto dense = make_codec("qsgd:bits=2,norm=l2,bucket=4096");
  const auto elias = make_codec("qsgd:bits=2,norm=l2,bucket=4096,coding=elias");
  const size_t n = 1 << 20;
  const std::vector<float> v = normal_vector<Rng64>(n, 1);
  const size_t d = dense->encode(v, RngKey{}).size(), e = elias->encode(v, RngKey{}).size();
  EXPECT_LT(e * 4, d) << "elias " << e << " bytes, dense " << d;
  // Expected nonzeros per bucket are ||v||_1 / ||v||_2 <= sqrt(4096) = 64: about 12 bits each.
  EXPECT_LT(e, (n / 4096) * (4 + 64 * 2));
}

TEST(Qsgd, EliasStaysWithinItsBound) {
  for (const char* text :
       {"qsgd:coding=elias", "qsgd:bits=8,coding=elias,bucket=100",
        "qsgd:bits=2,coding=elias,bucket=1", "qsgd:bits=3,levels=1,coding=elias"}) {
    const auto c = make_codec(text);
    for (size_t n : {1, 7, 512, 1000, 4097}) {
      std::vector<std::vector<float>> inputs;
      inputs.emplace_back(n, 1.0f);  // every level is s, gaps of 1
      std::vector<float> alternate(n, 0.0f);
      for (size_t i = 0; i < n; i += 2) alternate[i] = -1.0f;
      inputs.push_back(alternate);
      std::vector<float> spikes(n, 0.0f);
      for (size_t i = 0; i < n; i += 13) spikes[i] = 1.0f;
      inputs.push_back(spikes);
      inputs.push_back(normal_vector<Rng64>(n, n));
      for (const auto& v : inputs) {
        const Bytes p = c->encode(v, RngKey{});
        EXPECT_LE(p.size(), c->max_encoded_bytes(n)) << text << " n=" << n;
        const std::vector<float> q = decode(*c, p, n);
        if (v[0] == 1.0f && v[n - 1] == 1.0f) {
          for (float x : q) ASSERT_EQ(x, 1.0f);  // all equal: every element is the max
        }
      }
    }
  }
}

// Dense bodies with a valid CRC but impossible contents.
TEST(Qsgd, CorruptDenseBodiesAreRejected) {
  const auto c = make_codec("qsgd:bits=4,levels=5,bucket=64");
  const size_t n = 301;
  const std::vector<float> v = normal_vector<Rng64>(n, 1);
  const Bytes good = c->encode(v, RngKey{});
  const Bytes body(good.begin() + kHeaderBytes, good.end());
  std::vector<float> out(n);
  EXPECT_NO_THROW(c->decode_add(sealed_payload(*c, n, body), out, 1.0f));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -1.0f, -0.0f, -std::numeric_limits<float>::infinity()}) {
    Bytes b = body;
    store_f32(b.data() + 4 * 3, bad);
    EXPECT_THROW(c->decode_add(sealed_payload(*c, n, b), out, 1.0f), CorruptPayload) << bad;
  }
  {  // level 7 > s = 5 (sliced group 0, element 0) and in the linear tail
    Bytes b = body;
    const size_t codes = 4 * ((n + 63) / 64);
    b[codes] = static_cast<std::byte>((static_cast<uint8_t>(b[codes]) & 0xF0) | 0x7);
    EXPECT_THROW(c->decode_add(sealed_payload(*c, n, b), out, 1.0f), CorruptPayload);
    Bytes t = body;
    t[codes + 64 * 2] = static_cast<std::byte>(0x06);  // tail element 256: level 6
    EXPECT_THROW(c->decode_add(sealed_payload(*c, n, t), out, 1.0f), CorruptPayload);
  }
  {  // n = 301 codes of 4 bits leave 4 padding bits, which must be zero
    Bytes b = body;
    b.back() = static_cast<std::byte>(static_cast<uint8_t>(b.back()) | 0x10);
    EXPECT_THROW(c->decode_add(sealed_payload(*c, n, b), out, 1.0f), CorruptPayload);
  }
  {  // a body of the wrong size never reaches decode_body
    Bytes b = body;
    b.push_back(std::byte{0});
    EXPECT_THROW(c->decode_add(sealed_payload(*c, n, b), out, 1.0f), CorruptPayload);
  }
}

// Random flips with a re-written header: either CorruptPayload or finite values; never a crash.
TEST(Qsgd, FuzzedBodiesNeverCrash) {
  std::mt19937_64 rng(123);
  for (const char* text :
       {"qsgd:bits=3,levels=2,bucket=50", "qsgd:coding=elias,bucket=64",
        "qsgd:bits=2,norm=l2,coding=elias,bucket=300", "qsgd:bits=8,levels=100"}) {
    const auto c = make_codec(text);
    const size_t n = 777;
    const Bytes good = c->encode(normal_vector<Rng64>(n, 2), RngKey{});
    int rejected = 0;
    for (int trial = 0; trial < 400; ++trial) {
      Bytes body(good.begin() + kHeaderBytes, good.end());
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips && !body.empty(); ++f)
        body[rng() % body.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
      if (rng() % 8 == 0 && !body.empty()) body.resize(rng() % body.size());
      std::vector<float> out(n, 0.0f);
      try {
        c->decode_add(sealed_payload(*c, n, body), out, 1.0f);
        for (float x : out) ASSERT_TRUE(std::isfinite(x)) << text;
      } catch (const CorruptPayload&) {
        ++rejected;
      }
    }
    EXPECT_GT(rejected, 0) << text;
  }
}

// Hand-made Elias streams: each breaks one rule of the format.
TEST(Qsgd, CorruptEliasStreamsAreRejected) {
  const auto c = make_codec("qsgd:bits=3,bucket=8,coding=elias");  // s = 3
  const size_t n = 10;                                             // buckets of 8 and 2
  using elias::BitWriter;
  const auto scale_bits = [](float f) { return uint64_t{std::bit_cast<uint32_t>(f)}; };
  // A valid stream: bucket 0 with nonzeros at 1 (+2) and 5 (-3); bucket 1 empty.
  const auto valid = [&](BitWriter& w) {
    w.put(scale_bits(1.5f), 32);
    elias::omega_put(w, 3);  // nnz + 1
    elias::omega_put(w, 2);  // position 1, 1-based 2
    w.put(0, 1);
    elias::omega_put(w, 2);
    elias::omega_put(w, 4);  // position 5
    w.put(1, 1);
    elias::omega_put(w, 3);
    w.put(scale_bits(0.0f), 32);
    elias::omega_put(w, 1);
  };
  const auto payload = [&](const BitWriter& w) {
    const auto bytes = w.finish();
    return sealed_payload(*c, n, std::as_bytes(std::span(bytes)));
  };
  std::vector<float> out(n, 0.0f);
  {
    BitWriter w;
    valid(w);
    c->decode_add(payload(w), out, 1.0f);
    EXPECT_EQ(out, (std::vector<float>{0, 1.0f, 0, 0, 0, -1.5f, 0, 0, 0, 0}));
  }
  const auto expect_corrupt = [&](const BitWriter& w, const char* what) {
    std::vector<float> o(n, 0.0f);
    EXPECT_THROW(c->decode_add(payload(w), o, 1.0f), CorruptPayload) << what;
  };
  const auto bucket1 = [&](BitWriter& w) {
    w.put(scale_bits(0.0f), 32);
    elias::omega_put(w, 1);
  };
  {
    BitWriter w;
    w.put(scale_bits(1.0f), 32);
    elias::omega_put(w, 2);
    elias::omega_put(w, 9);  // position 9 in a bucket of 8
    w.put(0, 1);
    elias::omega_put(w, 1);
    bucket1(w);
    expect_corrupt(w, "gap past the bucket");
  }
  {
    BitWriter w;
    w.put(scale_bits(1.0f), 32);
    elias::omega_put(w, 2);
    elias::omega_put(w, 1);
    w.put(0, 1);
    elias::omega_put(w, 4);  // level 4 > s = 3
    bucket1(w);
    expect_corrupt(w, "level above s");
  }
  {
    BitWriter w;
    w.put(scale_bits(1.0f), 32);
    elias::omega_put(w, 10);  // nnz 9 > 8
    for (int i = 0; i < 9; ++i) {
      elias::omega_put(w, 1);
      w.put(0, 1);
      elias::omega_put(w, 1);
    }
    bucket1(w);
    expect_corrupt(w, "more nonzeros than elements");
  }
  {
    BitWriter w;
    w.put(scale_bits(1.0f), 32);
    for (int i = 0; i < 3; ++i) w.put(~uint64_t{0}, 64);  // an endless omega prefix
    expect_corrupt(w, "overlong omega code");
  }
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -2.0f}) {
    BitWriter w;
    w.put(scale_bits(bad), 32);
    elias::omega_put(w, 1);
    bucket1(w);
    expect_corrupt(w, "bad scale");
  }
  {
    BitWriter w;
    w.put(scale_bits(0.0f), 32);
    elias::omega_put(w, 2);  // a nonzero in a zero-scale bucket
    elias::omega_put(w, 1);
    w.put(0, 1);
    elias::omega_put(w, 1);
    bucket1(w);
    expect_corrupt(w, "nonzero with scale 0");
  }
  {
    BitWriter w;
    valid(w);
    const uint64_t pad = (8 - w.bit_count() % 8) % 8;
    ASSERT_GT(pad, 0u);
    w.put(1, static_cast<int>(pad));  // non-zero padding bits
    expect_corrupt(w, "padding");
  }
  {
    BitWriter w;
    valid(w);
    w.put(0, static_cast<int>((8 - w.bit_count() % 8) % 8) + 8);  // one whole byte too many
    expect_corrupt(w, "trailing byte");
  }
  {
    BitWriter w;
    valid(w);
    auto bytes = w.finish();
    bytes.pop_back();  // truncated
    std::vector<float> o(n, 0.0f);
    EXPECT_THROW(c->decode_add(sealed_payload(*c, n, std::as_bytes(std::span(bytes))), o, 1.0f),
                 CorruptPayload);
  }
}

}  // namespace
}  // namespace qgrad
