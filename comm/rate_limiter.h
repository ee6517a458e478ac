// An in-process link emulator (docs/architecture.md, "Communicator"): makes any Communicator behave
// as if each rank sat behind a link of a given bandwidth and latency, for single-process runs and
// for latency, which the kernel here cannot emulate (no netem; scripts/netlab.sh shapes bandwidth
// only).
//
// Model: each rank has a full-duplex link. Its uplink carries the bytes the rank sends, its
// downlink the bytes it receives, each through a token bucket (rate r bytes/s, depth b bytes):
// tokens refill at r up to b, a message of m bytes takes m tokens, and when tokens run short it
// finishes when the deficit has refilled, (m - tokens) / r seconds later. A collective finishes
// when both directions have carried its counted bytes (Communicator::traffic), plus one latency:
//   delay = max(up.reserve(sent), down.reserve(received)) + latency.
// The decorator runs the real collective first, then sleeps until `delay` after it returned. One
// latency per collective models a flat exchange with all peers at once; ring algorithms would pay
// n-1 latencies. Each rank's delay is its own: a rank that moves fewer bytes returns earlier and
// waits for the others in the next collective, as on a real network.
// Thread-safety: like the Communicator it wraps (one thread at a time).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "comm/communicator.h"

namespace qgrad {

struct LinkOptions {
  double bytes_per_second = 0;  // 0: unlimited bandwidth (latency only)
  double burst_bytes = 0;       // token bucket depth; the bucket starts full
  std::chrono::microseconds latency{0};
};

// A link spec, as qgrad-train --link takes it: RATE[,latency=US][,burst=B].
//   RATE     tc's units: bit, kbit, mbit, gbit, tbit (bits/s, powers of 1000) or bps, kbps,
//            mbps, gbps (bytes/s); e.g. 100mbit, 1gbit, 2.5gbit; `unlimited` for latency only
//   latency  microseconds added to every collective (a plain number, or with us / ms)
//   burst    token bucket depth: a byte count of core/byte_size.h (65536, 256KiB, 1M), at most
//            1 TiB; default 0, so that every message takes exactly bytes / rate (tc's tbf needs
//            a burst, the emulator does not)
// Tokenized by core/spec_grammar.h (the head is RATE, ',' separates). Throws InvalidArgument
// naming the part that is wrong.
LinkOptions parse_link_spec(std::string_view spec);
// "100 Mbit/s, latency 50 us, burst 0 B".
std::string describe(const LinkOptions& link);

class TokenBucket {
 public:
  TokenBucket(double bytes_per_second, double burst_bytes);
  // A message of `bytes` enters the link at time `now` (seconds, non-decreasing between calls);
  // returns how many seconds after `now` its last byte has left.
  double reserve(double now, double bytes);

 private:
  double rate_;
  double burst_;
  double tokens_;
  double last_ = 0;
  bool started_ = false;
};

// Time source of the emulator, replaceable by a fake clock in tests.
class LinkClock {
 public:
  virtual ~LinkClock() = default;
  virtual double now() = 0;  // seconds
  virtual void sleep_until(double t) = 0;
};
// std::chrono::steady_clock and std::this_thread::sleep_until.
LinkClock& steady_link_clock();

class RateLimitedCommunicator final : public Communicator {
 public:
  // `inner` and `clock` must outlive this object.
  RateLimitedCommunicator(Communicator& inner, LinkOptions link,
                          LinkClock& clock = steady_link_clock());

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string_view backend() const override { return inner_.backend(); }
  void allreduce_sum(std::span<float> data) override;
  void allgatherv(std::span<const std::byte> mine, ByteBlocks& all) override;
  void alltoallv(const ByteBlocks& send, ByteBlocks& recv) override;
  void broadcast(std::span<std::byte> data, int root) override;
  void barrier() override;
  void abort(std::string_view reason) override { inner_.abort(reason); }
  const TrafficCounters& traffic() const override { return inner_.traffic(); }

  // The emulated delay of the last collective, and of all of them, in seconds.
  double last_delay_s() const { return last_delay_s_; }
  double total_delay_s() const { return total_delay_s_; }

 private:
  // Sleeps for the link time of what the collective moved since `before`.
  void emulate(const TrafficCounters& before);

  Communicator& inner_;
  LinkOptions link_;
  LinkClock& clock_;
  TokenBucket up_, down_;
  double last_delay_s_ = 0;
  double total_delay_s_ = 0;
};

}  // namespace qgrad
