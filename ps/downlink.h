// The downlink codec: pulls that carry an encoded update instead of the whole model in fp32.
//
// The server keeps the workers' model x^ (the replica) beside its own x. After each synchronous
// step it encodes u = x - x^ per key with the downlink codec (so what earlier steps' encodings
// left out is in u: the server's error memory), adds D(payload) to x^, and keeps the payloads. A
// worker that holds x^ of the step before gets the payloads (it adds them with factor 1); any
// other (joining, resynchronizing) gets x^ in fp32. Workers train on x^, and all of them hold the
// same bits. Without a codec, pulls carry x in fp32 and the replica stays the initial values
// (checkpoints store it either way). Majority-vote codecs are refused: their decoded values do
// not estimate u. The encoding's randomness is keyed by the step, rank 0xFFFFFFFF (the server,
// apart from every worker) and the key, so it is reproducible.
// Thread-safety: none of its own; the server calls it under its lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/codec.h"

namespace qgrad::ps {

class Downlink {
 public:
  // spec: a codec spec ("" for none); InvalidArgument for a bad spec or a majority-vote codec.
  explicit Downlink(const std::string& spec);

  bool enabled() const { return codec_ != nullptr; }

  // A new model: x^ = initial, no update yet.
  void reset(const std::vector<std::vector<float>>& initial);
  // A model resumed from a checkpoint: x^ as it was saved, no update yet.
  void restore(std::vector<std::vector<float>> replica);

  // After step `applied` - 1 made x = params: u = x - x^ per key, encoded; x^ += D(payload).
  void encode(const std::vector<std::vector<float>>& params, uint64_t applied);

  // Whether a worker holding the model of have_step (has_model: it holds one) gets the encoded
  // update of the server's current step `applied` rather than x^ in fp32.
  bool sends_update(bool has_model, uint64_t have_step, uint64_t applied) const;

  const std::vector<std::vector<float>>& replica() const { return replica_; }
  const std::vector<std::byte>& update(size_t key) const { return update_[key]; }

 private:
  std::unique_ptr<Codec> codec_;                // null: pulls carry fp32 values of x
  std::vector<std::vector<float>> replica_;     // x^: the workers' model
  std::vector<std::vector<std::byte>> update_;  // per key: the encoded x^ update to update_step_
  uint64_t update_step_ = 0;
};

}  // namespace qgrad::ps
