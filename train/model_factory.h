// One place that turns a model name and options into a qgrad::Model: the linear models of
// train/linear (Eigen) and, when qgrad was built with LibTorch, the MLP and CNN of train/torch,
// which it gets from the backend factory (train/backends/models.h, the only code that knows
// whether they were built).
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "train/dataset.h"
#include "train/model.h"

namespace qgrad {

struct ModelOptions {
  uint64_t seed = 0;  // initialization (identical on every rank)
  uint32_t rank = 0;  // the worker: part of the data-quantization stream
  // mlp / cnn
  std::vector<size_t> hidden = {256};
  std::vector<size_t> channels = {16, 32};
  int threads = 1;  // LibTorch + OpenBLAS threads per process (0: leave as they are)
  // linear / logistic / svm (ZipML)
  int data_bits = 0;
  bool double_sampling = false;
  float init_scale = 0;
};

// Builds `name` for the shape of `train` (for ZipML's data grid, `train` should be the whole
// training set, so that every rank quantizes to the same levels). Throws InvalidArgument for an
// unknown name (listing the valid ones), a model this build lacks (mlp/cnn without LibTorch),
// options that do not apply to the model (--data-bits with mlp), or a data set it cannot take.
std::unique_ptr<Model> make_model(std::string_view name, const ModelOptions& options,
                                  const Dataset& train);

// "linear, logistic, svm, mlp, cnn" (the LibTorch ones only when built in).
std::string model_names();
bool is_linear_model(std::string_view name);
// A name make_model knows (mlp and cnn also in a build without LibTorch, where make_model says
// what is missing).
bool is_model_name(std::string_view name);
bool have_torch_models();

}  // namespace qgrad
