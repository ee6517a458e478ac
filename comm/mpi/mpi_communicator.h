// The Open MPI backend. comm/mpi/ is the only place in qgrad that includes <mpi.h>; link
// qgrad_comm_mpi to use it (it defines OMPI_SKIP_MPICXX for its users).
//
// Collectives: allreduce_sum = allreduce_schedule of comm/communicator.h (halving/doubling
// for power-of-two worlds, else a ring) over MPI_Isend / MPI_Irecv in 1 MiB segments (the same bits
// as the local backend; faster here than MPI_Allreduce, see the .cc), allgatherv = MPI_Iallgather
// of the sizes + MPI_Iallgatherv, alltoallv = MPI_Ialltoall of the sizes + MPI_Ialltoallv,
// broadcast = MPI_Ibcast, barrier = MPI_Ibarrier. All run on a private duplicate of the parent
// communicator with MPI_ERRORS_RETURN, so MPI failures become CommError.
//
// Deadlines: MPI cannot time out a blocking collective, so every collective is started
// nonblocking and completed by polling MPI_Test (yielding the CPU between polls, as Open MPI's
// own blocking calls do when oversubscribed) until it completes, a peer aborts, or the deadline
// passes. Then it throws TimeoutError and sends an abort notice to every peer, and the
// communicator is unusable: the pending MPI operation can never be cancelled. Its buffers are
// private staging copies, kept alive by the communicator (and leaked at its destruction if the
// operation is still pending), so a late peer can never write into memory the caller has freed.
// The staging costs one copy of what is sent (allreduce_sum: about the buffer in and out again);
// received byte blocks are swapped into the caller's ByteBlocks, not copied.
//
// Abort: each rank keeps a receive for a small abort notice (tag kAbortTag, any source) posted on
// the duplicate. abort(reason) sends the notice to every peer and waits at most a second for the
// sends to leave (small messages leave eagerly, without the peer's help); a peer sees it while it
// polls, and throws CommError naming the rank and the reason (TimeoutError when the notice
// reports a timeout). No MPI_Abort: the process decides what to do.
//
// Traffic: allreduce_sum counts the floats its steps send and receive (allreduce_volume). For the
// other collectives MPI does not say what it put on the wire, so the counters hold the logical
// volume of the algorithms the local backend counts (comm/local/local_communicator.h): what this
// rank's data contributes to each peer and what it receives from them. The sizes exchanged before
// the v-collectives are not counted. Limit: one v-collective moves at most INT_MAX bytes per rank
// (MPI counts are int).
// Thread-safety: MPI_THREAD_SERIALIZED; one thread at a time per communicator.
#pragma once

#include <mpi.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace qgrad {

// Initializes MPI (MPI_THREAD_SERIALIZED) unless it already is, and sets MPI_ERRORS_RETURN on
// MPI_COMM_WORLD; finalizes MPI on destruction if it initialized it. One per process, in main().
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const;
  int world_size() const;

 private:
  bool owns_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  static constexpr int kAbortTag = 0x5147;  // "QG"

  // Duplicates `parent` (MPI_Comm_idup, under the deadline: all its ranks must construct one).
  explicit MpiCommunicator(MPI_Comm parent = MPI_COMM_WORLD, CommOptions options = {});
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "mpi"; }
  void allreduce_sum(std::span<float> data) override;
  void allgatherv(std::span<const std::byte> mine, ByteBlocks& all) override;
  void alltoallv(const ByteBlocks& send, ByteBlocks& recv) override;
  void broadcast(std::span<std::byte> data, int root) override;
  void barrier() override;
  void abort(std::string_view reason) override;
  const TrafficCounters& traffic() const override { return traffic_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Failure {
    bool timeout = false;
    int rank = -1;
    std::string reason;
  };
  // Everything a pending nonblocking operation may still touch: MPI needs the buffers and the
  // count/displacement arrays until completion.
  struct Stage {
    std::vector<MPI_Request> requests;  // in flight in the current collective
    std::vector<std::byte> send, recv;
    std::vector<float> floats;
    std::vector<uint64_t> sizes_out, sizes_in;
    std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
  };
  static constexpr int kAllreduceTag = 1;

  Clock::time_point begin(const char* op);
  // Runs one collective: a fresh deadline, and on failure the stage kept alive if MPI still
  // holds part of it, and an abort of the peers if the failure was not a communication one.
  template <typename Body>
  void guarded(const char* op, Body&& body);
  MPI_Request* new_request();  // a slot in stage_.requests
  // Polls stage_.requests[first, first + count) to completion; `peer` (or -1) names whom a
  // timeout waited for.
  void wait(size_t first, size_t count, const char* op, Clock::time_point deadline, int peer);
  void wait_last(const char* op, Clock::time_point deadline);
  void check(int code, const char* op);
  void poll_abort(const char* op);
  [[noreturn]] void throw_failure(const char* op) const;
  [[noreturn]] void timed_out(const char* op, int peer);
  void notify_peers(bool timeout, const std::string& reason);
  std::string where(const char* op) const;

  MPI_Comm* comm_ = nullptr;  // heap: MPI_Comm_idup may write it after a failed constructor
  int rank_ = 0;
  int size_ = 1;
  CommOptions options_;
  TrafficCounters traffic_;
  Stage stage_;
  std::vector<Stage> pending_;  // stages of operations abandoned at a timeout or an abort
  std::unique_ptr<std::array<char, 1024>> abort_in_;
  MPI_Request abort_recv_ = MPI_REQUEST_NULL;
  std::unique_ptr<std::string> abort_out_;
  std::vector<MPI_Request> abort_sends_;
  std::optional<Failure> failure_;
};

}  // namespace qgrad
