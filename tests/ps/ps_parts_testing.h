// Helpers shared by the unit tests of the parameter server's gRPC-free parts (tests/ps/*_test.cc
// but ps_test.cc and ps_fault_test.cc, which run real servers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/codec.h"
#include "core/codec_registry.h"
#include "core/wire.h"
#include "ps/model_adoption.h"
#include "ps/push_decoder.h"
#include "ps/server_options.h"
#include "ps/step_policy.h"
#include "ps/worker_table.h"

namespace qgrad::ps::testing_parts {

using Tensors = std::vector<std::vector<float>>;

inline const std::vector<ParamShape>& shape() {
  static const std::vector<ParamShape> s = {{"w", 37}, {"b", 5}};
  return s;
}

inline Tensors random_tensors(uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensors t;
  for (const ParamShape& p : shape()) {
    std::vector<float> v(p.size);
    for (float& x : v) x = dist(gen);
    t.push_back(std::move(v));
  }
  return t;
}

// One payload per key of `values`, encoded with `codec`.
inline std::vector<std::vector<std::byte>> encode(const Codec& codec, const Tensors& values,
                                                  uint32_t rank, uint64_t step) {
  std::vector<std::vector<std::byte>> out;
  for (size_t k = 0; k < values.size(); ++k) {
    const RngKey key{.seed = 7, .step = step, .rank = rank, .tensor = static_cast<uint32_t>(k)};
    out.push_back(codec.encode(values[k], key));
  }
  return out;
}

inline std::vector<KeyPayloadView> views(const std::vector<std::vector<std::byte>>& payloads) {
  std::vector<KeyPayloadView> out;
  for (size_t k = 0; k < payloads.size(); ++k) {
    out.push_back({static_cast<uint32_t>(k), std::span<const std::byte>(payloads[k])});
  }
  return out;
}

// The push as the server holds it once decoded (and checked).
inline DecodedPush decoded_push(const std::vector<std::vector<std::byte>>& payloads, float lr,
                                uint64_t request_id) {
  DecodedPush p;
  const CallStatus s = decode_push(0, 0, views(payloads), shape(), p);
  if (!s.ok()) throw std::runtime_error(s.message);
  p.present = true;
  p.lr = lr;
  p.request_id = request_id;
  return p;
}

// The server's state for a policy: a model of shape() and `workers` registered workers.
struct ServerFixture {
  ServerFixture(uint32_t workers, const Tensors& initial, const OptimizerOptions& optimizer)
      : states(workers) {
    adopt_model(model, shape(), initial, optimizer, "the test");
    for (WorkerState& w : states) w.registered = true;
  }
  StepContext context() { return StepContext{applied, states, model, log}; }

  uint64_t applied = 0;
  std::vector<WorkerState> states;
  ServerModel model;
  std::vector<std::string> lines;
  ServerLog log = [this](const std::string& line) { lines.push_back(line); };
};

inline ServerOptions options(uint32_t workers) {
  ServerOptions o;
  o.token = "t";
  o.workers = workers;
  return o;
}

// A push's PushInfo and its request id (which travels in the DecodedPush).
struct TestPushInfo {
  PushInfo info;
  uint64_t request_id = 0;
};

inline TestPushInfo push_info(uint32_t worker, uint64_t step, uint64_t request_id,
                              SteadyTime now = {}) {
  TestPushInfo t;
  t.info.worker = worker;
  t.info.step = step;
  t.info.now = now;
  t.request_id = request_id;
  return t;
}

// policy.on_push of `push` under the request id of `t`.
inline PushOutcome offer(StepPolicy& policy, const TestPushInfo& t, DecodedPush push,
                         StepContext& ctx) {
  push.request_id = t.request_id;
  return policy.on_push(t.info, std::move(push), ctx);
}

}  // namespace qgrad::ps::testing_parts
