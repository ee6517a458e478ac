// Push decoding: a worker's push (one wire payload per key, core/wire.h) checked and decoded
// into fp32 values, before anything of it reaches the step state. It runs without the server's
// lock (it is the expensive part of a push), and a bad push leaves no trace: every problem is
// INVALID_ARGUMENT naming the key and what was wrong.
//
// A push must carry every key exactly once. Each payload is self-describing: its codec comes
// from its header (codec_for_payload), its element count must be the key's, and every decoded
// value must be finite (a NaN or infinity would poison the model of every worker). Codec errors
// (a truncated or damaged payload) are reported with the key's name in front.
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/codec.h"
#include "optim/optimizer.h"
#include "ps/call_status.h"

namespace qgrad::ps {

// One key's payload of a push, as it arrived (the bytes belong to the request).
struct KeyPayloadView {
  uint32_t key = 0;
  std::span<const std::byte> payload;
};

// A worker's push, decoded: what the step policies (ps/step_policy.h) aggregate.
struct DecodedPush {
  bool present = false;  // (in a synchronous round: this worker has pushed the step)
  uint64_t request_id = 0;
  float lr = 0;
  std::vector<std::vector<float>> decoded;  // D(p_k) per key, the key's size
  std::vector<Aggregation> aggregation;     // per key, from its payload's codec
};

// INVALID_ARGUMENT unless lr is a finite number >= 0.
CallStatus check_push_lr(uint32_t worker, uint64_t step, float lr);

// Fills out.decoded and out.aggregation (nothing else) from the payloads; `shape` is the model's
// (key k has shape[k].size elements). worker and step name the push in messages.
CallStatus decode_push(uint32_t worker, uint64_t step, std::span<const KeyPayloadView> payloads,
                       std::span<const ParamShape> shape, DecodedPush& out);

}  // namespace qgrad::ps
