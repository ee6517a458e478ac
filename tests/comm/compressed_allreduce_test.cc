#include "comm/strategies/compressed_allreduce.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <set>

#include "core/codec_registry.h"
#include "core/error.h"
#include "tests/comm/cases.h"
#include "tests/support/ranks.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

const char* const kCodecs[] = {"none",     "fp16", "qsgd", "qsgd:bits=2",   "int8",     "zipml",
                               "terngrad", "topk", "sign", "sign:scale=l1", "test-sign"};

bool votes(const std::string& codec) { return codec == "sign" || codec == "test-sign"; }

std::vector<Strategy> strategies_for(const std::string& codec) {
  if (codec == "none") return {Strategy::kPlain, Strategy::kAllgather, Strategy::kScatterReduce};
  if (votes(codec)) return {Strategy::kAllgather, Strategy::kMajority};
  return {Strategy::kAllgather, Strategy::kScatterReduce};
}

struct Param {
  cases::AllreduceCase c;
  int world;
};

std::vector<Param> sweep() {
  std::vector<Param> out;
  for (const char* codec : kCodecs) {
    for (Strategy s : strategies_for(codec)) {
      for (int world : {1, 2, 3, 4, 7}) {
        for (size_t n : {0, 1, 7, 10, 1009, 10007}) out.push_back({{codec, s, n}, world});
        // Large buckets (many codec buckets per chunk) on an even and an odd world: they cost
        // most of the suite's time, under the sanitizers above all.
        if (world == 2 || world == 7) out.push_back({{codec, s, 100003}, world});
      }
    }
    for (int world : {2, 3}) out.push_back({{codec, Strategy::kAuto, 1009}, world});
  }
  return out;
}

std::vector<Param> error_feedback_sweep() {
  std::vector<Param> out;
  for (const char* codec : {"none", "qsgd", "int8", "topk", "sign:scale=l1", "sign", "test-sign"}) {
    for (Strategy s : strategies_for(codec)) {
      for (int world : {1, 3, 4}) {
        for (size_t n : {7, 1009}) out.push_back({{codec, s, n, true, 3}, world});
      }
    }
  }
  return out;
}

class CompressedAllreduce : public ::testing::TestWithParam<Param> {};

TEST_P(CompressedAllreduce, MatchesSerialReferenceBitwiseOnEveryRank) {
  const Param& p = GetParam();
  std::string why;
  if (!cases::make_codec_or_null(p.c.codec, &why)) GTEST_SKIP() << why;
  run_ranks(p.world, [&](Communicator& comm) { cases::compressed_allreduce(comm, p.c); });
}

auto param_name = [](const ::testing::TestParamInfo<Param>& info) {
  return cases::case_name(info.param.c, info.param.world);
};

INSTANTIATE_TEST_SUITE_P(Sweep, CompressedAllreduce, ::testing::ValuesIn(sweep()), param_name);
INSTANTIATE_TEST_SUITE_P(ErrorFeedback, CompressedAllreduce,
                         ::testing::ValuesIn(error_feedback_sweep()), param_name);

TEST(Strategy, ParseAndNameRoundTrip) {
  for (Strategy s : {Strategy::kAuto, Strategy::kPlain, Strategy::kAllgather,
                     Strategy::kScatterReduce, Strategy::kMajority}) {
    EXPECT_EQ(parse_strategy(strategy_name(s)), s);
  }
  EXPECT_EQ(parse_strategy("scatter-reduce"), Strategy::kScatterReduce);
  try {
    parse_strategy("ring");
    ADD_FAILURE() << "accepted 'ring'";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("'ring'"));
    EXPECT_THAT(e.what(), HasSubstr("auto, none, allgather, scatter-reduce, majority"));
  }
}

