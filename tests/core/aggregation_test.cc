// The aggregation rules (core/aggregation.h): the vote's tie rule and the bits of a mean.
#include "core/aggregation.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/philox.h"

namespace qgrad {
namespace {

TEST(Aggregation, VoteCountsATieAsPlusAndScalesByTheMagnitude) {
  std::vector<float> sums = {0.0f, -0.0f, 3.0f, -1.0f, 1e-30f, -1e-30f};
  vote(sums);
  EXPECT_EQ(sums, (std::vector<float>{1, 1, 1, -1, 1, -1}));
  std::vector<float> scaled = {0.0f, -2.0f, 5.0f};
  vote(scaled, 0.125f);
  EXPECT_EQ(scaled, (std::vector<float>{0.125f, -0.125f, 0.125f}));
  EXPECT_EQ(vote_sign(0.0f), 1.0f);
  EXPECT_EQ(vote_sign(-0.5f), -1.0f);
}

TEST(Aggregation, VotingWithAMagnitudeEqualsScalingTheVote) {
  // What the DistributedOptimizer does (vote, then * s) and what the server does (vote with s).
  const float s = 0.0371f;
  std::vector<float> a = {-3, 0, 2, -0.0f, 7}, b = a;
  vote(a);
  for (float& v : a) v = s * v;
  vote(b, s);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i])) << i;
  }
}

TEST(Aggregation, DivisionByContributorsHasTheBitsOfAPlainDivision) {
  // Random magnitudes over the whole range, subnormals included.
  const RngKey key{.seed = 7};
  std::vector<float> values;
  for (int i = 0; i < 4096; ++i) {
    const uint32_t bits = philox_word(key, static_cast<uint64_t>(i)) & 0x7F7FFFFFu;  // finite
    values.push_back(std::bit_cast<float>(bits) * (i % 2 ? 1.0f : -1.0f));
  }
  values.push_back(std::numeric_limits<float>::denorm_min());
  for (const uint32_t w : {0u, 1u, 2u, 3u, 4u, 5u, 7u, 8u, 64u, 1000u, 1024u}) {
    std::vector<float> got = values;
    divide_by_contributors(got, w);
    for (size_t i = 0; i < values.size(); ++i) {
      const float want = w <= 1 ? values[i] : values[i] / static_cast<float>(w);
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want))
          << "W " << w << " value " << values[i];
    }
  }
}

TEST(Aggregation, NamesTheRules) {
  EXPECT_EQ(aggregation_name(Aggregation::kMean), "mean");
  EXPECT_EQ(aggregation_name(Aggregation::kMajorityVote), "majority vote");
}

}  // namespace
}  // namespace qgrad
