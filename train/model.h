// The Model interface: what the worker loop needs from a model, on raw fp32 buffers. Linear
// models (least squares, logistic regression, hinge-loss SVM) are written on Eigen in
// train/linear/, the MLP and CNN on LibTorch in train/torch/; both implement this interface, so
// the optimizer, the exchange and qgrad-train never see Eigen or LibTorch.
// Thread-safety: one thread at a time per model instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "optim/param.h"
#include "train/dataset.h"

namespace qgrad {

struct Evaluation {
  double loss = 0;      // mean loss over the rows
  double accuracy = 0;  // fraction correct (classification); 0 for regression
  size_t rows = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  // "linear", "logistic", "svm", "mlp", "cnn".
  virtual std::string name() const = 0;

  // The parameters, in a fixed order (the same on every rank for the same options). Views stay
  // valid for the model's lifetime.
  virtual std::vector<ParamView> params() = 0;

  // Mean loss over `rows` of `data`; writes the gradient of that mean loss into every
  // parameter's grad buffer (overwriting, not accumulating). Calls grad_ready(i) once for each
  // parameter index i as soon as its gradient is final (models that backpropagate call it in
  // reverse layer order, while backward still runs, so the exchange can overlap with it).
  // grad_ready may be empty. Throws InvalidArgument on a shape mismatch with the data set.
  virtual double forward_backward(const Dataset& data, std::span<const size_t> rows,
                                  const std::function<void(size_t)>& grad_ready) = 0;

  // Loss and accuracy over `rows` of `data` (all rows if empty), without touching gradients.
  virtual Evaluation evaluate(const Dataset& data, std::span<const size_t> rows = {}) = 0;

  // Randomness the model draws per forward_backward call (ZipML's data quantization) is indexed
  // by a data step; checkpoints save and restore it so that a resumed run draws the same
  // samples. Models without such randomness keep 0.
  virtual uint64_t data_step() const { return 0; }
  virtual void set_data_step(uint64_t /*step*/) {}
};

}  // namespace qgrad
