// What the worker loop (train/trainer.h) tells the world: the header lines, one metrics record
// (train/metrics.h) per logged step with, at most every progress_seconds, a progress line, and
// at the end the summary record, the "done" lines and the warnings (steps skipped for
// non-finite gradients; a codec that sent more than the fp32 ring; encoding that costs more
// time than the exchange it shrinks). Progress text goes to rank 0's TrainOptions::progress,
// records to the worker's metrics file where it has one.
// Thread-safety: one TrainReport per worker, used by its thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "optim/gradient_exchange.h"
#include "train/dataset.h"
#include "train/metrics.h"
#include "train/model.h"
#include "train/train_checkpoint.h"
#include "train/train_options.h"

namespace qgrad {

// The steps between two metrics records (or all steps of one train() call): sums of this
// rank's losses, rows and times.
struct StepInterval {
  uint64_t steps = 0, counted = 0;  // steps, and those not skipped (their loss counts)
  double loss_sum = 0;
  size_t rows = 0;  // this rank's samples
  double compute = 0, encode = 0, exchange = 0, decode = 0, update = 0, wait = 0;
  double start_seconds = 0;

  void add(const StepStats& s, double loss, double compute_s, size_t batch_rows);
  StepTimes mean_times() const;
};

// The metrics file of this rank, or nullptr when it writes none: one per rank when the path has
// "{rank}" (replaced by the rank) or `per_rank` is set, else rank 0's only. Resuming from step
// `resumed_step` drops the records after it and appends. Throws Error naming the path.
std::unique_ptr<MetricsWriter> open_metrics(const TrainOptions& options, int rank, bool per_rank,
                                            std::optional<uint64_t> resumed_step);

// What the run is, for the header, the records and the summary.
struct RunShape {
  int rank = 0, world = 1;
  std::string backend;  // WorkerGroup::backend()
  std::string codec;    // the codec's canonical spec
  std::string strategy;
  std::string optimizer;
  uint64_t steps_per_epoch = 1;
  uint64_t schedule_steps = 1;  // steps of all epochs
  uint64_t end_step = 1;        // the step this call stops after
  bool eval_on_test = true;     // false: evaluations are on the training set (no test split)
};

class TrainReport {
 public:
  // `out`: where progress goes (nullptr: silent); `metrics`: this rank's file (or nullptr).
  TrainReport(const TrainOptions& options, RunShape shape, std::ostream* out,
              std::unique_ptr<MetricsWriter> metrics);

  // The lines that open a run (rank 0).
  void header(const DataSplit& data, uint64_t resumed_from);

  // After step `done`: a metrics record of the interval `iv` (loss averaged over the ranks,
  // `eval` when this step evaluated) and, when due, a progress line. `seconds`: training time
  // so far.
  void record(uint64_t done, float lr, double interval_loss, const std::optional<Evaluation>& eval,
              const Progress& progress, const StepInterval& iv, double seconds);

  // The summary record, the "done" lines and the warnings. `result` holds the final figures;
  // `whole` is this call's steps (`ran` of them).
  void finish(const Progress& progress, const TrainResult& result, const StepInterval& whole,
              uint64_t ran);

 private:
  const TrainOptions& o_;
  RunShape shape_;
  std::ostream* out_;
  std::unique_ptr<MetricsWriter> metrics_;
  double last_print_ = -1e9;
};

}  // namespace qgrad
