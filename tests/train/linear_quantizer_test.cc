// ZipML data quantization (train/linear/data_quantizer.h): the grid, stochastic rounding's mean
// and variance, independence of the two double-sampling draws, reproducibility and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "tests/train/linear_testing.h"
#include "train/linear/data_quantizer.h"

namespace qgrad {
namespace {

using namespace qgrad::linear_testing;

Dataset small_data(std::vector<float> features, size_t dim) {
  Dataset d;
  d.name = "small";
  d.dim = dim;
  d.rows = features.size() / dim;
  d.features = std::move(features);
  d.targets.assign(d.rows, 0.0f);
  return d;
}

TEST(LinearQuantizer, FitFeatureGridIsPerFeatureMinMax) {
  const Dataset d = small_data({1, -2, 5, 3, 0, 5, -1, 4, 5}, 3);
  const FeatureGrid g = fit_feature_grid(d);
  EXPECT_EQ(g.lo, (std::vector<float>{-1, -2, 5}));
  EXPECT_EQ(g.hi, (std::vector<float>{3, 4, 5}));
  EXPECT_THROW(fit_feature_grid(small_data({}, 3)), InvalidArgument);
  EXPECT_THROW(fit_feature_grid(small_data({1, std::numeric_limits<float>::quiet_NaN()}, 2)),
               InvalidArgument);
}

TEST(LinearQuantizer, UniformLevelsIncludeTheEndpoints) {
  const DataQuantizer q(FeatureGrid{{0.0f, -1.0f, 0.1f}, {1.5f, 2.0f, 0.7f}}, 2);
  EXPECT_EQ(q.levels(), 4u);
  for (size_t k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(q.level(0, k), 0.5f * static_cast<float>(k));
  for (size_t k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(q.level(1, k), -1.0f + static_cast<float>(k));
  // A step that does not divide exactly still ends on hi.
  EXPECT_EQ(q.level(2, 0), 0.1f);
  EXPECT_EQ(q.level(2, 3), 0.7f);
  EXPECT_EQ(DataQuantizer(FeatureGrid{{0.0f}, {1.0f}}, 8).levels(), 256u);
}

TEST(LinearQuantizer, OutputsAreNeighbouringLevels) {
  // Random data on 3 features; every output must be one of the two levels around its input, the
  // min and max of a feature are exact, and a constant feature passes through unchanged.
  const size_t n = 500, dim = 3;
  std::vector<float> x(n * dim);
  for (size_t i = 0; i < n; ++i) {
    x[i * dim] = static_cast<float>(uniform(1, 0, i) * 4 - 2);
    x[i * dim + 1] = static_cast<float>(uniform(1, 1, i));
    x[i * dim + 2] = 0.25f;  // constant
  }
  const Dataset d = small_data(x, dim);
  const FeatureGrid g = fit_feature_grid(d);
  for (const int bits : {1, 2, 3, 8}) {
    const DataQuantizer q(g, bits);
    std::vector<size_t> rows(n);
    for (size_t i = 0; i < n; ++i) rows[i] = i;
    std::vector<float> out(n * dim);
    q.quantize(d, rows, data_key(5, 0, 0, 0), out);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < dim; ++j) {
        const float a = x[i * dim + j], v = out[i * dim + j];
        if (g.lo[j] == g.hi[j]) {
          EXPECT_EQ(v, a);
          continue;
        }
        const double step = (g.hi[j] - g.lo[j]) / (q.levels() - 1.0);
        const double below = g.lo[j] + std::floor((a - g.lo[j]) / step) * step;
        const double tol = 1e-5 * (g.hi[j] - g.lo[j]);
        EXPECT_TRUE(std::abs(v - below) < tol || std::abs(v - (below + step)) < tol)
            << "bits " << bits << " a " << a << " -> " << v;
        EXPECT_GE(v, g.lo[j]);
        EXPECT_LE(v, g.hi[j]);
        if (a == g.lo[j] || a == g.hi[j]) {
          EXPECT_EQ(v, a);
        }
      }
    }
  }
}

TEST(LinearQuantizer, UnbiasedWithTheStochasticRoundingVariance) {
  // Grid [0, 1] with 2 bits: levels 0, 1/3, 2/3, 1. For each value, over K steps: the mean is a
  // within 5 sigma (sigma^2 = Var / K) and the sample variance matches Var = (a - l)(l + s - a)
  // within 5 sd of the variance estimator (two-point variable: sd^2 = (mu4 - Var^2) / K).
  const std::vector<float> values{0.1f, 0.3f, 0.5f, 0.9f, 0.0f, 1.0f};
  const Dataset d = small_data(values, values.size());
  const DataQuantizer q(
      FeatureGrid{std::vector<float>(values.size(), 0.0f), std::vector<float>(values.size(), 1.0f)},
      2);
  const int kDraws = 20000;
  std::vector<double> sum(values.size()), sum_sq(values.size());
  std::vector<float> out(values.size());
  const size_t row = 0;
  for (int k = 0; k < kDraws; ++k) {
    q.quantize(d, {&row, 1}, data_key(3, static_cast<uint64_t>(k), 0, 0), out);
    for (size_t j = 0; j < values.size(); ++j) {
      sum[j] += out[j];
      sum_sq[j] += static_cast<double>(out[j]) * out[j];
    }
  }
  const double s = 1.0 / 3.0;
  for (size_t j = 0; j < values.size(); ++j) {
    const double a = values[j];
    const double l = std::min(std::floor(a / s), 2.0) * s;
    const double var = (a - l) * (l + s - a);
    const double p = (a - l) / s;
    const double mean = sum[j] / kDraws;
    const double sample_var = sum_sq[j] / kDraws - mean * mean;
    if (var == 0) {  // on a level: exact
      EXPECT_EQ(sum[j], a * kDraws);
      continue;
    }
    EXPECT_NEAR(mean, a, 5 * std::sqrt(var / kDraws)) << a;
    // The second term covers the second-order error s^2 (p_hat - p)^2, which is all there is at
    // p = 1/2 (where mu4 = Var^2).
    const double mu4 = std::pow(s, 4) * p * (1 - p) * (1 - 3 * p * (1 - p));
    const double tol =
        5 * std::sqrt(std::max(mu4 - var * var, 0.0) / kDraws) + 25 * s * s * p * (1 - p) / kDraws;
    EXPECT_NEAR(sample_var, var, tol) << a;
  }
}

TEST(LinearQuantizer, DoubleSamplingDrawsAreIndependent) {
  // E[Q1 Q2] = a^2 for independent draws, E[Q1^2] = a^2 + Var: the identity double sampling
  // rests on. a = 0.5 on the grid [0, 1] with 1 bit: Q in {0, 1}, Var = 0.25.
  const Dataset d = small_data({0.5f}, 1);
  const DataQuantizer q(FeatureGrid{{0.0f}, {1.0f}}, 1);
  const int kDraws = 20000;
  double cross = 0, square = 0;
  float q1 = 0, q2 = 0;
  const size_t row = 0;
  for (int k = 0; k < kDraws; ++k) {
    q.quantize(d, {&row, 1}, data_key(4, static_cast<uint64_t>(k), 0, 0), {&q1, 1});
    q.quantize(d, {&row, 1}, data_key(4, static_cast<uint64_t>(k), 0, 1), {&q2, 1});
    cross += q1 * q2;
    square += q1 * q1;
  }
  // Q1 Q2 is Bernoulli(0.25), Q1^2 Bernoulli(0.5).
  EXPECT_NEAR(cross / kDraws, 0.25, 5 * std::sqrt(0.25 * 0.75 / kDraws));
  EXPECT_NEAR(square / kDraws, 0.5, 5 * std::sqrt(0.25 / kDraws));
}

TEST(LinearQuantizer, RandomnessFollowsKeyBatchPositionAndFeature) {
  const size_t n = 8, dim = 5;
  std::vector<float> x(n * dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(uniform(2, 0, i));
  const Dataset d = small_data(x, dim);
  const DataQuantizer q(fit_feature_grid(d), 3);
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  auto run = [&](const std::vector<size_t>& rows, const RngKey& key) {
    std::vector<float> out(rows.size() * dim);
    q.quantize(d, rows, key, out);
    return out;
  };
  const auto base = run(all, data_key(1, 7, 0, 0));
  EXPECT_EQ(base, run(all, data_key(1, 7, 0, 0)));  // reproducible
  // A prefix of the batch is quantized the same whatever follows it.
  const auto prefix = run({0, 1, 2}, data_key(1, 7, 0, 0));
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), base.begin()));
  // Another step, rank, draw or seed gives another rounding somewhere in 40 values.
  EXPECT_NE(base, run(all, data_key(1, 8, 0, 0)));
  EXPECT_NE(base, run(all, data_key(1, 7, 1, 0)));
  EXPECT_NE(base, run(all, data_key(1, 7, 0, 1)));
  EXPECT_NE(base, run(all, data_key(2, 7, 0, 0)));
  // A row repeated in a batch gets independent roundings.
  const auto twice = run({3, 3, 3, 3, 3, 3, 3, 3}, data_key(1, 7, 0, 0));
  bool differs = false;
  for (size_t i = 1; i < 8; ++i)
    differs |= !std::equal(twice.begin(), twice.begin() + dim, twice.begin() + i * dim);
  EXPECT_TRUE(differs);
}

