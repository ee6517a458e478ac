#include "comm/local/local_communicator.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>

#include "core/error.h"

namespace qgrad {
namespace {

const char* op_name(uint8_t op) {
  static const char* const kNames[] = {"allreduce_sum", "allgatherv", "alltoallv", "broadcast",
                                       "barrier"};
  return kNames[op];
}

void copy_bytes(std::byte* to, const std::byte* from, size_t n) {
  if (n > 0) std::memcpy(to, from, n);
}

}  // namespace

LocalHub::LocalHub(int world, CommOptions options)
    : world_(world), options_(options), posts_(std::max(world, 0)), arrived_(std::max(world, 0)) {
  QGRAD_CHECK(world >= 1, "LocalHub: world size must be >= 1, got ", world);
  QGRAD_CHECK(options.timeout.count() > 0, "LocalHub: timeout must be positive, got ",
              options.timeout.count(), " ms");
}

void LocalHub::abort(int rank, std::string_view reason) { fail(rank, false, std::string(reason)); }

bool LocalHub::aborted() const {
  std::lock_guard lock(mutex_);
  return failure_.has_value();
}

void LocalHub::fail(int rank, bool timeout, std::string reason) {
  {
    std::lock_guard lock(mutex_);
    if (failure_) return;
    failure_ = Failure{timeout, rank, std::move(reason)};
  }
  wake_.notify_all();
}

void LocalHub::throw_failure(int rank, const char* op) const {
  const std::string where = detail::concat(op, " on rank ", rank, " of ", world_, ": ");
  if (failure_->rank == rank) {
    if (failure_->timeout) {
      throw TimeoutError(
          detail::concat(where, "this rank timed out earlier (", failure_->reason, ")"));
    }
    throw CommError(
        detail::concat(where, "this rank's communicator is broken (", failure_->reason, ")"));
  }
  if (failure_->timeout) {
    throw TimeoutError(
        detail::concat(where, "rank ", failure_->rank, " timed out (", failure_->reason, ")"));
  }
  throw CommError(detail::concat(where, "rank ", failure_->rank, " aborted: ", failure_->reason));
}

void LocalHub::sync(int rank, const char* op, Clock::time_point deadline, const Post* post) {
  std::unique_lock lock(mutex_);
  if (failure_) throw_failure(rank, op);
  if (post != nullptr) posts_[rank] = *post;
  const uint64_t phase = phase_;
  arrived_[rank] = 1;
  if (++arrivals_ == world_) {
    arrivals_ = 0;
    std::fill(arrived_.begin(), arrived_.end(), 0);
    ++phase_;
    lock.unlock();
    wake_.notify_all();
    return;
  }
  const bool woke =
      wake_.wait_until(lock, deadline, [&] { return phase_ != phase || failure_.has_value(); });
  if (phase_ != phase) return;  // done, even if a failure came in just after
  if (woke) throw_failure(rank, op);
  std::string missing;
  for (int r = 0; r < world_; ++r) {
    if (!arrived_[r]) missing += detail::concat(missing.empty() ? "" : ", ", r);
  }
  const std::string what = detail::concat(op, " timed out after ", options_.timeout.count(),
                                          " ms waiting for rank(s) ", missing);
  failure_ = Failure{true, rank, what};
  lock.unlock();
  wake_.notify_all();
  throw TimeoutError(detail::concat(what, " (on rank ", rank, " of ", world_, ")"));
}

LocalCommunicator::LocalCommunicator(LocalHub& hub, int rank) : hub_(hub), rank_(rank) {
  QGRAD_CHECK(rank >= 0 && rank < hub.size(), "LocalCommunicator: rank ", rank,
              " is outside the hub's world of ", hub.size());
}

template <typename Body>
void LocalCommunicator::run(const char* op, LocalHub::Post post, Body&& body) {
  const auto deadline = LocalHub::Clock::now() + hub_.options().timeout;
  post.seq = seq_++;
  try {
    hub_.sync(rank_, op, deadline, &post);
    check_peers_match(op);
    body(deadline);
  } catch (const CommError&) {
    throw;
  } catch (...) {
    hub_.fail(rank_, false,
              detail::concat("rank ", rank_, " failed in ", op, ": ",
                             describe_exception(std::current_exception())));
    throw;
  }
  ++traffic_.calls;
}

void LocalCommunicator::check_peers_match(const char* op) const {
  const LocalHub::Post& mine = hub_.post(rank_);
  for (int r = 0; r < size(); ++r) {
    const LocalHub::Post& p = hub_.post(r);
    std::string problem;
    if (p.op != mine.op || p.seq != mine.seq) {
      problem = detail::concat("rank ", r, " is in ", op_name(static_cast<uint8_t>(p.op)),
                               " (its collective #", p.seq, "), this rank in ", op,
                               " (collective #", mine.seq, ")");
    } else if (p.op == LocalHub::Op::kAllreduce && p.floats.size() != mine.floats.size()) {
      problem = detail::concat("rank ", r, " passed ", p.floats.size(), " floats, this rank ",
                               mine.floats.size());
    } else if (p.op == LocalHub::Op::kBroadcast &&
               (p.root != mine.root || p.bytes.size() != mine.bytes.size())) {
      problem = detail::concat("rank ", r, " passed root ", p.root, " and ", p.bytes.size(),
                               " bytes, this rank root ", mine.root, " and ", mine.bytes.size());
    } else if (p.op == LocalHub::Op::kAlltoallv && p.blocks->count() != size()) {
      problem = detail::concat("rank ", r, " passed ", p.blocks->count(),
                               " send blocks for a world of ", size());
    }
    if (!problem.empty()) {
      const std::string what =
          detail::concat(op, " on rank ", rank_, ": mismatched call: ", problem);
      hub_.fail(rank_, false, what);
      throw CommError(what);
    }
  }
}

void LocalCommunicator::allreduce_sum(std::span<float> data) {
  LocalHub::Post post{.op = LocalHub::Op::kAllreduce, .floats = data};
  const std::vector<AllreduceStep> steps = allreduce_schedule(data.size(), size(), rank_);
  uint64_t sent = 0, received = 0;
  run("allreduce_sum", post, [&](LocalHub::Clock::time_point deadline) {
    // A peer's partial is read straight from its buffer: in a step, what this rank reads of the
    // peer is the peer's `out`, which the peer does not write (its `in` is disjoint), and the sync
    // after the step keeps anyone from moving on while it is read. In an exchange step both
    // sides write the range they read, so the peer's partial is copied first, and the adds wait
    // for a sync that says every copy is taken.
    std::vector<float> scratch;
    for (const AllreduceStep& step : steps) {
      const ChunkRange c = step.in;
      const float* from = hub_.post(step.peer_in).floats.data() + c.begin;  // element c.begin
      if (step.exchange()) {
        scratch.assign(from, from + c.size());
        hub_.sync(rank_, "allreduce_sum", deadline);
        from = scratch.data();
      }
      float* to = data.data() + c.begin;
      if (step.reduce) {
        for (size_t i = 0; i < c.size(); ++i) to[i] = to[i] + from[i];
      } else {
        std::copy(from, from + c.size(), to);
      }
      sent += step.out.size();
      received += c.size();
      hub_.sync(rank_, "allreduce_sum", deadline);
    }
  });
  traffic_.bytes_sent += 4 * sent;
  traffic_.bytes_received += 4 * received;
}

void LocalCommunicator::allgatherv(std::span<const std::byte> mine, ByteBlocks& all) {
  LocalHub::Post post{.op = LocalHub::Op::kAllgatherv, .bytes = mine};
  const int n = size();
  size_t total = 0;
  run("allgatherv", post, [&](LocalHub::Clock::time_point deadline) {
    std::vector<size_t> sizes(n);
    for (int r = 0; r < n; ++r) sizes[r] = hub_.post(r).bytes.size();
    all.layout(sizes);
    total = all.data.size();
    for (int r = 0; r < n; ++r) {
      copy_bytes(all.block(r).data(), hub_.post(r).bytes.data(), sizes[r]);
    }
    hub_.sync(rank_, "allgatherv", deadline);
  });
  traffic_.bytes_sent += uint64_t(n - 1) * mine.size();
  traffic_.bytes_received += total - mine.size();
}

void LocalCommunicator::alltoallv(const ByteBlocks& send, ByteBlocks& recv) {
  LocalHub::Post post{.op = LocalHub::Op::kAlltoallv, .blocks = &send};
  const int n = size();
  uint64_t received = 0;
  // Argument errors are found after the post, so that they abort the peers too (run()).
  run("alltoallv", post, [&](LocalHub::Clock::time_point deadline) {
    QGRAD_CHECK(&send != &recv, "alltoallv: send and recv must be different objects");
    std::vector<size_t> sizes(n);
    for (int r = 0; r < n; ++r) sizes[r] = hub_.post(r).blocks->block_bytes(rank_);
    recv.layout(sizes);
    for (int r = 0; r < n; ++r) {
      copy_bytes(recv.block(r).data(), hub_.post(r).blocks->block(rank_).data(), sizes[r]);
      if (r != rank_) received += sizes[r];
    }
    hub_.sync(rank_, "alltoallv", deadline);
  });
  for (int r = 0; r < n; ++r) {
    if (r != rank_) traffic_.bytes_sent += send.block_bytes(r);
  }
  traffic_.bytes_received += received;
}

void LocalCommunicator::broadcast(std::span<std::byte> data, int root) {
  LocalHub::Post post{.op = LocalHub::Op::kBroadcast, .bytes = data, .root = root};
  run("broadcast", post, [&](LocalHub::Clock::time_point deadline) {
    QGRAD_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " is outside the world of ",
                size());
    if (rank_ != root) copy_bytes(data.data(), hub_.post(root).bytes.data(), data.size());
    hub_.sync(rank_, "broadcast", deadline);
  });
  if (rank_ == root) {
    traffic_.bytes_sent += uint64_t(size() - 1) * data.size();
  } else {
    traffic_.bytes_received += data.size();
  }
}

void LocalCommunicator::barrier() {
  run("barrier", LocalHub::Post{.op = LocalHub::Op::kBarrier},
      [&](LocalHub::Clock::time_point deadline) { hub_.sync(rank_, "barrier", deadline); });
}

void run_local(int world, const std::function<void(Communicator&)>& fn, CommOptions options) {
  LocalHub hub(world, options);
  std::mutex mutex;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  threads.reserve(world);
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        LocalCommunicator comm(hub, r);
        fn(comm);
      } catch (...) {
        const std::exception_ptr e = std::current_exception();
        {
          std::lock_guard lock(mutex);
          if (!first) first = e;
        }
        // Recorded before the abort, so the root cause is what run_local rethrows.
        hub.abort(r, describe_exception(e));
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace qgrad
