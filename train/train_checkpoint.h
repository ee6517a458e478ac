// What a training checkpoint holds, and how one is made and restored: the run's identity
// (train/run_identity.h, "run/<name>"), the counters that continue across a resume (Progress,
// "progress/..."), the model's parameters ("model/<param>") and data step, and the exchange's
// state: fp32 buffers ("state/<name>": optimizer state, error memories) and exact scalars
// ("scalar/<name>": Adam's step count, ...). Where the files go is train/checkpoint_dir.h.
//
// Formats, told apart by the integer "progress/format" (absent: 1):
//   1  scalars and "progress/elapsed_bits" as doubles bit-cast to integers; "progress/raw_bytes"
//      held the dense bytes (4 x elements) and "progress/fp32_bytes_sent" the raw bytes (what
//      the fp32 ring allreduce would have sent); the run fields of format 1 only.
//   2  scalars and "progress/elapsed" as exact reals; "progress/dense_bytes" and
//      "progress/raw_bytes" mean what their names say (as in StepStats and the metrics files);
//      every on_resume run field.
// New checkpoints are format 2; both resume bit for bit.
// Thread-safety: pure functions of their arguments; the model and exchange are the caller's.
#pragma once

#include <cstdint>
#include <string>

#include "core/checkpoint.h"
#include "optim/gradient_exchange.h"
#include "train/model.h"
#include "train/run_identity.h"
#include "train/train_options.h"

namespace qgrad {

// The format make_train_checkpoint() writes.
inline constexpr int kTrainCheckpointFormat = 2;

// Counters that continue across a resume.
struct Progress {
  uint64_t step = 0;
  uint64_t skipped = 0;
  // Cumulative, this rank: as TrainResult's fields of the same names.
  uint64_t bytes_sent = 0, bytes_received = 0, dense_bytes = 0, raw_bytes = 0;
  double elapsed = 0;  // seconds of training before this call
};

// This rank's checkpoint: identity, progress (with `p.elapsed` as the training time so far),
// the model's parameters and data step, the exchange's state.
Checkpoint make_train_checkpoint(const TrainOptions& options, const RunFacts& facts,
                                 const Progress& p, Model& model, const GradientExchange& exchange);

// Checks `ck` (read from `path`, named in every error) against this run and loads it into the
// model and the exchange; returns its Progress. Everything is checked before anything changes:
// InvalidArgument for another run's checkpoint (naming the field, its value and this run's),
// another model's parameters, another optimizer's state, or a format this build does not know.
Progress restore_train_checkpoint(const Checkpoint& ck, const std::string& path,
                                  const TrainOptions& options, const RunFacts& facts, Model& model,
                                  GradientExchange& exchange);

}  // namespace qgrad
