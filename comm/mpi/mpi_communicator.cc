#include "comm/mpi/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <thread>

#include "core/error.h"

namespace qgrad {
namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return detail::concat("error ", code);
  return std::string(text, len);
}

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

// MPI wants a valid address even for zero counts.
template <typename T>
T* address(std::vector<T>& v) {
  static T dummy{};
  return v.empty() ? &dummy : v.data();
}

int to_int(uint64_t n, const char* what) {
  QGRAD_CHECK(n <= static_cast<uint64_t>(INT_MAX), what, " of ", n,
              " bytes exceeds the MPI limit of INT_MAX bytes per call");
  return static_cast<int>(n);
}

// The int counts and displacements of blocks of `sizes` bytes laid end to end, as the
// v-collectives take them; returns the total. `whole` and `block` name what overflows an int.
uint64_t lay_out_blocks(const std::vector<uint64_t>& sizes, std::vector<int>& counts,
                        std::vector<int>& displs, const char* whole, const char* block) {
  uint64_t total = 0;
  counts.resize(sizes.size());
  displs.resize(sizes.size());
  for (size_t p = 0; p < sizes.size(); ++p) {
    displs[p] = to_int(total, whole);
    counts[p] = to_int(sizes[p], block);
    total += sizes[p];
  }
  to_int(total, whole);
  return total;
}

// Hands the received bytes to `out` as blocks at `displs` (no copy: the buffers are swapped).
void take_blocks(std::vector<std::byte>& received, const std::vector<int>& displs, uint64_t total,
                 ByteBlocks& out) {
  out.offsets.resize(displs.size() + 1);
  for (size_t p = 0; p < displs.size(); ++p) out.offsets[p] = displs[p];
  out.offsets[displs.size()] = total;
  std::swap(out.data, received);
}

}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) throw CommError("MPI_Init_thread failed: " + mpi_error_text(rc));
    owns_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiRuntime::~MpiRuntime() {
  if (owns_ && !mpi_finalized()) MPI_Finalize();
}

int MpiRuntime::world_rank() const {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int MpiRuntime::world_size() const {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

MpiCommunicator::MpiCommunicator(MPI_Comm parent, CommOptions options) : options_(options) {
  QGRAD_CHECK(options.timeout.count() > 0, "MpiCommunicator: timeout must be positive, got ",
              options.timeout.count(), " ms");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized || mpi_finalized()) {
    throw CommError("MpiCommunicator: MPI is not initialized (create an MpiRuntime in main)");
  }
  int parent_rank = 0;
  MPI_Comm_rank(parent, &parent_rank);
  rank_ = parent_rank;
  auto* comm = new MPI_Comm(MPI_COMM_NULL);
  MPI_Request request = MPI_REQUEST_NULL;
  int rc = MPI_Comm_idup(parent, comm, &request);
  if (rc != MPI_SUCCESS) {
    delete comm;
    throw CommError("MPI_Comm_idup failed: " + mpi_error_text(rc));
  }
  const auto deadline = Clock::now() + options_.timeout;
  for (int done = 0; !done;) {
    rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) throw CommError("MPI_Comm_idup failed: " + mpi_error_text(rc));
    if (!done && Clock::now() >= deadline) {
      // `comm` stays allocated: MPI may still write the new handle into it.
      throw TimeoutError(detail::concat(
          "MpiCommunicator construction (MPI_Comm_idup) timed out "
          "after ",
          options_.timeout.count(), " ms on rank ", parent_rank, ": a peer never joined"));
    }
    if (!done) std::this_thread::yield();
  }
  comm_ = comm;
  MPI_Comm_set_errhandler(*comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(*comm_, &rank_);
  MPI_Comm_size(*comm_, &size_);
  abort_in_ = std::make_unique<std::array<char, 1024>>();
  rc = MPI_Irecv(abort_in_->data(), static_cast<int>(abort_in_->size()), MPI_CHAR, MPI_ANY_SOURCE,
                 kAbortTag, *comm_, &abort_recv_);
  if (rc != MPI_SUCCESS)
    throw CommError("MPI_Irecv of the abort channel failed: " + mpi_error_text(rc));
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ == nullptr || mpi_finalized()) return;
  if (abort_recv_ != MPI_REQUEST_NULL) {
    MPI_Cancel(&abort_recv_);
    MPI_Wait(&abort_recv_, MPI_STATUS_IGNORE);
  }
  bool all_done = true;
  for (Stage& stage : pending_) {
    int done = 0;
    MPI_Testall(static_cast<int>(stage.requests.size()), stage.requests.data(), &done,
                MPI_STATUSES_IGNORE);
    if (!done) {
      all_done = false;
      new Stage(std::move(stage));  // leaked on purpose: MPI may still write into it
    }
  }
  for (MPI_Request& r : abort_sends_) {
    int done = 0;
    MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    if (!done) {
      all_done = false;
      MPI_Request_free(&r);  // allowed for sends; the message buffer is leaked below
    }
  }
  if (!all_done) {
    static_cast<void>(abort_out_.release());  // a send may still read it
    return;  // the duplicate stays allocated while operations on it are pending
  }
  MPI_Comm_free(comm_);
  delete comm_;
}

