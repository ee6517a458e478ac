#include "train/trainer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/timer.h"
#include "core/checkpoint.h"
#include "train/checkpoint_dir.h"
#include "train/data/shard.h"
#include "train/metrics.h"

namespace qgrad {
namespace {

// ---- agreement between ranks ----------------------------------------------------------------

}  // namespace

void agree_on_error(Communicator& comm, const std::string& error) {
  ByteBlocks all;
  comm.allgatherv(std::as_bytes(std::span<const char>(error.data(), error.size())), all);
  for (int r = 0; r < all.count(); ++r) {
    if (all.block_bytes(r) == 0) continue;
    const auto block = all.block(r);
    const std::string message(reinterpret_cast<const char*>(block.data()), block.size());
    if (comm.size() == 1) throw InvalidArgument(message);
    throw InvalidArgument(detail::concat("rank ", r, ": ", message));
  }
}

namespace {

// Runs fn on every rank and agrees on its outcome (see agree).
template <typename Fn>
void on_every_rank(WorkerGroup& group, Fn&& fn) {
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  group.agree_on_error(error);
}

// Element-wise sums of a few doubles over the ranks, exact and in rank order (every rank gets
// the same bits).
std::vector<double> sum_over_ranks(Communicator& comm, std::span<const double> mine) {
  ByteBlocks all;
  comm.allgatherv(std::as_bytes(mine), all);
  std::vector<double> sum(mine.size(), 0.0);
  for (int r = 0; r < all.count(); ++r) {
    QGRAD_CHECK(all.block_bytes(r) == mine.size_bytes(), "rank ", r, " sent ",
                all.block_bytes(r), " bytes of statistics, expected ", mine.size_bytes());
    std::vector<double> theirs(mine.size());
    std::memcpy(theirs.data(), all.block(r).data(), mine.size_bytes());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += theirs[i];
  }
  return sum;
}

}  // namespace

void CommunicatorGroup::agree_on_error(const std::string& error) {
  qgrad::agree_on_error(comm_, error);
}

std::vector<double> CommunicatorGroup::sum(std::span<const double> mine) {
  return sum_over_ranks(comm_, mine);
}

void IndependentWorker::agree_on_error(const std::string& error) {
  if (!error.empty()) throw InvalidArgument(error);
}

namespace {

// ---- formatting -----------------------------------------------------------------------------

std::string megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

std::string fixed(double value, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return buf;
}

std::string millis(double seconds) { return fixed(seconds * 1e3, 2) + " ms"; }

// ---- checkpoint contents --------------------------------------------------------------------

int64_t double_bits(double v) { return std::bit_cast<int64_t>(v); }
double bits_double(int64_t v) { return std::bit_cast<double>(v); }

// What must match for a checkpoint to belong to this run.
struct RunIdentity {
  std::vector<std::pair<std::string, std::string>> texts;  // key, value
  std::vector<std::pair<std::string, int64_t>> integers;
};

// Counters that continue across a resume.
struct Progress {
  uint64_t step = 0;
  uint64_t skipped = 0;
  uint64_t bytes_sent = 0, bytes_received = 0, dense_bytes = 0, raw_bytes = 0;
  double elapsed = 0;  // seconds of training before this call
};

// " (7.9x less than fp32)": what the fp32 ring would have sent over what was sent.
std::string ratio_note(const Progress& p) {
  if (p.bytes_sent == 0 || p.bytes_sent == p.raw_bytes) return "";
  return " (" +
         fixed(static_cast<double>(p.raw_bytes) / static_cast<double>(p.bytes_sent), 1) +
         "x less than fp32)";
}


constexpr const char* kModelPrefix = "model/";
constexpr const char* kStatePrefix = "state/";
constexpr const char* kScalarPrefix = "scalar/";

Checkpoint make_checkpoint(const RunIdentity& id, const Progress& p, Model& model,
                           const GradientExchange& opt) {
  Checkpoint ck;
  for (const auto& [k, v] : id.texts) ck.set_text("run/" + k, v);
  for (const auto& [k, v] : id.integers) ck.set_integer("run/" + k, v);
  ck.set_integer("progress/step", static_cast<int64_t>(p.step));
  ck.set_integer("progress/skipped", static_cast<int64_t>(p.skipped));
  ck.set_integer("progress/bytes_sent", static_cast<int64_t>(p.bytes_sent));
  ck.set_integer("progress/bytes_received", static_cast<int64_t>(p.bytes_received));
  ck.set_integer("progress/raw_bytes", static_cast<int64_t>(p.dense_bytes));
  ck.set_integer("progress/fp32_bytes_sent", static_cast<int64_t>(p.raw_bytes));
  ck.set_integer("progress/elapsed_bits", double_bits(p.elapsed));
  ck.set_integer("progress/data_step", static_cast<int64_t>(model.data_step()));
  for (const ParamView& v : model.params()) ck.set_buffer(kModelPrefix + v.name, v.value);
  const StateDict state = opt.export_state();
  for (const auto& [k, v] : state.buffers) ck.set_buffer(kStatePrefix + k, v);
  for (const auto& [k, v] : state.scalars) ck.set_integer(kScalarPrefix + k, double_bits(v));
  return ck;
}

// Checks `ck` against this run and loads it into the model and the optimizer. Everything is
// checked before anything changes.
Progress restore_checkpoint(const Checkpoint& ck, const std::string& path, const RunIdentity& id,
                            Model& model, GradientExchange& opt) {
  const auto mismatch = [&](const std::string& key, const std::string& theirs,
                            const std::string& ours) {
    return InvalidArgument(detail::concat(
        "checkpoint ", path, " belongs to another run: it was written with ", key, " = '", theirs,
        "', this run has '", ours, "' (resume with the flags of that run, or use another "
        "--checkpoint-dir)"));
  };
  for (const auto& [k, v] : id.integers) {
    const int64_t theirs = ck.integer("run/" + k);
    if (theirs != v) throw mismatch(k, std::to_string(theirs), std::to_string(v));
  }
  for (const auto& [k, v] : id.texts) {
    const std::string& theirs = ck.text("run/" + k);
    if (theirs != v) throw mismatch(k, theirs, v);
  }
  std::vector<ParamView> params = model.params();
  size_t model_entries = 0;
  StateDict state;
  for (const std::string& name : ck.names()) {
    if (name.rfind(kModelPrefix, 0) == 0) {
      ++model_entries;
    } else if (name.rfind(kStatePrefix, 0) == 0) {
      state.buffers[name.substr(std::strlen(kStatePrefix))] = ck.buffer(name);
    } else if (name.rfind(kScalarPrefix, 0) == 0) {
      state.scalars[name.substr(std::strlen(kScalarPrefix))] = bits_double(ck.integer(name));
    }
  }
  QGRAD_CHECK(model_entries == params.size(), "checkpoint ", path, " holds ", model_entries,
              " model parameters, the ", model.name(), " model has ", params.size());
  for (const ParamView& v : params) {
    const std::string key = kModelPrefix + v.name;
    QGRAD_CHECK(ck.has(key), "checkpoint ", path, " has no parameter '", v.name, "'");
    const size_t size = ck.buffer(key).size();
    QGRAD_CHECK(size == v.value.size(), "checkpoint ", path, ": parameter '", v.name, "' has ",
                size, " values, the model's has ", v.value.size());
  }
  Progress p;
  p.step = static_cast<uint64_t>(ck.integer("progress/step"));
  p.skipped = static_cast<uint64_t>(ck.integer("progress/skipped"));
  p.bytes_sent = static_cast<uint64_t>(ck.integer("progress/bytes_sent"));
  p.bytes_received = static_cast<uint64_t>(ck.integer("progress/bytes_received"));
  p.dense_bytes = static_cast<uint64_t>(ck.integer("progress/raw_bytes"));
  p.raw_bytes = static_cast<uint64_t>(ck.integer("progress/fp32_bytes_sent"));
  p.elapsed = bits_double(ck.integer("progress/elapsed_bits"));
  const auto data_step = static_cast<uint64_t>(ck.integer("progress/data_step"));
  try {
    opt.import_state(state);  // checks every name and size first
  } catch (const Error& e) {
    throw InvalidArgument(detail::concat("checkpoint ", path, ": ", e.what()));
  }
  for (const ParamView& v : params) ck.copy_buffer(kModelPrefix + v.name, v.value);
  model.set_data_step(data_step);
  return p;
}

// ---- the interval between two metrics records -------------------------------------------------

struct Interval {
  uint64_t steps = 0, counted = 0;  // steps, and those not skipped (their loss counts)
  double loss_sum = 0;
  size_t rows = 0;  // this rank's samples
  double compute = 0, encode = 0, exchange = 0, decode = 0, update = 0, wait = 0;
  double start_seconds = 0;

