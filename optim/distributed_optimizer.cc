#include "optim/distributed_optimizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/aggregation.h"
#include "core/codec_registry.h"
#include "core/error.h"
#include "core/simd/kernels.h"
#include "core/timer.h"
#include "core/wire.h"

namespace qgrad {
namespace {

using Clock = std::chrono::steady_clock;

// The NaN flag a rank sends before a bucket's data: nothing when the bucket is finite, else
// u32 parameter index, u32 kind (0 gradient, 1 contribution), u64 element index.
constexpr size_t kFlagBytes = 16;

void check_lr(float lr) {
  QGRAD_CHECK(std::isfinite(lr) && lr >= 0.0f, "learning rate must be finite and >= 0, got ", lr);
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(Communicator& comm, std::unique_ptr<Optimizer> optimizer,
                                           std::vector<ParamView> params,
                                           DistributedOptimizerOptions options)
    : comm_(comm),
      optimizer_(std::move(optimizer)),
      params_(std::move(params)),
      options_(std::move(options)) {
  QGRAD_CHECK(optimizer_ != nullptr, "distributed optimizer: no optimizer given");
  QGRAD_CHECK(options_.bucket_bytes > 0,
              "distributed optimizer: bucket_bytes must be > 0 (the default is 4 MiB)");
  // The strategy is resolved before the encoder checks error feedback, so that options with both
  // faults name the strategy.
  std::unique_ptr<Codec> codec = make_codec(options_.codec);
  strategy_ = resolve_strategy(options_.strategy, *codec, comm_.size());
  encoder_ = std::make_unique<WorkerEncoder>(*optimizer_, options_,
                                             static_cast<uint32_t>(comm_.rank()), std::move(codec));

  std::vector<ParamShape> shapes;
  std::vector<size_t> sizes;
  for (const ParamView& p : params_) {
    QGRAD_CHECK(p.value.size() == p.grad.size(), "distributed optimizer: parameter '", p.name,
                "' has ", p.value.size(), " values but ", p.grad.size(), " gradient elements");
    shapes.push_back({p.name, p.value.size()});
    sizes.push_back(p.value.size());
  }
  optimizer_->init(std::move(shapes));  // checks that names are unique

  buckets_ = plan_buckets(sizes, options_.bucket_bytes, options_.min_compress_bytes);
  bucket_of_.assign(params_.size(), 0);
  const size_t nb = buckets_.size();
  data_.resize(nb);
  worker_ef_.resize(nb);
  owner_ef_.resize(nb);
  worker_backup_.resize(nb);
  owner_backup_.resize(nb);
  for (size_t b = 0; b < nb; ++b) {
    const BucketLayout& layout = buckets_[b];
    for (const size_t i : layout.params) bucket_of_[i] = b;
    data_[b].assign(layout.size, 0.0f);
    worker_ef_[b] = encoder_->make_memory(layout.size);
    if (worker_ef_[b] != nullptr && strategy_ == Strategy::kScatterReduce) {
      owner_ef_[b] = std::make_unique<ErrorFeedback>(
          owned_chunk(layout.size, comm_.size(), comm_.rank()).size());
    }
  }
  work_.resize(nb);
  ready_.assign(nb, 0);
  param_ready_.assign(params_.size(), 0);
  thread_ = std::thread(&DistributedOptimizer::exchange_loop, this);
}

DistributedOptimizer::~DistributedOptimizer() {
  {
    std::lock_guard lock(mutex_);
    shutdown_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DistributedOptimizer::exchange_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // The last bucket is step()'s (see the header): the thread never takes it.
    wake_.wait(lock, [&] { return shutdown_ || exchange_thread_can_go_locked(); });
    if (shutdown_) {
      if (active_ && !halted_ && next_ < buckets_.size()) {
        // Destroyed in the middle of a step: peers may be waiting in this bucket's collectives.
        lock.unlock();
        comm_.abort(detail::concat("rank ", comm_.rank(), " left step ", step_,
                                   " of its DistributedOptimizer unfinished (bucket ", next_,
                                   " of ", buckets_.size(), " not exchanged)"));
      }
      return;
    }
    exchange_next(lock);
  }
}

bool DistributedOptimizer::exchange_thread_can_go_locked() const {
  return next_ + 1 < buckets_.size() && next_ready_locked();
}

bool DistributedOptimizer::next_ready_locked() const {
  return active_ && lr_known_ && !halted_ && !busy_ && next_ < buckets_.size() &&
         ready_[next_] == buckets_[next_].params.size();
}

void DistributedOptimizer::exchange_next(std::unique_lock<std::mutex>& lock) {
  busy_ = true;  // one exchanger at a time, buckets in order: the collectives match
  const size_t b = next_;
  const uint64_t step = step_;
  const float lr = lr_;
  lock.unlock();
  bool clean = false;
  std::exception_ptr error;
  try {
    clean = exchange_bucket(b, step, lr);
  } catch (const CommError&) {
    error = std::current_exception();  // the communicator is broken, and the peers know
  } catch (...) {
    error = std::current_exception();
    comm_.abort(detail::concat("rank ", comm_.rank(), " failed to exchange bucket ", b, " of step ",
                               step, ": ", describe_exception(error)));
  }
  lock.lock();
  if (error) error_ = error;
  if (error || !clean) halted_ = true;
  ++next_;
  busy_ = false;
  if (step_waiting_ || exchange_thread_can_go_locked()) wake_.notify_all();
}

bool DistributedOptimizer::exchange_bucket(size_t b, uint64_t step, float lr) {
  const BucketLayout& layout = buckets_[b];
  BucketWork& w = work_[b];
  std::vector<float>& data = data_[b];
  const int me = comm_.rank(), world = comm_.size();
  const float factor = encoder_->factor(lr);
  const TrafficCounters before = comm_.traffic();
  const bool compressed = encoder_->compresses(step, layout.size);
  ErrorFeedback* worker = worker_ef_[b].get();
  ErrorFeedback* owner = compressed ? owner_ef_[b].get() : nullptr;
  // A codec (and error feedback, which encodes) refuses non-finite input on one rank only, so
  // the flags must go first. The plain fp32 sum without a memory takes anything, and its result
  // is bitwise the same on every rank: there the flags are looked for and exchanged only when
  // the sum is not finite (to name the rank), which saves two collectives and a scan of the
  // gradients per bucket and step.
  const bool flags_first = compressed || worker != nullptr;
  {
    Stopwatch t(w.prepare_s);
    for (size_t k = 0; k < layout.params.size(); ++k) {
      const size_t i = layout.params[k];
      const ParamView& p = params_[i];
      encoder_->contribution(i, p.grad, {data.data() + layout.offsets[k], p.grad.size()}, factor);
    }
    if (flags_first) find_nonfinite(b, factor, true);
  }
  if (flags_first && !flags_are_clean(w, before)) return false;

  if (worker != nullptr) {
    worker_backup_[b].assign(worker->memory().begin(), worker->memory().end());
    if (owner != nullptr) owner_backup_[b].assign(owner->memory().begin(), owner->memory().end());
    w.backed_up = true;
  }
  const RngKey key = encoder_->key(step, static_cast<uint32_t>(b));
  // The contribution already carries s(lr): the error memory adds to it with factor 1. In
  // warm-up the worker memory goes through `none`, which sends p = c + e whole and leaves e = 0.
  const ExchangeStats x =
      compressed ? compressed_allreduce(comm_, encoder_->codec(), strategy_, data, key, worker,
                                        owner, 1.0f)
                 : compressed_allreduce(comm_, encoder_->plain_codec(), Strategy::kPlain, data, key,
                                        worker, nullptr, 1.0f);
  if (!flags_first) w.first_nonfinite = simd::find_nonfinite(data.data(), data.size());
  if (!flags_first && *w.first_nonfinite < data.size()) {
    find_nonfinite(b, factor, false);
    if (!flags_are_clean(w, before)) return false;
    // else no rank has a non-finite contribution: the sum overflowed, and step() reports it
  }
  {
    Stopwatch t(w.decode_s);
    finish_aggregate(b, compressed, lr);
  }
  w.encode_s += x.encode_s;
  w.exchange_s += x.exchange_s;
  w.decode_s += x.decode_s;
  w.stats.strategy = x.strategy;
  w.stats.compressed = compressed;
  w.stats.exchanged = true;
  w.stats.dense_bytes = x.dense_bytes;
  if (world > 1) {
    // What the fp32 allreduce of comm/communicator.h sends from rank `me`.
    w.stats.raw_bytes = 4 * allreduce_volume(layout.size, world, me).sent;
  }
  w.stats.bytes_sent = comm_.traffic().bytes_sent - before.bytes_sent;
  w.stats.bytes_received = comm_.traffic().bytes_received - before.bytes_received;
  return true;
}

void DistributedOptimizer::find_nonfinite(size_t b, float factor, bool contribution_in_data) {
  const BucketLayout& layout = buckets_[b];
  flag_.clear();
  for (size_t k = 0; k < layout.params.size(); ++k) {
    const size_t i = layout.params[k];
    const std::span<const float> grad = params_[i].grad;
    const std::optional<NonFinite> bad =
        contribution_in_data
            ? encoder_->scan(i, grad, {data_[b].data() + layout.offsets[k], grad.size()})
            : encoder_->rescan(i, grad, factor, flag_scratch_);
    if (bad) {
      flag_.resize(kFlagBytes);
      store_u32(flag_.data(), static_cast<uint32_t>(i));
      store_u32(flag_.data() + 4, bad->in_contribution ? 1u : 0u);
      store_u64(flag_.data() + 8, bad->element);
      return;
    }
  }
}

bool DistributedOptimizer::flags_are_clean(BucketWork& w, const TrafficCounters& before) {
  {
    Stopwatch t(w.exchange_s);
    comm_.allgatherv(flag_, flags_);
  }
  std::vector<NonFinite> bad;
  for (int r = 0; r < comm_.size(); ++r) {
    const std::span<const std::byte> block = flags_.block(r);
    if (block.empty()) continue;
    QGRAD_PAYLOAD_CHECK(block.size() == kFlagBytes, "NaN flag from rank ", r, " has ", block.size(),
                        " bytes, expected 0 or ", kFlagBytes);
    const NonFinite g{static_cast<uint32_t>(r), load_u32(block.data()), load_u64(block.data() + 8),
                      load_u32(block.data() + 4) != 0};
    QGRAD_PAYLOAD_CHECK(g.param < params_.size() && g.element < params_[g.param].grad.size(),
                        "NaN flag from rank ", r, " names parameter ", g.param, " element ",
                        g.element, ", which does not exist");
    bad.push_back(g);
  }
  w.stats.bytes_sent = comm_.traffic().bytes_sent - before.bytes_sent;
  w.stats.bytes_received = comm_.traffic().bytes_received - before.bytes_received;
  if (bad.empty()) return true;
  bad_ = std::move(bad);  // read by step() once it sees halted_, under the mutex
  return false;
}

void DistributedOptimizer::finish_aggregate(size_t b, bool compressed, float lr) {
  std::vector<float>& data = data_[b];
  if (compressed && encoder_->majority()) {
    // data holds the vote (+-1). The vote is a direction; s(lr) gives it the units of a mean
    // aggregate (SGD: lr * vote): voting again with magnitude s has the bits of s * vote.
    const float s = optimizer_->compression_scale(lr);
    if (s != 1.0f) vote(data, s);
  } else {
    divide_by_contributors(data, static_cast<uint32_t>(comm_.size()));
  }
}

void DistributedOptimizer::start_step_locked(float lr, bool lr_known) {
  active_ = true;
  lr_known_ = lr_known;
  lr_ = lr;
  next_ = 0;
  halted_ = false;
  bad_.clear();
  for (BucketWork& w : work_) w = BucketWork{};
}

void DistributedOptimizer::finish_step_locked(bool count_step) {
  active_ = false;
  lr_known_ = false;
  next_ = 0;
  halted_ = false;
  bad_.clear();
  std::fill(ready_.begin(), ready_.end(), 0);
  std::fill(param_ready_.begin(), param_ready_.end(), 0);
  if (count_step) ++step_;
}

void DistributedOptimizer::begin_step(float lr) {
  check_lr(lr);
  std::lock_guard lock(mutex_);
  QGRAD_CHECK(broken_.empty(), broken_);
  if (active_) {
    QGRAD_CHECK(!lr_known_, "begin_step(", lr, ") called twice in step ", step_);
    lr_ = lr;
    lr_known_ = true;
  } else {
    start_step_locked(lr, true);
  }
  // Gradients reported before the learning rate may have completed buckets.
  if (exchange_thread_can_go_locked()) wake_.notify_all();
}

void DistributedOptimizer::gradient_ready(size_t i) {
  QGRAD_CHECK(i < params_.size(), "gradient_ready(", i, "): there are ", params_.size(),
              " parameters");
  std::lock_guard lock(mutex_);
  QGRAD_CHECK(broken_.empty(), broken_);
  if (!active_) start_step_locked(0.0f, false);
  QGRAD_CHECK(!param_ready_[i], "gradient_ready(", i, ") for parameter '", params_[i].name,
              "' called twice in step ", step_);
  param_ready_[i] = 1;
  const size_t b = bucket_of_[i];
  // The last bucket completes when backward ends: step() follows at once and exchanges it on
  // its own thread, so waking the exchange thread for it would only add a hand-off.
  if (++ready_[b] == buckets_[b].params.size() && exchange_thread_can_go_locked()) {
    wake_.notify_all();
  }
}

size_t DistributedOptimizer::buckets_exchanged() const {
  std::lock_guard lock(mutex_);
  return active_ ? next_ : 0;
}

uint64_t DistributedOptimizer::steps() const {
  std::lock_guard lock(mutex_);
  return step_;
}

void DistributedOptimizer::restore_memories() {
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (!work_[b].backed_up) continue;
    worker_ef_[b]->load(worker_backup_[b]);
    if (work_[b].stats.compressed && owner_ef_[b] != nullptr) owner_ef_[b]->load(owner_backup_[b]);
  }
}

StepStats DistributedOptimizer::step(float lr) {
  check_lr(lr);
  const Clock::time_point entered = Clock::now();
  std::unique_lock lock(mutex_);
  QGRAD_CHECK(broken_.empty(), broken_);
  if (!active_) {
    start_step_locked(lr, true);
  } else if (lr_known_) {
    QGRAD_CHECK(lr == lr_, "step(", lr, ") in step ", step_, " after begin_step(", lr_,
                "): the learning rate must not change within a step");
  } else {
    lr_ = lr;
    lr_known_ = true;
  }
  StepStats stats;
  stats.step = step_;
  stats.lr = lr;
  stats.overlapped_buckets = next_;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (param_ready_[i]) continue;
    param_ready_[i] = 1;
    ++ready_[bucket_of_[i]];
  }
  // The buckets left are ready now; the calling thread exchanges them itself rather than wake
  // the exchange thread and sleep (no hand-off when nothing could overlap, e.g. one bucket),
  // unless that thread is in the middle of one.
  while (next_ < buckets_.size() && !halted_) {
    if (next_ready_locked()) {
      exchange_next(lock);
    } else {
      step_waiting_ = true;
      wake_.wait(lock);
      step_waiting_ = false;
    }
  }
  stats.wait_s = std::chrono::duration<double>(Clock::now() - entered).count();

