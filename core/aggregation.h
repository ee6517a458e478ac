// The aggregation rules, written once: how the decoded payloads of W workers become one update.
// Every place that aggregates (the collective strategies in comm/strategies, the
// DistributedOptimizer, the parameter server's synchronous round and asynchronous apply) calls
// these, so the tie rule and the bits of a mean cannot drift apart between them.
//
//   Aggregation::kMean          a = (1/W) sum_w D(p_w)
//   Aggregation::kMajorityVote  a = m * sign(sum_w D(p_w)), a tie (sum 0) counting as +1
//                               (signSGD with majority vote, Bernstein et al. 2019, arXiv
//                               1810.05291; m = 1 for the vote itself, s(lr) for an update)
//
// The sums themselves are the caller's: they must run in rank (worker-id) order, so that the same
// payloads give the same bits in any arrival order.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "core/codec.h"

namespace qgrad {

// The vote's tie rule: sign(sum) with sign(0) = +1, as the `sign` codec's sgn(0) = +1.
inline float vote_sign(float sum) { return sum >= 0.0f ? 1.0f : -1.0f; }

// sums[i] = sums[i] >= 0 ? magnitude : -magnitude. magnitude * vote_sign(x) has the same bits, so
// voting with magnitude 1 and scaling by m afterwards gives what voting with m gives.
void vote(std::span<float> sums, float magnitude = 1.0f);

// sums[i] /= contributors (nothing for 0 or 1). For a power of two it multiplies by the exact
// reciprocal, which has the bits of the division (also for subnormals) at a fraction of its cost.
void divide_by_contributors(std::span<float> sums, uint32_t contributors);

// "mean", "majority vote": for messages.
std::string_view aggregation_name(Aggregation aggregation);

}  // namespace qgrad
