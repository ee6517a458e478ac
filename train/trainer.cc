#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/timer.h"
#include "train/checkpoint_dir.h"
#include "train/data/shard.h"
#include "train/train_checkpoint.h"
#include "train/train_report.h"

namespace qgrad {
namespace {

// What one rank trains with: built on every rank, and agreed on, before any gradient moves.
struct Setup {
  std::unique_ptr<Model> model;
  std::unique_ptr<BatchSampler> sampler;
  Dataset shard;                      // this rank's training rows
  const Dataset* eval_set = nullptr;  // the test split, or the training set where there is none
  std::vector<size_t> eval_rows;      // the rows of eval_set this rank evaluates
  std::unique_ptr<GradientExchange> exchange;
};

Setup set_up(WorkerGroup& group, const DataSplit& data, const TrainOptions& o,
             const ExchangeFactory& make_exchange) {
  const int world = group.size();
  const int rank = group.rank();
  Setup s;
  s.eval_set = data.test.rows > 0 ? &data.test : &data.train;
  on_every_rank(group, [&] {
    ModelOptions mo = o.model_options;
    mo.seed = o.seed;
    mo.rank = static_cast<uint32_t>(rank);
    s.model = make_model(o.model, mo, data.train);
    QGRAD_CHECK(data.train.rows >= static_cast<size_t>(world), "data set '", data.train.name,
                "' has ", data.train.rows, " training rows, fewer than the ", world, " ranks");
    s.sampler = std::make_unique<BatchSampler>(
        BatchSampler::for_rank(data.train.rows, static_cast<uint32_t>(rank),
                               static_cast<uint32_t>(world), o.batch, o.seed));
    s.shard = take_rows(data.train, s.sampler->shard());
    // Without a communicator there is nothing to sum shards with: the whole split.
    if (group.communicator() != nullptr) {
      s.eval_rows =
          shard_rows(s.eval_set->rows, static_cast<uint32_t>(rank), static_cast<uint32_t>(world));
    } else {
      s.eval_rows.resize(s.eval_set->rows);
      for (size_t i = 0; i < s.eval_rows.size(); ++i) s.eval_rows[i] = i;
    }
    DistributedOptimizerOptions x = o.exchange;
    x.seed = o.seed;
    x.adversarial = rank >= world - o.adversarial;
    s.exchange = make_exchange(s.model->params(), x);
    QGRAD_CHECK(s.exchange != nullptr, "no gradient exchange was built");
  });
  return s;
}

// Every rank loads its file of the checkpoint LATEST names (all agree, or all throw).
Progress resume(WorkerGroup& group, const CheckpointDir& ckdir, const TrainOptions& o,
                const RunFacts& facts, uint64_t schedule_steps, Setup& s) {
  Progress prog;
  on_every_rank(group, [&] {
    const std::optional<uint64_t> step = ckdir.latest();
    QGRAD_CHECK(step.has_value(), "--resume: no checkpoint in ", o.checkpoint_dir,
                " (it has no LATEST file)");
    const std::string path = ckdir.rank_file(*step);
    prog = restore_train_checkpoint(ckdir.load(*step), path, o, facts, *s.model, *s.exchange);
    QGRAD_CHECK(prog.step == *step, "checkpoint ", path, " holds step ", prog.step,
                ", LATEST names ", *step);
    QGRAD_CHECK(prog.step <= schedule_steps, "checkpoint ", path, " is at step ", prog.step,
                ", past the ", schedule_steps, " steps of ", o.epochs,
                " epochs: nothing to resume (raise --epochs)");
  });
  return prog;
}

// The evaluation over all ranks: each evaluates its rows, the sums are combined exactly.
Evaluation evaluate(WorkerGroup& group, Setup& s) {
  const Evaluation mine = s.model->evaluate(*s.eval_set, s.eval_rows);
  const double local[3] = {mine.loss * static_cast<double>(mine.rows),
                           mine.accuracy * static_cast<double>(mine.rows),
                           static_cast<double>(mine.rows)};
  const std::vector<double> sum = group.sum(local);
  Evaluation all;
  all.rows = static_cast<size_t>(sum[2]);
  all.loss = sum[2] > 0 ? sum[0] / sum[2] : 0;
  all.accuracy = sum[2] > 0 ? sum[1] / sum[2] : 0;
  return all;
}

// The interval's training loss averaged over the ranks (NaN when every step was skipped);
// InvalidArgument on every rank when it is not finite.
double interval_loss(WorkerGroup& group, const StepInterval& iv, uint64_t done) {
  const double mine[2] = {iv.loss_sum, static_cast<double>(iv.counted)};
  const std::vector<double> sum = group.sum(mine);
  const double loss = sum[1] > 0 ? sum[0] / sum[1] : std::nan("");
  if (sum[1] > 0 && !std::isfinite(loss)) {
    throw InvalidArgument(detail::concat(
        "the training loss is not finite (", loss, ") in steps ", done - iv.steps + 1, "..", done,
        " (diverged? try a smaller --lr; --nan skip-step skips steps with "
        "non-finite gradients)"));
  }
  return loss;
}

void count(Progress& prog, const StepStats& stats) {
  ++prog.step;
  // The parameter-server path may move training to the servers' step (see StepStats).
  if (stats.continue_at) prog.step = *stats.continue_at;
  prog.skipped += stats.skipped ? 1 : 0;
  prog.bytes_sent += stats.bytes_sent;
  prog.bytes_received += stats.bytes_received;
  prog.dense_bytes += stats.dense_bytes;
  prog.raw_bytes += stats.raw_bytes;
}

uint32_t params_crc(Model& model) {
  uint32_t crc = 0;
  for (const ParamView& v : model.params()) crc = crc32c(std::as_bytes(v.value), crc);
  return crc;
}

RunShape describe(WorkerGroup& group, const DataSplit& data, const TrainOptions& o,
                  const Setup& s) {
  RunShape shape;
  shape.rank = group.rank();
  shape.world = group.size();
  shape.backend = group.backend();
  shape.codec = s.exchange->codec().spec().str();
  shape.strategy = s.exchange->route();
  shape.optimizer = std::string(s.exchange->optimizer().name());
  shape.steps_per_epoch = s.sampler->batches_per_epoch();
  shape.schedule_steps = shape.steps_per_epoch * o.epochs;
  shape.end_step = o.max_steps ? std::min(o.max_steps, shape.schedule_steps) : shape.schedule_steps;
  shape.eval_on_test = data.test.rows > 0;
  return shape;
}

// Training time: it continues from the checkpoint's, and leaves out set-up, evaluations and
// checkpoint writes (paused()), so that evaluating more often does not make a run look slower.
class TrainingClock {
 public:
  explicit TrainingClock(double elapsed) : base_(elapsed - clock_.seconds()) {}
  double now() const { return base_ + clock_.seconds() - paused_; }
  template <typename Fn>
  void paused(Fn&& fn) {
    const WallClock c;
    fn();
    paused_ += c.seconds();
  }

