// Metrics as JSON lines (DESIGN.md section 5): one record per logged step, then one summary
// record with "summary": true. Every line is flushed as it is written, so a crashed run leaves
// all complete lines (qgrad-report reads such files and reports the truncated tail).
// Thread-safety: one writer per file, used by one thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace qgrad {

struct StepRecord {
  uint64_t step = 0;
  uint64_t epoch = 0;
  int rank = 0;
  int world = 1;
  std::string codec;
  double loss = 0;
  std::optional<double> accuracy;       // test accuracy, when evaluated at this step
  std::optional<double> test_loss;
  uint64_t bytes_sent = 0, bytes_received = 0;  // cumulative, this rank
  uint64_t raw_bytes = 0;                       // cumulative: what fp32 would have sent
  double compute_s = 0, encode_s = 0, exchange_s = 0, decode_s = 0, update_s = 0;  // this step
  double seconds = 0;                   // wall time since the start of training
  double samples_per_second = 0;
};

struct SummaryRecord {
  std::string model, data, codec, strategy;
  int world = 1;
  uint64_t steps = 0, epochs = 0;
  double test_accuracy = 0;  // on the test split, or the training set where there is none
  double final_loss = 0;
  uint64_t bytes_sent = 0, bytes_received = 0, raw_bytes = 0;
  double seconds = 0;
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

 private:
  void line(const std::string& json);
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace qgrad
