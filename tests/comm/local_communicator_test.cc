#include "comm/local/local_communicator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <stdexcept>
#include <string>
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

// Runs every rank's schedule on sets: each rank holds, per element, the set of ranks whose data
// its partial contains (a bit mask). Checks that the steps pair up, that a reduce never adds a
// contribution twice, and that every rank ends with every element summed over the world.
void check_schedule(size_t n, int w) {
  std::vector<std::vector<AllreduceStep>> steps(w);
  for (int r = 0; r < w; ++r) steps[r] = allreduce_schedule(n, w, r);
  // A power of two: log2(W) steps for few floats, else 2 log2(W); 2(W-1) for the ring; none alone.
  const bool power_of_two = std::has_single_bit(static_cast<unsigned>(w));
  const size_t log2w = size_t(std::countr_zero(unsigned(w)));
  const size_t expected_steps = w == 1                              ? 0
                                : !power_of_two                     ? 2 * size_t(w - 1)
                                : n <= kAllreduceLatencyBoundFloats ? log2w
                                                                    : 2 * log2w;
  std::vector<std::vector<uint32_t>> held(w, std::vector<uint32_t>(n));
  for (int r = 0; r < w; ++r) std::fill(held[r].begin(), held[r].end(), 1u << r);
  const std::string where = "n " + std::to_string(n) + ", world " + std::to_string(w);
  for (int r = 0; r < w; ++r) ASSERT_EQ(steps[r].size(), expected_steps) << where;
  for (size_t k = 0; k < expected_steps; ++k) {
    std::vector<std::vector<uint32_t>> next = held;
    for (int r = 0; r < w; ++r) {
      const AllreduceStep& s = steps[r][k];
      ASSERT_TRUE(s.peer_in >= 0 && s.peer_in < w && s.peer_in != r) << where;
      const AllreduceStep& from = steps[s.peer_in][k];
      EXPECT_EQ(from.peer_out, r) << where << " step " << k;
      EXPECT_EQ(from.out.begin, s.in.begin) << where << " step " << k;
      EXPECT_EQ(from.out.end, s.in.end) << where << " step " << k;
      EXPECT_EQ(from.reduce, s.reduce) << where << " step " << k;
      EXPECT_TRUE(s.in.end <= s.out.begin || s.out.end <= s.in.begin || s.in.size() == 0 ||
                  s.out.size() == 0 || s.exchange())
          << where << " step " << k << ": in and out overlap without being the same range";
      for (size_t i = s.in.begin; i < s.in.end; ++i) {
        if (s.reduce) {
          EXPECT_EQ(held[r][i] & held[s.peer_in][i], 0u) << where << ": counted twice";
          next[r][i] = held[r][i] | held[s.peer_in][i];
        } else {
          next[r][i] = held[s.peer_in][i];
        }
      }
    }
    held = std::move(next);
  }
  const uint32_t all = (1u << w) - 1;
  for (int r = 0; r < w; ++r) {
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(held[r][i], all) << where << ": rank " << r << " element " << i;
    }
  }
}

TEST(AllreduceSchedule, EveryRankEndsWithTheWholeSumCountedOnce) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{5}, size_t{8}, size_t{1009},
                   kAllreduceLatencyBoundFloats, kAllreduceLatencyBoundFloats + 1, size_t{20011}}) {
    for (int w = 1; w <= 9; ++w) check_schedule(n, w);
  }
  check_schedule(37, 16);
  check_schedule(9001, 16);
  EXPECT_THROW(allreduce_schedule(10, 4, 4), InvalidArgument);
}

TEST(AllreduceSchedule, VolumeIsTheBandwidthOptimumAndMatchesClosedForms) {
  for (int w = 1; w <= 9; ++w) {
    // W divides N, N above the latency-bound size: 2(W-1)/W * N each way, whichever algorithm.
    const size_t n = size_t(w) * 10000;
    for (int r = 0; r < w; ++r) {
      const AllreduceVolume v = allreduce_volume(n, w, r);
      EXPECT_EQ(v.sent, 2 * (n - n / w)) << "world " << w;
      EXPECT_EQ(v.received, 2 * (n - n / w)) << "world " << w;
    }
  }
  for (size_t n :
       {size_t{1}, size_t{7}, size_t{1009}, kAllreduceLatencyBoundFloats + 1, size_t{100003}}) {
    for (int w : {3, 5, 6, 7}) {  // the ring: 2N - |c_r| - |c_{r+1}| out, 2N - |c_{r-1}| - |c_r| in
      for (int r = 0; r < w; ++r) {
        const AllreduceVolume v = allreduce_volume(n, w, r);
        EXPECT_EQ(v.sent, 2 * n - ring_chunk(n, w, r).size() - ring_chunk(n, w, r + 1).size());
        EXPECT_EQ(v.received, 2 * n - ring_chunk(n, w, r - 1).size() - ring_chunk(n, w, r).size());
      }
    }
    for (int w : {2, 4, 8}) {
      const std::string where = "n " + std::to_string(n) + " world " + std::to_string(w);
      const uint64_t log2w = std::countr_zero(unsigned(w));
      for (int r = 0; r < w; ++r) {
        const AllreduceVolume v = allreduce_volume(n, w, r);
        if (n <= kAllreduceLatencyBoundFloats) {  // recursive doubling: the whole buffer each step
          EXPECT_EQ(v.sent, log2w * n) << where;
          EXPECT_EQ(v.received, log2w * n) << where;
          continue;
        }
        // Halving/doubling: the reduce steps send all but the own chunk, the gather steps receive
        // all but it; each gather step at distance d sends the chunks of the rank's group of d
        // (the range a reduce step received).
        uint64_t groups = 0;
        for (int d = 1; d < w; d *= 2) {
          const int first = r & ~(d - 1);
          groups += balanced_chunk(n, w, first + d - 1).end - balanced_chunk(n, w, first).begin;
        }
        const uint64_t rest = n - balanced_chunk(n, w, r).size();
        EXPECT_EQ(v.sent, rest + groups) << where << " rank " << r;
        EXPECT_EQ(v.received, rest + groups) << where << " rank " << r;
      }
    }
  }
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
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7, 8),
                                            ::testing::Values(0, 1, 7, 1009, 4096, 4097, 100003)),
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
