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
// The same loop trains through parameter servers (ps/, train/ps_training.h): train() takes
// a WorkerGroup (rank, world size, agreement, sums; a Communicator or none) and a factory for the
// GradientExchange (DistributedOptimizer, or ps::PsExchange). Without a Communicator each worker
// reports its own training loss, evaluates the whole test split itself (every worker holds the
// same parameters after a synchronous step, so all of them report the same accuracy), and
// checkpoints are refused (server checkpoints are the next slice of issue 5).
// Thread-safety: one call per rank; ranks may be threads of one process sharing `data`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "optim/distributed_optimizer.h"
#include "optim/gradient_exchange.h"
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
  std::string metrics_path;   // "" : none; "{rank}" in it (or no Communicator): one file per
                              // rank, else rank 0 only
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
  uint64_t bytes_sent = 0, bytes_received = 0, dense_bytes = 0, raw_bytes = 0;
  double seconds = 0;       // wall time of training (resumed runs include the earlier part),
                            // without evaluations and checkpoint writes
  double step_seconds = 0;  // mean wall time per step of this call (the same way)
  uint32_t params_crc = 0;      // CRC-32C of every parameter's bytes, in order
};

// The workers one worker trains with, as the loop needs them beside the gradient exchange.
class WorkerGroup {
 public:
  virtual ~WorkerGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "local", "mpi", "ps", ... for the header
  // Every worker passes its error ("" when all went well); throws InvalidArgument with the first
  // failure when any worker failed (collective where there is a Communicator, else this
  // worker's own).
  virtual void agree_on_error(const std::string& error) = 0;
  // Element-wise sums over the workers, the same bits on every one; `mine` without peers.
  virtual std::vector<double> sum(std::span<const double> mine) = 0;
  // The Communicator the workers share (checkpoints need it), or nullptr.
  virtual Communicator* communicator() = 0;
};

// Ranks of a Communicator (MPI or threads).
class CommunicatorGroup final : public WorkerGroup {
 public:
  explicit CommunicatorGroup(Communicator& comm) : comm_(comm) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  std::string backend() const override { return std::string(comm_.backend()); }
  void agree_on_error(const std::string& error) override;
  std::vector<double> sum(std::span<const double> mine) override;
  Communicator* communicator() override { return &comm_; }

 private:
  Communicator& comm_;
};

// A worker that shares nothing with the others but its exchange (parameter servers).
class IndependentWorker final : public WorkerGroup {
 public:
  IndependentWorker(int rank, int size, std::string backend)
      : rank_(rank), size_(size), backend_(std::move(backend)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return backend_; }
  void agree_on_error(const std::string& error) override;
  std::vector<double> sum(std::span<const double> mine) override {
    return {mine.begin(), mine.end()};
  }
  Communicator* communicator() override { return nullptr; }

 private:
  int rank_, size_;
  std::string backend_;
};

// Builds the exchange once the model exists: its parameters, and options.exchange with this
// worker's seed and adversarial flag filled in.
using ExchangeFactory = std::function<std::unique_ptr<GradientExchange>(
    std::vector<ParamView> params, const DistributedOptimizerOptions& exchange)>;

// Checks options that do not depend on the data (batch, epochs, lr, log_every, adversarial vs
// world, flag combinations); throws InvalidArgument naming the flag. train() calls it too.
void validate(const TrainOptions& options, int world);

// The collective path: a DistributedOptimizer over comm.
TrainResult train(Communicator& comm, const DataSplit& data, const TrainOptions& options);
// Any exchange: the loop above with the group's rank and size and make_exchange's exchange.
TrainResult train(WorkerGroup& group, const DataSplit& data, const TrainOptions& options,
                  const ExchangeFactory& make_exchange);

// The fields on which every worker of one run must agree (model, data, codec, optimizer, lr and
// schedule, world, batch, epochs, seed, ...), as text: parameter servers compare them at
// registration and name the first that differs.
std::vector<std::pair<std::string, std::string>> run_fields(const TrainOptions& options, int world);

// Collective: every rank passes its error ("" when all went well); when any rank failed, every
// rank throws InvalidArgument with the first failure (prefixed with its rank when world > 1), so
// that no rank goes on to wait for a peer that has quit.
void agree_on_error(Communicator& comm, const std::string& error);

}  // namespace qgrad
