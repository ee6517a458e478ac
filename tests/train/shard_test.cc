#include "train/data/shard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include "core/error.h"
#include "train/data/synthetic.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

TEST(Shard, EveryRowBelongsToExactlyOneRank) {
  for (ShardLayout layout : {ShardLayout::kStrided, ShardLayout::kContiguous}) {
    for (uint32_t world = 1; world <= 7; ++world) {
      for (size_t rows = 0; rows <= 20; ++rows) {
        std::vector<int> owner(rows, -1);
        size_t min_size = rows, max_size = 0;
        for (uint32_t rank = 0; rank < world; ++rank) {
          const std::vector<size_t> s = shard_rows(rows, rank, world, layout);
          min_size = std::min(min_size, s.size());
          max_size = std::max(max_size, s.size());
          EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
          for (size_t k = 0; k < s.size(); ++k) {
            const size_t r = s[k];
            ASSERT_LT(r, rows);
            EXPECT_EQ(owner[r], -1) << "row " << r << " in two shards";
            owner[r] = static_cast<int>(rank);
            if (layout == ShardLayout::kStrided) {
              EXPECT_EQ(r % world, rank);
            } else if (k > 0) {
              EXPECT_EQ(r, s[k - 1] + 1);  // one block
            }
          }
          // The first rows % world ranks hold one more row.
          EXPECT_EQ(s.size(), rows / world + (rank < rows % world ? 1 : 0));
        }
        for (size_t r = 0; r < rows; ++r) EXPECT_NE(owner[r], -1) << "row " << r << " unowned";
        EXPECT_LE(max_size - std::min(min_size, max_size), 1u);
      }
    }
  }
}

