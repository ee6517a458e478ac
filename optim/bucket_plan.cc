#include "optim/bucket_plan.h"

#include <algorithm>

#include "optim/exchange_options.h"

namespace qgrad {

std::vector<BucketLayout> plan_buckets(std::span<const size_t> sizes, size_t bucket_bytes,
                                       size_t min_compress_bytes) {
  std::vector<BucketLayout> buckets;
  BucketLayout current;
  size_t current_bytes = 0;
  auto close = [&] {
    current.compressible = is_compressible(current.size, min_compress_bytes);
    buckets.push_back(std::move(current));
    current = BucketLayout{};
    current_bytes = 0;
  };
  for (size_t i = sizes.size(); i-- > 0;) {
    const size_t bytes = 4 * sizes[i];
    if (!current.params.empty() && current_bytes + bytes > bucket_bytes) close();
    current.params.push_back(i);
    current.offsets.push_back(current.size);
    current.size += sizes[i];
    current_bytes += bytes;
  }
  if (!current.params.empty()) close();
  return buckets;
}

std::pair<size_t, size_t> locate(const BucketLayout& layout, size_t j) {
  const size_t k =
      static_cast<size_t>(std::upper_bound(layout.offsets.begin(), layout.offsets.end(), j) -
                          layout.offsets.begin() - 1);
  return {k, j - layout.offsets[k]};
}

}  // namespace qgrad
