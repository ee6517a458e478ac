// DistributedOptimizer: data-parallel steps with compressed gradients over a Communicator
// (docs/architecture.md). Horovod's split: this class decides *when* a bucket of gradients is
// ready and what goes into it; compressed_allreduce (comm/strategies) moves it; the Optimizer
// (optim/optimizer.h) turns the aggregate into a parameter update. One step on rank r, for every
// bucket b (the worker-side half is the WorkerEncoder's, optim/worker_encoder.h, shared with the
// parameter-server path):
//
//   c   = s(lr) * T(g)  over the bucket's parameters    (Optimizer::contribution; negated when
//                                                         options.adversarial)
//   p   = c + e_b;  send C(p);  e_b = p - D(C(p))        (error feedback: one worker memory per
//                                                         bucket, one owner memory per bucket for
//                                                         scatter-reduce; core/error_feedback.h)
//   a_b = sum_r D(C(p_r)) / W      (mean codecs)   or   s(lr) * vote   (majority-vote codecs;
//                                  both rules are core/aggregation.h's)
//   x  <- Optimizer::apply(a_b)    on every rank, with the same a_b: parameters and optimizer
//                                  state stay bitwise identical across ranks (Signum's momentum,
//                                  the error memories and the adversarial flag are per rank)
//
// Buckets: parameters are fused into buckets in reverse order (optim/bucket_plan.h). A bucket is
// exchanged uncompressed (codec `none`, plain fp32 ring allreduce, its mean) during the first
// warmup_steps steps and, always, when it holds fewer than min_compress_bytes bytes.
//
// Overlap: a background thread exchanges bucket 0, 1, 2, ... in that order on every rank (so
// collectives match, and MPI_THREAD_SERIALIZED suffices: one bucket at a time, under a mutex).
// A bucket goes as soon as gradient_ready() was called for all its parameters and the step's
// learning rate is known (begin_step(lr) or step(lr)): s(lr) scales what is compressed (SGD
// sends lr * g, so that the error memory is in parameter units). The last bucket is the
// exception: it completes when backward ends, so nothing is left to overlap it with, and step()
// exchanges it (with any bucket still waiting) on the calling thread; the hand-off to the
// exchange thread and back cost two context switches per step (scripts/overhead.sh,
// docs/measurements.md).
// step(lr) marks every parameter ready, waits for the exchanges, then applies the update on the
// calling thread. The caller must not write a gradient
// after gradient_ready() for it and before step() returns, and may use the Communicator itself
// only between steps (after step() returned, before the next begin_step/gradient_ready).
//
// NaN/Inf: before each compressed bucket's data (and any bucket with an error memory), the ranks
// allgather a flag (0 bytes when all is well; the parameter, element and rank of the first
// non-finite gradient otherwise), so all of them agree before a codec sees the data. A plain
// fp32 bucket without a memory is summed first (the sum is bitwise the same on every rank) and
// the flags are exchanged only when that sum is not finite: two collectives fewer per step.
// Policy kError: step() throws InvalidArgument on every rank naming the parameter, the element
// and the rank (WorkerEncoder::describe); kSkipStep: every rank skips the step
// (StepStats::skipped) and leaves parameters, optimizer state and error memories as they were
// (the memories of buckets already exchanged in the step are restored). A non-finite aggregate (an
// overflow in the sum) is treated the same way.
//
// Randomness: bucket b of step t on rank r encodes with RngKey{seed, t, r, tensor = b}; t counts
// every step() (skipped ones too) and is part of the checkpointed state.
// Failures: an exception on the exchange thread aborts the Communicator (peers throw CommError
// instead of waiting) and is rethrown by step(); the DistributedOptimizer is then unusable (later
// calls throw InvalidArgument quoting that failure). Destroying it in the middle of a step also
// aborts the Communicator, since peers may be waiting for this rank.
// The Optimizer is owned and init()ed here: load its state through import_state() below.
// Thread-safety: gradient_ready() may be called from any thread; begin_step(), step(),
// export_state() and import_state() from one thread at a time.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/strategies/compressed_allreduce.h"
#include "core/codec.h"
#include "core/error_feedback.h"
#include "optim/bucket_plan.h"
#include "optim/exchange_options.h"
#include "optim/gradient_exchange.h"
#include "optim/optimizer.h"
#include "optim/param.h"
#include "optim/worker_encoder.h"

namespace qgrad {

class DistributedOptimizer final : public GradientExchange {
 public:
  // Throws InvalidArgument on bad options (bucket_bytes 0, a bad codec spec, a codec/strategy
  // pair that cannot work, error feedback with a majority-vote codec), duplicate parameter
  // names, or value/grad spans of different sizes. `comm` must outlive this object.
  DistributedOptimizer(Communicator& comm, std::unique_ptr<Optimizer> optimizer,
                       std::vector<ParamView> params, DistributedOptimizerOptions options);
  ~DistributedOptimizer() override;
  DistributedOptimizer(const DistributedOptimizer&) = delete;
  DistributedOptimizer& operator=(const DistributedOptimizer&) = delete;

