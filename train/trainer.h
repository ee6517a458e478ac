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
// model's data step, the step, skip and byte counters and the training time
// (train/train_checkpoint.h), so a resumed run continues bit for bit (the same parameters,
// losses and metrics records as a run that never stopped).
// Errors: InvalidArgument for bad options, a checkpoint of another run (any field of
// train/run_identity.h's table that must match on resume, named with both values) or a
// non-finite loss or gradient (with nan_policy kError); every rank throws (the optimizer agrees
// on NaN; the loss check uses the averaged loss).
// The same loop trains through parameter servers (ps/, train/ps_training.h): train() takes
// a WorkerGroup (rank, world size, agreement, sums; a Communicator or none) and a factory for the
// GradientExchange (DistributedOptimizer, or ps::PsExchange). Without a Communicator each worker
// reports its own training loss, evaluates the whole test split itself (every worker holds the
// same parameters after a synchronous step, so all of them report the same accuracy), and
// worker checkpoints are refused (the servers keep the run's state, ps/server.h).
// The parts: train/train_options.h (options, result, validate), train/worker_group.h (the
// workers), train/run_identity.h (what makes a run the same run), train/train_checkpoint.h (what
// a checkpoint holds), train/checkpoint_dir.h (where it goes), train/train_report.h (header,
// records, progress, summary, warnings); this file's train() is the loop that uses them.
// Thread-safety: one call per rank; ranks may be threads of one process sharing `data`.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "optim/distributed_optimizer.h"
#include "optim/gradient_exchange.h"
#include "optim/optimizer.h"
#include "train/dataset.h"
#include "train/lr_schedule.h"
#include "train/model_factory.h"
#include "train/run_identity.h"
#include "train/train_options.h"
#include "train/worker_group.h"

namespace qgrad {

// Builds the exchange once the model exists: its parameters, and options.exchange with this
// worker's seed and adversarial flag filled in.
using ExchangeFactory = std::function<std::unique_ptr<GradientExchange>(
    std::vector<ParamView> params, const DistributedOptimizerOptions& exchange)>;

// The collective path: a DistributedOptimizer over comm.
TrainResult train(Communicator& comm, const DataSplit& data, const TrainOptions& options);
// Any exchange: the loop above with the group's rank and size and make_exchange's exchange.
TrainResult train(WorkerGroup& group, const DataSplit& data, const TrainOptions& options,
                  const ExchangeFactory& make_exchange);

}  // namespace qgrad
