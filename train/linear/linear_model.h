// Linear models on Eigen (used only in the .cc) behind qgrad::Model: least squares ("linear"),
// logistic regression ("logistic": binary or multinomial softmax) and the hinge-loss SVM ("svm"),
// with ZipML's data quantization and double sampling (Zhang et al., ICML 2017, arXiv 1611.05402;
// docs/algorithms.md, "ZipML data sampling").
//
// Parameters: "linear.weight" (K x d, row-major) and, with options.bias, "linear.bias" (K), where
// K = num_classes for multinomial logistic regression and K = 1 otherwise. Each is a ParamView
// over an Eigen-owned buffer; grad_ready(0) follows the weight gradient, grad_ready(1) the bias.
// L2 regularisation is the optimizer's weight decay, not the model's.
//
// Losses over a batch R of B rows with features a_r, targets y_r and scores z_r = W a_r + c:
//   linear:   (1/B) sum 1/2 (z_r - y_r)^2;                     dl/dz = z - y
//   logistic: binary (K = 1, y = +-1): log(1 + exp(-y z));     dl/dz = -y sigmoid(-y z)
//             multinomial (K = C > 2, y in 0..C-1): logsumexp(z) - z_y;  dl/dz = softmax(z) - e_y
//   svm:      max(0, 1 - y z) (y = +-1);  dl/dz = -y if y z < 1, else 0 (a subgradient)
// and grad_W = (1/B) sum_r dl/dz_r a_r^T, grad_c = (1/B) sum_r dl/dz_r. Binary labels may be
// given as +-1 or as class ids 0/1 (0 means -1); anything else is an InvalidArgument. The SVM is
// binary only (a multi-class data set is an InvalidArgument: use logistic). Least squares takes
// regression targets or binary +-1 targets (then accuracy = sign agreement, a least-squares SVM).
//
// ZipML data quantization (data_bits = b in 1..8; 0 = full precision): each training row's
// features are replaced by Q(a), stochastically rounded to the b-bit grid of data_quantizer.h
// (per-feature [min, max] of the training data, 2^b uniform levels), drawn fresh for every
// forward_backward call (the model's data step), batch position and feature. The bias input 1
// is exact.
// - Naive (double_sampling = false): one sample Q = Q1 in both factors of the gradient,
//     g = (1/B) sum_r Q(a_r) l'(W Q(a_r) + c).
//   For least squares E[g] = (1/B) sum_r [(a a^T + D_a) x - a y] with D_a = diag Var Q(a_j): a
//   data-dependent ridge penalty, so SGD converges near (A^T A + sum_r D_r)^-1 A^T y, not to the
//   least-squares solution (ZipML's section 3.3). Reported loss: (1/B) sum 1/2 (z(Q) - y)^2.
// - Double sampling (double_sampling = true): two independent samples Q1, Q2 of every row
//   (draws 0 and 1; Q1 is the naive mode's sample), and the symmetrised gradient
//     g = (1/B) sum_r 1/2 [Q1(a_r) l'(z_r(Q2)) + Q2(a_r) l'(z_r(Q1))].
//   For least squares l' is affine, E[Q1 Q2^T] = a a^T, so E[g] is the full-precision gradient:
//   unbiased, SGD converges to the least-squares solution. There the reported loss is
//   (1/B) sum 1/2 (z(Q1) - y)(z(Q2) - y): an unbiased estimate of the true loss, of which g is
//   the exact gradient (it can be negative on a small batch).
// - Logistic regression and SVM: the quantized features go through the forward pass as above
//   (naive: one sample; double sampling: the same two-sample symmetrised form, which removes the
//   correlation between the feature factor and l'(z) but not the bias of the non-linear l'
//   itself: E[l'(z(Q))] != l'(z(a)). ZipML (arXiv version) bounds this bias and reports 8 bits
//   as usually enough; we do not use its Chebyshev or refetching schemes). Reported loss: the
//   mean of the loss at z(Q1) and z(Q2) (naive: at z(Q)).
// evaluate() always reads the full-precision features: it measures the model, not the data
// channel, and never advances the data step.
//
// Reproducibility: the randomness of step s, the batch's i-th row, feature j, draw k is
// philox_word(data_key(data_seed, s, rank, k), i * dim + j); the data step counts the
// forward_backward calls and is part of a checkpoint (data_step / set_data_step).
// Thread-safety: one thread at a time per instance (Model's contract).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "train/linear/data_quantizer.h"
#include "train/model.h"

namespace qgrad {

enum class LinearLoss { kSquared, kLogistic, kHinge };

// "linear" -> kSquared, "logistic" -> kLogistic, "svm" -> kHinge; InvalidArgument otherwise.
LinearLoss parse_linear_loss(std::string_view name);
std::string_view linear_loss_name(LinearLoss loss);

struct LinearModelOptions {
  LinearLoss loss = LinearLoss::kSquared;
  size_t dim = 0;          // features per row (> 0)
  size_t num_classes = 0;  // of the data set: 0 regression, 2 binary, > 2 multinomial (logistic)
  bool bias = true;        // fit an intercept
  float init_scale = 0;    // 0: zero init; > 0: weights uniform in [-init_scale, init_scale)
  uint64_t init_seed = 0;  // Philox seed of that init (bias starts at 0)
  // ZipML data quantization.
  int data_bits = 0;             // 0: full precision; 1..8: 2^b levels per feature
  bool double_sampling = false;  // two independent samples per row (needs data_bits > 0)
  uint64_t data_seed = 0;
  uint32_t rank = 0;                // worker rank: part of the data-quantization stream
  std::optional<FeatureGrid> grid;  // required when data_bits > 0 (see fit_feature_grid)
};

class LinearModel final : public Model {
 public:
  // Throws InvalidArgument for inconsistent options (dim 0, a loss that cannot take
  // num_classes, data_bits out of range, double sampling without data_bits, a missing grid or
  // one of another dimension).
  explicit LinearModel(LinearModelOptions options);
  ~LinearModel() override;
  LinearModel(const LinearModel&) = delete;
  LinearModel& operator=(const LinearModel&) = delete;

  std::string name() const override;
  std::vector<ParamView> params() override;
  double forward_backward(const Dataset& data, std::span<const size_t> rows,
                          const std::function<void(size_t)>& grad_ready) override;
  Evaluation evaluate(const Dataset& data, std::span<const size_t> rows = {}) override;

  const LinearModelOptions& options() const { return options_; }
  size_t outputs() const { return outputs_; }  // K
  // forward_backward calls so far: the step of the next call's data-quantization stream.
  uint64_t data_step() const override { return data_step_; }
  void set_data_step(uint64_t step) override { data_step_ = step; }
  // The data quantizer (null when data_bits == 0).
  const DataQuantizer* quantizer() const { return quantizer_.get(); }

 private:
  struct State;  // the Eigen buffers and scratch: Eigen stays out of this header

  void check_data(const Dataset& data) const;

  LinearModelOptions options_;
  size_t outputs_ = 1;
  std::unique_ptr<DataQuantizer> quantizer_;
  std::unique_ptr<State> state_;
  uint64_t data_step_ = 0;
};

// A model for `train` (dim and num_classes from it; the grid fitted on it when data_bits > 0
// and options.grid is empty). `name` is "linear", "logistic" or "svm". With several ranks each
// fitting its own shard, ranks round to different levels; that stays unbiased (any grid that
// contains a rank's rows does), but pass one grid of the whole training set if they should agree.
std::unique_ptr<LinearModel> make_linear_model(std::string_view name, const Dataset& train,
                                               LinearModelOptions options = {});

}  // namespace qgrad