TEST(LinearQuantizer, LargeBatchesSpanSeveralRandomChunks) {
  // 16384 words per philox_fill call: 3000 rows x 7 features take two calls, and must equal
  // the stream's own words (philox_word(key, i * dim + j)).
  const size_t n = 3000, dim = 7;
  std::vector<float> x(n * dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(uniform(3, 0, i));
  const Dataset d = small_data(x, dim);
  const FeatureGrid g{std::vector<float>(dim, 0.0f), std::vector<float>(dim, 1.0f)};
  const DataQuantizer q(g, 1);  // levels 0 and 1: Q(a) = 1 iff u < a
  std::vector<size_t> rows(n);
  for (size_t i = 0; i < n; ++i) rows[i] = n - 1 - i;
  std::vector<float> out(n * dim);
  const RngKey key = data_key(9, 4, 2, 1);
  q.quantize(d, rows, key, out);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < dim; ++j) {
      const float a = x[rows[i] * dim + j];
      const float want = uniform_from_word(philox_word(key, i * dim + j)) < a ? 1.0f : 0.0f;
      ASSERT_EQ(out[i * dim + j], want) << i << " " << j;
    }
}

TEST(LinearQuantizer, OutOfRangeValuesAreClamped) {
  const Dataset d = small_data({-3.0f, 7.0f}, 2);
  const DataQuantizer q(FeatureGrid{{0.0f, 0.0f}, {1.0f, 1.0f}}, 4);
  std::vector<float> out(2);
  const size_t row = 0;
  q.quantize(d, {&row, 1}, data_key(0, 0, 0, 0), out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 1.0f);
}

