// The shared bodies of tests/comm/cases.h over Open MPI: one rank per process, run by CTest as
// mpiexec -np 2/3/4 (tests/CMakeLists.txt). Every rank runs every test in the same order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "comm/local/local_communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "core/error.h"
#include "core/synthetic.h"
#include "tests/comm/cases.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

TEST(MpiCollectives, MoveTheRightBytesAndCountThem) {
  for (size_t n : {0, 1, 7, 1009, 100003}) {
    MpiCommunicator comm(MPI_COMM_WORLD, {.timeout = 20s});
    EXPECT_EQ(comm.backend(), "mpi");
    EXPECT_EQ(comm.size(), world_size());
    cases::allreduce_sum(comm, n);
    cases::allgatherv(comm, n);
    cases::alltoallv(comm, n);
    cases::broadcast(comm, n);
    cases::barrier(comm);
  }
}

// The allreduce of comm/communicator.h sums in one documented order, so Open MPI ranks and
// threads of the local backend must agree to the bit. Each MPI rank replays the whole world on
// threads. The sizes take both schedules of a power-of-two world (recursive doubling up to
// kAllreduceLatencyBoundFloats, halving/doubling above); the largest cuts every range into
// several of the MPI backend's 2^18-float segments.
TEST(MpiCollectives, AllreduceHasTheBitsOfTheLocalBackend) {
  const int w = world_size();
  MpiCommunicator comm(MPI_COMM_WORLD, {.timeout = 20s});
  for (size_t n : {size_t{5}, size_t{1009}, kAllreduceLatencyBoundFloats,
                   kAllreduceLatencyBoundFloats + 1, size_t{1100003}}) {
    const auto input = [n](int r) {
      std::vector<float> v(n);
      fill_synthetic(v, SyntheticDistribution::kLogNormal, 500 + r);
      for (size_t i = 0; i < n; i += 2) v[i] = -v[i];  // mixed signs: rounding depends on order
      return v;
    };
    std::vector<float> mine = input(comm.rank());
    comm.allreduce_sum(mine);
    std::vector<float> local;
    run_local(w, [&](Communicator& c) {
      std::vector<float> v = input(c.rank());
      c.allreduce_sum(v);
      if (c.rank() == comm.rank()) local = std::move(v);
    });
    ASSERT_EQ(local.size(), n);
    EXPECT_EQ(std::memcmp(local.data(), mine.data(), 4 * n), 0) << "n " << n;
  }
}

TEST(MpiFailures, ThrowingRankAbortsItsPeersPromptly) {
  const auto timeout = 5s;
  MpiCommunicator comm(MPI_COMM_WORLD, {.timeout = timeout});
  bool threw = false;
  try {
    cases::throwing_rank(comm, timeout);
  } catch (const std::runtime_error& e) {
    threw = true;
    EXPECT_THAT(e.what(), HasSubstr("injected failure"));
    comm.abort(e.what());  // what a worker's main loop does with an exception
  }
  EXPECT_EQ(threw, comm.rank() == comm.size() - 1);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiFailures, SilentRankMakesPeersTimeOut) {
  const auto timeout = 1000ms;
  MpiCommunicator comm(MPI_COMM_WORLD, {.timeout = timeout});
  cases::silent_rank(comm, timeout);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiFailures, ConstructionTimesOutWhenAPeerNeverJoins) {
  // A private parent, so the pending duplicate cannot pair with a later test's.
  MPI_Comm parent;
  MPI_Comm_dup(MPI_COMM_WORLD, &parent);
  int rank = 0, size = 1;
  MPI_Comm_rank(parent, &rank);
  MPI_Comm_size(parent, &size);
  const auto t0 = std::chrono::steady_clock::now();
  if (rank != size - 1) {
    EXPECT_THROW(MpiCommunicator(parent, {.timeout = 500ms}), TimeoutError);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == size - 1) {
    // Joining late completes the peers' abandoned duplicate; nothing is left pending.
    MpiCommunicator late(parent, {.timeout = 10s});
    EXPECT_EQ(late.size(), size);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Comm_free(&parent);
}

TEST(MpiCommunicator, UnusableAfterAbortWithTheReason) {
  MpiCommunicator comm(MPI_COMM_WORLD, {.timeout = 5s});
  if (comm.rank() == 0) comm.abort("stopping on purpose");
  try {
    comm.barrier();
    ADD_FAILURE() << "barrier after abort returned";
  } catch (const CommError& e) {
    if (comm.rank() == 0) {
      EXPECT_THAT(e.what(), HasSubstr("broken (stopping on purpose)"));
    } else {
      EXPECT_THAT(e.what(), HasSubstr("rank 0 aborted: stopping on purpose"));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

struct Param {
  cases::AllreduceCase c;
};

std::vector<Param> sweep() {
  std::vector<Param> out;
  const char* const codecs[] = {"none",     "fp16", "qsgd", "qsgd:bits=2",   "int8",     "zipml",
                                "terngrad", "topk", "sign", "sign:scale=l1", "test-sign"};
  for (std::string codec : codecs) {
    const bool votes = codec == "sign" || codec == "test-sign";
    std::vector<Strategy> strategies;
    if (codec == "none")
      strategies = {Strategy::kPlain, Strategy::kAllgather, Strategy::kScatterReduce};
    else if (votes)
      strategies = {Strategy::kAllgather, Strategy::kMajority};
    else
      strategies = {Strategy::kAllgather, Strategy::kScatterReduce};
    for (Strategy s : strategies) {
      for (size_t n : {0, 1, 7, 10, 1009, 100003}) out.push_back({{codec, s, n}});
      out.push_back({{codec, s, 1009, true, 2}});
    }
  }
  return out;
}

class MpiCompressedAllreduce : public ::testing::TestWithParam<Param> {};

TEST_P(MpiCompressedAllreduce, MatchesSerialReferenceBitwiseOnEveryRank) {
  std::string why;
  if (!cases::make_codec_or_null(GetParam().c.codec, &why)) GTEST_SKIP() << why;
  MpiCommunicator comm(MPI_COMM_WORLD, {.timeout = 20s});
  cases::compressed_allreduce(comm, GetParam().c);
}

INSTANTIATE_TEST_SUITE_P(Sweep, MpiCompressedAllreduce, ::testing::ValuesIn(sweep()),
                         [](const auto& info) { return cases::case_name(info.param.c, 0); });

}  // namespace
}  // namespace qgrad
