#include "ps/downlink.h"

#include <utility>

#include "core/codec_registry.h"
#include "core/error.h"

namespace qgrad::ps {

Downlink::Downlink(const std::string& spec) {
  if (spec.empty()) return;
  codec_ = make_codec(spec);  // names a bad spec
  QGRAD_CHECK(codec_->aggregation() == Aggregation::kMean, "ParameterServer: downlink codec '",
              spec,
              "' sends a majority vote of signs, which does not estimate the update; use e.g. "
              "qsgd:bits=8 or sign:scale=l1");
}

void Downlink::reset(const std::vector<std::vector<float>>& initial) {
  replica_ = initial;
  update_.clear();
}

void Downlink::restore(std::vector<std::vector<float>> replica) {
  replica_ = std::move(replica);
  update_.clear();
}

void Downlink::encode(const std::vector<std::vector<float>>& params, uint64_t applied) {
  update_.resize(params.size());
  std::vector<float> u;
  for (size_t k = 0; k < params.size(); ++k) {
    u.resize(params[k].size());
    for (size_t j = 0; j < u.size(); ++j) u[j] = params[k][j] - replica_[k][j];
    const RngKey key{.seed = 0x5eed,
                     .step = applied,
                     .rank = 0xFFFFFFFFu,  // the server, apart from every worker
                     .tensor = static_cast<uint32_t>(k),
                     .bucket = 0};
    update_[k] = codec_->encode(u, key);
    codec_->decode_add(update_[k], replica_[k], 1.0f);
  }
  update_step_ = applied;
}

bool Downlink::sends_update(bool has_model, uint64_t have_step, uint64_t applied) const {
  return codec_ && has_model && update_step_ == applied && applied > 0 &&
         have_step + 1 == applied && !update_.empty();
}

}  // namespace qgrad::ps
