// Bucket planning for the DistributedOptimizer: which parameters are fused into which gradient
// bucket, and where each lies in it. Parameters are taken in reverse order (the order backward
// produces their gradients, so the first bucket is ready first); a bucket is closed when the
// next parameter would take it past bucket_bytes, and a parameter larger than that gets a bucket
// of its own. The plan is a pure function of the parameter sizes and the two options, so every
// rank derives the same buckets (and the collectives match).
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

namespace qgrad {

struct BucketLayout {
  std::vector<size_t> params;   // parameter indices, in the order they lie in the bucket
  std::vector<size_t> offsets;  // element offset of each of them in the bucket
  size_t size = 0;              // elements
  bool compressible = false;    // 4 * size >= min_compress_bytes: compressed after warm-up
};

// The buckets of parameters of `sizes` elements each (see the top of this file). bucket_bytes
// > 0; a model without parameters has no bucket.
std::vector<BucketLayout> plan_buckets(std::span<const size_t> sizes, size_t bucket_bytes,
                                       size_t min_compress_bytes);

// Where element j of a bucket lies: (k, element) with k the position in layout.params and
// offsets. j < layout.size.
std::pair<size_t, size_t> locate(const BucketLayout& layout, size_t j);

}  // namespace qgrad