  if (error_) {
    broken_ =
        "distributed optimizer: unusable after a failed exchange: " + describe_exception(error_);
    std::rethrow_exception(error_);
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const BucketWork& w = work_[b];
    BucketStats bs = w.stats;
    bs.before_step = b < stats.overlapped_buckets;
    stats.bytes_sent += bs.bytes_sent;
    stats.bytes_received += bs.bytes_received;
    stats.dense_bytes += bs.dense_bytes;
    stats.raw_bytes += bs.raw_bytes;
    stats.compressed_buckets += bs.compressed ? 1 : 0;
    stats.prepare_s += w.prepare_s;
    stats.encode_s += w.encode_s;
    stats.exchange_s += w.exchange_s;
    stats.decode_s += w.decode_s;
    stats.buckets.push_back(bs);
  }

  std::string reason;
  if (halted_) {
    for (const NonFinite& g : bad_) {
      reason += (reason.empty() ? "" : "; ") + encoder_->describe(g);
    }
  } else {
    // The aggregate is the same on every rank, so every rank reaches the same verdict here.
    for (size_t b = 0; b < buckets_.size() && reason.empty(); ++b) {
      const std::vector<float>& d = data_[b];
      // Scaling a finite sum by 1/W keeps it finite and an infinite one infinite, so the scan
      // before the division holds.
      const std::optional<size_t>& scanned = work_[b].first_nonfinite;
      const size_t j = scanned ? *scanned : simd::find_nonfinite(d.data(), d.size());
      if (j == d.size()) continue;
      const auto [k, element] = locate(buckets_[b], j);
      reason = detail::concat("the aggregated update of parameter '",
                              params_[buckets_[b].params[k]].name, "' at element ", element,
                              " is not finite (the sum over ranks overflowed)");
    }
  }
  if (!reason.empty()) {
    restore_memories();
    if (options_.nan_policy == NanPolicy::kError) {
      const uint64_t s = step_;
      finish_step_locked(false);
      throw InvalidArgument(detail::concat("step ", s, ": ", reason,
                                           " (nan policy 'error'; 'skip-step' skips such steps)"));
    }
    finish_step_locked(true);
    stats.skipped = true;
    stats.skip_reason = reason;
    return stats;
  }

  {
    Stopwatch t(stats.update_s);
    optimizer_->begin_update();
    for (size_t b = 0; b < buckets_.size(); ++b) {
      const BucketLayout& layout = buckets_[b];
      for (size_t k = 0; k < layout.params.size(); ++k) {
        const ParamView& p = params_[layout.params[k]];
        const std::span<const float> update(data_[b].data() + layout.offsets[k], p.value.size());
        optimizer_->apply(layout.params[k], p.value, p.grad, update, lr);
      }
    }
  }
  finish_step_locked(true);
  return stats;
}

}  // namespace qgrad
