#include "train/ps_training.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "core/error.h"

namespace qgrad {
namespace {

// train() owns its exchange and ends it; this handle lets the caller keep the PsExchange (and
// read its counters) after train() returned.
class SharedExchange final : public GradientExchange {
 public:
  explicit SharedExchange(std::shared_ptr<ps::PsExchange> x) : x_(std::move(x)) {}
  void begin_step(float lr) override { x_->begin_step(lr); }
  void gradient_ready(size_t i) override { x_->gradient_ready(i); }
  StepStats step(float lr) override { return x_->step(lr); }
  const Codec& codec() const override { return x_->codec(); }
  std::string route() const override { return x_->route(); }
  const Optimizer& optimizer() const override { return x_->optimizer(); }
  StateDict export_state() const override { return x_->export_state(); }
  void import_state(const StateDict& state) override { x_->import_state(state); }
  uint64_t first_step() const override { return x_->first_step(); }

 private:
  std::shared_ptr<ps::PsExchange> x_;
};

}  // namespace

PsTrainResult train_with_ps(const PsTrainOptions& ps, const DataSplit& data,
                            const TrainOptions& o) {
  QGRAD_CHECK(!ps.servers.empty(), "--ps: no server address given");
  QGRAD_CHECK(ps.workers >= 1 && ps.worker_id < ps.workers, "--worker-id ", ps.worker_id,
              " must be below --workers (", ps.workers, ")");
  QGRAD_CHECK(!ps.token.empty(), "--token-file: the token is empty");
  QGRAD_CHECK(o.checkpoint_dir.empty() && !o.resume,
              "--checkpoint-dir/--resume with --ps: the servers keep the run's state (qgrad-ps "
              "--checkpoint-dir) and a restarted worker rejoins at the servers' step; workers "
              "write no checkpoints");
  QGRAD_CHECK(o.exchange.nan_policy == NanPolicy::kError,
              "--nan skip-step with --ps: the workers would have to agree on skipping a step, "
              "which the parameter-server path does not do yet; use --nan error");
  QGRAD_CHECK(o.exchange.strategy == Strategy::kAuto,
              "--strategy applies to the collective path; with --ps the servers aggregate");
  std::shared_ptr<ps::PsExchange> exchange;
  PsTrainResult result;
  const int world = static_cast<int>(ps.workers);
  IndependentWorker group(static_cast<int>(ps.worker_id), world,
                          ps.servers.size() == 1
                              ? "ps: 1 server"
                              : "ps: " + std::to_string(ps.servers.size()) + " servers");
  result.train = train(
      group, data, o, [&](std::vector<ParamView> params, const DistributedOptimizerOptions& x) {
        ps::PsExchangeOptions po;
        po.servers = ps.servers;
        po.token = ps.token;
        po.worker_id = ps.worker_id;
        po.workers = ps.workers;
        po.exchange = x;
        po.run = run_fields(o, world);
        po.client.pull_deadline = ps.timeout;
        po.client.deadline = std::max(ps.timeout / 10, std::chrono::milliseconds(10'000));
        po.resend_every = ps.resend_every;
        po.stop_after = ps.stop_after;
        po.push_delay = ps.push_delay;
        po.client.tls_ca = ps.tls_ca;
        po.client.tls_cert = ps.tls_cert;
        po.client.tls_key = ps.tls_key;
        po.reconnect_for = ps.timeout;
        exchange = std::make_shared<ps::PsExchange>(std::move(params), make_optimizer(o.optimizer),
                                                    std::move(po));
        return std::make_unique<SharedExchange>(exchange);
      });
  result.counters = exchange->counters();
  result.keys = exchange->keys().size();
  return result;
}

}  // namespace qgrad
