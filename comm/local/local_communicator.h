// The local backend: N ranks as threads of one process, joined by a LocalHub. Used by unit tests,
// examples and single-process runs; it moves real bytes (copies between the ranks' buffers), so
// the strategies above it run exactly as over MPI.
//
// How a collective runs: each rank posts pointers to its buffers in the hub and waits until all
// ranks have posted (phase A); then every rank copies what it needs straight out of its peers'
// buffers into its own outputs, and waits again (phase B) so no peer returns, and reuses its
// buffers, while someone still reads them. allreduce_sum runs allreduce_schedule of
// comm/communicator.h with one phase per step: in each step a rank reads its peer's `out` range
// (which that peer does not touch in the same step), so it gives the same bits as the MPI backend.
//
// Traffic counts what each rank would send and receive point-to-point in these algorithms:
// allgatherv sends `mine` to each of the n-1 peers and receives every other block; alltoallv
// sends block j to rank j != rank(); broadcast: the root sends n-1 copies, the others receive one;
// allreduce_sum: allreduce_volume (comm/communicator.h).
//
// Failures: a wait that passes the deadline throws TimeoutError naming the ranks that never
// arrived and aborts the hub; abort() (from any thread) wakes every waiting rank. Mismatched
// calls (different collectives, sizes or roots) throw CommError on every rank.
// Thread-safety: the hub is shared by the rank threads; each LocalCommunicator belongs to one.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace qgrad {

class LocalCommunicator;

class LocalHub {
 public:
  explicit LocalHub(int world, CommOptions options = {});
  LocalHub(const LocalHub&) = delete;
  LocalHub& operator=(const LocalHub&) = delete;

  int size() const { return world_; }
  const CommOptions& options() const { return options_; }
  // Breaks the hub on behalf of `rank`: every blocked or later call of every rank throws
  // CommError naming `rank` and `reason`. The first failure wins; later ones are ignored.
  void abort(int rank, std::string_view reason);
  bool aborted() const;

 private:
  friend class LocalCommunicator;
  using Clock = std::chrono::steady_clock;

  enum class Op : uint8_t { kAllreduce, kAllgatherv, kAlltoallv, kBroadcast, kBarrier };
  struct Post {
    Op op = Op::kBarrier;
    uint64_t seq = 0;  // the rank's collective count, to catch a rank that skipped one
    std::span<float> floats = {};
    std::span<const std::byte> bytes = {};
    const ByteBlocks* blocks = nullptr;
    int root = -1;
  };
  struct Failure {
    bool timeout = false;
    int rank = -1;
    std::string reason;
  };

  // Posts `post` (when given) and waits until every rank has reached the same phase.
  void sync(int rank, const char* op, Clock::time_point deadline, const Post* post = nullptr);
  const Post& post(int r) const { return posts_[r]; }
  void fail(int rank, bool timeout, std::string reason);
  [[noreturn]] void throw_failure(int rank, const char* op) const;  // mutex_ held

  const int world_;
  const CommOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Post> posts_;
  std::vector<char> arrived_;  // in the current phase
  int arrivals_ = 0;
  uint64_t phase_ = 0;
  std::optional<Failure> failure_;
};

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(LocalHub& hub, int rank);

  int rank() const override { return rank_; }
  int size() const override { return hub_.size(); }
  std::string_view backend() const override { return "local"; }
  void allreduce_sum(std::span<float> data) override;
  void allgatherv(std::span<const std::byte> mine, ByteBlocks& all) override;
  void alltoallv(const ByteBlocks& send, ByteBlocks& recv) override;
  void broadcast(std::span<std::byte> data, int root) override;
  void barrier() override;
  void abort(std::string_view reason) override { hub_.abort(rank_, reason); }
  const TrafficCounters& traffic() const override { return traffic_; }

 private:
  // Runs one collective: a fresh deadline, a post, and on any error that is not already a
  // communication failure, an abort so that peers do not wait for this rank.
  template <typename Body>
  void run(const char* op, LocalHub::Post post, Body&& body);
  void check_peers_match(const char* op) const;

  LocalHub& hub_;
  const int rank_;
  uint64_t seq_ = 0;
  TrafficCounters traffic_;
};

// Runs fn(comm) for ranks 0..world-1 on `world` threads joined by one LocalHub. The first
// exception of any rank aborts the hub, so peers throw CommError instead of hanging; run_local
// joins every thread and rethrows that first exception.
void run_local(int world, const std::function<void(Communicator&)>& fn, CommOptions options = {});

}  // namespace qgrad
