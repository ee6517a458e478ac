// Synthetic problems drawn from Philox (core/philox.h): the same options give the same bytes on
// every machine and thread count, and every value is a pure function of (seed, row, column), so
// row i is the same whatever the number of rows asked for. Test rows continue the train rows'
// streams (global rows rows .. rows + test_rows - 1): same distribution, different draws, and
// the train set does not change with the test size.
//
// regression (least squares, as in ZipML's experiments: Zhang et al., ICML'17):
//   A_ij ~ N(0, 1),  x*_j ~ N(0, 1),  b_i = <A_i, x*> + noise * e_i,  e_i ~ N(0, 1).
//   Targets are b, num_classes 0. x* comes from synthetic_solution(); the least-squares optimum
//   of the train set is near x* (exactly x* when noise = 0), with mean loss ~ noise^2 / 2 for
//   the loss (1/2)(<a, x> - b)^2.
// classification (Gaussian blobs): the class of row i is uniform over 0..classes-1 and
//   x_i = mu_{c_i} + noise * z, z ~ N(0, I). With classes <= dim the centers mu_c are a
//   randomly rotated regular simplex centred at the origin: every two centers are exactly 4
//   apart, so two classes are split by a hyperplane through 0 (no bias term needed) with Bayes
//   error Phi(-2 / noise): 2.3% at noise 1 (the default, "linearly separable-ish"), 0.003% at
//   0.5, 16% at 2. With classes > dim the centers have entries N(0, 4) (no separation
//   guarantee). Targets follow train/data/targets.h: -1 / +1 for two classes, class ids
//   0..C-1 for more.
// Defaults: rows 1000, test_rows rows / 5, dim 10, noise 0.1 (regression) or 1.0
// (classification), classes 2, seed 0.
// Streams: RngKey{seed, step 0, rank 0, tensor kSyntheticTensor, bucket = stream}; a normal
// is Box-Muller on raw words 2k and 2k + 1 of its stream (k = row * dim + column for
// features). kSyntheticTensor is far from the tensor ids the codecs use, so data and
// quantization noise drawn from the same seed are unrelated.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "train/dataset.h"

namespace qgrad {

enum class SyntheticKind { kRegression, kClassification };

// "regression|classification"; throws InvalidArgument listing them.
SyntheticKind parse_synthetic_kind(std::string_view name);
const char* synthetic_kind_name(SyntheticKind kind);

inline constexpr uint32_t kSyntheticTensor = 0xDA7A0000u;

struct SyntheticOptions {
  SyntheticKind kind = SyntheticKind::kRegression;
  size_t rows = 1000;               // training rows
  std::optional<size_t> test_rows;  // default rows / 5
  size_t dim = 10;
  std::optional<double> noise;  // default 0.1 (regression) / 1.0 (classification)
  size_t classes = 2;           // classification only
  uint64_t seed = 0;

  size_t resolved_test_rows() const { return test_rows.value_or(rows / 5); }
  double resolved_noise() const {
    return noise.value_or(kind == SyntheticKind::kRegression ? 0.1 : 1.0);
  }
};

// Checks the options (rows >= 1, dim >= 1, finite noise >= 0, classes >= 2 for classification,
// a size that fits in memory); throws InvalidArgument.
void validate(const SyntheticOptions& options);

// The canonical spec string, e.g. "synthetic:kind=regression,rows=1000,test=200,dim=10,
// noise=0.1,seed=0" (classes only for classification); parse_data_spec reads it back.
std::string synthetic_spec(const SyntheticOptions& options);

DataSplit make_synthetic(const SyntheticOptions& options);

// The true x* of a regression problem (dim values). Throws InvalidArgument for classification.
std::vector<float> synthetic_solution(const SyntheticOptions& options);

}  // namespace qgrad