  // Announces this step's learning rate (finite, >= 0), so that ready buckets can be exchanged
  // while the backward pass goes on. Optional: step(lr) does it otherwise (without overlap).
  void begin_step(float lr) override;
  // The gradient of parameter i is final for this step. Once per parameter and step.
  void gradient_ready(size_t param_index) override;
  // Waits for every bucket (marking all parameters ready), averages, applies the optimizer.
  // lr must equal begin_step's, if it was called. Rethrows an exchange failure; NaN handling as
  // at the top of this file.
  StepStats step(float lr) override;

  // Buckets of the current step whose exchange has finished (0 between steps).
  size_t buckets_exchanged() const;
  const std::vector<BucketLayout>& buckets() const { return buckets_; }
  // Completed step() calls, skipped ones included.
  uint64_t steps() const;
  Strategy strategy() const { return strategy_; }
  const Codec& codec() const override { return encoder_->codec(); }
  std::string route() const override { return std::string(strategy_name(strategy_)); }
  const Optimizer& optimizer() const override { return *optimizer_; }

  // Checkpoints, between steps only. Keys: "optimizer/..." (Optimizer::export_state),
  // "exchange/ef_worker/<b>" and "exchange/ef_owner/<b>" (error memories of bucket b), scalars
  // "exchange/step", "exchange/world", "exchange/rank". Import looks only at keys under
  // "optimizer/" and "exchange/" (others, e.g. the model's, are ignored) and checks all of them
  // (names, sizes, world, rank) before it changes anything; a resumed run continues bit for bit.
  StateDict export_state() const override;
  void import_state(const StateDict& state) override;

 private:
  struct BucketWork {
    BucketStats stats;
    double prepare_s = 0, encode_s = 0, exchange_s = 0, decode_s = 0;
    bool backed_up = false;  // error memories saved before this step's exchange
    // Set where exchange_bucket scanned the aggregate already (the plain fp32 sum): the index
    // of its first non-finite value, or its size. step() does not scan such a bucket again.
    std::optional<size_t> first_nonfinite;
  };

  void exchange_loop();
  // Bucket next_ may be exchanged now (its parameters are ready, nobody is exchanging).
  bool next_ready_locked() const;
  // The exchange thread's wait condition (less shutdown): it takes every bucket but the last.
  bool exchange_thread_can_go_locked() const;
  // Exchanges bucket next_ with the mutex released, then advances next_ (holding `lock` again).
  void exchange_next(std::unique_lock<std::mutex>& lock);
  // Runs on the exchange thread. Returns false when some rank reported a non-finite gradient
  // (filled into bad_), in which case nothing was exchanged.
  bool exchange_bucket(size_t b, uint64_t step, float lr);
  // This rank's first non-finite value in bucket b, as a NaN flag (empty when there is none).
  // With contribution_in_data, data_[b] holds the contributions; otherwise they are recomputed.
  void find_nonfinite(size_t b, float factor, bool contribution_in_data);
  // Allgathers the flags; false (and bad_ filled) when some rank has a non-finite value.
  bool flags_are_clean(BucketWork& w, const TrafficCounters& before);
  // a_b from the sum over ranks: the mean, or s(lr) * vote.
  void finish_aggregate(size_t b, bool compressed, float lr);
  void start_step_locked(float lr, bool lr_known);
  void finish_step_locked(bool count_step);
  void restore_memories();
  std::string bucket_name(size_t b) const;

  Communicator& comm_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<ParamView> params_;
  const DistributedOptimizerOptions options_;
  std::unique_ptr<WorkerEncoder> encoder_;  // c, the scan, codec choice, keys, memories
  Strategy strategy_ = Strategy::kAuto;

  std::vector<BucketLayout> buckets_;
  std::vector<size_t> bucket_of_;         // parameter -> bucket
  std::vector<std::vector<float>> data_;  // per bucket: contribution, then aggregate
  std::vector<std::unique_ptr<ErrorFeedback>> worker_ef_, owner_ef_;  // null where unused
  std::vector<std::vector<float>> worker_backup_, owner_backup_;
  std::vector<BucketWork> work_;
  std::vector<NonFinite> bad_;  // of the current step, from every rank
  std::vector<std::byte> flag_;
  std::vector<float> flag_scratch_;  // a contribution recomputed to find a non-finite value
  ByteBlocks flags_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  uint64_t step_ = 0;
  bool active_ = false;  // a step has started (begin_step / gradient_ready / step)
  bool lr_known_ = false;
  float lr_ = 0;
  std::vector<size_t> ready_;  // per bucket: parameters marked ready
  std::vector<char> param_ready_;
  size_t next_ = 0;      // next bucket to exchange
  bool busy_ = false;    // a thread (the exchange thread or step()'s) is exchanging a bucket
  bool halted_ = false;  // a NaN or an error stopped this step's exchanges
  // step() sleeps on wake_ until the exchange thread is done with a bucket. Waking a thread that
  // has nothing to do costs two context switches a step, and a preempted peer on a shared core,
  // so wake_ is notified only when a waiter can go on: step() waits, or the thread can go.
  bool step_waiting_ = false;
  bool shutdown_ = false;
  std::exception_ptr error_;  // from the exchange thread; the object is broken after it
  std::string broken_;
  std::thread thread_;
};

}  // namespace qgrad
