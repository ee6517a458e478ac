// `topk`: top-k sparsification by magnitude, the compressor of Mem-SGD (Stich, Cordonnier,
// Jaggi, NeurIPS 2018, arXiv 1809.07599) and of EF-SGD's analysis (Karimireddy et al. 2019).
//
// k = ceil(ratio * n) clamped to [min(n, 1), n]. C(v) keeps the k coordinates of largest |v_i|
// (ties broken by the lower index, so the choice is a function of v alone) and zeroes the rest.
// It is biased; it is a delta-compressor with delta = k/n: ||C(v) - v||^2 <= (1 - k/n) ||v||^2.
// Under error feedback the residual v - C(v) is v with the kept entries zeroed.
//
// Body layout (little-endian): k uint32 indices, strictly increasing and < n, then the k float32
// values v_i in the same order (finite). Exactly 8k bytes; k depends only on n and ratio.
// Inputs longer than 2^32 - 1 elements are rejected (indices are 32-bit).
// Selection is O(n): a 16-bit then a 15-bit radix histogram of |v| bits find the k-th largest
// magnitude; per-chunk counts then place every kept entry, whatever the thread count.
// Thread-safe: the codec is immutable.
#pragma once

#include <cstddef>
#include <memory>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_topk_codec(const CodecSpec& spec);

// k for n elements at `ratio` (the formula above).
size_t topk_count(size_t n, float ratio);

}  // namespace qgrad
