// The Communicator interface: the few collectives that the compressed-allreduce strategies need
// (DESIGN.md section 3), written once and implemented per backend: comm/local (ranks as threads
// in one process), comm/mpi (Open MPI). The strategies in comm/strategies never see a backend.
//
// Contracts shared by every backend:
// - Collectives are blocking and must be called by every rank of the communicator in the same
//   order with matching arguments (like MPI). Ranks are 0..size()-1.
// - Every blocking call honours CommOptions::timeout, measured from the moment the call starts.
//   When it expires the call throws TimeoutError naming the operation, this rank and, where the
//   backend knows it, the peer it was waiting for. A timeout breaks the communicator: the rank
//   that timed out also aborts it (its peers throw instead of waiting), and every later call on
//   it throws. Build a new communicator to go on.
// - abort(reason) wakes every peer: a peer blocked in (or later entering) a collective throws
//   CommError naming the rank that aborted and the reason. After abort() or any CommError the
//   communicator is unusable.
// - traffic() counts the payload bytes this rank sent to and received from other ranks: a block
//   a rank keeps for itself is not counted, nor is the size metadata of the v-collectives.
//   Backends that cannot observe the wire (MPI) count the logical volume of the algorithm named
//   in the backend's header.
// Thread-safety: a Communicator is used by one thread at a time (MPI_THREAD_SERIALIZED).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace qgrad {

struct CommOptions {
  // Deadline of every blocking call, counted from the call's start.
  std::chrono::milliseconds timeout{60'000};
};

struct TrafficCounters {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t calls = 0;  // collectives that completed
};

// Variable-size byte blocks in one buffer: block r is data[offsets[r], offsets[r + 1]).
// Used as the per-rank send and receive sides of allgatherv and alltoallv.
struct ByteBlocks {
  std::vector<std::byte> data;
  std::vector<size_t> offsets;  // count() + 1 entries, offsets[0] == 0

  int count() const { return offsets.empty() ? 0 : static_cast<int>(offsets.size()) - 1; }
  size_t block_bytes(int r) const;
  std::span<const std::byte> block(int r) const;
  std::span<std::byte> block(int r);
  // Lays out blocks of the given sizes; their contents are unspecified.
  void layout(std::span<const size_t> sizes);
  // Starts an empty list of blocks; append() adds them in order.
  void clear();
  void append(std::span<const std::byte> bytes);
};

// The balanced split used by every chunked algorithm in comm/: n elements in `parts`
// contiguous chunks, the first n % parts of which hold one element more (so chunks are empty
// when n < parts). Chunk j is [begin, end).
struct ChunkRange {
  size_t begin = 0;
  size_t end = 0;
  size_t size() const { return end - begin; }
};
ChunkRange balanced_chunk(size_t n, int parts, int j);

// The ring allreduce that the local and the MPI backends both run for allreduce_sum, so that they
// give the same bits. The buffer is cut in balanced_chunk(N, n, j) chunks c_j (indices mod n).
// Reduce-scatter, steps s = 0..n-2: rank r sends its partial c_{r-s-1} to rank r+1, receives
// c_{r-s-2} from rank r-1 and adds it to its own (own + received). Afterwards rank r holds c_r
// summed over the ranks in the order x_{r+1} + x_{r+2} + ... + x_r. Allgather, steps s = 0..n-2:
// rank r sends c_{r-s} to rank r+1 and receives c_{r-s-1} from rank r-1. Rank r sends
// 2N - |c_r| - |c_{r+1}| floats and receives 2N - |c_{r-1}| - |c_r|: 2(n-1)/n * N each way when
// n divides N, the bandwidth optimum.
// The chunk of ring position i (any integer; taken mod n).
inline ChunkRange ring_chunk(size_t n, int parts, long i) {
  return balanced_chunk(n, parts, static_cast<int>(((i % parts) + parts) % parts));
}

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "local", "mpi", ... (decorators report the backend they wrap).
  virtual std::string_view backend() const = 0;

  // data = elementwise sum over ranks, bitwise identical on every rank: the fp32 baseline.
  // Every rank passes the same data.size(). (local and mpi: the ring above.)
  virtual void allreduce_sum(std::span<float> data) = 0;
  // all.block(r) = rank r's `mine`; sizes may differ between ranks. `mine` must not alias `all`.
  virtual void allgatherv(std::span<const std::byte> mine, ByteBlocks& all) = 0;
  // send.count() == size(); afterwards recv.block(r) = rank r's send.block(rank()).
  // `send` and `recv` must be different objects.
  virtual void alltoallv(const ByteBlocks& send, ByteBlocks& recv) = 0;
  // Every rank's data becomes root's; every rank passes the same data.size().
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;

  // Breaks the communicator on every rank (see the contracts above). Never throws, never blocks
  // for longer than a short bounded time.
  virtual void abort(std::string_view reason) = 0;
  virtual const TrafficCounters& traffic() const = 0;
};

}  // namespace qgrad
