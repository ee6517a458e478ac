// StepPolicy: when the parameter server applies the optimizer, and to what. The server chooses
// one policy once, from ServerOptions::async:
//   SyncRound  (ps/sync_round.h)   step t is applied once its workers (or a quorum, after the
//                                  timeout) have pushed it: the mean or the vote over them
//   AsyncApply (ps/async_apply.h)  each push is applied when it arrives, alone, unless it is
//                                  too stale
// Both aggregate with core/aggregation.h and call Optimizer::update(k, x_k, a_k, lr) per key, so
// the rule and its bits are the collective path's. Workers push s(lr) * T(g) (SGD: lr * g), as
// in the DistributedOptimizer, so an error memory on the worker stays in the units it has there;
// optimizers with state on the workers (Signum's momentum, sgd --worker-momentum) keep it there,
// and the server runs only the shared half (Signum: x -= lr (sgn(a) + wd x)).
//
// The service glue (ps/server.cc) does what is common: admission, the worker id and
// registration checks, decoding (ps/push_decoder.h), the duplicate rule (ps/worker_table.h),
// and, after a policy applied a step, the downlink codec and checkpoints. The policy does the
// rest of a push, answers when a pull may be served, and owns its counters.
// Thread-safety: screen() is called without the server's lock (it may only read the policy's
// options); every other method under it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "ps/call_status.h"
#include "ps/model_adoption.h"
#include "ps/push_decoder.h"
#include "ps/server_options.h"
#include "ps/server_stats.h"
#include "ps/worker_table.h"

namespace qgrad::ps {

using SteadyTime = std::chrono::steady_clock::time_point;

// A push as the policies see it (the payloads and the request id are in the DecodedPush).
struct PushInfo {
  uint32_t worker = 0;
  uint64_t step = 0;  // synchronous: the server's step; asynchronous: the worker's push count
  std::optional<uint64_t> model_version;  // the version its gradient was computed on
  SteadyTime now{};                       // when the server took it (under its lock)
};

// The server's state a policy reads and changes, under the server's lock.
struct StepContext {
  uint64_t& applied;  // steps (asynchronous: versions) applied
  std::vector<WorkerState>& workers;
  ServerModel& model;  // present: registered workers imply a model
  const ServerLog& log;
};

struct PushOutcome {
  CallStatus status;
  bool applied = false;  // the push completed a step (ctx.applied grew): downlink, checkpoints
};

class StepPolicy {
 public:
  virtual ~StepPolicy() = default;

  // After decoding, without the lock: refusals that depend on the push alone.
  virtual CallStatus screen(const PushInfo& info, const DecodedPush& push,
                            std::span<const ParamShape> shape) const = 0;
  // Under the lock, once the push is known not to be a counted retry: counts it, and applies
  // what it completes. push.present, request_id and lr are set.
  virtual PushOutcome on_push(const PushInfo& info, DecodedPush&& push, StepContext& ctx) = 0;
  // Called now and then (every few ms) while the server runs with a timeout. Returns true when
  // it applied a step.
  virtual bool on_timer(StepContext& ctx, SteadyTime now) {
    (void)ctx;
    (void)now;
    return false;
  }

  // Registration: whether the server applies pushes on arrival (the worker is told), and the
  // step a (re)registering worker starts at.
  virtual bool asynchronous() const = 0;
  virtual uint64_t start_step(const WorkerState& w, uint64_t applied) const = 0;

  // Pulls: refusals of a pull of `step`, and whether it can be answered now (else it waits for
  // the step to be applied).
  virtual CallStatus check_pull(uint32_t worker, uint64_t step, uint64_t applied) const = 0;
  virtual bool pull_ready(uint64_t step, uint64_t applied) const = 0;

  // The policy's counters (quorum steps; asynchronous applies and staleness).
  virtual void add_stats(ServerStats& stats) const = 0;
};

// SyncRound or AsyncApply, by options.async.
std::unique_ptr<StepPolicy> make_step_policy(const ServerOptions& options);

}  // namespace qgrad::ps
