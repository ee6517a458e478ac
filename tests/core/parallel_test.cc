#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/synthetic.h"

namespace qgrad {
namespace {

TEST(ParallelFor, CoversEveryIndexOnceForAnyThreadCount) {
  for (int threads : {1, 2, 3, 4}) {
    set_num_threads(threads);
    EXPECT_EQ(num_threads(), threads);
    for (size_t n : {0, 1, 7, 1000, 4097}) {
      std::vector<std::atomic<int>> hits(n);
      parallel_for(n, 64, [&](size_t b, size_t e) {
        EXPECT_LT(b, e);
        EXPECT_EQ(b % 64, 0u);
        for (size_t i = b; i < e; ++i) hits[i]++;
      });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
  set_num_threads(1);
}

TEST(ParallelFor, RethrowsTheLowestFailingRange) {
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    try {
      parallel_for(1000, 10, [](size_t b, size_t) {
        if (b >= 500) throw std::runtime_error("range " + std::to_string(b));
      });
      FAIL() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "range 500");
    }
  }
  set_num_threads(1);
}

TEST(Synthetic, SameSeedSameValuesWhateverTheThreads) {
  std::vector<float> a(100000), b(100000);
  set_num_threads(1);
  fill_synthetic(a, SyntheticDistribution::kGradient, 7);
  set_num_threads(4);
  fill_synthetic(b, SyntheticDistribution::kGradient, 7);
  set_num_threads(1);
  EXPECT_EQ(a, b);
  fill_synthetic(b, SyntheticDistribution::kGradient, 8);
  EXPECT_NE(a, b);
}

TEST(Synthetic, NormalHasUnitMoments) {
  std::vector<float> v(200000);
  fill_synthetic(v, SyntheticDistribution::kNormal, 1);
  double s = 0, s2 = 0;
  for (float x : v) s += x, s2 += double{x} * x;
  const double mean = s / v.size(), var = s2 / v.size() - mean * mean;
  // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032; 5 sigma.
  EXPECT_NEAR(mean, 0.0, 0.011);
  EXPECT_NEAR(var, 1.0, 0.016);
}

}  // namespace
}  // namespace qgrad
