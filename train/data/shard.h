// Splitting a data set over ranks and drawing each epoch's mini-batches.
//
// Sharding: every row belongs to exactly one rank; shard sizes differ by at most one (the first
// rows % world ranks hold one more); ranks beyond the row count get an empty shard.
//   kStrided (default): rank r holds rows r, r + world, r + 2 world, ... A file sorted by label
//     (common for LIBSVM data) still gives every rank a representative mix, which matters for
//     majority-vote sign compression.
//   kContiguous: rank r holds one block of consecutive rows (what reading a slice of a file
//     would give).
// Each rank may keep the whole Dataset and sample global row ids (run_local's ranks can share
// one immutable copy), or keep only its shard with take_rows and use local_batches: both give
// the same examples in the same order.
//
// BatchSampler: epoch e's order is a Fisher-Yates shuffle of the shard's positions driven by
// Philox words of RngKey{seed, step = e, rank, tensor = kSamplerTensor, bucket 0} (two raw words
// per swap, mapped to [0, i] by a 64-bit multiply-shift), so it is a pure function of
// (seed, epoch, rank, shard size): a resumed run gets the same batches, and nothing depends on
// thread timing. The first rows_per_epoch positions of that order are cut into batches of
// `batch`; a last partial batch is kept (default, every row of the epoch is used once) or
// dropped (LastBatch::kDrop: all batches full).
// Synchronous training needs the same number of steps on every rank, but shard sizes may differ
// by one; for_rank therefore sets rows_per_epoch = rows / world for every rank, so a rank with
// one row more leaves out one (different, shuffled) row per epoch.
// Thread-safety: BatchSampler is immutable after construction; its methods are const and
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "train/dataset.h"

namespace qgrad {

enum class ShardLayout { kStrided, kContiguous };

// The global row ids held by `rank` of `world`, in increasing order. Throws InvalidArgument
// unless world >= 1 and rank < world.
std::vector<size_t> shard_rows(size_t rows, uint32_t rank, uint32_t world,
                               ShardLayout layout = ShardLayout::kStrided);

// A Dataset holding `rows` of `data` in that order (same dim, classes and image shape); row k
// of the result is row rows[k] of data. Throws InvalidArgument on an out-of-range row.
Dataset take_rows(const Dataset& data, std::span<const size_t> rows);

inline constexpr uint32_t kSamplerTensor = 0xDA7A0100u;

enum class LastBatch { kKeep, kDrop };

struct SamplerOptions {
  LastBatch last_batch = LastBatch::kKeep;
  size_t rows_per_epoch = 0;  // rows used per epoch, <= shard size; 0: the whole shard
};

class BatchSampler {
 public:
  // `shard` holds global row ids (e.g. shard_rows(...)); batch >= 1. Throws InvalidArgument.
  BatchSampler(std::vector<size_t> shard, size_t batch, uint64_t seed, uint32_t rank,
               SamplerOptions options = {});

  // The sampler of `rank` in synchronous data-parallel training over `rows` rows: shard_rows()
  // and rows_per_epoch = rows / world, so every rank has batches_per_epoch() steps. Throws
  // InvalidArgument if rows < world (some rank would have nothing to train on).
  static BatchSampler for_rank(size_t rows, uint32_t rank, uint32_t world, size_t batch,
                               uint64_t seed, LastBatch last = LastBatch::kKeep,
                               ShardLayout layout = ShardLayout::kStrided);

  const std::vector<size_t>& shard() const { return shard_; }
  size_t batch_size() const { return batch_; }
  size_t rows_per_epoch() const { return rows_per_epoch_; }
  size_t batches_per_epoch() const;

  // Epoch `epoch`'s positions into shard(): rows_per_epoch() distinct values in shuffled order.
  std::vector<size_t> positions(uint64_t epoch) const;
  // Epoch `epoch`'s batches as global row ids (shard()[position]).
  std::vector<std::vector<size_t>> batches(uint64_t epoch) const;
  // The same batches as positions into shard(): row ids of take_rows(data, shard()).
  std::vector<std::vector<size_t>> local_batches(uint64_t epoch) const;

 private:
  std::vector<size_t> shard_;
  size_t batch_;
  uint64_t seed_;
  uint32_t rank_;
  LastBatch last_;
  size_t rows_per_epoch_;
};

}  // namespace qgrad