TEST(Strategy, AutoAndMismatches) {
  const auto none = make_codec("none");
  const auto vote = cases::make_test_codec("test-sign");
  EXPECT_EQ(resolve_strategy(Strategy::kAuto, *none, 8), Strategy::kPlain);
  EXPECT_EQ(resolve_strategy(Strategy::kAuto, *vote, 8), Strategy::kMajority);
  EXPECT_EQ(resolve_strategy(Strategy::kAllgather, *vote, 8), Strategy::kAllgather);
  EXPECT_THAT([&] { resolve_strategy(Strategy::kScatterReduce, *vote, 4); },
              ::testing::ThrowsMessage<InvalidArgument>(HasSubstr("majority vote")));
  EXPECT_THAT([&] { resolve_strategy(Strategy::kMajority, *none, 4); },
              ::testing::ThrowsMessage<InvalidArgument>(HasSubstr("aggregates by mean")));
  std::string why;
  if (const auto qsgd = cases::make_codec_or_null("qsgd", &why)) {
    EXPECT_EQ(resolve_strategy(Strategy::kAuto, *qsgd, 1), Strategy::kAllgather);
    EXPECT_EQ(resolve_strategy(Strategy::kAuto, *qsgd, 2), Strategy::kAllgather);
    EXPECT_EQ(resolve_strategy(Strategy::kAuto, *qsgd, 3), Strategy::kScatterReduce);
    EXPECT_THAT([&] { resolve_strategy(Strategy::kPlain, *qsgd, 4); },
                ::testing::ThrowsMessage<InvalidArgument>(HasSubstr("needs codec 'none'")));
    EXPECT_THAT([&] { resolve_strategy(Strategy::kMajority, *qsgd, 4); },
                ::testing::ThrowsMessage<InvalidArgument>(HasSubstr("qsgd")));
  }
  if (const auto sign = cases::make_codec_or_null("sign", &why)) {
    EXPECT_EQ(resolve_strategy(Strategy::kAuto, *sign, 4), Strategy::kMajority);
  }
  if (const auto l1 = cases::make_codec_or_null("sign:scale=l1", &why)) {
    EXPECT_EQ(resolve_strategy(Strategy::kAuto, *l1, 4), Strategy::kScatterReduce);  // a mean
  }
}

TEST(ChunkKey, SeparatesRolesChunksAndRanks) {
  const RngKey key{.seed = 7, .step = 3, .rank = 0, .tensor = 1, .bucket = 2};
  std::set<std::array<uint32_t, 2>> philox_keys;
  for (auto role : {ChunkRole::kWorker, ChunkRole::kOwner}) {
    for (int chunk = 0; chunk < 8; ++chunk) {
      const RngKey k = chunk_key(key, role, chunk, 5);
      EXPECT_EQ(k.rank, 5u);
      EXPECT_EQ(k.step, key.step);
      EXPECT_EQ(k.tensor, key.tensor);
      EXPECT_EQ(k.bucket, key.bucket);
      philox_keys.insert(philox_key(k));
      const RngKey again = chunk_key(key, role, chunk, 5);
      EXPECT_EQ(philox_key(again), philox_key(k));
    }
  }
  EXPECT_EQ(philox_keys.size(), 16u);
  RngKey whole = key;
  whole.rank = 5;
  EXPECT_EQ(philox_keys.count(philox_key(whole)), 0u);
}

class MajorityVote : public ::testing::TestWithParam<const char*> {};

TEST_P(MajorityVote, TieCountsPlusOne) {
  std::string why;
  const auto codec = cases::make_codec_or_null(GetParam(), &why);
  if (!codec) GTEST_SKIP() << why;
  for (Strategy s : {Strategy::kMajority, Strategy::kAllgather}) {
    run_ranks(2, [&](Communicator& comm) {
      // Every coordinate is a 1:1 tie.
      std::vector<float> v = comm.rank() == 0 ? std::vector<float>{1, -1, 2, -3, 0}
                                              : std::vector<float>{-1, 1, -2, 3, -5};
      compressed_allreduce(comm, *codec, s, v, {}, nullptr, nullptr);
      for (float x : v) EXPECT_EQ(x, 1.0f);
    });
    run_ranks(3, [&](Communicator& comm) {
      std::vector<float> v =
          comm.rank() == 0 ? std::vector<float>{1, -1, -2} : std::vector<float>{-1, 1, -2};
      compressed_allreduce(comm, *codec, s, v, {}, nullptr, nullptr);
      EXPECT_EQ(v, (std::vector<float>{-1, 1, -1}));
    });
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, MajorityVote, ::testing::Values("test-sign", "sign"),
                         [](const auto& info) {
                           return std::string(info.param) == "sign" ? "sign" : "test_sign";
                         });

TEST(CompressedAllreduce, EmptyBucketMovesNothing) {
  run_ranks(3, [&](Communicator& comm) {
    const auto codec = make_codec("none");
    std::vector<float> v;
    const ExchangeStats s =
        compressed_allreduce(comm, *codec, Strategy::kScatterReduce, v, {}, nullptr, nullptr);
    EXPECT_EQ(s.bytes_sent + s.bytes_received + s.dense_bytes, 0u);
    EXPECT_EQ(comm.traffic().calls, 0u);
  });
}

TEST(CompressedAllreduce, BadErrorMemorySizesFailBeforeCommunicating) {
  std::atomic<int> invalid{0};
  run_ranks(3, [&](Communicator& comm) {
    const auto codec = make_codec("none");
    std::vector<float> v(10, 1.0f);
    ErrorFeedback wrong_worker(9), wrong_owner(10);
    ErrorFeedback right_owner(owned_chunk(10, 3, comm.rank()).size());
    EXPECT_EQ(right_owner.size(), comm.rank() == 0 ? 4u : 3u);
    try {
      compressed_allreduce(comm, *codec, Strategy::kAllgather, v, {}, &wrong_worker, nullptr);
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(), HasSubstr("worker error memory has 9 elements"));
      ++invalid;
    }
    try {
      compressed_allreduce(comm, *codec, Strategy::kScatterReduce, v, {}, nullptr, &wrong_owner);
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(), HasSubstr("owned_chunk"));
      ++invalid;
    }
    EXPECT_EQ(comm.traffic().calls, 0u);
    // The communicator is still usable: nothing was sent.
    compressed_allreduce(comm, *codec, Strategy::kScatterReduce, v, {}, nullptr, &right_owner);
    EXPECT_EQ(v, std::vector<float>(10, 3.0f));
  });
  EXPECT_EQ(invalid.load(), 6);
}

