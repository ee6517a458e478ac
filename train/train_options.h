// What one call of train() (train/trainer.h) is asked to do and what it hands back: the options
// of a run (model, data, optimizer, exchange, schedule, logging, checkpoints) and its result, plus
// the checks of the options that do not depend on the data.
// Which of these options make up a run's identity (what a checkpoint must match on --resume and
// what parameter servers compare across workers) is train/run_identity.h's table.
// Thread-safety: plain values; validate() is a pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "optim/distributed_optimizer.h"
#include "optim/optimizer.h"
#include "train/lr_schedule.h"
#include "train/model.h"
#include "train/model_factory.h"

namespace qgrad {

struct TrainOptions {
  std::string model = "mlp";
  std::string data = "fashion-mnist";  // the --data spec, recorded in metrics and checkpoints
  ModelOptions model_options;          // seed and rank are set from here (seed, the rank)
  OptimizerOptions optimizer;
  // codec, strategy, error_feedback, bucket_bytes, warmup_steps, min_compress_bytes,
  // nan_policy; seed and adversarial are set per rank from the fields below.
  DistributedOptimizerOptions exchange;
  int adversarial = 0;  // the last K ranks send negated contributions (robustness experiments)
  double lr = 0.1;
  LrSchedule schedule;
  size_t batch = 64;  // per rank
  uint64_t epochs = 1;
  uint64_t max_steps = 0;         // stop after this many steps in all (0: when the epochs are done)
  uint64_t seed = 0;              // model init, batches, codec randomness
  uint64_t eval_every = 0;        // steps; 0: at the end of every epoch
  uint64_t log_every = 10;        // steps between metrics records (>= 1)
  std::string metrics_path;       // "" : none; "{rank}" in it (or no Communicator): one file per
                                  // rank, else rank 0 only
  std::string checkpoint_dir;     // "" : no checkpoints
  uint64_t checkpoint_every = 0;  // steps; 0: at the end of every epoch
  bool resume = false;            // continue from checkpoint_dir's latest checkpoint
  std::string link;  // the emulated link's spec ("" : none), recorded in the summary record;
                     // the caller wraps the communicator (qgrad-train --link)
  std::ostream* progress = nullptr;  // rank 0 prints progress here (nullptr: silent)
  double progress_seconds = 2;       // at most one progress line per this many seconds
                                     // (evaluations always print)
};

struct TrainResult {
  uint64_t steps = 0;         // steps done in all (with the resumed ones)
  uint64_t resumed_from = 0;  // the checkpoint's step (0 when not resumed)
  uint64_t skipped_steps = 0;
  Evaluation final_eval;  // the last evaluation, over all ranks
  bool eval_on_test = true;
  double final_loss = 0;       // training loss of the last interval, averaged over ranks
  std::vector<double> losses;  // this rank's training loss of each step run by this call
  // Cumulative, this rank: what the exchange sent and received, 4 x the elements exchanged
  // (dense_bytes), and what the fp32 ring allreduce would have sent (raw_bytes).
  uint64_t bytes_sent = 0, bytes_received = 0, dense_bytes = 0, raw_bytes = 0;
  double seconds = 0;       // wall time of training (resumed runs include the earlier part),
                            // without evaluations and checkpoint writes
  double step_seconds = 0;  // mean wall time per step of this call (the same way)
  uint32_t params_crc = 0;  // CRC-32C of every parameter's bytes, in order
};

// Checks options that do not depend on the data (batch, epochs, lr, log_every, adversarial vs
// world, flag combinations); throws InvalidArgument naming the flag. train() calls it too.
void validate(const TrainOptions& options, int world);

}  // namespace qgrad
