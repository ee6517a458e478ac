#include "train/train_report.h"

#include <cstdio>
#include <utility>

namespace qgrad {
namespace {

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

// " (7.9x less than fp32)": what the fp32 ring would have sent over what was sent.
std::string ratio_note(const Progress& p) {
  if (p.bytes_sent == 0 || p.bytes_sent == p.raw_bytes) return "";
  return " (" + fixed(static_cast<double>(p.raw_bytes) / static_cast<double>(p.bytes_sent), 1) +
         "x less than fp32)";
}

}  // namespace

void StepInterval::add(const StepStats& s, double loss, double compute_s, size_t batch_rows) {
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

StepTimes StepInterval::mean_times() const {
  const double n = steps ? static_cast<double>(steps) : 1.0;
  return {compute / n, encode / n, exchange / n, decode / n, update / n, wait / n};
}

std::unique_ptr<MetricsWriter> open_metrics(const TrainOptions& o, int rank, bool per_rank,
                                            std::optional<uint64_t> resumed_step) {
  const bool mine = per_rank || o.metrics_path.find("{rank}") != std::string::npos || rank == 0;
  if (o.metrics_path.empty() || !mine) return nullptr;
  std::string path = o.metrics_path;
  if (const size_t at = path.find("{rank}"); at != std::string::npos) {
    path.replace(at, 6, std::to_string(rank));
  }
  if (resumed_step) truncate_metrics_after(path, *resumed_step);
  return std::make_unique<MetricsWriter>(path, resumed_step.has_value());
}

TrainReport::TrainReport(const TrainOptions& options, RunShape shape, std::ostream* out,
                         std::unique_ptr<MetricsWriter> metrics)
    : o_(options), shape_(std::move(shape)), out_(out), metrics_(std::move(metrics)) {}

void TrainReport::header(const DataSplit& data, uint64_t resumed_from) {
  if (!out_) return;
  const RunShape& s = shape_;
  *out_ << "qgrad-train: " << o_.model << " on " << data.train.name << " (" << data.train.rows
        << " training rows, " << (data.test.rows ? std::to_string(data.test.rows) : "no")
        << " test rows), " << s.world << (s.world == 1 ? " rank" : " ranks") << " (" << s.backend
        << ")\n"
        << "  codec " << s.codec << ", strategy " << s.strategy
        << (o_.exchange.error_feedback ? ", error feedback" : "")
        << (o_.link.empty() ? "" : ", emulated link " + o_.link) << ", optimizer " << s.optimizer
        << ", lr " << o_.lr << " (" << to_string(o_.schedule) << "), batch " << o_.batch
        << " per rank\n"
        << "  " << o_.epochs << (o_.epochs == 1 ? " epoch" : " epochs") << " of "
        << s.steps_per_epoch << " steps";
  if (s.end_step < s.schedule_steps) *out_ << ", stopping after step " << s.end_step;
  if (o_.adversarial) *out_ << "; " << o_.adversarial << " adversarial ranks (negated gradients)";
  if (resumed_from) *out_ << "; resumed from step " << resumed_from;
  *out_ << "\n" << std::flush;
}

void TrainReport::record(uint64_t done, float lr, double interval_loss,
                         const std::optional<Evaluation>& eval, const Progress& prog,
                         const StepInterval& iv, double seconds) {
  const RunShape& s = shape_;
  const double interval_seconds = seconds - iv.start_seconds;
  StepRecord rec;
  rec.step = done;
  rec.epoch = (done - 1) / s.steps_per_epoch;
  rec.rank = s.rank;
  rec.world = s.world;
  rec.codec = s.codec;
  rec.lr = lr;
  rec.loss = interval_loss;
  if (eval) {
    rec.accuracy = eval->accuracy;
    rec.test_loss = eval->loss;
  }
  rec.bytes_sent = prog.bytes_sent;
  rec.bytes_received = prog.bytes_received;
  rec.raw_bytes = prog.raw_bytes;
  rec.times = iv.mean_times();
  rec.seconds = seconds;
  rec.samples_per_second =
      interval_seconds > 0 ? static_cast<double>(iv.rows) * s.world / interval_seconds : 0;
  rec.skipped_steps = prog.skipped;
  if (metrics_) metrics_->write(rec);

  const bool last = done == s.end_step;
  if (!out_ || !(eval || last || seconds - last_print_ >= o_.progress_seconds)) return;
  last_print_ = seconds;
  *out_ << "epoch " << (rec.epoch + 1) << "/" << o_.epochs << "  step " << done << "/" << s.end_step
        << "  loss " << fixed(interval_loss, 4);
  if (eval) {
    *out_ << "  " << (s.eval_on_test ? "test" : "train") << " acc "
          << fixed(100 * eval->accuracy, 2) << "%";
  }
  *out_ << "  sent " << megabytes(prog.bytes_sent) << ratio_note(prog);
  *out_ << "  " << fixed(rec.samples_per_second, 0) << " samples/s  [" << fixed(seconds, 1)
        << " s]";
  if (prog.skipped) *out_ << "  skipped " << prog.skipped;
  *out_ << "\n" << std::flush;
}

void TrainReport::finish(const Progress& prog, const TrainResult& result, const StepInterval& whole,
                         uint64_t ran) {
  const RunShape& s = shape_;
  const Evaluation& last_eval = result.final_eval;
  if (metrics_) {
    SummaryRecord sum;
    sum.model = o_.model;
    sum.data = o_.data;
    sum.codec = s.codec;
    sum.strategy = s.strategy;
    sum.optimizer = s.optimizer;
    sum.link = o_.link;
    sum.world = s.world;
    sum.error_feedback = o_.exchange.error_feedback;
    sum.adversarial = o_.adversarial;
    sum.seed = o_.seed;
    sum.steps = prog.step;
    sum.epochs = (prog.step + s.steps_per_epoch - 1) / s.steps_per_epoch;
    sum.skipped_steps = prog.skipped;
    sum.eval_on = result.eval_on_test ? "test" : "train";
    sum.test_accuracy = last_eval.accuracy;
    sum.test_loss = last_eval.loss;
    sum.final_loss = result.final_loss;
    sum.bytes_sent = prog.bytes_sent;
    sum.bytes_received = prog.bytes_received;
    sum.raw_bytes = prog.raw_bytes;
    sum.seconds = result.seconds;
    sum.step_seconds = result.step_seconds;
    sum.times = whole.mean_times();
    metrics_->write(sum);
  }
  if (!out_) return;
  const double n = ran ? static_cast<double>(ran) : 1.0;
  *out_ << "done: " << prog.step << " steps in " << fixed(result.seconds, 1) << " s, "
        << (result.eval_on_test ? "test" : "train") << " accuracy "
        << fixed(100 * last_eval.accuracy, 2) << "%, loss " << fixed(last_eval.loss, 4) << ", sent "
        << megabytes(prog.bytes_sent) << " per rank" << ratio_note(prog);
  const StepTimes t = whole.mean_times();
  *out_ << "\n  per step: " << millis(result.step_seconds) << " wall; compute "
        << millis(t.compute_s) << ", encode " << millis(t.encode_s) << ", exchange "
        << millis(t.exchange_s) << ", decode " << millis(t.decode_s) << ", update "
        << millis(t.update_s) << ", waiting for the exchange " << millis(t.wait_s) << "\n";
  if (prog.skipped) {
    *out_ << "warning: " << prog.skipped
          << " steps were skipped for non-finite gradients (--nan skip-step)\n";
  }
  if (s.codec != "none" && prog.bytes_sent > prog.raw_bytes) {
    *out_ << "warning: " << s.codec << " sent more bytes than the fp32 ring would have ("
          << megabytes(prog.bytes_sent) << " vs " << megabytes(prog.raw_bytes)
          << "): the buckets are too small for their headers; raise --min-compress-bytes\n";
  }
  // Say so when compressing costs more time than the exchange it shrinks: on this link the
  // codec may make training slower, not faster.
  if (s.codec != "none" && whole.encode + whole.decode > whole.exchange && ran > 0) {
    *out_ << "warning: encoding + decoding took " << millis((whole.encode + whole.decode) / n)
          << " per step, more than the exchange itself (" << millis(whole.exchange / n)
          << "): on this link " << s.codec
          << " may cost more time than it saves; compare with --codec none\n";
  }
  *out_ << std::flush;
}

}  // namespace qgrad
