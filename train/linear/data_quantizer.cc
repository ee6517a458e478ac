#include "train/linear/data_quantizer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.h"

namespace qgrad {

// Random words drawn per philox_fill call: bounds the scratch for large batches.
constexpr size_t kWordsPerChunk = 16384;

FeatureGrid fit_feature_grid(const Dataset& data) {
  QGRAD_CHECK(data.rows > 0 && data.dim > 0, "fit_feature_grid: data set '", data.name,
              "' is empty (", data.rows, " rows x ", data.dim, " features)");
  QGRAD_CHECK(data.features.size() == data.rows * data.dim, "fit_feature_grid: data set '",
              data.name, "' holds ", data.features.size(), " feature values, expected ",
              data.rows * data.dim);
  FeatureGrid grid;
  grid.lo.assign(data.dim, std::numeric_limits<float>::infinity());
  grid.hi.assign(data.dim, -std::numeric_limits<float>::infinity());
  for (size_t r = 0; r < data.rows; ++r) {
    const auto row = data.row(r);
    for (size_t j = 0; j < data.dim; ++j) {
      QGRAD_CHECK(std::isfinite(row[j]), "fit_feature_grid: data set '", data.name, "' row ", r,
                  " feature ", j, " is ", row[j], " (features must be finite)");
      grid.lo[j] = std::min(grid.lo[j], row[j]);
      grid.hi[j] = std::max(grid.hi[j], row[j]);
    }
  }
  return grid;
}

DataQuantizer::DataQuantizer(FeatureGrid grid, int bits) : grid_(std::move(grid)), bits_(bits) {
  QGRAD_CHECK(bits >= 1 && bits <= 8, "data quantization: bits must be in 1..8, got ", bits);
  QGRAD_CHECK(grid_.lo.size() == grid_.hi.size() && !grid_.lo.empty(),
              "data quantization: grid needs one lo and one hi per feature, got ", grid_.lo.size(),
              " and ", grid_.hi.size());
  const size_t d = grid_.dim();
  const float top = static_cast<float>(levels() - 1);
  step_.resize(d);
  inv_step_.resize(d);
  for (size_t j = 0; j < d; ++j) {
    const float lo = grid_.lo[j], hi = grid_.hi[j];
    QGRAD_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi && std::isfinite(hi - lo),
                "data quantization: feature ", j, " has range [", lo, ", ", hi,
                "]; expected finite lo <= hi with a finite width");
    float step = (hi - lo) / top;
    // Raise step by ulps until the top level reaches hi, so that the feature's max is a level
    // (otherwise rounding the max would be biased downwards by the rounding error of step).
    while (lo + top * step < hi)
      step = std::nextafter(step, std::numeric_limits<float>::infinity());
    step_[j] = step;
    // 1 / the spacing actually used, so that E[Q(a)] = lo + t * step = a up to float rounding.
    inv_step_[j] = step > 0.0f ? static_cast<float>(1.0 / static_cast<double>(step)) : 0.0f;
  }
}

float DataQuantizer::level(size_t j, size_t k) const {
  return std::min(grid_.lo[j] + static_cast<float>(k) * step_[j], grid_.hi[j]);
}

void DataQuantizer::quantize(const Dataset& data, std::span<const size_t> rows, const RngKey& key,
                             std::span<float> out) const {
  const size_t d = dim();
  QGRAD_CHECK(data.dim == d, "data quantization: data set '", data.name, "' has ", data.dim,
              " features, the grid ", d);
  QGRAD_CHECK(out.size() == rows.size() * d, "data quantization: output holds ", out.size(),
              " values, expected ", rows.size() * d);
  const float top = static_cast<float>(levels() - 1);
  const float *lo = grid_.lo.data(), *hi = grid_.hi.data(), *step = step_.data(),
              *inv = inv_step_.data();
  // Random words for a chunk of rows at a time: one philox_fill call per chunk.
  const size_t chunk_rows = std::max<size_t>(1, kWordsPerChunk / d);
  std::vector<uint32_t> words(std::min(rows.size(), chunk_rows) * d);
  for (size_t begin = 0; begin < rows.size(); begin += chunk_rows) {
    const size_t end = std::min(rows.size(), begin + chunk_rows);
    philox_fill(key, static_cast<uint64_t>(begin) * d, (end - begin) * d, words.data());
    for (size_t i = begin; i < end; ++i) {
      const size_t r = rows[i];
      QGRAD_CHECK(r < data.rows, "data quantization: row ", r, " out of range (data set '",
                  data.name, "' has ", data.rows, " rows)");
      const float* a = data.features.data() + r * d;
      const uint32_t* w = words.data() + (i - begin) * d;
      float* q = out.data() + i * d;
      // Branch-free so that it vectorizes: NaN becomes t = 0 through the clamp (no UB in the
      // cast) and the row is rejected after the loop; t >= 0, so truncation is floor. u is
      // uniform_from_word(w[j]) with a signed conversion (w >> 8 < 2^24), which SSE2 has.
      uint32_t nonfinite = 0;
      for (size_t j = 0; j < d; ++j) {
        nonfinite |=
            static_cast<uint32_t>((std::bit_cast<uint32_t>(a[j]) & 0x7F800000u) == 0x7F800000u);
        float t = (a[j] - lo[j]) * inv[j];
        t = t > 0.0f ? t : 0.0f;
        t = t < top ? t : top;
        const float k = static_cast<float>(static_cast<int32_t>(t));
        const float u = static_cast<float>(static_cast<int32_t>(w[j] >> 8)) * (1.0f / 16777216.0f);
        const float v = lo[j] + (k + (u < t - k ? 1.0f : 0.0f)) * step[j];
        q[j] = v < hi[j] ? v : hi[j];
      }
      if (nonfinite) {
        for (size_t j = 0; j < d; ++j)
          QGRAD_CHECK(std::isfinite(a[j]), "data quantization: data set '", data.name, "' row ", r,
                      " feature ", j, " is ", a[j], " (features must be finite)");
      }
    }
  }
}

}  // namespace qgrad