TEST(LinearQuantizer, BadArgumentsThrow) {
  const FeatureGrid g{{0.0f, 0.0f}, {1.0f, 1.0f}};
  EXPECT_THROW(DataQuantizer(g, 0), InvalidArgument);
  EXPECT_THROW(DataQuantizer(g, 9), InvalidArgument);
  EXPECT_THROW(DataQuantizer(FeatureGrid{{1.0f}, {0.0f}}, 2), InvalidArgument);  // lo > hi
  EXPECT_THROW(DataQuantizer(FeatureGrid{{0.0f}, {1.0f, 2.0f}}, 2), InvalidArgument);
  EXPECT_THROW(DataQuantizer(FeatureGrid{{-3e38f}, {3e38f}}, 2), InvalidArgument);  // width inf
  EXPECT_THROW(DataQuantizer(FeatureGrid{{0.0f}, {std::numeric_limits<float>::infinity()}}, 2),
               InvalidArgument);
  const DataQuantizer q(g, 2);
  std::vector<float> out(2);
  const size_t row0 = 0, row5 = 5;
  EXPECT_THROW(q.quantize(small_data({0.5f, 0.5f, 0.5f}, 3), {&row0, 1}, {}, {out.data(), 3}),
               InvalidArgument);  // dim mismatch
  EXPECT_THROW(q.quantize(small_data({0.5f, 0.5f}, 2), {&row5, 1}, {}, out), InvalidArgument);
  EXPECT_THROW(q.quantize(small_data({0.5f, 0.5f}, 2), {&row0, 1}, {}, {out.data(), 1}),
               InvalidArgument);  // output size
  EXPECT_THROW(q.quantize(small_data({0.5f, std::numeric_limits<float>::quiet_NaN()}, 2),
                          {&row0, 1}, {}, out),
               InvalidArgument);
}

}  // namespace
}  // namespace qgrad