TEST(CompressedAllreduce, NanOnOneRankReachesTheOthersAsCommError) {
  std::atomic<int> peers_failed{0};
  try {
    run_ranks(3, [&](Communicator& comm) {
      const auto codec = make_codec("none");
      std::vector<float> v(100, 1.0f);
      if (comm.rank() == 1) v[42] = std::numeric_limits<float>::quiet_NaN();
      try {
        compressed_allreduce(comm, *codec, Strategy::kScatterReduce, v, {}, nullptr, nullptr);
      } catch (const CommError& e) {
        EXPECT_THAT(e.what(), HasSubstr("rank 1 aborted"));
        ++peers_failed;
      }
    });
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("element 42"));
  }
  EXPECT_EQ(peers_failed.load(), 2);
}

TEST(CompressedAllreduce, CorruptPayloadAbortsTheExchange) {
  // A rank that cannot decode a peer's payload after the exchange started aborts the
  // communicator, so nobody waits in the second round.
  class Broken : public Communicator {
   public:
    explicit Broken(Communicator& inner) : inner_(inner) {}
    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    std::string_view backend() const override { return inner_.backend(); }
    void allreduce_sum(std::span<float> d) override { inner_.allreduce_sum(d); }
    void allgatherv(std::span<const std::byte> m, ByteBlocks& a) override {
      inner_.allgatherv(m, a);
    }
    void alltoallv(const ByteBlocks& s, ByteBlocks& r) override {
      inner_.alltoallv(s, r);
      if (!r.data.empty()) r.data.back() ^= std::byte{0x40};  // flip a body bit
    }
    void broadcast(std::span<std::byte> d, int root) override { inner_.broadcast(d, root); }
    void barrier() override { inner_.barrier(); }
    void abort(std::string_view why) override { inner_.abort(why); }
    const TrafficCounters& traffic() const override { return inner_.traffic(); }

   private:
    Communicator& inner_;
  };
  std::atomic<int> peers_failed{0};
  EXPECT_THROW(run_ranks(3,
                         [&](Communicator& comm) {
                           const auto codec = make_codec("none");
                           std::vector<float> v(30, 1.0f);
                           if (comm.rank() == 2) {
                             Broken broken(comm);
                             compressed_allreduce(broken, *codec, Strategy::kScatterReduce, v, {},
                                                  nullptr, nullptr);
                             return;
                           }
                           try {
                             compressed_allreduce(comm, *codec, Strategy::kScatterReduce, v, {},
                                                  nullptr, nullptr);
                           } catch (const CommError& e) {
                             EXPECT_THAT(e.what(),
                                         HasSubstr("compressed_allreduce failed on rank 2"));
                             ++peers_failed;
                           }
                         }),
               CorruptPayload);
  EXPECT_EQ(peers_failed.load(), 2);
}

TEST(CompressedAllreduce, StatsCountTimesAndRawBytes) {
  run_ranks(2, [&](Communicator& comm) {
    const auto codec = make_codec("none");
    std::vector<float> v(1000, 0.5f);
    const ExchangeStats s =
        compressed_allreduce(comm, *codec, Strategy::kAllgather, v, {}, nullptr, nullptr);
    EXPECT_EQ(s.strategy, Strategy::kAllgather);
    EXPECT_EQ(s.dense_bytes, 4000u);
    EXPECT_EQ(s.bytes_sent, codec->max_encoded_bytes(1000));
    EXPECT_GE(s.encode_s, 0.0);
    EXPECT_GT(s.exchange_s, 0.0);
    EXPECT_GT(s.decode_s, 0.0);
  });
}

}  // namespace
}  // namespace qgrad