std::string MpiCommunicator::where(const char* op) const {
  return detail::concat(op, " on rank ", rank_, " of ", size_, ": ");
}

void MpiCommunicator::throw_failure(const char* op) const {
  if (failure_->rank == rank_) {
    if (failure_->timeout) {
      throw TimeoutError(
          detail::concat(where(op), "this rank timed out earlier (", failure_->reason, ")"));
    }
    throw CommError(
        detail::concat(where(op), "this rank's communicator is broken (", failure_->reason, ")"));
  }
  if (failure_->timeout) {
    throw TimeoutError(
        detail::concat(where(op), "rank ", failure_->rank, " timed out (", failure_->reason, ")"));
  }
  throw CommError(
      detail::concat(where(op), "rank ", failure_->rank, " aborted: ", failure_->reason));
}

void MpiCommunicator::poll_abort(const char* op) {
  if (failure_) throw_failure(op);
  int arrived = 0;
  MPI_Status status;
  const int rc = MPI_Test(&abort_recv_, &arrived, &status);
  if (rc != MPI_SUCCESS) {
    failure_ = Failure{false, rank_, "the abort channel failed: " + mpi_error_text(rc)};
    throw_failure(op);
  }
  if (!arrived) return;
  int len = 0;
  MPI_Get_count(&status, MPI_CHAR, &len);
  const std::string message(abort_in_->data(), std::max(len, 0));
  const bool timeout = !message.empty() && message[0] == 'T';
  failure_ = Failure{timeout, status.MPI_SOURCE, message.empty() ? "" : message.substr(1)};
  throw_failure(op);
}

void MpiCommunicator::notify_peers(bool timeout, const std::string& reason) {
  abort_out_ = std::make_unique<std::string>(1, timeout ? 'T' : 'A');
  abort_out_->append(reason.substr(0, abort_in_->size() - 1));
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    MPI_Request r = MPI_REQUEST_NULL;
    if (MPI_Isend(abort_out_->data(), static_cast<int>(abort_out_->size()), MPI_CHAR, peer,
                  kAbortTag, *comm_, &r) == MPI_SUCCESS) {
      abort_sends_.push_back(r);
    }
  }
  // Small messages leave eagerly; a bounded wait lets them go before the caller moves on.
  const auto until =
      Clock::now() + std::min<Clock::duration>(options_.timeout, std::chrono::seconds(1));
  int done = 0;
  while (!abort_sends_.empty() && Clock::now() < until) {
    MPI_Testall(static_cast<int>(abort_sends_.size()), abort_sends_.data(), &done,
                MPI_STATUSES_IGNORE);
    if (done) break;
    std::this_thread::yield();
  }
}

void MpiCommunicator::abort(std::string_view reason) {
  if (failure_) return;  // peers know already, from whoever broke it first
  failure_ = Failure{false, rank_, std::string(reason)};
  try {
    notify_peers(false, failure_->reason);
  } catch (...) {
    // abort() must not throw; peers will time out instead.
  }
}

void MpiCommunicator::timed_out(const char* op, int peer) {
  const std::string waiting =
      peer >= 0 ? detail::concat(" waiting for rank ", peer)
                : std::string(" (a collective: MPI does not tell which peer is missing)");
  const std::string what = detail::concat(op, " timed out after ", options_.timeout.count(),
                                          " ms on rank ", rank_, " of ", size_, waiting);
  failure_ = Failure{true, rank_, what};
  notify_peers(true, what);
  throw TimeoutError(what);
}

void MpiCommunicator::check(int code, const char* op) {
  if (code == MPI_SUCCESS) return;
  const std::string what = detail::concat(where(op), "MPI error: ", mpi_error_text(code));
  if (!failure_) {
    failure_ = Failure{false, rank_, what};
    notify_peers(false, what);
  }
  throw CommError(what);
}

MpiCommunicator::Clock::time_point MpiCommunicator::begin(const char* op) {
  poll_abort(op);
  return Clock::now() + options_.timeout;
}

MPI_Request* MpiCommunicator::new_request() {
  stage_.requests.push_back(MPI_REQUEST_NULL);
  return &stage_.requests.back();
}

