// The options of the worker-side step pipeline, shared by both ways gradients travel: the
// DistributedOptimizer (collectives, optim/distributed_optimizer.h) reads all of them,
// ps::PsExchange (parameter servers, ps/worker.h) all but the strategy. What each field does to a
// step is the WorkerEncoder's contract (optim/worker_encoder.h).
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "comm/strategies/compressed_allreduce.h"

namespace qgrad {

// What a non-finite gradient (or contribution) does: throw on every rank, or skip the step.
enum class NanPolicy { kError, kSkipStep };
// "error", "skip-step"; throws InvalidArgument listing both.
NanPolicy parse_nan_policy(std::string_view name);
std::string_view nan_policy_name(NanPolicy policy);

struct DistributedOptimizerOptions {
  std::string codec = "none";             // codec spec, parsed once (core/codec_registry.h)
  Strategy strategy = Strategy::kAuto;    // for compressed buckets; resolved at construction
  bool error_feedback = false;            // not with majority-vote codecs (worker_encoder.h)
  size_t bucket_bytes = size_t{4} << 20;  // > 0
  uint64_t warmup_steps = 0;              // first K steps: fp32 plain allreduce
  size_t min_compress_bytes = 0;          // smaller buckets: fp32 plain allreduce
  uint64_t seed = 0;
  bool adversarial = false;  // this rank sends -c (robustness experiments)
  NanPolicy nan_policy = NanPolicy::kError;
};

// Whether a bucket or key of `elements` floats is ever compressed: 4 * elements >=
// min_compress_bytes (smaller ones always go as fp32, so headers do not outweigh the savings).
inline bool is_compressible(size_t elements, size_t min_compress_bytes) {
  return 4 * elements >= min_compress_bytes;
}

}  // namespace qgrad
