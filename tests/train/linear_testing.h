// Helpers shared by the linear-model tests (tests/train/linear_*_test.cc): Philox-drawn synthetic
// data sets (regression with a known x*, linearly separable classes), row samplers and a tiny
// SGD loop, so the tests need neither the data loaders nor the optimizer library.
// Header-only; every function is a pure function of its arguments (the SGD loop mutates the
// model it is given).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "core/philox.h"
#include "train/dataset.h"
#include "train/model.h"

namespace qgrad::linear_testing {

// Uniform in [0, 1) with 32 random bits: element i of stream (seed, tensor).
inline double uniform(uint64_t seed, uint32_t tensor, uint64_t i) {
  return philox_raw_word(RngKey{.seed = seed, .tensor = tensor}, i) * (1.0 / 4294967296.0);
}

// Standard normal (Box-Muller on two 32-bit uniforms).
inline double normal(uint64_t seed, uint32_t tensor, uint64_t i) {
  const double u1 = 1.0 - uniform(seed, tensor, 2 * i);  // (0, 1]
  const double u2 = uniform(seed, tensor, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

// rows x dim features uniform in [lo, hi), x* uniform in [-1, 1), b = a^T x* + noise * N(0, 1).
inline Dataset make_regression(size_t rows, size_t dim, double lo, double hi, double noise,
                               uint64_t seed, std::vector<double>* x_star) {
  Dataset data;
  data.name = "synthetic:regression";
  data.rows = rows;
  data.dim = dim;
  data.num_classes = 0;
  data.features.resize(rows * dim);
  data.targets.resize(rows);
  std::vector<double> x(dim);
  for (size_t j = 0; j < dim; ++j) x[j] = 2 * uniform(seed, 1, j) - 1;
  for (size_t r = 0; r < rows; ++r) {
    double dot = 0;
    for (size_t j = 0; j < dim; ++j) {
      const float a = static_cast<float>(lo + (hi - lo) * uniform(seed, 2, r * dim + j));
      data.features[r * dim + j] = a;
      dot += a * x[j];
    }
    data.targets[r] = static_cast<float>(dot + noise * normal(seed, 3, r));
  }
  if (x_star) *x_star = x;
  return data;
}

// Linearly separable classes: features uniform in [-1, 1); classes = 2 gives labels
// sign(w*^T a + c*) in +-1 (rows with |w*^T a + c*| < margin are redrawn); classes > 2 gives
// argmax_k (W*_k^T a) as class ids, with the same margin between the top two scores.
inline Dataset make_separable(size_t rows, size_t dim, size_t classes, double margin,
                              uint64_t seed) {
  Dataset data;
  data.name = "synthetic:separable";
  data.rows = rows;
  data.dim = dim;
  data.num_classes = classes;
  data.features.resize(rows * dim);
  data.targets.resize(rows);
  const size_t k = classes == 2 ? 1 : classes;
  std::vector<double> w(k * dim);
  for (size_t i = 0; i < w.size(); ++i) w[i] = normal(seed, 1, i);
  std::vector<float> a(dim);
  std::vector<double> z(k);
  uint64_t draw = 0;
  for (size_t r = 0; r < rows; ++r) {
    for (;;) {
      for (size_t j = 0; j < dim; ++j) a[j] = static_cast<float>(2 * uniform(seed, 2, draw++) - 1);
      for (size_t c = 0; c < k; ++c) {
        z[c] = c == 0 && k == 1 ? 0.1 : 0.0;
        for (size_t j = 0; j < dim; ++j) z[c] += w[c * dim + j] * a[j];
      }
      size_t best = 0;
      double gap = std::abs(z[0]);
      if (k > 1) {
        for (size_t c = 1; c < k; ++c)
          if (z[c] > z[best]) best = c;
        gap = 1e300;
        for (size_t c = 0; c < k; ++c)
          if (c != best) gap = std::min(gap, z[best] - z[c]);
      }
      if (gap < margin) continue;
      std::copy(a.begin(), a.end(), data.features.begin() + static_cast<ptrdiff_t>(r * dim));
      data.targets[r] = k == 1 ? (z[0] > 0 ? 1.0f : -1.0f) : static_cast<float>(best);
      break;
    }
  }
  return data;
}

// Plain minibatch SGD on the model: rows drawn uniformly with replacement (splitmix64 of a
// counter: cheaper than Philox, which matters under the sanitizers), step size
// lr0 / (1 + t / t0). Returns the last batch loss.
inline double run_sgd(Model& model, const Dataset& data, size_t steps, size_t batch, double lr0,
                      double t0, uint64_t seed) {
  std::vector<size_t> rows(batch);
  auto params = model.params();
  double loss = 0;
  for (size_t t = 0; t < steps; ++t) {
    for (size_t i = 0; i < batch; ++i)
      rows[i] = static_cast<size_t>(mix64(mix64(seed) ^ (t * batch + i)) % data.rows);
    loss = model.forward_backward(data, rows, {});
    const float lr = static_cast<float>(lr0 / (1.0 + static_cast<double>(t) / t0));
    for (auto& p : params)
      for (size_t i = 0; i < p.value.size(); ++i) p.value[i] -= lr * p.grad[i];
  }
  return loss;
}

}  // namespace qgrad::linear_testing