TEST(Shard, ContiguousBlocksAreInRankOrder) {
  EXPECT_EQ(shard_rows(10, 0, 4, ShardLayout::kContiguous), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(shard_rows(10, 1, 4, ShardLayout::kContiguous), (std::vector<size_t>{3, 4, 5}));
  EXPECT_EQ(shard_rows(10, 2, 4, ShardLayout::kContiguous), (std::vector<size_t>{6, 7}));
  EXPECT_EQ(shard_rows(10, 3, 4, ShardLayout::kContiguous), (std::vector<size_t>{8, 9}));
  EXPECT_EQ(shard_rows(10, 1, 4), (std::vector<size_t>{1, 5, 9}));
  EXPECT_TRUE(shard_rows(2, 3, 4).empty());
}

TEST(Shard, BadRankOrWorldIsInvalid) {
  EXPECT_THROW((void)shard_rows(10, 0, 0), InvalidArgument);
  try {
    (void)shard_rows(10, 4, 4);
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 4 is not below world 4"));
  }
}

TEST(Shard, TakeRowsCopiesRowsTargetsAndShape) {
  Dataset d;
  d.name = "d";
  d.rows = 4;
  d.dim = 2;
  d.num_classes = 3;
  d.channels = 1;
  d.height = 1;
  d.width = 2;
  d.features = {0, 1, 10, 11, 20, 21, 30, 31};
  d.targets = {0, 1, 2, 0};
  const std::vector<size_t> rows = {3, 1};
  const Dataset t = take_rows(d, rows);
  EXPECT_EQ(t.rows, 2u);
  EXPECT_EQ(t.dim, 2u);
  EXPECT_EQ(t.num_classes, 3u);
  EXPECT_EQ(t.width, 2u);
  EXPECT_EQ(t.features, (std::vector<float>{30, 31, 10, 11}));
  EXPECT_EQ(t.targets, (std::vector<float>{0, 1}));
  const std::vector<size_t> bad = {4};
  EXPECT_THROW((void)take_rows(d, bad), InvalidArgument);
}

std::vector<size_t> iota(size_t n, size_t from = 0) {
  std::vector<size_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

TEST(BatchSampler, EachEpochUsesEveryShardRowOnceAndKeepsTheLastPartialBatch) {
  const std::vector<size_t> shard = shard_rows(103, 2, 3);  // 34 rows: 2, 5, ..., 101
  const BatchSampler s(shard, 8, 7, 2);
  EXPECT_EQ(s.batches_per_epoch(), 5u);
  for (uint64_t epoch = 0; epoch < 4; ++epoch) {
    const auto batches = s.batches(epoch);
    ASSERT_EQ(batches.size(), 5u);
    std::vector<size_t> all;
    for (size_t b = 0; b < batches.size(); ++b) {
      EXPECT_EQ(batches[b].size(), b < 4 ? 8u : 2u);
      all.insert(all.end(), batches[b].begin(), batches[b].end());
    }
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, shard);
  }
}

TEST(BatchSampler, DropModeGivesOnlyFullBatchesOfDistinctRows) {
  const BatchSampler s(iota(34), 8, 7, 0, SamplerOptions{.last_batch = LastBatch::kDrop});
  EXPECT_EQ(s.batches_per_epoch(), 4u);
  const auto batches = s.batches(3);
  ASSERT_EQ(batches.size(), 4u);
  std::set<size_t> seen;
  for (const auto& b : batches) {
    EXPECT_EQ(b.size(), 8u);
    seen.insert(b.begin(), b.end());
  }
  EXPECT_EQ(seen.size(), 32u);
  // A shard smaller than one batch gives no batch at all in drop mode, one in keep mode.
  EXPECT_EQ(BatchSampler(iota(5), 8, 0, 0, {.last_batch = LastBatch::kDrop}).batches(0).size(), 0u);
  EXPECT_EQ(BatchSampler(iota(5), 8, 0, 0).batches(0).size(), 1u);
  EXPECT_EQ(BatchSampler({}, 8, 0, 0).batches(0).size(), 0u);
}

TEST(BatchSampler, ReproducibleFromSeedEpochRankAndDifferentOtherwise) {
  const std::vector<size_t> shard = iota(200, 1000);
  const BatchSampler a(shard, 16, 99, 1), b(shard, 16, 99, 1);
  for (uint64_t e = 0; e < 3; ++e) EXPECT_EQ(a.batches(e), b.batches(e));
  EXPECT_NE(a.positions(0), a.positions(1));
  EXPECT_NE(a.positions(0), BatchSampler(shard, 16, 99, 2).positions(0));
  EXPECT_NE(a.positions(0), BatchSampler(shard, 16, 100, 1).positions(0));
  // The order is a real shuffle: few positions stay in place.
  const auto p = a.positions(0);
  size_t fixed = 0;
  for (size_t i = 0; i < p.size(); ++i) fixed += p[i] == i;
  EXPECT_LT(fixed, 8u);
  // Batch size does not change the order, only how it is cut.
  const auto p32 = BatchSampler(shard, 32, 99, 1).positions(0);
  EXPECT_EQ(p, p32);
}

TEST(BatchSampler, ShuffleIsUniformOverPermutations) {
  // 4 rows: 24 permutations, each expected epochs / 24 times. Chi-square with 23 degrees of
  // freedom has mean 23 and sd sqrt(46) = 6.8; 23 + 6 sd = 64 (fixed seed, so no flakiness).
  const size_t epochs = 12000;
  const BatchSampler s(iota(4), 4, 5, 0);
  std::map<std::vector<size_t>, size_t> counts;
  for (uint64_t e = 0; e < epochs; ++e) counts[s.positions(e)]++;
  EXPECT_EQ(counts.size(), 24u);
  const double expected = epochs / 24.0;
  double chi2 = 0;
  for (const auto& [perm, c] : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 64.0);
}

TEST(BatchSampler, ForRankGivesEveryRankTheSameNumberOfSteps) {
  for (uint32_t world = 1; world <= 7; ++world) {
    for (size_t rows : {size_t{7}, size_t{10}, size_t{20}, size_t{61}}) {
      if (rows < world) continue;
      std::set<size_t> steps;
      std::set<size_t> union_rows;
      for (uint32_t rank = 0; rank < world; ++rank) {
        const BatchSampler s = BatchSampler::for_rank(rows, rank, world, 2, 3);
        EXPECT_EQ(s.rows_per_epoch(), rows / world);
        steps.insert(s.batches_per_epoch());
        for (const auto& b : s.batches(0)) {
          for (size_t r : b) {
            EXPECT_EQ(r % world, rank);
            EXPECT_TRUE(union_rows.insert(r).second) << "row " << r << " drawn twice";
          }
        }
      }
      EXPECT_EQ(steps.size(), 1u) << "rows " << rows << " world " << world;
      EXPECT_EQ(union_rows.size(), rows / world * world);
    }
  }
  // A rank with one row more leaves out a different row in different epochs.
  const BatchSampler s = BatchSampler::for_rank(61, 0, 4, 4, 3);  // 16 rows, 15 per epoch
  std::set<size_t> used;
  for (uint64_t e = 0; e < 20; ++e) {
    for (const auto& b : s.batches(e)) used.insert(b.begin(), b.end());
  }
  EXPECT_EQ(used.size(), 16u);
  try {
    (void)BatchSampler::for_rank(3, 0, 4, 2, 0);
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("3 training rows, fewer than the 4 ranks"));
  }
  EXPECT_THROW(BatchSampler(iota(4), 0, 0, 0), InvalidArgument);
  EXPECT_THROW(BatchSampler(iota(4), 2, 0, 0, {.rows_per_epoch = 5}), InvalidArgument);
}

TEST(BatchSampler, LocalShardCopyGivesTheSameExamplesAsGlobalRows) {
  SyntheticOptions o;
  o.rows = 57;
  o.dim = 3;
  const Dataset full = make_synthetic(o).train;
  const BatchSampler s = BatchSampler::for_rank(full.rows, 1, 3, 5, 11);
  const Dataset mine = take_rows(full, s.shard());
  EXPECT_EQ(mine.rows, 19u);
  const auto global = s.batches(2), local = s.local_batches(2);
  ASSERT_EQ(global.size(), local.size());
  for (size_t b = 0; b < global.size(); ++b) {
    ASSERT_EQ(global[b].size(), local[b].size());
    for (size_t k = 0; k < global[b].size(); ++k) {
      const auto g = full.row(global[b][k]), l = mine.row(local[b][k]);
      EXPECT_TRUE(std::equal(g.begin(), g.end(), l.begin()));
      EXPECT_EQ(full.targets[global[b][k]], mine.targets[local[b][k]]);
    }
  }
}

}  // namespace
}  // namespace qgrad
