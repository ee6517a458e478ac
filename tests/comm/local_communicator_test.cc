#include "comm/local/local_communicator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "core/error.h"
#include "tests/comm/cases.h"
#include "tests/support/ranks.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

TEST(BalancedChunk, ContiguousBalancedAndCovering) {
  for (size_t n : {0, 1, 5, 7, 100, 1009}) {
    for (int parts : {1, 2, 3, 4, 7, 8}) {
      size_t next = 0, small = n, large = 0;
      for (int j = 0; j < parts; ++j) {
        const ChunkRange c = balanced_chunk(n, parts, j);
        EXPECT_EQ(c.begin, next);
        EXPECT_LE(c.begin, c.end);
        next = c.end;
        small = std::min(small, c.size());
        large = std::max(large, c.size());
      }
      EXPECT_EQ(next, n);
      EXPECT_LE(large - small, 1u) << n << " / " << parts;
    }
  }
  EXPECT_EQ(balanced_chunk(10, 4, 0).size(), 3u);  // the first n % parts chunks are longer
  EXPECT_EQ(balanced_chunk(10, 4, 3).size(), 2u);
  EXPECT_THROW(balanced_chunk(10, 4, 4), InvalidArgument);
}

TEST(ByteBlocks, LayoutAppendAndBounds) {
  ByteBlocks b;
  EXPECT_EQ(b.count(), 0);
  const size_t sizes[] = {3, 0, 2};
  b.layout(sizes);
  EXPECT_EQ(b.count(), 3);
  EXPECT_EQ(b.block(1).size(), 0u);
  EXPECT_EQ(b.block(2).data(), b.data.data() + 3);
  EXPECT_THROW(b.block(3), InvalidArgument);
  b.clear();
  b.append(std::vector<std::byte>(4));
  b.append({});
  EXPECT_EQ(b.count(), 2);
  EXPECT_EQ(b.block_bytes(0), 4u);
  EXPECT_EQ(b.block_bytes(1), 0u);
}

class LocalCollectives : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(LocalCollectives, MoveTheRightBytesAndCountThem) {
  const auto [world, n] = GetParam();
  run_ranks(world, [n = n](Communicator& comm) {
    EXPECT_EQ(comm.backend(), "local");
    cases::allreduce_sum(comm, n);
    cases::allgatherv(comm, n);
    cases::alltoallv(comm, n);
    cases::broadcast(comm, n);
    cases::barrier(comm);
  });
}

INSTANTIATE_TEST_SUITE_P(Sweep, LocalCollectives,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7),
                                            ::testing::Values(0, 1, 7, 1009, 100003)),
                         [](const auto& info) {
                           return "w" + std::to_string(std::get<0>(info.param)) + "_n" +
                                  std::to_string(std::get<1>(info.param));
                         });

class LocalFailures : public ::testing::TestWithParam<int> {};

TEST_P(LocalFailures, ThrowingRankAbortsItsPeersPromptly) {
  const auto timeout = 5000ms;
  try {
    run_ranks(GetParam(), [&](Communicator& comm) { cases::throwing_rank(comm, timeout); },
              {.timeout = timeout});
    ADD_FAILURE() << "run_ranks did not rethrow";
  } catch (const std::runtime_error& e) {
    // The root cause, not a peer's CommError.
    EXPECT_THAT(e.what(), HasSubstr("injected failure"));
    EXPECT_EQ(dynamic_cast<const CommError*>(&e), nullptr);
  }
}

TEST_P(LocalFailures, SilentRankMakesPeersTimeOut) {
  const auto timeout = 300ms;
  // The body checks that each waiting rank catches TimeoutError in time.
  run_ranks(GetParam(), [&](Communicator& comm) { cases::silent_rank(comm, timeout); },
            {.timeout = timeout});
}

INSTANTIATE_TEST_SUITE_P(Worlds, LocalFailures, ::testing::Values(2, 3, 4, 7));

