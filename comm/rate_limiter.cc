#include "comm/rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "core/error.h"

namespace qgrad {
namespace {

class SteadyLinkClock final : public LinkClock {
 public:
  double now() override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void sleep_until(double t) override {
    const double wait = t - now();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  }
};

}  // namespace

TokenBucket::TokenBucket(double bytes_per_second, double burst_bytes)
    : rate_(bytes_per_second), burst_(burst_bytes), tokens_(burst_bytes) {
  QGRAD_CHECK(std::isfinite(bytes_per_second) && bytes_per_second >= 0,
              "link rate must be a finite number of bytes/s >= 0 (0 = unlimited), got ",
              bytes_per_second);
  QGRAD_CHECK(std::isfinite(burst_bytes) && burst_bytes >= 0,
              "link burst must be a finite number of bytes >= 0, got ", burst_bytes);
}

double TokenBucket::reserve(double now, double bytes) {
  if (rate_ == 0) return 0;  // unlimited
  if (started_) tokens_ = std::min(burst_, tokens_ + rate_ * std::max(0.0, now - last_));
  started_ = true;
  last_ = now;
  tokens_ -= bytes;  // may go negative: the backlog that later messages queue behind
  return tokens_ < 0 ? -tokens_ / rate_ : 0.0;
}

LinkClock& steady_link_clock() {
  static SteadyLinkClock clock;
  return clock;
}

RateLimitedCommunicator::RateLimitedCommunicator(Communicator& inner, LinkOptions link,
                                                 LinkClock& clock)
    : inner_(inner),
      link_(link),
      clock_(clock),
      up_(link.bytes_per_second, link.burst_bytes),
      down_(link.bytes_per_second, link.burst_bytes) {
  QGRAD_CHECK(link.latency.count() >= 0, "link latency must be >= 0, got ", link.latency.count(),
              " us");
}

void RateLimitedCommunicator::emulate(const TrafficCounters& before) {
  const TrafficCounters& after = inner_.traffic();
  const double now = clock_.now();
  const double wire =
      std::max(up_.reserve(now, double(after.bytes_sent - before.bytes_sent)),
               down_.reserve(now, double(after.bytes_received - before.bytes_received)));
  last_delay_s_ = wire + std::chrono::duration<double>(link_.latency).count();
  total_delay_s_ += last_delay_s_;
  if (last_delay_s_ > 0) clock_.sleep_until(now + last_delay_s_);
}

void RateLimitedCommunicator::allreduce_sum(std::span<float> data) {
  const TrafficCounters before = inner_.traffic();
  inner_.allreduce_sum(data);
  emulate(before);
}

void RateLimitedCommunicator::allgatherv(std::span<const std::byte> mine, ByteBlocks& all) {
  const TrafficCounters before = inner_.traffic();
  inner_.allgatherv(mine, all);
  emulate(before);
}

void RateLimitedCommunicator::alltoallv(const ByteBlocks& send, ByteBlocks& recv) {
  const TrafficCounters before = inner_.traffic();
  inner_.alltoallv(send, recv);
  emulate(before);
}

void RateLimitedCommunicator::broadcast(std::span<std::byte> data, int root) {
  const TrafficCounters before = inner_.traffic();
  inner_.broadcast(data, root);
  emulate(before);
}

void RateLimitedCommunicator::barrier() {
  const TrafficCounters before = inner_.traffic();
  inner_.barrier();
  emulate(before);
}

}  // namespace qgrad
