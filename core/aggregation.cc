#include "core/aggregation.h"

#include <bit>

namespace qgrad {

void vote(std::span<float> sums, float magnitude) {
  for (float& v : sums) v = v >= 0.0f ? magnitude : -magnitude;
}

void divide_by_contributors(std::span<float> sums, uint32_t contributors) {
  if (contributors <= 1) return;
  if (std::has_single_bit(contributors)) {
    // 1/W is exact for W = 2^k, and so is scaling by it: v * (1/W) has the bits of v / W. The
    // multiply is memory-bound; the divide is bound by the divider's throughput.
    const float reciprocal = 1.0f / static_cast<float>(contributors);
    for (float& v : sums) v = v * reciprocal;
    return;
  }
  const float divisor = static_cast<float>(contributors);
  for (float& v : sums) v = v / divisor;
}

std::string_view aggregation_name(Aggregation aggregation) {
  return aggregation == Aggregation::kMajorityVote ? "majority vote" : "mean";
}

}  // namespace qgrad
