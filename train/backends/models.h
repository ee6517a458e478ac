// The backend factory, model-family part: the model families whose libraries are optional
// (today the LibTorch MLP and CNN of train/torch). train/model_factory.h is the front door
// (every model name); it hands the optional families to this file, the only place that knows
// whether they were built. The design of the factory: train/backends/communicators.h.
// Thread-safety: pure functions.
#pragma once

#include <memory>
#include <string_view>

#include "train/dataset.h"
#include "train/model.h"
#include "train/model_factory.h"

namespace qgrad {

// Whether make_torch_family_model can build "mlp" and "cnn".
bool have_torch_family();

// Builds the LibTorch model `name` ("mlp" or "cnn") for the shape of `train`. In a build without
// LibTorch it throws InvalidArgument naming the model and QGRAD_WITH_TORCH.
std::unique_ptr<Model> make_torch_family_model(std::string_view name, const ModelOptions& options,
                                               const Dataset& train);

}  // namespace qgrad
