#include "ps/sync_round.h"

#include <bit>
#include <string>
#include <utility>

#include "core/aggregation.h"
#include "core/error.h"

namespace qgrad::ps {

namespace {

std::string id_list(const std::vector<uint32_t>& ids) {
  std::string out;
  for (const uint32_t id : ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

SyncRound::SyncRound(const ServerOptions& options)
    : workers_(options.workers),
      quorum_(effective_quorum(options)),
      timeout_(options.timeout),
      pending_(options.workers) {}

CallStatus SyncRound::screen(const PushInfo&, const DecodedPush&,
                             std::span<const ParamShape>) const {
  return call_ok();
}

PushOutcome SyncRound::on_push(const PushInfo& info, DecodedPush&& push, StepContext& ctx) {
  const uint32_t id = info.worker;
  const uint64_t step = info.step;
  WorkerState& w = ctx.workers[id];
  if (!w.registered) return {unregistered(id, "pushed")};
  if (step < ctx.applied) {
    return {aborted(detail::concat("step ", step, " was applied without worker ", id,
                                   " after the timeout; the server is at step ", ctx.applied,
                                   ": pull the current model and continue there"))};
  }
  if (step != ctx.applied) {
    return {precondition(detail::concat("worker ", id, " pushed step ", step,
                                        ", the server is collecting step ", ctx.applied,
                                        " (synchronous mode)"))};
  }
  if (pending_[id].present) {
    return {
        {CallCode::kAlreadyExists,
         detail::concat("worker ", id, " already pushed step ", step, " with request id ",
                        pending_[id].request_id, "; this push has request id ", push.request_id)}};
  }
  for (uint32_t o = 0; o < workers_; ++o) {
    const DecodedPush& other = pending_[o];
    if (!other.present) continue;
    if (std::bit_cast<uint32_t>(other.lr) != std::bit_cast<uint32_t>(push.lr)) {
      return {invalid(detail::concat("worker ", id, " pushed step ", step, " with lr ", push.lr,
                                     ", worker ", o, " with lr ", other.lr,
                                     " (workers must run the same lr schedule)"))};
    }
    for (size_t k = 0; k < push.aggregation.size(); ++k) {
      if (other.aggregation[k] != push.aggregation[k]) {
        return {invalid(detail::concat(
            "key ", k, " ('", ctx.model.shape[k].name, "'): this payload's codec aggregates by ",
            aggregation_name(push.aggregation[k]), ", another worker's by ",
            aggregation_name(other.aggregation[k]), " in the same step"))};
      }
    }
  }
  w.last_step = static_cast<int64_t>(step);
  w.last_request_id = push.request_id;
  pending_[id] = std::move(push);
  ++w.pushes;
  come_back(w, id, ctx.applied, ctx.log);
  if (pushed_++ == 0) first_push_ = info.now;
  if (!complete(ctx.workers)) return {call_ok(), false};
  apply(ctx, info.now);
  return {call_ok(), true};
}

bool SyncRound::on_timer(StepContext& ctx, SteadyTime now) {
  if (pushed_ == 0) return false;
  if (now - first_push_ < timeout_) return false;
  if (pushed_ >= quorum_) {
    apply(ctx, now);
    return true;
  }
  if (reported_step_ == ctx.applied && now < next_report_) return false;
  reported_step_ = ctx.applied;
  next_report_ = now + timeout_;
  if (ctx.log) {
    ctx.log(detail::concat("step ", ctx.applied, " has waited ", seconds(now - first_push_),
                           " s: ", pushed_, " of ", workers_, " workers pushed, the quorum is ",
                           quorum_, "; missing workers ", id_list(missing()), "; still waiting"));
  }
  return false;
}

uint64_t SyncRound::start_step(const WorkerState&, uint64_t applied) const { return applied; }

CallStatus SyncRound::check_pull(uint32_t worker, uint64_t step, uint64_t applied) const {
  if (step <= applied + 1) return call_ok();
  return precondition(detail::concat("worker ", worker, " pulls step ", step,
                                     ", the server is collecting step ", applied,
                                     ": that step cannot be applied before the next one"));
}

void SyncRound::add_stats(ServerStats& stats) const { stats.quorum_steps = quorum_steps_; }

bool SyncRound::complete(const std::vector<WorkerState>& workers) const {
  if (pushed_ < quorum_) return false;
  for (uint32_t w = 0; w < workers_; ++w) {
    if (!pending_[w].present && !workers[w].absent) return false;
  }
  return true;
}

std::vector<uint32_t> SyncRound::missing() const {
  std::vector<uint32_t> out;
  for (uint32_t w = 0; w < workers_; ++w) {
    if (!pending_[w].present) out.push_back(w);
  }
  return out;
}

void SyncRound::apply(StepContext& ctx, SteadyTime now) {
  const std::vector<uint32_t> missed = missing();
  std::vector<uint32_t> newly_absent;
  for (const uint32_t w : missed) {
    ++ctx.workers[w].missed;
    if (!ctx.workers[w].absent) newly_absent.push_back(w);
    ctx.workers[w].absent = true;
  }
  if (!missed.empty()) {
    ++quorum_steps_;
    if (ctx.log && !newly_absent.empty()) {
      ctx.log(detail::concat("step ", ctx.applied, " applied with ", pushed_, " of ", workers_,
                             " workers after ", seconds(now - first_push_),
                             " s (timeout); missing workers ", id_list(newly_absent),
                             " (later steps do not wait for them until they call again)"));
    }
  }
  const DecodedPush* first = nullptr;
  for (const DecodedPush& p : pending_) {
    if (p.present && first == nullptr) first = &p;
  }
  Optimizer& optimizer = *ctx.model.optimizer;
  std::vector<std::vector<float>>& params = ctx.model.params;
  const float lr = first->lr;  // every push of the step carries the same (checked)
  const float scale = optimizer.compression_scale(lr);
  optimizer.begin_update();
  std::vector<float> a;
  for (size_t k = 0; k < params.size(); ++k) {
    a.assign(params[k].size(), 0.0f);
    for (const DecodedPush& p : pending_) {
      if (!p.present) continue;
      const std::vector<float>& d = p.decoded[k];
      for (size_t j = 0; j < a.size(); ++j) a[j] += d[j];
    }
    if (first->aggregation[k] == Aggregation::kMajorityVote) {
      // The vote is a direction; s(lr) gives it the units of a mean aggregate, as in the
      // DistributedOptimizer.
      vote(a, scale);
    } else {
      divide_by_contributors(a, pushed_);
    }
    // Only the shared half of the optimizer: worker-side state (Signum's momentum) stays on
    // the workers, which commit it themselves.
    optimizer.update(k, params[k], a, lr);
  }
  for (DecodedPush& p : pending_) p = DecodedPush{};
  pushed_ = 0;
  ++ctx.applied;
}

}  // namespace qgrad::ps
