// A model parameter as the optimizer and the exchange see it: two flat fp32 buffers of the same
// size that the model owns (the value and its gradient). The library works on raw buffers, so any
// framework (Eigen, LibTorch, plain arrays) can feed it. Views stay valid as long as the model
// that produced them lives and is not resized.
#pragma once

#include <span>
#include <string>

namespace qgrad {

struct ParamView {
  std::string name;        // e.g. "fc1.weight"; unique within a model
  std::span<float> value;  // what the optimizer updates
  std::span<float> grad;   // what backward writes; value.size() == grad.size()
};

}  // namespace qgrad
