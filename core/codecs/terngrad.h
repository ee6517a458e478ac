// `terngrad`: TernGrad (Wen et al., NeurIPS 2017, arXiv 1705.07878), ternary gradients
// {-1, 0, +1} times one scale per bucket.
//
// Per bucket B of d elements (the tail bucket uses its own d):
//   s = max_k |g_k|                                     (clip = 0, the paper's layer-wise form)
//   s = min(c * std(g_B), max_k |g_k|)                  (clip = c > 0; std is the population
//        standard deviation; values are clipped to [-s, s] first, as the reference code's
//        clip_factor). The min is a deviation: when c * std exceeds the bucket's max nothing is
//        clipped, and using the max keeps s finite and the variance lower.
//   Q(g)_k = s * sgn(g_k) * b_k,  b_k = [u_k * s < |g_k|]   (|g_k| after clipping)
// with u_k = uniform_from_word(philox_word(key, k)), k the global element index, so
// P[b_k = 1] = |g_k| / s up to the 2^-16 granularity of the 16-bit random words (core/philox.h).
// With clip = 0: E[Q(g)] = g and Var[Q(g)_k] = s |g_k| - g_k^2 (docs/algorithms.md, "TernGrad");
// the largest coordinate of a bucket is always kept, so it is exact. With clip > 0 the clipped
// coordinates are biased (unbiased() is false). A bucket with s = 0 (all zeros, or a constant
// bucket under clipping) sends zeros.
//
// Body layout (little-endian):
//   ceil(n / bucket) float32 scales, bucket order (finite, >= 0);
//   ceil(n / 4) bytes of 2-bit codes: element i is bits 2(i % 4)..2(i % 4)+1 of byte i / 4,
//   code 0 = 0, 1 = +s, 2 = -s; code 3 and nonzero codes past n are CorruptPayload.
// Size: 2 bits per element + 32 bits per bucket (2.0625 bits with bucket 512).
// Thread-safe: the codec is immutable.
#pragma once

#include <memory>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_terngrad_codec(const CodecSpec& spec);

}  // namespace qgrad
