#include "optim/worker_encoder.h"

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/simd/kernels.h"

namespace qgrad {

WorkerEncoder::WorkerEncoder(const Optimizer& optimizer, const DistributedOptimizerOptions& options,
                             uint32_t rank)
    : WorkerEncoder(optimizer, options, rank, make_codec(options.codec)) {}

WorkerEncoder::WorkerEncoder(const Optimizer& optimizer, const DistributedOptimizerOptions& options,
                             uint32_t rank, std::unique_ptr<Codec> codec)
    : optimizer_(optimizer), options_(options), rank_(rank), codec_(std::move(codec)) {
  QGRAD_CHECK(codec_ != nullptr, "worker encoder: no codec given");
  plain_codec_ = make_codec("none");
  majority_ = codec_->aggregation() == Aggregation::kMajorityVote;
  // A majority-vote codec decodes to +-1 whatever the magnitude of p = c + e, so e = p - D(C(p))
  // would hold -+1 in place of what compression dropped and grow without bound; EF-signSGD
  // needs the scaled sign (sign:scale=l1), which aggregates by mean.
  QGRAD_CHECK(!(options_.error_feedback && majority_),
              "error feedback needs a codec whose decoded values estimate its input; '",
              codec_->spec().str(),
              "' sends a majority vote of signs. Use sign:scale=l1 for EF-signSGD, or turn error "
              "feedback off for signSGD / Signum with majority vote");
}

float WorkerEncoder::factor(float lr) const {
  const float s = optimizer_.compression_scale(lr);
  return options_.adversarial ? -s : s;
}

void WorkerEncoder::contribution(size_t i, std::span<const float> grad, std::span<float> out,
                                 float factor) const {
  optimizer_.scaled_contribution(i, grad, out, factor);
}

std::optional<NonFinite> WorkerEncoder::scan(size_t i, std::span<const float> grad,
                                             std::span<const float> c) const {
  const size_t n = grad.size();
  const size_t bad = simd::find_nonfinite(grad.data(), n);
  if (bad < n) return NonFinite{rank_, i, bad, false};
  const size_t bad_c = simd::find_nonfinite(c.data(), c.size());
  if (bad_c < c.size()) return NonFinite{rank_, i, bad_c, true};
  return std::nullopt;
}

std::optional<NonFinite> WorkerEncoder::rescan(size_t i, std::span<const float> grad, float factor,
                                               std::vector<float>& scratch) const {
  const size_t n = grad.size();
  const size_t bad = simd::find_nonfinite(grad.data(), n);
  if (bad < n) return NonFinite{rank_, i, bad, false};
  scratch.resize(n);
  contribution(i, grad, scratch, factor);
  return scan(i, grad, scratch);
}

std::string WorkerEncoder::describe(const NonFinite& bad) const {
  const std::vector<ParamShape>& params = optimizer_.params();
  const std::string name =
      bad.param < params.size() ? params[bad.param].name : detail::concat("#", bad.param);
  if (bad.in_contribution) {
    return detail::concat("parameter '", name, "' element ", bad.element, " on rank ", bad.rank,
                          ": its gradient is finite but what the optimizer sends (s(lr) * T(g)) is "
                          "not (learning rate too large?)");
  }
  return detail::concat("non-finite gradient (NaN or Inf) in parameter '", name, "' at element ",
                        bad.element, " on rank ", bad.rank);
}

bool WorkerEncoder::compressible(size_t elements) const {
  return is_compressible(elements, options_.min_compress_bytes);
}

bool WorkerEncoder::compresses(uint64_t step, size_t elements) const {
  return compressible(elements) && step >= options_.warmup_steps;
}

const Codec& WorkerEncoder::codec_for(uint64_t step, size_t elements) const {
  return compresses(step, elements) ? *codec_ : *plain_codec_;
}

std::unique_ptr<ErrorFeedback> WorkerEncoder::make_memory(size_t elements) const {
  if (!options_.error_feedback || !compressible(elements)) return nullptr;
  return std::make_unique<ErrorFeedback>(elements);
}

RngKey WorkerEncoder::key(uint64_t step, uint32_t unit) const {
  return RngKey{.seed = options_.seed, .step = step, .rank = rank_, .tensor = unit, .bucket = 0};
}

void WorkerEncoder::encode(const Codec& codec, std::span<const float> c, ErrorFeedback* memory,
                           const RngKey& key, std::vector<std::byte>& out) const {
  out.resize(codec.max_encoded_bytes(c.size()));
  const size_t n =
      memory != nullptr ? memory->encode(codec, c, 1.0f, key, out) : codec.encode(c, key, out);
  out.resize(n);
}

void WorkerEncoder::take_back(const Codec& codec, std::span<const std::byte> payload,
                              ErrorFeedback& memory) {
  std::vector<float> e(memory.memory().begin(), memory.memory().end());
  codec.decode_add(payload, e, 1.0f);  // e = p - D(payload) + D(payload) = p
  memory.load(e);
}

}  // namespace qgrad
