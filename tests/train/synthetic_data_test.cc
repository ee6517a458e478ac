#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"
#include "train/data/synthetic.h"
#include "train/data/targets.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

SyntheticOptions regression(size_t rows, size_t dim, double noise, uint64_t seed) {
  SyntheticOptions o;
  o.kind = SyntheticKind::kRegression;
  o.rows = rows;
  o.dim = dim;
  o.noise = noise;
  o.seed = seed;
  return o;
}

SyntheticOptions blobs(size_t rows, size_t dim, double noise, size_t classes, uint64_t seed) {
  SyntheticOptions o;
  o.kind = SyntheticKind::kClassification;
  o.rows = rows;
  o.dim = dim;
  o.noise = noise;
  o.classes = classes;
  o.seed = seed;
  return o;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(SyntheticData, ShapesAndDefaults) {
  SyntheticOptions o;  // regression, 1000 rows, dim 10
  const DataSplit s = make_synthetic(o);
  EXPECT_EQ(s.train.rows, 1000u);
  EXPECT_EQ(s.test.rows, 200u);  // rows / 5
  EXPECT_EQ(s.train.dim, 10u);
  EXPECT_EQ(s.train.num_classes, 0u);
  EXPECT_EQ(s.train.features.size(), 10000u);
  EXPECT_EQ(s.test.features.size(), 2000u);
  EXPECT_EQ(s.train.targets.size(), 1000u);
  EXPECT_EQ(s.train.name,
            "synthetic:kind=regression,rows=1000,test=200,dim=10,noise=0.1,seed=0/train");
  EXPECT_EQ(s.test.name.substr(s.test.name.size() - 5), "/test");
  const DataSplit c = make_synthetic(blobs(30, 4, 1.0, 3, 1));
  EXPECT_EQ(c.train.num_classes, 3u);
  EXPECT_EQ(c.test.rows, 6u);
  SyntheticOptions no_test = regression(10, 2, 0.1, 0);
  no_test.test_rows = 0;
  EXPECT_EQ(make_synthetic(no_test).test.rows, 0u);
}

TEST(SyntheticData, SameOptionsSameBytesAnyThreadCount) {
  for (const SyntheticOptions& o : {regression(700, 13, 0.3, 42), blobs(700, 13, 1.5, 4, 42)}) {
    set_num_threads(1);
    const DataSplit a = make_synthetic(o);
    set_num_threads(3);
    const DataSplit b = make_synthetic(o);
    set_num_threads(1);
    EXPECT_TRUE(same_bytes(a.train.features, b.train.features));
    EXPECT_TRUE(same_bytes(a.train.targets, b.train.targets));
    EXPECT_TRUE(same_bytes(a.test.features, b.test.features));
    EXPECT_TRUE(same_bytes(a.test.targets, b.test.targets));
    SyntheticOptions other = o;
    other.seed = 43;
    const DataSplit c = make_synthetic(other);
    EXPECT_FALSE(same_bytes(a.train.features, c.train.features));
    EXPECT_FALSE(same_bytes(a.train.targets, c.train.targets));
  }
}

TEST(SyntheticData, RowsArePrefixStableAndTestRowsContinueTheStream) {
  SyntheticOptions small = regression(50, 7, 0.2, 9), big = regression(100, 7, 0.2, 9);
  small.test_rows = 50;
  const DataSplit a = make_synthetic(small), b = make_synthetic(big);
  // Train rows 0..49 are the same; small's test rows are big's train rows 50..99.
  EXPECT_TRUE(
      std::equal(a.train.features.begin(), a.train.features.end(), b.train.features.begin()));
  EXPECT_TRUE(std::equal(a.test.features.begin(), a.test.features.end(),
                         b.train.features.begin() + 50 * 7));
  EXPECT_TRUE(
      std::equal(a.test.targets.begin(), a.test.targets.end(), b.train.targets.begin() + 50));
}

TEST(SyntheticData, RegressionIsAxStarPlusNoiseOfTheRequestedSize) {
  const size_t rows = 20000, dim = 8;
  for (double noise : {0.0, 0.5}) {
    const SyntheticOptions o = regression(rows, dim, noise, 5);
    const DataSplit s = make_synthetic(o);
    const std::vector<float> x = synthetic_solution(o);
    ASSERT_EQ(x.size(), dim);
    double sum_r = 0, sum_r2 = 0, sum_a = 0, sum_a2 = 0;
    for (size_t i = 0; i < rows; ++i) {
      double dot = 0;
      for (size_t j = 0; j < dim; ++j) {
        const double a = s.train.row(i)[j];
        dot += a * x[j];
        sum_a += a;
        sum_a2 += a * a;
      }
      const double r = s.train.targets[i] - dot;
      if (noise == 0) {
        ASSERT_NEAR(r, 0.0, 1e-5 * (1 + std::abs(dot))) << i;
      }
      sum_r += r;
      sum_r2 += r * r;
    }
    const double n = rows, m = rows * dim;
    // A's entries: N(0, 1). Mean within 5 sigma (1 / sqrt(m)), variance within 5 sigma
    // (sqrt(2 / m)).
    EXPECT_NEAR(sum_a / m, 0.0, 5 / std::sqrt(m));
    EXPECT_NEAR(sum_a2 / m, 1.0, 5 * std::sqrt(2 / m));
    if (noise > 0) {
      // Residuals: N(0, noise^2).
      EXPECT_NEAR(sum_r / n, 0.0, 5 * noise / std::sqrt(n));
      EXPECT_NEAR(sum_r2 / n, noise * noise, 5 * noise * noise * std::sqrt(2 / n));
    }
  }
}

// The centers of a blob problem: at noise 0 every row is its class's center.
std::vector<std::vector<double>> centers_of(SyntheticOptions o) {
  o.noise = 0.0;
  o.rows = 50 * o.classes;
  const Dataset d = make_synthetic(o).train;
  std::vector<std::vector<double>> c(o.classes);
  for (size_t i = 0; i < d.rows; ++i) {
    auto& center = c[class_index(d, i)];
    if (center.empty()) center.assign(d.row(i).begin(), d.row(i).end());
  }
  return c;
}

TEST(SyntheticData, BlobCentersAreASimplexOfSide4CenteredAtZero) {
  for (size_t classes : {2, 3, 7}) {
    for (uint64_t seed : {0, 3, 4}) {
      const auto c = centers_of(blobs(1, 10, 1.0, classes, seed));
      std::vector<double> sum(10, 0.0);
      for (size_t a = 0; a < classes; ++a) {
        ASSERT_EQ(c[a].size(), 10u) << "class " << a << " never drawn";
        for (size_t j = 0; j < 10; ++j) sum[j] += c[a][j];
        for (size_t b = 0; b < a; ++b) {
          double d2 = 0;
          for (size_t j = 0; j < 10; ++j) d2 += (c[a][j] - c[b][j]) * (c[a][j] - c[b][j]);
          EXPECT_NEAR(std::sqrt(d2), 4.0, 1e-5) << classes << " classes, seed " << seed;
        }
      }
      for (double v : sum) EXPECT_NEAR(v, 0.0, 1e-5);
    }
  }
}

TEST(SyntheticData, TwoClassBlobsAreBalancedPlusMinusOneWithBayesErrorPhiOfMinus2OverNoise) {
  const size_t rows = 20000, dim = 10;
  for (double noise : {0.5, 1.0, 2.0}) {
    const SyntheticOptions o = blobs(rows, dim, noise, 2, 3);
    const auto c = centers_of(o);
    const Dataset d = make_synthetic(o).train;
    EXPECT_EQ(d.num_classes, 2u);
    size_t pos = 0, wrong = 0;
    for (size_t i = 0; i < rows; ++i) {
      const float t = d.targets[i];
      ASSERT_TRUE(t == 1.0f || t == -1.0f) << t;
      pos += t > 0;
      // The bisector of the two centers passes through 0: sign(<x, mu_+ - mu_->).
      double s = 0;
      for (size_t j = 0; j < dim; ++j) s += d.row(i)[j] * (c[1][j] - c[0][j]);
      wrong += (s > 0) != (t > 0);
    }
    // Binomial(rows, 1/2) classes and Binomial(rows, Phi(-2 / noise)) errors, within 5 sigma.
    EXPECT_NEAR(static_cast<double>(pos), rows / 2.0, 5 * std::sqrt(rows / 4.0));
    const double p = 0.5 * std::erfc(2.0 / noise / std::sqrt(2.0));
    EXPECT_NEAR(static_cast<double>(wrong), rows * p, 5 * std::sqrt(rows * p * (1 - p)) + 1)
        << "noise " << noise;
  }
}

TEST(SyntheticData, MultiClassBlobsUseIdsAndCoverEveryClass) {
  const size_t rows = 8000, classes = 5;
  const DataSplit s = make_synthetic(blobs(rows, 6, 1.0, classes, 11));
  std::vector<size_t> hist(classes);
  for (float t : s.train.targets) {
    ASSERT_EQ(t, std::floor(t));
    ASSERT_GE(t, 0.0f);
    ASSERT_LT(t, static_cast<float>(classes));
    hist[static_cast<size_t>(t)]++;
  }
  const double p = 1.0 / classes;
  for (size_t c = 0; c < classes; ++c) {
    EXPECT_NEAR(static_cast<double>(hist[c]), rows * p, 5 * std::sqrt(rows * p * (1 - p))) << c;
  }
}

TEST(SyntheticData, BadOptionsAreInvalidArguments) {
  auto expect_invalid = [](SyntheticOptions o, const std::string& part) {
    try {
      (void)make_synthetic(o);
      ADD_FAILURE() << part;
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(), HasSubstr(part));
    }
  };
  expect_invalid(regression(0, 3, 0.1, 0), "rows must be >= 1");
  expect_invalid(regression(3, 0, 0.1, 0), "dim must be >= 1");
  expect_invalid(regression(3, 3, -1, 0), "noise");
  expect_invalid(regression(3, 3, NAN, 0), "noise");
  expect_invalid(blobs(3, 3, 1, 1, 0), "classes must be in 2..");
  expect_invalid(regression(size_t{1} << 40, 1 << 10, 0.1, 0), "too large");
  try {
    (void)synthetic_solution(blobs(3, 3, 1, 2, 0));
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("regression"));
  }
}

}  // namespace
}  // namespace qgrad
