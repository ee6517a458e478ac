#include "train/data/shard.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/philox.h"

namespace qgrad {

std::vector<size_t> shard_rows(size_t rows, uint32_t rank, uint32_t world, ShardLayout layout) {
  QGRAD_CHECK(world >= 1, "shard_rows: world must be >= 1, got ", world);
  QGRAD_CHECK(rank < world, "shard_rows: rank ", rank, " is not below world ", world);
  const size_t base = rows / world, extra = rows % world;
  const size_t count = base + (rank < extra ? 1 : 0);
  std::vector<size_t> out(count);
  if (layout == ShardLayout::kStrided) {
    for (size_t k = 0; k < count; ++k) out[k] = rank + k * world;
  } else {
    const size_t begin = rank * base + std::min<size_t>(rank, extra);
    std::iota(out.begin(), out.end(), begin);
  }
  return out;
}

Dataset take_rows(const Dataset& data, std::span<const size_t> rows) {
  Dataset out;
  out.name = data.name;
  out.rows = rows.size();
  out.dim = data.dim;
  out.num_classes = data.num_classes;
  out.channels = data.channels;
  out.height = data.height;
  out.width = data.width;
  out.features.resize(rows.size() * data.dim);
  out.targets.resize(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) {
    QGRAD_CHECK(rows[k] < data.rows, "take_rows: row ", rows[k], " is out of range for '",
                data.name, "' with ", data.rows, " rows");
    std::copy_n(data.features.begin() + static_cast<std::ptrdiff_t>(rows[k] * data.dim), data.dim,
                out.features.begin() + static_cast<std::ptrdiff_t>(k * data.dim));
    out.targets[k] = data.targets[rows[k]];
  }
  return out;
}

BatchSampler::BatchSampler(std::vector<size_t> shard, size_t batch, uint64_t seed, uint32_t rank,
                           SamplerOptions options)
    : shard_(std::move(shard)),
      batch_(batch),
      seed_(seed),
      rank_(rank),
      last_(options.last_batch),
      rows_per_epoch_(options.rows_per_epoch == 0 ? shard_.size() : options.rows_per_epoch) {
  QGRAD_CHECK(batch_ >= 1, "BatchSampler: batch must be >= 1");
  QGRAD_CHECK(rows_per_epoch_ <= shard_.size(), "BatchSampler: rows_per_epoch ", rows_per_epoch_,
              " exceeds the shard's ", shard_.size(), " rows");
}

BatchSampler BatchSampler::for_rank(size_t rows, uint32_t rank, uint32_t world, size_t batch,
                                    uint64_t seed, LastBatch last, ShardLayout layout) {
  QGRAD_CHECK(world >= 1, "BatchSampler: world must be >= 1, got ", world);
  QGRAD_CHECK(rows >= world, "data set has ", rows, " training rows, fewer than the ", world,
              " ranks: every rank needs at least one");
  return BatchSampler(shard_rows(rows, rank, world, layout), batch, seed, rank,
                      SamplerOptions{.last_batch = last, .rows_per_epoch = rows / world});
}

size_t BatchSampler::batches_per_epoch() const {
  return last_ == LastBatch::kKeep ? (rows_per_epoch_ + batch_ - 1) / batch_
                                   : rows_per_epoch_ / batch_;
}

std::vector<size_t> BatchSampler::positions(uint64_t epoch) const {
  const size_t n = shard_.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  if (n > 1) {
    const RngKey key{
        .seed = seed_, .step = epoch, .rank = rank_, .tensor = kSamplerTensor, .bucket = 0};
    std::vector<uint32_t> words(2 * (n - 1));
    philox_fill_raw(key, 0, words.size(), words.data());
    for (size_t i = n - 1, w = 0; i >= 1; --i, w += 2) {
      const uint64_t r = uint64_t{words[w]} | (uint64_t{words[w + 1]} << 32);
      // Multiply-shift maps r to [0, i]; its bias, at most (i + 1) / 2^64, is far below
      // anything measurable.
      const auto j = static_cast<size_t>((static_cast<unsigned __int128>(r) * (i + 1)) >> 64);
      std::swap(order[i], order[j]);
    }
  }
  order.resize(rows_per_epoch_);
  return order;
}

std::vector<std::vector<size_t>> BatchSampler::local_batches(uint64_t epoch) const {
  const std::vector<size_t> order = positions(epoch);
  std::vector<std::vector<size_t>> out(batches_per_epoch());
  for (size_t b = 0; b < out.size(); ++b) {
    const size_t begin = b * batch_;
    const size_t end = std::min(begin + batch_, order.size());
    out[b].assign(order.begin() + static_cast<std::ptrdiff_t>(begin),
                  order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return out;
}

std::vector<std::vector<size_t>> BatchSampler::batches(uint64_t epoch) const {
  std::vector<std::vector<size_t>> out = local_batches(epoch);
  for (auto& b : out) {
    for (size_t& p : b) p = shard_[p];
  }
  return out;
}

}  // namespace qgrad
