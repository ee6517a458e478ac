// The worker loop: one rank's part of synchronous data-parallel training. Every rank of a
// Communicator calls train() with the same options and the same data; rank r trains on its
// strided shard (train/data/shard.h), exchanges compressed gradients through a
// DistributedOptimizer, and all ranks end with bitwise identical parameters. The same function
// runs under mpirun (MpiCommunicator) and as threads of one process (run_local), and gives the
// same bits in both.
//
// One step t (0-based; epoch = t / steps_per_epoch, batch = t % steps_per_epoch of that epoch):
//   lr = schedule(t);  optimizer.begin_step(lr);  loss = model.forward_backward(batch) (each
//   gradient handed to the exchange as soon as backward produced it);  optimizer.step(lr).
// Every log_every steps (and at evaluations, checkpoints and the end) the ranks average their
// training loss over the interval (one small collective outside the gradient traffic), and rank 0
// writes a metrics record (train/metrics.h) and, at most every progress_seconds, a progress line.
// Evaluations: every eval_every steps, or at the end of each epoch when it is 0, and at the end;
// each rank evaluates its shard of the test split (of the training set where there is none) and
// the sums are combined exactly (doubles, in rank order).
// Checkpoints (checkpoint_dir): every checkpoint_every steps, or at the end of each epoch when it
// is 0, and at the end; they hold the parameters, the optimizer state, the error memories, the
// model's data step, the metrics accumulators and the byte counters, so a resumed run continues
// bit for bit (the same parameters, losses and metrics records as a run that never stopped).
// Errors: InvalidArgument for bad options, a checkpoint of another run (model, data, codec,
// optimizer, world size, batch, seed) or a non-finite loss or gradient (with nan_policy kError);
// every rank throws (the optimizer agrees on NaN; the loss check uses the averaged loss).
// Thread-safety: one call per rank; ranks may be threads of one process sharing `data`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "optim/distributed_optimizer.h"
#include "optim/optimizer.h"
#include "train/dataset.h"
#include "train/lr_schedule.h"
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
  size_t batch = 64;          // per rank
  uint64_t epochs = 1;
  uint64_t max_steps = 0;     // stop after this many steps in all (0: when the epochs are done)
  uint64_t seed = 0;          // model init, batches, codec randomness
  uint64_t eval_every = 0;    // steps; 0: at the end of every epoch
  uint64_t log_every = 10;    // steps between metrics records (>= 1)
  std::string metrics_path;   // "" : none; "{rank}" in it: one file per rank, else rank 0 only
  std::string checkpoint_dir;  // "" : no checkpoints
  uint64_t checkpoint_every = 0;  // steps; 0: at the end of every epoch
  bool resume = false;            // continue from checkpoint_dir's latest checkpoint
  std::string link;  // the emulated link's spec ("" : none), recorded in the summary record;
                     // the caller wraps the communicator (qgrad-train --link)
  std::ostream* progress = nullptr;  // rank 0 prints progress here (nullptr: silent)
  double progress_seconds = 2;       // at most one progress line per this many seconds
                                     // (evaluations always print)
};

struct TrainResult {
  uint64_t steps = 0;           // steps done in all (with the resumed ones)
  uint64_t resumed_from = 0;    // the checkpoint's step (0 when not resumed)
  uint64_t skipped_steps = 0;
  Evaluation final_eval;        // the last evaluation, over all ranks
  bool eval_on_test = true;
  double final_loss = 0;        // training loss of the last interval, averaged over ranks
  std::vector<double> losses;   // this rank's training loss of each step run by this call
  uint64_t bytes_sent = 0, bytes_received = 0, raw_bytes = 0, fp32_bytes_sent = 0;
  double seconds = 0;       // wall time of training (resumed runs include the earlier part),
                            // without evaluations and checkpoint writes
  double step_seconds = 0;  // mean wall time per step of this call (the same way)
  uint32_t params_crc = 0;      // CRC-32C of every parameter's bytes, in order
};

// Checks options that do not depend on the data (batch, epochs, lr, log_every, adversarial vs
// world, flag combinations); throws InvalidArgument naming the flag. train() calls it too.
void validate(const TrainOptions& options, int world);

TrainResult train(Communicator& comm, const DataSplit& data, const TrainOptions& options);

// Collective: every rank passes its error ("" when all went well); when any rank failed, every
// rank throws InvalidArgument with the first failure (prefixed with its rank when world > 1), so
// that no rank goes on to wait for a peer that has quit.
void agree_on_error(Communicator& comm, const std::string& error);

}  // namespace qgrad
