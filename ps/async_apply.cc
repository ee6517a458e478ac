#include "ps/async_apply.h"

#include <algorithm>
#include <string>

#include "core/aggregation.h"
#include "core/error.h"

namespace qgrad::ps {

StalenessCheck check_staleness(uint32_t worker, uint64_t step, uint64_t version, uint64_t applied,
                               uint64_t max_staleness) {
  StalenessCheck out;
  if (version > applied) {
    out.status = aborted(detail::concat("worker ", worker, "'s push was computed on version ",
                                        version, ", the server is at version ", applied,
                                        " (it restarted from an older checkpoint?): pull the "
                                        "current model and continue"));
    return out;
  }
  out.staleness = applied - version;
  if (out.staleness > max_staleness) {
    out.too_stale = true;
    out.status = aborted(detail::concat(
        "stale push: worker ", worker, " step ", step, " was computed on version ", version,
        ", the server is at version ", applied, ": staleness ", out.staleness,
        " exceeds --max-staleness ", max_staleness, "; pull the current model and continue"));
  }
  return out;
}

AsyncApply::AsyncApply(const ServerOptions& options)
    : workers_(options.workers), max_staleness_(options.max_staleness) {}

CallStatus AsyncApply::screen(const PushInfo& info, const DecodedPush& push,
                              std::span<const ParamShape> shape) const {
  for (size_t k = 0; k < push.aggregation.size(); ++k) {
    if (push.aggregation[k] == Aggregation::kMajorityVote) {
      return invalid(detail::concat("key ", k, " ('", shape[k].name,
                                    "'): this payload's codec aggregates by majority vote, which "
                                    "the asynchronous mode cannot do (one push is no vote); use "
                                    "a mean codec such as sign:scale=l1 or qsgd"));
    }
  }
  if (!info.model_version) {
    return invalid(detail::concat("push of worker ", info.worker, " step ", info.step,
                                  " does not say which model version it was computed on "
                                  "(model_version), which the asynchronous mode needs (an older "
                                  "client?)"));
  }
  return call_ok();
}

PushOutcome AsyncApply::on_push(const PushInfo& info, DecodedPush&& push, StepContext& ctx) {
  const uint32_t id = info.worker;
  WorkerState& w = ctx.workers[id];
  if (!w.registered) {
    return {precondition(detail::concat("worker ", id, " pushed before it registered"))};
  }
  if (static_cast<int64_t>(info.step) <= w.last_step) {
    return {precondition(detail::concat("worker ", id, " pushed step ", info.step,
                                        " after its step ", w.last_step,
                                        " (asynchronous mode: a worker's steps only grow)"))};
  }
  const StalenessCheck fresh =
      check_staleness(id, info.step, *info.model_version, ctx.applied, max_staleness_);
  if (!fresh.status.ok()) {
    if (fresh.too_stale) ++stale_refused_;
    return {fresh.status};
  }
  Optimizer& optimizer = *ctx.model.optimizer;
  std::vector<std::vector<float>>& params = ctx.model.params;
  optimizer.begin_update();
  for (size_t k = 0; k < params.size(); ++k) {
    std::vector<float>& a = push.decoded[k];
    divide_by_contributors(a, workers_);  // as sync's mean: W pushes make one mean step
    optimizer.update(k, params[k], a, push.lr);
  }
  ++ctx.applied;
  ++applied_pushes_;
  staleness_max_ = std::max(staleness_max_, fresh.staleness);
  staleness_sum_ += fresh.staleness;
  w.last_step = static_cast<int64_t>(info.step);
  w.last_request_id = push.request_id;
  ++w.pushes;
  return {call_ok(), true};
}

uint64_t AsyncApply::start_step(const WorkerState& w, uint64_t) const {
  return static_cast<uint64_t>(w.last_step + 1);
}

CallStatus AsyncApply::check_pull(uint32_t, uint64_t, uint64_t) const { return call_ok(); }

bool AsyncApply::pull_ready(uint64_t, uint64_t) const { return true; }

void AsyncApply::add_stats(ServerStats& stats) const {
  stats.async_applied = applied_pushes_;
  stats.stale_refused = stale_refused_;
  stats.staleness_max = staleness_max_;
  stats.staleness_sum = staleness_sum_;
}

}  // namespace qgrad::ps
