// AsyncApply: the asynchronous step policy (ServerOptions::async; see ps/step_policy.h).
//
// Each push is applied when it arrives, alone: a = (1/W) D(p) for mean codecs (W pushes make one
// mean step, as one synchronous step of W workers), then Optimizer::update(a) with the push's lr,
// and the version (the server's applied steps) grows by one per push. Majority-vote codecs are
// refused (one push is no vote), and so is a push that does not say which version it was
// computed on (model_version): INVALID_ARGUMENT.
//
// Staleness: a push computed on version v when the server is at version V has staleness V - v;
// more than max_staleness is refused with ABORTED naming both (the worker pulls and continues),
// and so is a push from a version the server has not reached (it restarted from an older
// checkpoint). A worker's step is its own push count and only grows: a push of a step at or
// below its last counted one is FAILED_PRECONDITION; pushes stay idempotent by (worker, step,
// request id) (ps/worker_table.h). A pull is answered at once with the current model and its
// version, whatever step it asks for; a (re)registering worker continues after its last counted
// push, so that it never repeats a (step, request id) the server has counted.
// Thread-safety: as StepPolicy.
#pragma once

#include <cstdint>

#include "ps/step_policy.h"

namespace qgrad::ps {

struct StalenessCheck {
  CallStatus status;       // ABORTED when refused
  uint64_t staleness = 0;  // applied - version, when version <= applied
  bool too_stale = false;  // refused for staleness above the bound (counted in stale_refused)
};

// The staleness rule, for a push of `worker`'s `step` computed on `version`.
StalenessCheck check_staleness(uint32_t worker, uint64_t step, uint64_t version, uint64_t applied,
                               uint64_t max_staleness);

class AsyncApply final : public StepPolicy {
 public:
  // options.workers and max_staleness.
  explicit AsyncApply(const ServerOptions& options);

  CallStatus screen(const PushInfo& info, const DecodedPush& push,
                    std::span<const ParamShape> shape) const override;
  PushOutcome on_push(const PushInfo& info, DecodedPush&& push, StepContext& ctx) override;

  bool asynchronous() const override { return true; }
  uint64_t start_step(const WorkerState& w, uint64_t applied) const override;
  CallStatus check_pull(uint32_t worker, uint64_t step, uint64_t applied) const override;
  bool pull_ready(uint64_t step, uint64_t applied) const override;
  void add_stats(ServerStats& stats) const override;

 private:
  const uint32_t workers_;
  const uint64_t max_staleness_;
  uint64_t applied_pushes_ = 0;
  uint64_t stale_refused_ = 0;
  uint64_t staleness_max_ = 0;
  uint64_t staleness_sum_ = 0;
};

}  // namespace qgrad::ps
