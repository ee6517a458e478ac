// SyncRound: the synchronous step policy (the default; see ps/step_policy.h).
//
// Step t is applied once every one of the W workers has pushed it, or, with a timeout, once
// `timeout` has passed since the step's first push and at least `quorum` workers have pushed
// it: the aggregate is then over the workers that pushed, the step is counted in quorum_steps,
// each missing worker's `missed` grows and it is marked absent (later steps do not wait for it
// until it calls again), and the log names the newly absent. A worker that stays away is
// reported every `timeout` while the quorum is not there, never waited on silently.
//
// Per key the pushes are aggregated in worker-id order, so that the same pushes give the same
// bits whatever their arrival order (core/aggregation.h):
//   mean codecs            a = (1/n) sum_r D(p_r)               (n: the workers that pushed)
//   majority-vote codecs   a = s(lr) * sign(sum_r D(p_r)), a tie counting as +1
// then Optimizer::update(a) with the step's lr; all pushes of a step must carry the same lr
// (bit for bit) and aggregate every key the same way (else INVALID_ARGUMENT).
//
// Refusals: a push of a step already applied without this worker is ABORTED ("step S was applied
// without worker W after the timeout"): the worker pulls the current model and continues at the
// server's step. A push of a later step is FAILED_PRECONDITION, a second push of the same step
// under another request id ALREADY_EXISTS. A pull of step t waits until t steps are applied; one
// of a step beyond the next is FAILED_PRECONDITION. A worker may register at any time (a
// restart: same id) and starts at the server's step.
//
// Memory: each pending push is kept decoded (not summed on arrival), W copies of the model for
// one step, the price of the arrival-order independence.
// Thread-safety: as StepPolicy.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "ps/step_policy.h"

namespace qgrad::ps {

class SyncRound final : public StepPolicy {
 public:
  // options.workers, timeout and quorum (checked by check_server_options).
  explicit SyncRound(const ServerOptions& options);

  CallStatus screen(const PushInfo& info, const DecodedPush& push,
                    std::span<const ParamShape> shape) const override;
  PushOutcome on_push(const PushInfo& info, DecodedPush&& push, StepContext& ctx) override;
  bool on_timer(StepContext& ctx, SteadyTime now) override;

  bool asynchronous() const override { return false; }
  uint64_t start_step(const WorkerState& w, uint64_t applied) const override;
  CallStatus check_pull(uint32_t worker, uint64_t step, uint64_t applied) const override;
  bool pull_ready(uint64_t step, uint64_t applied) const override { return applied >= step; }
  void add_stats(ServerStats& stats) const override;

  uint32_t quorum() const { return quorum_; }
  uint32_t pushed() const { return pushed_; }  // pushes of the step being collected

 private:
  // Every worker not marked absent has pushed, and at least the quorum.
  bool complete(const std::vector<WorkerState>& workers) const;
  std::vector<uint32_t> missing() const;
  // Applies the step being collected (see the top of the file).
  void apply(StepContext& ctx, SteadyTime now);

  const uint32_t workers_;
  const uint32_t quorum_;  // pushes a step needs (W without a timeout)
  const std::chrono::milliseconds timeout_;
  std::vector<DecodedPush> pending_;  // per worker, of the step being collected
  uint32_t pushed_ = 0;
  SteadyTime first_push_{};  // of the step being collected
  uint64_t quorum_steps_ = 0;
  // The timer's report of a step that waits without a quorum: once per timeout.
  SteadyTime next_report_ = SteadyTime::min();
  uint64_t reported_step_ = ~uint64_t{0};
};

}  // namespace qgrad::ps
