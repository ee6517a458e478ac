// Small synthetic data sets and helpers for the LibTorch model tests. No LibTorch here: the tests
// see the models through qgrad::Model only. All randomness is Philox with fixed keys.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "core/philox.h"
#include "optim/param.h"
#include "train/dataset.h"
#include "train/model.h"

namespace qgrad::testing {

// n standard normals (Box-Muller on two 24-bit uniforms in (0, 1)) from stream `key`.
inline std::vector<float> normals(const RngKey& key, size_t n) {
  std::vector<uint32_t> words(2 * n);
  philox_fill_raw(key, 0, words.size(), words.data());
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const double u1 = ((words[2 * i] >> 8) + 0.5) / 16777216.0;
    const double u2 = ((words[2 * i + 1] >> 8) + 0.5) / 16777216.0;
    out[i] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return out;
}

// Rows of i.i.d. N(0, 1) features with labels uniform over `classes` (from the same seed).
inline Dataset random_dataset(size_t rows, size_t dim, size_t classes, uint64_t seed) {
  Dataset d;
  d.name = "random";
  d.rows = rows;
  d.dim = dim;
  d.num_classes = classes;
  d.features = normals({.seed = seed, .tensor = 1}, rows * dim);
  std::vector<uint32_t> words(rows);
  philox_fill_raw({.seed = seed, .tensor = 2}, 0, rows, words.data());
  for (size_t i = 0; i < rows; ++i) d.targets.push_back(static_cast<float>(words[i] % classes));
  return d;
}

inline Dataset with_image_shape(Dataset d, size_t c, size_t h, size_t w) {
  d.channels = c;
  d.height = h;
  d.width = w;
  return d;
}

// Gaussian blobs: class k has mean m_k with m_k[j] = separation * N(0, 1) (from `seed`), a row of
// class k is m_k + N(0, 1) noise drawn from `noise_seed`; labels cycle through the classes.
inline Dataset blobs(size_t rows, size_t dim, size_t classes, double separation, uint64_t seed,
                     uint64_t noise_seed) {
  const std::vector<float> means = normals({.seed = seed, .tensor = 3}, classes * dim);
  Dataset d;
  d.name = "blobs";
  d.rows = rows;
  d.dim = dim;
  d.num_classes = classes;
  d.features = normals({.seed = noise_seed, .tensor = 4}, rows * dim);
  for (size_t i = 0; i < rows; ++i) {
    const size_t k = i % classes;
    for (size_t j = 0; j < dim; ++j) {
      d.features[i * dim + j] += static_cast<float>(separation) * means[k * dim + j];
    }
    d.targets.push_back(static_cast<float>(k));
  }
  return d;
}

// 1 x side x side images: class k (< 10) is a 4x4 square of brightness 2 at cell k of a grid of
// 4x4 cells, plus N(0, noise^2) on every pixel.
inline Dataset squares(size_t rows, size_t side, double noise, uint64_t seed) {
  Dataset d;
  d.name = "squares";
  d.rows = rows;
  d.dim = side * side;
  d.num_classes = 10;
  d.channels = 1;
  d.height = side;
  d.width = side;
  d.features = normals({.seed = seed, .tensor = 5}, rows * d.dim);
  const size_t cells = side / 4;
  for (size_t i = 0; i < rows; ++i) {
    const size_t k = i % 10;
    float* img = d.features.data() + i * d.dim;
    for (size_t p = 0; p < d.dim; ++p) img[p] *= static_cast<float>(noise);
    const size_t r0 = (k / cells) * 4, c0 = (k % cells) * 4;
    for (size_t r = r0; r < r0 + 4; ++r) {
      for (size_t c = c0; c < c0 + 4; ++c) img[r * side + c] += 2.0f;
    }
    d.targets.push_back(static_cast<float>(k));
  }
  return d;
}

inline std::vector<size_t> iota_rows(size_t begin, size_t n) {
  std::vector<size_t> rows(n);
  std::iota(rows.begin(), rows.end(), begin);
  return rows;
}

// A permutation of [0, n) from `seed` (Fisher-Yates on Philox words).
inline std::vector<size_t> permutation(size_t n, uint64_t seed) {
  std::vector<size_t> p = iota_rows(0, n);
  for (size_t i = n; i > 1; --i) {
    const uint32_t w = philox_raw_word({.seed = seed, .tensor = 6}, i);
    std::swap(p[i - 1], p[w % i]);
  }
  return p;
}

// Every parameter value and gradient, concatenated.
inline std::vector<float> flat_values(Model& model) {
  std::vector<float> out;
  for (const ParamView& p : model.params()) out.insert(out.end(), p.value.begin(), p.value.end());
  return out;
}
inline std::vector<float> flat_grads(Model& model) {
  std::vector<float> out;
  for (const ParamView& p : model.params()) out.insert(out.end(), p.grad.begin(), p.grad.end());
  return out;
}

// Plain SGD through the spans: value -= lr * grad.
inline void sgd_step(Model& model, float lr) {
  for (const ParamView& p : model.params()) {
    for (size_t j = 0; j < p.value.size(); ++j) p.value[j] -= lr * p.grad[j];
  }
}

}  // namespace qgrad::testing
