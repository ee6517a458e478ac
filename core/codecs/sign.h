// `sign`: one bit per coordinate.
//
// scale=none — signSGD (Bernstein et al., ICML 2018, arXiv 1802.04434) and signSGD with majority
//   vote (Bernstein et al., ICLR 2019, arXiv 1810.05291). C(v)_i = sgn(v_i) in {+1, -1} with
//   sgn(0) = +1, as the reference code's bit2byte packing. Aggregation is the majority vote:
//   sign(sum_w sgn(v_w)), a tie counting as +1 (core/aggregation.h); see majority_vote below.
// scale=l1 — EF-signSGD's scaled sign (Karimireddy et al., ICML 2019, arXiv 1901.09847):
//   C(v)_i = (||v_B||_1 / d_B) * sgn(v_i) for the bucket B holding i (d_B its element count; the
//   tail bucket uses its own). It is a delta-compressor with delta = ||v_B||_1^2 / (d_B
//   ||v_B||_2^2), i.e. ||C(v) - v||^2 = ||v||^2 - ||v||_1^2 / d per bucket when v has no zeros.
//   Aggregation is the mean; meant to run under error feedback (p = g + e; Delta = C(p); e = p -
//   Delta). Deviation from the reference code: it uses torch.sign, so 0 -> 0, but one bit cannot
//   carry a third value, so here sgn(0) = +1 as well (C(1,-2,3,0) = 1.5*(1,-1,1,1), not
//   (1.5,-1.5,1.5,0)). Error feedback absorbs the difference.
// Neither variant is unbiased; both are deterministic (no randomness, the RngKey is unused).
//
// Body layout (little-endian):
//   scale=l1 only: ceil(n / bucket) float32 scales, bucket order (finite, >= 0);
//   then ceil(n / 8) bytes of sign bits: element i is bit (i % 8) of byte i / 8, 1 = negative
//   (v_i < 0; -0.0 counts as non-negative). The unused high bits of the last byte are 0.
// Size: n bits (+ 32 bits per bucket with l1): 32x (about 31.9x with bucket 4096) below fp32.
// Thread-safe: the codec is immutable; majority_vote is a pure function.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_sign_codec(const CodecSpec& spec);

// The majority vote of signSGD over M >= 1 plain-sign payloads (scale=none, all with the same
// header parameters and out.size() elements): out[i] = +1 if at least as many workers sent +
// as sent -, else -1. Throws CorruptPayload if a payload is not such a payload (checked before
// out is written) and InvalidArgument if `payloads` is empty. Counts votes bit-sliced, 64
// coordinates per machine word; spreads the work over parallel_for.
void majority_vote(std::span<const std::span<const std::byte>> payloads, std::span<float> out);

// The same vote re-encoded as a plain-sign payload (the inputs' header parameters): what a
// parameter server pushes back. Equal to encoding the +-1 vector of majority_vote.
std::vector<std::byte> majority_vote_payload(std::span<const std::span<const std::byte>> payloads);

}  // namespace qgrad