 private:
  WallClock clock_;
  double base_;
  double paused_ = 0;
};

// This rank's batch of step t, drawing each epoch's batches once.
class Batches {
 public:
  Batches(const BatchSampler& sampler, uint64_t steps_per_epoch)
      : sampler_(sampler), steps_per_epoch_(steps_per_epoch) {}
  const std::vector<size_t>& of_step(uint64_t t) {
    if (t / steps_per_epoch_ != epoch_) {
      epoch_ = t / steps_per_epoch_;
      batches_ = sampler_.local_batches(epoch_);
    }
    return batches_[t % steps_per_epoch_];
  }

 private:
  const BatchSampler& sampler_;
  uint64_t steps_per_epoch_;
  uint64_t epoch_ = ~uint64_t{0};
  std::vector<std::vector<size_t>> batches_;
};

// What happens after step `done`: an evaluation, a checkpoint, a metrics record (always with
// either of the others).
struct Due {
  bool eval = false, save = false, record = false;
};

Due due_after(uint64_t done, const TrainOptions& o, const RunShape& shape, bool checkpoints) {
  const bool epoch_end = done % shape.steps_per_epoch == 0;
  const bool last = done == shape.end_step;
  Due d;
  d.eval = last || (o.eval_every ? done % o.eval_every == 0 : epoch_end);
  d.save =
      checkpoints && (last || (o.checkpoint_every ? done % o.checkpoint_every == 0 : epoch_end));
  d.record = d.eval || d.save || done % o.log_every == 0;
  return d;
}

void fill_result(TrainResult& result, const Progress& prog, Model& model) {
  result.steps = prog.step;
  result.skipped_steps = prog.skipped;
  result.bytes_sent = prog.bytes_sent;
  result.bytes_received = prog.bytes_received;
  result.dense_bytes = prog.dense_bytes;
  result.raw_bytes = prog.raw_bytes;
  result.params_crc = params_crc(model);
}
}  // namespace

TrainResult train(Communicator& comm, const DataSplit& data, const TrainOptions& o) {
  CommunicatorGroup group(comm);
  return train(group, data, o,
               [&](std::vector<ParamView> params, const DistributedOptimizerOptions& x) {
                 return std::make_unique<DistributedOptimizer>(comm, make_optimizer(o.optimizer),
                                                               std::move(params), x);
               });
}

TrainResult train(WorkerGroup& group, const DataSplit& data, const TrainOptions& o,
                  const ExchangeFactory& make_exchange) {
  const int world = group.size();
  const int rank = group.rank();
  validate(o, world);
  QGRAD_CHECK(o.checkpoint_dir.empty() || group.communicator() != nullptr,
              "--checkpoint-dir: worker checkpoints need a communicator between the workers; "
              "with parameter servers the servers keep the checkpoints (qgrad-ps "
              "--checkpoint-dir) and a restarted worker rejoins at their step");
  Setup s = set_up(group, data, o, make_exchange);
  GradientExchange& opt = *s.exchange;
  const RunShape shape = describe(group, data, o, s);
  const RunFacts facts = resume_facts(world, rank, opt);

  // ---- where the run starts: a checkpoint, the servers' step, or 0 ----
  std::optional<CheckpointDir> ckdir;
  if (!o.checkpoint_dir.empty()) ckdir.emplace(o.checkpoint_dir, rank, world);
  Progress prog;
  TrainResult result;
  if (o.resume) prog = resume(group, *ckdir, o, facts, shape.schedule_steps, s);
  // A worker joining a running parameter-server job starts at the servers' step.
  prog.step = std::max(prog.step, opt.first_step());
  result.resumed_from = prog.step;

  std::unique_ptr<MetricsWriter> metrics;
  on_every_rank(group, [&] {
    // Workers without a communicator (parameter servers) each write their own file.
    metrics = open_metrics(o, rank, group.communicator() == nullptr,
                           o.resume ? std::optional<uint64_t>(prog.step) : std::nullopt);
  });
  TrainReport report(o, shape, rank == 0 ? o.progress : nullptr, std::move(metrics));
  report.header(data, result.resumed_from);

  // ---- the loop ----
  const std::function<void(size_t)> ready = [&](size_t i) { opt.gradient_ready(i); };
  Batches batches(*s.sampler, shape.steps_per_epoch);
  TrainingClock clock(prog.elapsed);
  StepInterval iv, whole;  // since the last record; over this call
  iv.start_seconds = prog.elapsed;
  std::optional<Evaluation> last_eval;
  double last_loss = std::nan("");
  const uint64_t first_step = prog.step;
  const double first_seconds = prog.elapsed;
  while (prog.step < shape.end_step) {
    const uint64_t t = prog.step;
    const std::vector<size_t>& batch = batches.of_step(t);
    const auto lr =
        static_cast<float>(o.schedule.at(o.lr, t, shape.steps_per_epoch, shape.schedule_steps));
    const WallClock step_clock;
    opt.begin_step(lr);
    const double loss = s.model->forward_backward(s.shard, batch, ready);
    const double compute_s = step_clock.seconds();
    const StepStats stats = opt.step(lr);
    count(prog, stats);
    iv.add(stats, loss, compute_s, batch.size());
    whole.add(stats, loss, compute_s, batch.size());
    result.losses.push_back(loss);

    const uint64_t done = prog.step;
    const Due due = due_after(done, o, shape, ckdir.has_value());
    if (!due.record) continue;
    const double loss_now = interval_loss(group, iv, done);
    if (!std::isnan(loss_now)) last_loss = loss_now;  // NaN: every step was skipped
    if (due.eval) clock.paused([&] { last_eval = evaluate(group, s); });
    const double seconds = clock.now();
    report.record(done, lr, loss_now, due.eval ? last_eval : std::nullopt, prog, iv, seconds);
    iv = StepInterval{};
    iv.start_seconds = seconds;
    if (due.save) {
      Progress snapshot = prog;
      snapshot.elapsed = seconds;
      clock.paused([&] {
        ckdir->save(*group.communicator(), done,
                    make_train_checkpoint(o, facts, snapshot, *s.model, opt));
      });
    }
  }

  // ---- the end ----
  if (!last_eval) last_eval = evaluate(group, s);  // resumed at the end already: evaluate anyway
  const uint64_t ran = prog.step - first_step;
  fill_result(result, prog, *s.model);
  result.final_eval = *last_eval;
  result.eval_on_test = shape.eval_on_test;
  result.final_loss = last_loss;
  result.seconds = clock.now();
  result.step_seconds = ran ? (result.seconds - first_seconds) / static_cast<double>(ran) : 0;
  report.finish(prog, result, whole, ran);
  return result;
}

}  // namespace qgrad
