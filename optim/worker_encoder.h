// WorkerEncoder: the worker's half of a step, written once for both ways gradients travel: the
// DistributedOptimizer (a unit is a bucket, moved by collectives) and ps::PsExchange (a unit is a
// key, pushed to a parameter server). For unit u of step t on worker (rank) r:
//
//   c = f * T(g)      per parameter; T(g) = Optimizer::contribution, f = s(lr), or -s(lr) on an
//                     adversarial worker (options.adversarial: robustness experiments)
//   scan              the first non-finite value of g, else of c: a NonFinite naming the
//                     parameter, the element and the rank, before any codec sees the data
//   codec             fp32 `none` during the first warmup_steps steps and, always, for a unit
//                     of fewer than min_compress_bytes bytes; the configured codec otherwise
//   key               RngKey{seed, t, r, tensor = u, bucket = 0}: the collective path numbers
//                     its buckets, the parameter server its keys by their global index
//   p = c + e;  payload = C(p);  e = p - D(payload)
//                     error feedback (core/error_feedback.h), where the unit has a memory:
//                     error feedback on and the unit compressible. c carries s(lr) already, so
//                     the memory adds with factor 1, which gives EF-SGD's p = lr * g + e bit for
//                     bit (1 * x == x); see docs/algorithms.md.
//
// What stays with the callers: which elements form a unit, the order of the scan (the first
// culprit found is the one named), how the payloads travel (the collective strategies encode a
// bucket themselves, chunk by chunk, through the memory they are given), whether an uncompressed
// unit passes its memory (the collective path sends it through `none` in warm-up, which flushes
// e into the fp32 sum; the parameter server leaves it out, and it holds 0 there) and what a
// non-finite value does (the DistributedOptimizer's nan policy; an error on the
// parameter-server path).
// Thread-safety: const members only read the optimizer's state (Optimizer::contribution), so they
// may run on an exchange thread while nothing changes that state; take_back() writes the memory
// it is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/codec.h"
#include "core/error_feedback.h"
#include "core/philox.h"
#include "optim/exchange_options.h"
#include "optim/optimizer.h"

namespace qgrad {

// The first non-finite value of a parameter, as the NaN scan finds it.
struct NonFinite {
  uint32_t rank = 0;
  size_t param = 0;  // index into the optimizer's parameters
  uint64_t element = 0;
  bool in_contribution = false;  // the gradient was finite, f * T(g) was not
};

class WorkerEncoder {
 public:
  // Parses options.codec. Throws InvalidArgument for a bad codec spec, or error feedback with a
  // majority-vote codec. `optimizer` must outlive this object and be init()ed before the first
  // contribution() (its parameter indices and names are the ones the scan reports).
  WorkerEncoder(const Optimizer& optimizer, const DistributedOptimizerOptions& options,
                uint32_t rank);
  // The same with options.codec parsed by the caller (make_codec), who may check it first (the
  // DistributedOptimizer resolves its strategy on it, so that a bad strategy is named first).
  WorkerEncoder(const Optimizer& optimizer, const DistributedOptimizerOptions& options,
                uint32_t rank, std::unique_ptr<Codec> codec);

  const Codec& codec() const { return *codec_; }
  // `none`: what uncompressed units are encoded with.
  const Codec& plain_codec() const { return *plain_codec_; }
  // The codec aggregates by majority vote (Aggregation::kMajorityVote).
  bool majority() const { return majority_; }
  uint32_t rank() const { return rank_; }

  // f: s(lr), negated on an adversarial worker.
  float factor(float lr) const;
  // out = f * T(grad) of parameter i (Optimizer::scaled_contribution). Changes no state, so it
  // gives the same values when called again in the same step.
  void contribution(size_t i, std::span<const float> grad, std::span<float> out,
                    float factor) const;

  // The first non-finite value of parameter i: in grad, else in its contribution c.
  std::optional<NonFinite> scan(size_t i, std::span<const float> grad,
                                std::span<const float> c) const;
  // The same for a caller whose buffer no longer holds c: where grad is finite, c is computed
  // again into scratch (contribution() gives the same values).
  std::optional<NonFinite> rescan(size_t i, std::span<const float> grad, float factor,
                                  std::vector<float>& scratch) const;
  // "non-finite gradient (NaN or Inf) in parameter 'w' at element 3 on rank 1", or for a finite
  // gradient whose contribution is not: "parameter 'w' element 3 on rank 1: its gradient is
  // finite but what the optimizer sends (s(lr) * T(g)) is not (learning rate too large?)".
  std::string describe(const NonFinite& bad) const;

  // A unit of `elements` floats is compressed after warm-up (is_compressible).
  bool compressible(size_t elements) const;
  // ... and at step `step`.
  bool compresses(uint64_t step, size_t elements) const;
  // The codec for a unit at step `step` (the configured one, or `none`).
  const Codec& codec_for(uint64_t step, size_t elements) const;
  // The error memory of a unit: a zeroed one where error feedback is on and the unit
  // compressible, null otherwise.
  std::unique_ptr<ErrorFeedback> make_memory(size_t elements) const;
  RngKey key(uint64_t step, uint32_t unit) const;

  // Encodes a whole unit's c into out (resized to the payload): through `memory` when it is not
  // null (p = c + e, and e = p - D(payload)), else c as it is.
  void encode(const Codec& codec, std::span<const float> c, ErrorFeedback* memory,
              const RngKey& key, std::vector<std::byte>& out) const;
  // Undoes the memory's part of an encode whose payload nobody counted (a push the server
  // dropped): e += D(payload) gives e = p, so the whole compensated contribution goes with the
  // next step. `payload` must come from encode() through this memory with `codec`.
  static void take_back(const Codec& codec, std::span<const std::byte> payload,
                        ErrorFeedback& memory);

 private:
  const Optimizer& optimizer_;
  const DistributedOptimizerOptions options_;
  const uint32_t rank_;
  std::unique_ptr<Codec> codec_;
  std::unique_ptr<Codec> plain_codec_;
  bool majority_ = false;
};

}  // namespace qgrad
