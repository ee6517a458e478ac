#include "train/backends/models.h"

#include "core/config.h"
#include "core/error.h"
#if QGRAD_HAVE_TORCH
#include "train/torch/torch_model.h"
#endif

namespace qgrad {

bool have_torch_family() { return QGRAD_HAVE_TORCH != 0; }

std::unique_ptr<Model> make_torch_family_model(std::string_view name, const ModelOptions& options,
                                               const Dataset& train) {
#if QGRAD_HAVE_TORCH
  TorchModelOptions torch;
  torch.hidden = options.hidden;
  torch.channels = options.channels;
  torch.seed = options.seed;
  torch.threads = options.threads;
  return make_torch_model(name, torch, train);
#else
  (void)options;
  (void)train;
  throw InvalidArgument(detail::concat(
      "model '", name,
      "' needs LibTorch, and this qgrad was built without it (install libtorch-dev with "
      "scripts/install-deps.sh and rebuild with -DQGRAD_WITH_TORCH=ON)"));
#endif
}

}  // namespace qgrad