void MpiCommunicator::wait(size_t first, size_t count, const char* op, Clock::time_point deadline,
                           int peer) {
  MPI_Request* requests = stage_.requests.data() + first;
  for (unsigned polls = 1;; ++polls) {
    int done = 0;
    check(MPI_Testall(static_cast<int>(count), requests, &done, MPI_STATUSES_IGNORE), op);
    if (done) return;
    if (polls % 64 == 0) {
      poll_abort(op);
      if (Clock::now() >= deadline) timed_out(op, peer);
    }
    std::this_thread::yield();
  }
}

void MpiCommunicator::wait_last(const char* op, Clock::time_point deadline) {
  wait(stage_.requests.size() - 1, 1, op, deadline, -1);
}

template <typename Body>
void MpiCommunicator::guarded(const char* op, Body&& body) {
  try {
    body(begin(op));
  } catch (...) {
    // Operations that never completed cannot be cancelled: their buffers must outlive them.
    const bool pending = std::any_of(stage_.requests.begin(), stage_.requests.end(),
                                     [](MPI_Request r) { return r != MPI_REQUEST_NULL; });
    if (pending) {
      pending_.push_back(std::move(stage_));
      stage_ = Stage{};
    }
    stage_.requests.clear();
    try {
      throw;
    } catch (const CommError&) {
      throw;
    } catch (...) {
      // An argument error found after the collective began leaves peers waiting: release them.
      abort(detail::concat("rank ", rank_, " failed in ", op, ": ",
                           describe_exception(std::current_exception())));
      throw;
    }
  }
  stage_.requests.clear();
  ++traffic_.calls;
}

void MpiCommunicator::allreduce_sum(std::span<float> data) {
  // allreduce_schedule of comm/communicator.h over point-to-point messages, in segments so that
  // adding a received segment overlaps the transfer of the next. Measured on 2 local ranks and 25M
  // floats the ring beat both MPI_Allreduce and MPI_Iallreduce (tuned blocking 0.046 s, libnbc
  // 0.092 s, the ring 0.023 s before staging); and it knows which peer it waits for.
  //
  // MPI only ever reads and writes the stage (it must outlive operations that a failure leaves
  // pending, and the caller's buffer may not). Received partials land in the stage; a reduce
  // writes own + received both into `data` (this rank's partial, which a later step adds to
  // again) and into the stage (which a later step sends from); a gather copies what came in to
  // `data`. So only the first step's `out`, which leaves raw, is copied in, and finished ranges
  // reach `data` while the next segment is in flight. An exchange step (the same range out and
  // in) receives into a second half of the stage, since its `out` is still being sent.
  constexpr size_t kSegment = size_t{1} << 18;  // floats
  const size_t count = data.size();
  uint64_t sent = 0, received = 0;
  guarded("allreduce_sum", [&](Clock::time_point deadline) {
    if (size_ == 1 || count == 0) return;
    Stage& s = stage_;
    const std::vector<AllreduceStep> steps = allreduce_schedule(count, size_, rank_);
    const bool exchanges = std::any_of(steps.begin(), steps.end(),
                                       [](const AllreduceStep& st) { return st.exchange(); });
    s.floats.resize(exchanges ? 2 * count : count);
    const ChunkRange first = steps.front().out;
    std::copy(data.begin() + first.begin, data.begin() + first.end, s.floats.begin() + first.begin);
    for (const AllreduceStep& step : steps) {
      const ChunkRange out = step.out, in = step.in;
      float* const landing = s.floats.data() + (step.exchange() ? count : 0);  // + element index
      s.requests.clear();
      for (size_t o = out.begin; o < out.end; o += kSegment) {
        check(MPI_Isend(s.floats.data() + o, static_cast<int>(std::min(kSegment, out.end - o)),
                        MPI_FLOAT, step.peer_out, kAllreduceTag, *comm_, new_request()),
              "allreduce_sum");
      }
      const size_t sends = s.requests.size();
      for (size_t o = in.begin; o < in.end; o += kSegment) {
        check(MPI_Irecv(landing + o, static_cast<int>(std::min(kSegment, in.end - o)), MPI_FLOAT,
                        step.peer_in, kAllreduceTag, *comm_, new_request()),
              "allreduce_sum");
      }
      // An exchange step's sums overwrite the partial it sends: the sends must be done first.
      if (step.exchange()) wait(0, sends, "allreduce_sum", deadline, step.peer_out);
      size_t k = sends;
      for (size_t o = in.begin; o < in.end; o += kSegment, ++k) {
        wait(k, 1, "allreduce_sum", deadline, step.peer_in);
        const size_t e = std::min(o + kSegment, in.end);
        if (step.reduce) {
          // Own + received, as in the local backend.
          for (size_t i = o; i < e; ++i) data[i] = s.floats[i] = data[i] + landing[i];
        } else {
          std::copy(landing + o, landing + e, data.begin() + o);
        }
      }
      wait(0, sends, "allreduce_sum", deadline, step.peer_out);
      sent += out.size();
      received += in.size();
    }
  });
  traffic_.bytes_sent += 4 * sent;
  traffic_.bytes_received += 4 * received;
}

