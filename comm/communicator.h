// The Communicator interface: the few collectives that the compressed-allreduce strategies need
// (docs/architecture.md, "Communicator"), written once and implemented per backend: comm/local
// (ranks as threads in one process), comm/mpi (Open MPI). The strategies in comm/strategies never
// see a backend.
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

// The allreduce that the local and the MPI backends both run for allreduce_sum, so that they give
// the same bits: a list of steps, each sending one range of the buffer to one peer and receiving
// one range from one peer (both may be empty). In a reduce step the received partial is added to
// this rank's own (own + received, in place); in a gather step it replaces it. Within a step a
// rank's `out` and `in` are disjoint or the same range (an exchange: both sides send their
// partial as it was before the step), and rank r's `out` is the `in` of its peer_out's step.
// - World a power of two (2, 4, 8, ...), every rank computes each element by the same pairing
//   tree: v_i = x_i; for d = W/2 down to 1: v_i = v_i + v_{i+d} for i < d; the sum is v_0. So
//   all ranks hold the same bits, whichever of the two schedules below runs:
//   - Up to kAllreduceLatencyBoundFloats floats: recursive doubling, log2(W) exchange steps at
//     d = W/2, ..., 1 with rank r ^ d, each sending the whole partial (log2(W) * N floats each
//     way): half the dependent steps of the other, which is what counts for small buffers.
//   - Larger: recursive halving, then recursive doubling (Rabenseifner). Reduce steps at
//     d = W/2, ..., 1: rank r and r ^ d split the range they share at a chunk boundary; the rank
//     with bit d clear keeps the lower part and sends the upper, its partner the reverse.
//     Afterwards rank r holds chunk balanced_chunk(N, W, r) summed; gather steps at d = 1, 2,
//     ..., W/2 swap the ranges held. 2 log2(W) dependent steps (4 at W = 4, against 6 for the
//     ring), 2(W-1)/W * N floats each way when W divides N.
// - Any other world: the ring. The buffer is cut in balanced_chunk(N, W, j) chunks c_j (indices
//   mod W). Reduce steps s = 0..W-2: rank r sends its partial c_{r-s-1} to rank r+1 and receives
//   c_{r-s-2} from rank r-1. Afterwards rank r holds c_r summed in the order x_{r+1} + x_{r+2} +
//   ... + x_r. Gather steps s = 0..W-2: rank r sends c_{r-s} to r+1 and receives c_{r-s-1}.
//   2(W-1) dependent steps, 2(W-1)/W * N floats each way when W divides N (the bandwidth optimum).
inline constexpr size_t kAllreduceLatencyBoundFloats = 4096;  // 16 KiB
struct AllreduceStep {
  int peer_out = 0;  // sends its `out` range to this rank
  int peer_in = 0;   // receives its `in` range from this rank
  ChunkRange out, in;
  bool reduce = false;  // add what comes in (reduce-scatter) rather than copy it (allgather)
  // `out` and `in` are the same non-empty range: what comes in must not overwrite the partial
  // that goes out.
  bool exchange() const { return out.begin == in.begin && out.end == in.end && in.size() > 0; }
};
// The steps of rank `rank` for a buffer of n floats; empty when world == 1.
std::vector<AllreduceStep> allreduce_schedule(size_t n, int world, int rank);

// Floats rank `rank` sends and receives in allreduce_sum of n floats: the sums of its steps'
// ranges.
struct AllreduceVolume {
  uint64_t sent = 0;
  uint64_t received = 0;
};
AllreduceVolume allreduce_volume(size_t n, int world, int rank);

// The ring's chunk of position i (any integer; taken mod parts).
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
  // Every rank passes the same data.size(). (local and mpi: allreduce_schedule above.)
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