TEST(LocalHub, TimeoutNamesOperationRankAndMissingPeer) {
  LocalHub hub(3, {.timeout = 100ms});
  std::thread quiet([&] {
    // Rank 1 reaches the barrier; rank 2 never comes.
    LocalCommunicator comm(hub, 1);
    EXPECT_THROW(comm.barrier(), TimeoutError);
  });
  LocalCommunicator comm(hub, 0);
  try {
    comm.barrier();
    ADD_FAILURE() << "barrier returned";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("barrier"));
    EXPECT_THAT(e.what(), HasSubstr("rank 0"));
    EXPECT_THAT(e.what(), HasSubstr("rank(s) 2"));
  }
  quiet.join();
  EXPECT_TRUE(hub.aborted());
  // A late rank learns of it at once instead of waiting out its own timeout.
  LocalCommunicator late(hub, 2);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(late.barrier(), TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 50ms);
}

TEST(LocalHub, AbortFromAnotherThreadWakesWaitingRanks) {
  LocalHub hub(3, {.timeout = 10s});
  std::atomic<int> woken{0};
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      LocalCommunicator comm(hub, r);
      try {
        std::vector<float> v(5, 1.0f);
        comm.allreduce_sum(v);
      } catch (const CommError& e) {
        EXPECT_THAT(e.what(), HasSubstr("rank 2 aborted: operator pressed stop"));
        ++woken;
      }
    });
  }
  std::this_thread::sleep_for(20ms);
  LocalCommunicator(hub, 2).abort("operator pressed stop");
  for (auto& t : ranks) t.join();
  EXPECT_EQ(woken.load(), 2);
}

TEST(LocalHub, MismatchedCallsFailOnEveryRank) {
  std::atomic<int> failures{0};
  EXPECT_THROW(run_ranks(2,
                         [&](Communicator& comm) {
                           try {
                             if (comm.rank() == 0) {
                               comm.barrier();
                             } else {
                               std::vector<float> v(3);
                               comm.allreduce_sum(v);
                             }
                           } catch (const CommError& e) {
                             EXPECT_THAT(e.what(), HasSubstr("mismatched call"));
                             ++failures;
                             throw;
                           }
                         }),
               CommError);
  EXPECT_EQ(failures.load(), 2);
  EXPECT_THROW(run_ranks(2,
                         [&](Communicator& comm) {
                           std::vector<float> v(comm.rank() == 0 ? 3 : 4);
                           comm.allreduce_sum(v);
                         }),
               CommError);
  EXPECT_THROW(run_ranks(3,
                         [&](Communicator& comm) {
                           std::vector<std::byte> v(4);
                           comm.broadcast(v, comm.rank() == 2 ? 1 : 0);
                         }),
               CommError);
}

TEST(LocalHub, BadArgumentsFailEveryRank) {
  // The same bad root everywhere: each rank finds it after the post and throws InvalidArgument.
  std::atomic<int> invalid{0};
  EXPECT_THROW(run_ranks(2,
                         [&](Communicator& comm) {
                           std::vector<std::byte> v(2);
                           try {
                             comm.broadcast(v, 5);
                           } catch (const InvalidArgument&) {
                             ++invalid;
                             throw;
                           }
                         }),
               InvalidArgument);
  EXPECT_EQ(invalid.load(), 2);
  // One rank with a wrong number of send blocks: a mismatched call on every rank.
  EXPECT_THROW(run_ranks(2,
                         [&](Communicator& comm) {
                           ByteBlocks send, recv;
                           send.clear();
                           for (int j = 0; j < comm.size() + comm.rank(); ++j) send.append({});
                           comm.alltoallv(send, recv);
                         }),
               CommError);
  EXPECT_THROW(LocalHub(0), InvalidArgument);
  EXPECT_THROW(LocalHub(2, {.timeout = 0ms}), InvalidArgument);
  LocalHub hub(2);
  EXPECT_THROW(LocalCommunicator(hub, 2), InvalidArgument);
}

TEST(RunRanks, RethrowsTheFirstExceptionWithItsType) {
  EXPECT_THROW(run_ranks(3,
                         [](Communicator& comm) {
                           if (comm.rank() == 1) throw InvalidArgument("bad input on rank 1");
                           comm.barrier();
                         }),
               InvalidArgument);
  // No exception: returns normally, every rank ran.
  std::atomic<int> ran{0};
  run_ranks(4, [&](Communicator&) { ++ran; });
  EXPECT_EQ(ran.load(), 4);
}

}  // namespace
}  // namespace qgrad
