#include "comm/rate_limiter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "tests/support/ranks.h"

namespace qgrad {
namespace {

using namespace std::chrono_literals;

// Time stands still until the emulator sleeps; every sleep is recorded.
class FakeClock final : public LinkClock {
 public:
  double now() override { return t_; }
  void sleep_until(double t) override {
    sleeps_.push_back(t - t_);
    t_ = std::max(t_, t);
  }
  void advance(double dt) { t_ += dt; }
  const std::vector<double>& sleeps() const { return sleeps_; }

 private:
  double t_ = 1000.0;
  std::vector<double> sleeps_;
};

TEST(TokenBucket, DeficitsRefillAtTheRate) {
  TokenBucket b(1000, 0);  // 1000 B/s, no burst
  EXPECT_DOUBLE_EQ(b.reserve(0, 500), 0.5);
  EXPECT_DOUBLE_EQ(b.reserve(0.5, 500), 0.5);   // the first message had left by then
  EXPECT_DOUBLE_EQ(b.reserve(0.5, 250), 0.75);  // queued behind the second
  EXPECT_DOUBLE_EQ(b.reserve(100, 100), 0.1);   // idle time does not bank tokens beyond burst
}

TEST(TokenBucket, BurstPassesAtOnceThenTheRateApplies) {
  TokenBucket b(1000, 1000);  // starts full
  EXPECT_DOUBLE_EQ(b.reserve(0, 600), 0.0);
  EXPECT_DOUBLE_EQ(b.reserve(0, 600), 0.2);
  EXPECT_DOUBLE_EQ(b.reserve(0.2, 0), 0.0);
  EXPECT_DOUBLE_EQ(b.reserve(10, 1000), 0.0);  // refilled, capped at the burst
  EXPECT_DOUBLE_EQ(b.reserve(10, 1), 0.001);
}

TEST(TokenBucket, UnlimitedAndInvalid) {
  TokenBucket unlimited(0, 0);
  EXPECT_EQ(unlimited.reserve(0, 1e12), 0.0);
  EXPECT_THROW(TokenBucket(-1, 0), InvalidArgument);
  EXPECT_THROW(TokenBucket(1, -5), InvalidArgument);
  EXPECT_THROW(TokenBucket(std::numeric_limits<double>::infinity(), 0), InvalidArgument);
}

TEST(RateLimitedCommunicator, DelayIsBytesOverRatePlusLatency) {
  const LinkOptions link{.bytes_per_second = 1e6, .burst_bytes = 0, .latency = 2ms};
  run_ranks(2, [&](Communicator& inner) {
    FakeClock clock;
    RateLimitedCommunicator comm(inner, link, clock);
    EXPECT_EQ(comm.rank(), inner.rank());
    EXPECT_EQ(comm.size(), 2);
    EXPECT_EQ(comm.backend(), "local");

    // 10000 bytes up and 10000 down at 1 MB/s: 10 ms, plus 2 ms of latency.
    ByteBlocks all;
    comm.allgatherv(std::vector<std::byte>(10000), all);
    EXPECT_NEAR(comm.last_delay_s(), 0.012, 1e-12);

    // Asymmetric: rank 0 sends 3000 and receives 1000, rank 1 the reverse: the slower
    // direction decides.
    ByteBlocks send, recv;
    send.clear();
    const size_t to_peer = comm.rank() == 0 ? 3000 : 1000;
    for (int j = 0; j < 2; ++j)
      send.append(std::vector<std::byte>(j == comm.rank() ? 50 : to_peer));
    comm.alltoallv(send, recv);
    EXPECT_NEAR(comm.last_delay_s(), 0.005, 1e-12);

    comm.barrier();  // no bytes: latency only
    EXPECT_NEAR(comm.last_delay_s(), 0.002, 1e-12);

    std::vector<float> v(1000, 1.0f);  // 4000 bytes: 2 * 500 floats each way
    comm.allreduce_sum(v);
    EXPECT_NEAR(comm.last_delay_s(), 0.004 + 0.002, 1e-12);
    EXPECT_EQ(v[0], 2.0f);

    std::vector<std::byte> b(700);
    comm.broadcast(b, 1);  // the root sends 700, the other receives 700
    EXPECT_NEAR(comm.last_delay_s(), 0.0007 + 0.002, 1e-12);

    EXPECT_NEAR(comm.total_delay_s(), 0.012 + 0.005 + 0.002 + 0.006 + 0.0027, 1e-12);
    ASSERT_EQ(clock.sleeps().size(), 5u);
    EXPECT_NEAR(clock.sleeps()[0], 0.012, 1e-12);
    EXPECT_EQ(&comm.traffic(), &inner.traffic());
  });
}

TEST(RateLimitedCommunicator, BurstFirstThenTheRate) {
  const LinkOptions link{.bytes_per_second = 1000, .burst_bytes = 500, .latency = 0us};
  run_ranks(2, [&](Communicator& inner) {
    FakeClock clock;
    RateLimitedCommunicator comm(inner, link, clock);
    ByteBlocks all;
    comm.allgatherv(std::vector<std::byte>(400), all);  // within the burst: no delay, no sleep
    EXPECT_EQ(comm.last_delay_s(), 0.0);
    EXPECT_TRUE(clock.sleeps().empty());
    comm.allgatherv(std::vector<std::byte>(400), all);  // 100 tokens left: 300 bytes wait
    EXPECT_NEAR(comm.last_delay_s(), 0.3, 1e-12);
    clock.advance(10);  // idle: the bucket refills up to its depth only
    comm.allgatherv(std::vector<std::byte>(600), all);
    EXPECT_NEAR(comm.last_delay_s(), 0.1, 1e-12);
  });
  run_ranks(1, [&](Communicator& inner) {
    FakeClock clock;
    RateLimitedCommunicator comm(inner, link, clock);
    std::vector<std::byte> b(10);
    comm.broadcast(b, 0);  // world 1: nothing moves
    EXPECT_EQ(comm.last_delay_s(), 0.0);
  });
}

TEST(RateLimitedCommunicator, RealClockNeverReturnsEarly) {
  // Only a lower bound: sleeping can overshoot on a busy machine, never undershoot.
  const LinkOptions link{.bytes_per_second = 1e6, .burst_bytes = 0, .latency = 5ms};
  run_ranks(2, [&](Communicator& inner) {
    RateLimitedCommunicator comm(inner, link);
    ByteBlocks all;
    const auto t0 = std::chrono::steady_clock::now();
    comm.allgatherv(std::vector<std::byte>(20000), all);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NEAR(comm.last_delay_s(), 0.025, 1e-12);
    EXPECT_GE(elapsed, 0.025);
  });
}

TEST(RateLimitedCommunicator, AbortGoesThrough) {
  EXPECT_THROW(run_ranks(2,
                         [&](Communicator& inner) {
                           RateLimitedCommunicator comm(inner, {});
                           if (comm.rank() == 0) {
                             comm.abort("stop");
                             return;
                           }
                           comm.barrier();
                         }),
               CommError);
}

TEST(LinkSpec, RatesInTcUnits) {
  EXPECT_DOUBLE_EQ(parse_link_spec("100mbit").bytes_per_second, 12.5e6);
  EXPECT_DOUBLE_EQ(parse_link_spec("1gbit").bytes_per_second, 125e6);
  EXPECT_DOUBLE_EQ(parse_link_spec("2.5gbit").bytes_per_second, 312.5e6);
  EXPECT_DOUBLE_EQ(parse_link_spec("800kbit").bytes_per_second, 1e5);
  EXPECT_DOUBLE_EQ(parse_link_spec("3mbps").bytes_per_second, 3e6);  // tc: bps = bytes/s
  EXPECT_DOUBLE_EQ(parse_link_spec("unlimited").bytes_per_second, 0);
  const LinkOptions plain = parse_link_spec("1gbit");
  EXPECT_EQ(plain.latency.count(), 0);
  EXPECT_EQ(plain.burst_bytes, 0);  // every message takes bytes / rate
}

TEST(LinkSpec, LatencyAndBurst) {
  const LinkOptions a = parse_link_spec("100mbit,latency=50,burst=64KiB");
  EXPECT_EQ(a.latency.count(), 50);
  EXPECT_DOUBLE_EQ(a.burst_bytes, 65536);
  const LinkOptions b = parse_link_spec("unlimited,latency=2ms");
  EXPECT_EQ(b.latency.count(), 2000);
  EXPECT_DOUBLE_EQ(b.bytes_per_second, 0);
  EXPECT_DOUBLE_EQ(parse_link_spec("1gbit,burst=1000").burst_bytes, 1000);
  EXPECT_EQ(describe(a), "100 Mbit/s, latency 50 us, burst 65536 B");
}

TEST(LinkSpec, BadSpecsNameWhatIsWrong) {
  const auto message = [](const char* spec) {
    try {
      (void)parse_link_spec(spec);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message(""), ::testing::HasSubstr("link rate ''"));
  EXPECT_THAT(message("100"), ::testing::HasSubstr("link rate '100'"));
  EXPECT_THAT(message("100mb"), ::testing::HasSubstr("unit"));
  EXPECT_THAT(message("0mbit"), ::testing::HasSubstr("rate > 0"));
  EXPECT_THAT(message("-5mbit"), ::testing::HasSubstr("link rate '-5mbit'"));
  EXPECT_THAT(message("fast"), ::testing::HasSubstr("link rate 'fast'"));
  EXPECT_THAT(message("1gbit,latency=abc"), ::testing::HasSubstr("link latency 'abc'"));
  EXPECT_THAT(message("1gbit,latency=5s"), ::testing::HasSubstr("link latency '5s'"));
  EXPECT_THAT(message("1gbit,burst=lots"), ::testing::HasSubstr("link burst 'lots'"));
  EXPECT_THAT(message("1gbit,jitter=5"), ::testing::HasSubstr("unknown key 'jitter'"));
  EXPECT_THAT(message("1gbit,"), ::testing::HasSubstr("ends with a comma"));
  EXPECT_THAT(message("1gbit,latency=1,latency=2"), ::testing::HasSubstr("latency twice"));
}

}  // namespace
}  // namespace qgrad
