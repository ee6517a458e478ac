// Metrics as JSON lines: one record per logged step, then one summary record with
// "summary": true; the JSON fields are the struct fields below, by the same names (plus, in the
// summary, "compression_ratio" = raw_bytes / bytes_sent). Byte counts: bytes_sent and
// bytes_received are what this rank's gradient exchange moved; raw_bytes is what the fp32 ring
// allreduce would have sent for the same gradients (docs/measurements.md). Every line is flushed
// as it is written, so a crashed run leaves all complete lines (qgrad-report reads such files
// and reports the truncated tail).
// Thread-safety: one writer per file, used by one thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace qgrad {

// Seconds per step, means over the steps a record covers: compute = forward + backward; encode,
// exchange, decode run on the exchange thread (overlapping compute); update = the optimizer;
// wait = how long the step waited for the exchange after backward ended.
struct StepTimes {
  double compute_s = 0, encode_s = 0, exchange_s = 0, decode_s = 0, update_s = 0, wait_s = 0;
};

struct StepRecord {
  uint64_t step = 0;   // steps done so far (this record covers the steps since the last one)
  uint64_t epoch = 0;  // 0-based epoch of the last of those steps
  int rank = 0;
  int world = 1;
  std::string codec;
  double lr = 0;
  double loss = 0;                 // training loss: mean over the interval and the ranks
  std::optional<double> accuracy;  // test accuracy, when evaluated at this step
  std::optional<double> test_loss;
  uint64_t bytes_sent = 0, bytes_received = 0;  // cumulative, this rank, gradient exchange only
  uint64_t raw_bytes = 0;  // cumulative: what the fp32 ring allreduce would have sent instead
  StepTimes times;         // over the interval
  double seconds = 0;      // wall time of training so far (resumed runs continue it); evaluations
                           // and checkpoint writes are not counted
  double samples_per_second = 0;  // all ranks, over the interval
  uint64_t skipped_steps = 0;     // cumulative (--nan skip-step)
};
struct SummaryRecord {
  std::string model, data, codec, strategy, optimizer;
  std::string link;  // emulated link spec (qgrad-train --link); "" : none, and not written
  int world = 1;
  bool error_feedback = false;
  int adversarial = 0;
  uint64_t seed = 0;
  uint64_t steps = 0, epochs = 0, skipped_steps = 0;
  std::string eval_on = "test";  // "test", or "train" where the data has no test split
  double test_accuracy = 0;      // on the test split, or the training set where there is none
  double test_loss = 0;
  double final_loss = 0;                                       // training loss of the last interval
  uint64_t bytes_sent = 0, bytes_received = 0, raw_bytes = 0;  // rank 0's, whole run
  double seconds = 0;
  double step_seconds = 0;  // mean wall time per step
  StepTimes times;          // over the run
};

class MetricsWriter {
 public:
  // Opens `path` for writing (truncating, or appending when resuming a run). Throws Error
  // naming the path when it cannot.
  explicit MetricsWriter(const std::string& path, bool append = false);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const StepRecord& r);
  void write(const SummaryRecord& r);
  const std::string& path() const { return path_; }

 private:
  void line(const std::string& json);
  std::FILE* file_ = nullptr;
  std::string path_;
};

// Resuming a run from the checkpoint of step `step`: drops the records of later steps (written by
// the run that stopped after that checkpoint) and any summary or truncated last line, rewriting
// the file atomically, so that appending continues it as if never stopped. A missing file is
// left missing. Throws Error naming the path on an I/O failure.
void truncate_metrics_after(const std::string& path, uint64_t step);

}  // namespace qgrad
