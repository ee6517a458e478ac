// The shared bodies of tests/comm/cases.h over Open MPI: one rank per process, run by CTest as
// mpiexec -np 2/3/4 (tests/CMakeLists.txt). Every rank runs every test in the same order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>

#include "comm/mpi/mpi_communicator.h"
#include "core/error.h"
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
