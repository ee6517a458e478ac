// Error feedback (Seide et al. 2014; Karimireddy et al. 2019, EF-SGD): a worker keeps what
// compression dropped and adds it to the next step, so nothing is lost over time:
//
//   p = lr * g + e;   payload = C(p);   e' = p - D(payload)
//
// and, summed over steps, sum_t D(payload_t) + e_T = sum_t lr * g_t (up to float rounding).
// The memory is in parameter units (lr-scaled, as EF-SGD and Mem-SGD store it), so a learning
// rate change does not rescale what was kept. It lives in core/ because the scatter-reduce owner
// in comm/ re-encodes its chunk with its own memory and comm/ must not depend on optim/.
// Not thread-safe: one instance per (worker or owner, bucket).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "core/codec.h"

namespace qgrad {

class ErrorFeedback {
 public:
  explicit ErrorFeedback(size_t n) : memory_(n, 0.0f), scratch_(n, 0.0f) {}

  // Encodes p = lr * g + e into out and sets e = p - D(payload); returns the payload size.
  // On any error (NaN in g, a short buffer) the memory is left as it was.
  size_t encode(const Codec& codec, std::span<const float> g, float lr, const RngKey& key,
                std::span<std::byte> out);

  size_t size() const { return memory_.size(); }
  std::span<const float> memory() const { return memory_; }
  // For checkpoints: restore a saved memory (same size).
  void load(std::span<const float> memory);
  void reset();

 private:
  std::vector<float> memory_;
  std::vector<float> scratch_;  // p, kept across calls to avoid an allocation per step
};

}  // namespace qgrad