  void add(const StepStats& s, double loss, double compute_s, size_t batch_rows) {
    ++steps;
    if (!s.skipped) {
      ++counted;
      loss_sum += loss;
    }
    rows += batch_rows;
    compute += compute_s;
    encode += s.encode_s;
    exchange += s.exchange_s;
    decode += s.decode_s;
    update += s.update_s;
    wait += s.wait_s;
  }

  StepTimes mean_times() const {
    const double n = steps ? static_cast<double>(steps) : 1.0;
    return {compute / n, encode / n, exchange / n, decode / n, update / n, wait / n};
  }
};

}  // namespace

void validate(const TrainOptions& o, int world) {
  QGRAD_CHECK(world >= 1, "world size must be >= 1, got ", world);
  QGRAD_CHECK(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  QGRAD_CHECK(o.epochs >= 1, "--epochs must be >= 1, got ", o.epochs);
  QGRAD_CHECK(std::isfinite(o.lr) && o.lr >= 0, "--lr must be a finite number >= 0, got ", o.lr);
  QGRAD_CHECK(o.log_every >= 1, "--log-every must be >= 1, got ", o.log_every);
  QGRAD_CHECK(o.adversarial >= 0 && o.adversarial <= world, "--adversarial ", o.adversarial,
              " needs between 0 and the world size (", world, ") ranks");
  QGRAD_CHECK(!o.resume || !o.checkpoint_dir.empty(), "--resume needs --checkpoint-dir");
  QGRAD_CHECK(o.progress_seconds >= 0, "progress interval must be >= 0");
}

std::vector<std::pair<std::string, std::string>> run_fields(const TrainOptions& o, int world) {
  const auto list = [](const std::vector<size_t>& v) {
    std::string out;
    for (const size_t x : v) {
      if (!out.empty()) out.push_back(',');
      out.append(std::to_string(x));
    }
    return out;
  };
  const OptimizerOptions& p = o.optimizer;
  return {{"model", o.model},
          {"data", o.data},
          {"hidden", list(o.model_options.hidden)},
          {"channels", list(o.model_options.channels)},
          {"data_bits", std::to_string(o.model_options.data_bits)},
          {"double_sampling", o.model_options.double_sampling ? "1" : "0"},
          {"codec", o.exchange.codec},
          {"error_feedback", o.exchange.error_feedback ? "1" : "0"},
          {"bucket_bytes", std::to_string(o.exchange.bucket_bytes)},
          {"warmup_steps", std::to_string(o.exchange.warmup_steps)},
          {"min_compress_bytes", std::to_string(o.exchange.min_compress_bytes)},
          {"optimizer", p.name},
          {"lr", fixed(o.lr, 9)},
          {"lr_schedule", to_string(o.schedule)},
          {"world", std::to_string(world)},
          {"batch", std::to_string(o.batch)},
          {"epochs", std::to_string(o.epochs)},
          {"max_steps", std::to_string(o.max_steps)},
          {"seed", std::to_string(o.seed)},
          {"adversarial", std::to_string(o.adversarial)}};
}

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
  const WallClock clock;
  std::ostream* out = rank == 0 ? o.progress : nullptr;

  // ---- set up (every rank agrees that it worked before any gradient moves) ----
  std::unique_ptr<Model> model;
  std::unique_ptr<BatchSampler> sampler;
  Dataset shard;
  std::unique_ptr<GradientExchange> opt;
  const Dataset& eval_set = data.test.rows > 0 ? data.test : data.train;
  std::vector<size_t> eval_rows;
  on_every_rank(group, [&] {
    ModelOptions mo = o.model_options;
    mo.seed = o.seed;
    mo.rank = static_cast<uint32_t>(rank);
    model = make_model(o.model, mo, data.train);
    QGRAD_CHECK(data.train.rows >= static_cast<size_t>(world), "data set '", data.train.name,
                "' has ", data.train.rows, " training rows, fewer than the ", world, " ranks");
    sampler = std::make_unique<BatchSampler>(BatchSampler::for_rank(
        data.train.rows, static_cast<uint32_t>(rank), static_cast<uint32_t>(world), o.batch,
        o.seed));
    shard = take_rows(data.train, sampler->shard());
    // Without a communicator there is nothing to sum shards with: the whole split.
    if (group.communicator() != nullptr) {
      eval_rows = shard_rows(eval_set.rows, static_cast<uint32_t>(rank),
                             static_cast<uint32_t>(world));
    } else {
      eval_rows.resize(eval_set.rows);
      for (size_t i = 0; i < eval_rows.size(); ++i) eval_rows[i] = i;
    }
    DistributedOptimizerOptions x = o.exchange;
    x.seed = o.seed;
    x.adversarial = rank >= world - o.adversarial;
    opt = make_exchange(model->params(), x);
    QGRAD_CHECK(opt != nullptr, "no gradient exchange was built");
  });

  const uint64_t steps_per_epoch = sampler->batches_per_epoch();
  const uint64_t schedule_steps = steps_per_epoch * o.epochs;
  const uint64_t end_step = o.max_steps ? std::min(o.max_steps, schedule_steps) : schedule_steps;
  const std::string codec = opt->codec().spec().str();
  const std::string strategy = opt->route();

  RunIdentity id;
  id.texts = {{"model", o.model},
              {"data", o.data},
              {"codec", codec},
              {"strategy", strategy},
              {"optimizer", std::string(opt->optimizer().name())},
              {"lr", fixed(o.lr, 9)},
              {"lr_schedule", to_string(o.schedule)}};
  id.integers = {{"world", world},
                 {"rank", rank},
                 {"batch", static_cast<int64_t>(o.batch)},
                 {"seed", static_cast<int64_t>(o.seed)},
                 {"error_feedback", o.exchange.error_feedback ? 1 : 0},
                 {"adversarial", o.adversarial}};

  // ---- resume ----
  Progress prog;
  std::optional<CheckpointDir> ckdir;
  if (!o.checkpoint_dir.empty()) ckdir.emplace(o.checkpoint_dir, rank, world);
  Communicator* comm = group.communicator();
  TrainResult result;
  if (o.resume) {
    on_every_rank(group, [&] {
      const std::optional<uint64_t> step = ckdir->latest();
      QGRAD_CHECK(step.has_value(), "--resume: no checkpoint in ", o.checkpoint_dir,
                  " (it has no LATEST file)");
      const std::string path = ckdir->rank_file(*step);
      prog = restore_checkpoint(ckdir->load(*step), path, id, *model, *opt);
      QGRAD_CHECK(prog.step == *step, "checkpoint ", path, " holds step ", prog.step,
                  ", LATEST names ", *step);
      QGRAD_CHECK(prog.step <= schedule_steps, "checkpoint ", path, " is at step ", prog.step,
                  ", past the ", schedule_steps, " steps of ", o.epochs,
                  " epochs: nothing to resume (raise --epochs)");
    });
    result.resumed_from = prog.step;
  }
  // A worker joining a running parameter-server job starts at the servers' step.
  if (opt->first_step() > prog.step) {
    prog.step = opt->first_step();
    result.resumed_from = prog.step;
  }

  // ---- metrics ----
  std::unique_ptr<MetricsWriter> metrics;
  // Workers without a communicator (parameter servers) each write their own file.
  const bool per_rank_metrics =
      o.metrics_path.find("{rank}") != std::string::npos || comm == nullptr;
  on_every_rank(group, [&] {
    if (o.metrics_path.empty() || (!per_rank_metrics && rank != 0)) return;
    std::string path = o.metrics_path;
    if (const size_t at = path.find("{rank}"); at != std::string::npos) {
      path.replace(at, 6, std::to_string(rank));
    }
    if (o.resume) truncate_metrics_after(path, prog.step);
    metrics = std::make_unique<MetricsWriter>(path, o.resume);
  });

  if (out) {
    *out << "qgrad-train: " << o.model << " on " << data.train.name << " (" << data.train.rows
         << " training rows, " << (data.test.rows ? std::to_string(data.test.rows) : "no")
         << " test rows), " << world << (world == 1 ? " rank" : " ranks") << " ("
         << group.backend() << ")\n"
         << "  codec " << codec << ", strategy " << strategy
         << (o.exchange.error_feedback ? ", error feedback" : "")
         << (o.link.empty() ? "" : ", emulated link " + o.link) << ", optimizer "
         << opt->optimizer().name() << ", lr " << o.lr << " (" << to_string(o.schedule)
         << "), batch " << o.batch << " per rank\n"
         << "  " << o.epochs << (o.epochs == 1 ? " epoch" : " epochs") << " of "
         << steps_per_epoch << " steps";
    if (end_step < schedule_steps) *out << ", stopping after step " << end_step;
    if (o.adversarial) *out << "; " << o.adversarial << " adversarial ranks (negated gradients)";
    if (result.resumed_from) *out << "; resumed from step " << result.resumed_from;
    *out << "\n" << std::flush;
  }

  // ---- the loop ----
  const std::function<void(size_t)> ready = [&](size_t i) { opt->gradient_ready(i); };
  Interval iv, whole;  // since the last record; over this call
  iv.start_seconds = prog.elapsed;
  // Training time (not setup) continues from the checkpoint's.
  const double setup_seconds = clock.seconds();
  const double time_base = prog.elapsed - setup_seconds;
  // Evaluations and checkpoint writes are not training: their time is left out of `seconds`
  // and of the time per step, so evaluating more often does not make a run look slower.
  double paused = 0;
  const auto now = [&] { return time_base + clock.seconds() - paused; };
  double last_print = -1e9;
  std::vector<std::vector<size_t>> batches;
  uint64_t batches_epoch = ~uint64_t{0};
  std::optional<Evaluation> last_eval;
  double last_loss = std::nan("");
  const uint64_t first_step = prog.step;
  const double first_seconds = prog.elapsed;

  const auto evaluate = [&] {
    const Evaluation mine = model->evaluate(eval_set, eval_rows);
    const double local[3] = {mine.loss * static_cast<double>(mine.rows),
                             mine.accuracy * static_cast<double>(mine.rows),
                             static_cast<double>(mine.rows)};
    const std::vector<double> sum = group.sum(local);
    Evaluation all;
    all.rows = static_cast<size_t>(sum[2]);
    all.loss = sum[2] > 0 ? sum[0] / sum[2] : 0;
    all.accuracy = sum[2] > 0 ? sum[1] / sum[2] : 0;
    return all;
  };

  while (prog.step < end_step) {
    const uint64_t t = prog.step;
    const uint64_t epoch = t / steps_per_epoch;
    if (epoch != batches_epoch) {
      batches = sampler->local_batches(epoch);
      batches_epoch = epoch;
    }
    const std::vector<size_t>& batch = batches[t % steps_per_epoch];
    const auto lr = static_cast<float>(o.schedule.at(o.lr, t, steps_per_epoch, schedule_steps));

    const WallClock step_clock;
    opt->begin_step(lr);
    const double loss = model->forward_backward(shard, batch, ready);
    const double compute_s = step_clock.seconds();
    const StepStats stats = opt->step(lr);

    ++prog.step;
    // The parameter-server path may move training to the servers' step (see StepStats).
    if (stats.continue_at) prog.step = *stats.continue_at;
    prog.skipped += stats.skipped ? 1 : 0;
    prog.bytes_sent += stats.bytes_sent;
    prog.bytes_received += stats.bytes_received;
    prog.dense_bytes += stats.dense_bytes;
    prog.raw_bytes += stats.raw_bytes;
    iv.add(stats, loss, compute_s, batch.size());
    whole.add(stats, loss, compute_s, batch.size());
    result.losses.push_back(loss);

    const uint64_t done = prog.step;
    const bool epoch_end = done % steps_per_epoch == 0;
    const bool last = done == end_step;
    const bool eval = last || (o.eval_every ? done % o.eval_every == 0 : epoch_end);
    const bool save =
        ckdir && (last || (o.checkpoint_every ? done % o.checkpoint_every == 0 : epoch_end));
    if (!(eval || save || done % o.log_every == 0)) continue;

    // A metrics record: the interval's loss averaged over the ranks.
    const double mine[2] = {iv.loss_sum, static_cast<double>(iv.counted)};
    const std::vector<double> loss_sum = group.sum(mine);
    const double interval_loss = loss_sum[1] > 0 ? loss_sum[0] / loss_sum[1] : std::nan("");
    if (loss_sum[1] > 0 && !std::isfinite(interval_loss)) {
      throw InvalidArgument(detail::concat(
          "the training loss is not finite (", interval_loss, ") in steps ", done - iv.steps + 1,
          "..", done, " (diverged? try a smaller --lr; --nan skip-step skips steps with "
          "non-finite gradients)"));
    }
    if (loss_sum[1] > 0) last_loss = interval_loss;
    if (eval) {
      const WallClock eval_clock;
      last_eval = evaluate();
      paused += eval_clock.seconds();
    }

    const double seconds = now();
    const double interval_seconds = seconds - iv.start_seconds;
    StepRecord rec;
    rec.step = done;
    rec.epoch = (done - 1) / steps_per_epoch;
    rec.rank = rank;
    rec.world = world;
    rec.codec = codec;
    rec.lr = lr;
    rec.loss = interval_loss;
    if (eval) {
      rec.accuracy = last_eval->accuracy;
      rec.test_loss = last_eval->loss;
    }
    rec.bytes_sent = prog.bytes_sent;
    rec.bytes_received = prog.bytes_received;
    rec.raw_bytes = prog.raw_bytes;
    rec.times = iv.mean_times();
    rec.seconds = seconds;
    rec.samples_per_second = interval_seconds > 0 ? static_cast<double>(iv.rows) * world /
                                                        interval_seconds
                                                  : 0;
    rec.skipped_steps = prog.skipped;
    if (metrics) metrics->write(rec);

    if (out && (eval || last || seconds - last_print >= o.progress_seconds)) {
      last_print = seconds;
      *out << "epoch " << (rec.epoch + 1) << "/" << o.epochs << "  step " << done << "/"
           << end_step << "  loss " << fixed(interval_loss, 4);
      if (eval) {
        *out << "  " << (data.test.rows ? "test" : "train") << " acc "
             << fixed(100 * last_eval->accuracy, 2) << "%";
      }
      *out << "  sent " << megabytes(prog.bytes_sent) << ratio_note(prog);
      *out << "  " << fixed(rec.samples_per_second, 0) << " samples/s  [" << fixed(seconds, 1)
           << " s]";
      if (prog.skipped) *out << "  skipped " << prog.skipped;
      *out << "\n" << std::flush;
    }
    iv = Interval{};
    iv.start_seconds = seconds;

    if (save) {
      Progress snapshot = prog;
      snapshot.elapsed = seconds;
      const WallClock save_clock;
      ckdir->save(*comm, done, make_checkpoint(id, snapshot, *model, *opt));
      paused += save_clock.seconds();
    }
  }

  // ---- the end ----
  if (!last_eval) last_eval = evaluate();  // resumed at the end already: evaluate anyway
  const double total = now();
  const uint64_t ran = prog.step - first_step;
  result.steps = prog.step;
  result.skipped_steps = prog.skipped;
  result.final_eval = *last_eval;
  result.eval_on_test = data.test.rows > 0;
  result.final_loss = last_loss;
  result.bytes_sent = prog.bytes_sent;
  result.bytes_received = prog.bytes_received;
  result.dense_bytes = prog.dense_bytes;
  result.raw_bytes = prog.raw_bytes;
  result.seconds = total;
  result.step_seconds = ran ? (total - first_seconds) / static_cast<double>(ran) : 0;
  uint32_t crc = 0;
  for (const ParamView& v : model->params()) crc = crc32c(std::as_bytes(v.value), crc);
  result.params_crc = crc;

  const double n = ran ? static_cast<double>(ran) : 1.0;
  if (metrics) {
    SummaryRecord sum;
    sum.model = o.model;
    sum.data = o.data;
    sum.codec = codec;
    sum.strategy = strategy;
    sum.optimizer = std::string(opt->optimizer().name());
    sum.link = o.link;
    sum.world = world;
    sum.error_feedback = o.exchange.error_feedback;
    sum.adversarial = o.adversarial;
    sum.seed = o.seed;
    sum.steps = prog.step;
    sum.epochs = (prog.step + steps_per_epoch - 1) / steps_per_epoch;
    sum.skipped_steps = prog.skipped;
    sum.eval_on = result.eval_on_test ? "test" : "train";
    sum.test_accuracy = last_eval->accuracy;
    sum.test_loss = last_eval->loss;
    sum.final_loss = last_loss;
    sum.bytes_sent = prog.bytes_sent;
    sum.bytes_received = prog.bytes_received;
    sum.raw_bytes = prog.raw_bytes;
    sum.seconds = total;
    sum.step_seconds = result.step_seconds;
    sum.times = whole.mean_times();
    metrics->write(sum);
  }
  if (out) {
    *out << "done: " << prog.step << " steps in " << fixed(total, 1) << " s, "
         << (result.eval_on_test ? "test" : "train") << " accuracy "
         << fixed(100 * last_eval->accuracy, 2) << "%, loss " << fixed(last_eval->loss, 4)
         << ", sent " << megabytes(prog.bytes_sent) << " per rank" << ratio_note(prog);
    const StepTimes t = whole.mean_times();
    *out << "\n  per step: " << millis(result.step_seconds) << " wall; compute "
         << millis(t.compute_s) << ", encode " << millis(t.encode_s) << ", exchange "
         << millis(t.exchange_s) << ", decode " << millis(t.decode_s) << ", update "
         << millis(t.update_s) << ", waiting for the exchange " << millis(t.wait_s) << "\n";
    if (prog.skipped) {
      *out << "warning: " << prog.skipped
           << " steps were skipped for non-finite gradients (--nan skip-step)\n";
    }
    if (codec != "none" && prog.bytes_sent > prog.raw_bytes) {
      *out << "warning: " << codec << " sent more bytes than the fp32 ring would have ("
           << megabytes(prog.bytes_sent) << " vs " << megabytes(prog.raw_bytes)
           << "): the buckets are too small for their headers; raise --min-compress-bytes\n";
    }
    // Say so when compressing costs more time than the exchange it shrinks: on this link the
    // codec may make training slower, not faster.
    if (codec != "none" && whole.encode + whole.decode > whole.exchange && ran > 0) {
      *out << "warning: encoding + decoding took " << millis((whole.encode + whole.decode) / n)
           << " per step, more than the exchange itself (" << millis(whole.exchange / n)
           << "): on this link " << codec
           << " may cost more time than it saves; compare with --codec none\n";
    }
    *out << std::flush;
  }
  return result;
}

}  // namespace qgrad
