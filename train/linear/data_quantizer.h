// ZipML data quantization for the linear models: every feature value a of a training row is
// stochastically rounded to a b-bit grid before the model reads it (Zhang, Li, Kara, Alistarh,
// Liu, Zhang, "ZipML: Training Linear Models with End-to-End Low Precision", ICML 2017,
// arXiv 1611.05402; docs/algorithms.md, "ZipML data sampling").
//
// Grid: feature j has L = 2^b uniform levels l_k = lo_j + k * step_j, k = 0..L-1, between
// lo_j = min and hi_j = max of that feature over the training set (fit_feature_grid), so
// step_j = (hi_j - lo_j) / (L - 1); a constant feature (lo_j == hi_j) is stored exactly.
// Stochastic rounding: with t = (a - lo_j) / step_j (computed as (a - lo_j) * (1 / step_j)) and
// k = floor(t), Q(a) = l_{k+1} iff
// u < t - k (u the element's Philox uniform), else l_k. For a inside [lo_j, hi_j]:
//   E[Q(a)] = a,   Var Q(a) = (a - l_k)(l_{k+1} - a) <= step_j^2 / 4.
// A value outside its feature's range (data the grid was not fitted on) is clamped to the range
// first, which is biased; the training set's own values never are.
//
// Randomness: sample `draw` of a batch's i-th row, feature j uses philox_word(key, i * dim + j)
// with key = {seed, step, rank, kDataStreamTensor + draw, 0} (data_key): a fresh, independent
// value for every (step, batch position, feature, draw), so a row that appears twice in a batch
// gets two independent roundings. Indexing by batch position keeps the stream contiguous, so it
// is drawn by philox_fill's SIMD path in one call (per-row calls of a few dozen words would all
// take its scalar tail). The tensor tag keeps these streams apart from the gradient codecs'
// streams of the same seed.
// Thread-safe: a DataQuantizer is immutable after construction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/philox.h"
#include "train/dataset.h"

namespace qgrad {

// Per-feature range of the quantization grid: lo[j] <= hi[j], both finite.
struct FeatureGrid {
  std::vector<float> lo;
  std::vector<float> hi;
  size_t dim() const { return lo.size(); }
};

// Per-feature min and max over every row of `data`. Throws InvalidArgument for an empty data
// set or a non-finite feature value (naming the row and feature).
FeatureGrid fit_feature_grid(const Dataset& data);

// RngKey.tensor of data-quantization streams: kDataStreamTensor + draw (draw 0 or 1).
inline constexpr uint32_t kDataStreamTensor = 0x7A000000u;

inline RngKey data_key(uint64_t seed, uint64_t step, uint32_t rank, uint32_t draw) {
  return RngKey{
      .seed = seed, .step = step, .rank = rank, .tensor = kDataStreamTensor + draw, .bucket = 0};
}

class DataQuantizer {
 public:
  // bits in 1..8; grid.lo and grid.hi of equal size, finite, lo <= hi. Throws InvalidArgument.
  DataQuantizer(FeatureGrid grid, int bits);

  int bits() const { return bits_; }
  size_t levels() const { return size_t{1} << bits_; }
  size_t dim() const { return grid_.dim(); }
  const FeatureGrid& grid() const { return grid_; }
  // Level k of feature j: min(lo_j + k * step_j, hi_j).
  float level(size_t j, size_t k) const;

  // out[i * dim + j] = Q(data.row(rows[i])[j]) drawn from stream `key` (element i * dim + j).
  // out.size() must be rows.size() * dim; data.dim must equal dim(); rows must be < data.rows.
  // Throws InvalidArgument on a shape mismatch or a non-finite feature value.
  void quantize(const Dataset& data, std::span<const size_t> rows, const RngKey& key,
                std::span<float> out) const;

 private:
  FeatureGrid grid_;
  int bits_;
  std::vector<float> step_;      // (hi - lo) / (L - 1), raised by ulps until lo + (L-1) step >= hi
  std::vector<float> inv_step_;  // 1 / step_, 0 for a constant feature
};

}  // namespace qgrad