void MpiCommunicator::allgatherv(std::span<const std::byte> mine, ByteBlocks& all) {
  uint64_t total = 0;
  guarded("allgatherv", [&](Clock::time_point deadline) {
    Stage& s = stage_;
    s.sizes_out.assign(1, mine.size());
    s.sizes_in.assign(size_, 0);
    check(MPI_Iallgather(s.sizes_out.data(), 1, MPI_UINT64_T, s.sizes_in.data(), 1, MPI_UINT64_T,
                         *comm_, new_request()),
          "allgatherv");
    wait_last("allgatherv", deadline);
    total = lay_out_blocks(s.sizes_in, s.recv_counts, s.recv_displs,
                           "allgatherv: the gathered blocks", "allgatherv: a block");
    s.send.assign(mine.begin(), mine.end());
    s.recv.resize(total);
    check(MPI_Iallgatherv(address(s.send), static_cast<int>(s.send.size()), MPI_BYTE,
                          address(s.recv), s.recv_counts.data(), s.recv_displs.data(), MPI_BYTE,
                          *comm_, new_request()),
          "allgatherv");
    wait_last("allgatherv", deadline);
    take_blocks(s.recv, s.recv_displs, total, all);
  });
  traffic_.bytes_sent += uint64_t(size_ - 1) * mine.size();
  traffic_.bytes_received += total - mine.size();
}

void MpiCommunicator::alltoallv(const ByteBlocks& send, ByteBlocks& recv) {
  uint64_t sent = 0, received = 0;
  guarded("alltoallv", [&](Clock::time_point deadline) {
    QGRAD_CHECK(&send != &recv, "alltoallv: send and recv must be different objects");
    QGRAD_CHECK(send.count() == size_, "alltoallv on rank ", rank_, ": ", send.count(),
                " send blocks for a world of ", size_);
    Stage& s = stage_;
    s.sizes_out.resize(size_);
    s.sizes_in.assign(size_, 0);
    s.send_counts.resize(size_);
    s.send_displs.resize(size_);
    for (int p = 0; p < size_; ++p) {
      s.sizes_out[p] = send.block_bytes(p);
      s.send_counts[p] = to_int(s.sizes_out[p], "alltoallv: a block");
      s.send_displs[p] = to_int(send.offsets[p], "alltoallv: the send blocks");
      if (p != rank_) sent += s.sizes_out[p];
    }
    to_int(send.offsets[size_], "alltoallv: the send blocks");
    check(MPI_Ialltoall(s.sizes_out.data(), 1, MPI_UINT64_T, s.sizes_in.data(), 1, MPI_UINT64_T,
                        *comm_, new_request()),
          "alltoallv");
    wait_last("alltoallv", deadline);
    const uint64_t total = lay_out_blocks(s.sizes_in, s.recv_counts, s.recv_displs,
                                          "alltoallv: the received blocks", "alltoallv: a block");
    received = total - s.sizes_in[rank_];
    s.send.assign(send.data.begin(), send.data.begin() + send.offsets[size_]);
    s.recv.resize(total);
    check(MPI_Ialltoallv(address(s.send), s.send_counts.data(), s.send_displs.data(), MPI_BYTE,
                         address(s.recv), s.recv_counts.data(), s.recv_displs.data(), MPI_BYTE,
                         *comm_, new_request()),
          "alltoallv");
    wait_last("alltoallv", deadline);
    take_blocks(s.recv, s.recv_displs, total, recv);
  });
  traffic_.bytes_sent += sent;
  traffic_.bytes_received += received;
}

void MpiCommunicator::broadcast(std::span<std::byte> data, int root) {
  guarded("broadcast", [&](Clock::time_point deadline) {
    QGRAD_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is outside the world of ",
                size_);
    const int count = to_int(data.size(), "broadcast");
    stage_.recv.assign(data.begin(), data.end());
    check(MPI_Ibcast(address(stage_.recv), count, MPI_BYTE, root, *comm_, new_request()),
          "broadcast");
    wait_last("broadcast", deadline);
    if (rank_ != root) std::copy(stage_.recv.begin(), stage_.recv.end(), data.begin());
  });
  if (rank_ == root) {
    traffic_.bytes_sent += uint64_t(size_ - 1) * data.size();
  } else {
    traffic_.bytes_received += data.size();
  }
}

void MpiCommunicator::barrier() {
  guarded("barrier", [&](Clock::time_point deadline) {
    check(MPI_Ibarrier(*comm_, new_request()), "barrier");
    wait_last("barrier", deadline);
  });
}

}  // namespace qgrad
