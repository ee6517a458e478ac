#include "core/error_feedback.h"

#include <algorithm>

#include "core/error.h"

namespace qgrad {

size_t ErrorFeedback::encode(const Codec& codec, std::span<const float> g, float lr,
                             const RngKey& key, std::span<std::byte> out) {
  QGRAD_CHECK(g.size() == memory_.size(), "error feedback: gradient has ", g.size(),
              " elements, the memory holds ", memory_.size());
  for (size_t i = 0; i < g.size(); ++i) scratch_[i] = lr * g[i] + memory_[i];
  const size_t bytes = codec.encode(scratch_, key, out);  // throws before memory_ changes
  codec.residual(scratch_, out.first(bytes), memory_);
  return bytes;
}

void ErrorFeedback::load(std::span<const float> memory) {
  QGRAD_CHECK(memory.size() == memory_.size(), "error feedback: saved memory has ", memory.size(),
              " elements, expected ", memory_.size());
  std::copy(memory.begin(), memory.end(), memory_.begin());
}

void ErrorFeedback::reset() { std::fill(memory_.begin(), memory_.end(), 0.0f); }

}  // namespace qgrad
