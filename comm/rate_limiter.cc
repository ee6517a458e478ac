#include "comm/rate_limiter.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "core/byte_size.h"
#include "core/error.h"
#include "core/spec_grammar.h"

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

// Splits "12.5mbit" into 12.5 and "mbit"; false when it does not start with a finite number >= 0.
bool split_number(std::string_view text, double& value, std::string_view& unit) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || !std::isfinite(value) || value < 0) return false;
  unit = text.substr(static_cast<size_t>(ptr - text.data()));
  return true;
}

// The scale of `unit` in `table`, or 0 when it is not there.
double unit_scale(std::string_view unit,
                  std::initializer_list<std::pair<std::string_view, double>> table) {
  for (const auto& [name, scale] : table) {
    if (unit == name) return scale;
  }
  return 0;
}

}  // namespace

LinkOptions parse_link_spec(std::string_view spec) {
  static constexpr char kForm[] =
      " (expected RATE[,latency=US][,burst=B], e.g. 100mbit or "
      "1gbit,latency=50)";
  LinkOptions link;
  // The head is the positional RATE; ',' both ends it and separates the keys.
  const SpecTokens tokens = tokenize_spec(spec, ',');
  const std::string_view rate = tokens.head;
  double value = 0;
  std::string_view unit;
  if (rate != "unlimited") {
    // tc's units: *bit are bits per second, *bps bytes per second, prefixes powers of 1000.
    const double scale = split_number(rate, value, unit) ? unit_scale(unit, {{"bit", 1 / 8.0},
                                                                             {"kbit", 1e3 / 8},
                                                                             {"mbit", 1e6 / 8},
                                                                             {"gbit", 1e9 / 8},
                                                                             {"tbit", 1e12 / 8},
                                                                             {"bps", 1},
                                                                             {"kbps", 1e3},
                                                                             {"mbps", 1e6},
                                                                             {"gbps", 1e9}})
                                                         : 0;
    QGRAD_CHECK(scale > 0 && value > 0, "link rate '", rate,
                "' is not a rate > 0 with a unit (bit, kbit, mbit, gbit, tbit, bps, kbps, "
                "mbps, gbps) or 'unlimited'",
                kForm);
    link.bytes_per_second = value * scale;
  }
  const std::vector<SpecField>& fields = tokens.fields;
  // A trailing comma is refused before the field in front of it is looked at.
  const bool trailing_comma = !fields.empty() && fields.back().text.empty();
  QGRAD_CHECK(!trailing_comma || fields.size() > 1, "link spec '", spec, "' ends with a comma",
              kForm);
  for (size_t i = 0; i + 1 < fields.size() || (i < fields.size() && !trailing_comma); ++i) {
    QGRAD_CHECK(!(trailing_comma && i + 2 == fields.size()), "link spec '", spec,
                "' ends with a comma", kForm);
    const SpecField& item = fields[i];
    // A key without '=' has an empty value, which no key accepts.
    const std::string_view key = item.key;
    const std::string_view text = item.value;
    if (key == "latency") {
      QGRAD_CHECK(!item.repeated, "link spec '", spec, "' gives latency twice");
      const double scale =
          split_number(text, value, unit) ? unit_scale(unit, {{"", 1}, {"us", 1}, {"ms", 1e3}}) : 0;
      QGRAD_CHECK(scale > 0 && value * scale <= 60e6, "link latency '", text,
                  "' is not a number of microseconds in [0, 60 s] (e.g. 50, 50us, 2ms)");
      link.latency = std::chrono::microseconds(std::llround(value * scale));
    } else if (key == "burst") {
      QGRAD_CHECK(!item.repeated, "link spec '", spec, "' gives burst twice");
      // The byte-size grammar of core/byte_size.h (B, K/KiB, M/MiB, G/GiB), at most 1 TiB.
      const std::optional<uint64_t> bytes = try_parse_byte_size(text);
      QGRAD_CHECK(bytes && *bytes <= (uint64_t{1} << 40), "link burst '", text,
                  "' is not a byte count (e.g. 0, 65536, 256KiB)");
      link.burst_bytes = static_cast<double>(*bytes);
    } else {
      QGRAD_CHECK(false, "link spec '", spec, "': unknown key '", key, "' (valid: latency, burst)",
                  kForm);
    }
  }
  return link;
}

std::string describe(const LinkOptions& link) {
  std::ostringstream out;
  const double bits = link.bytes_per_second * 8;
  if (bits == 0) {
    out << "unlimited";
  } else if (bits >= 1e9) {
    out << bits / 1e9 << " Gbit/s";
  } else if (bits >= 1e6) {
    out << bits / 1e6 << " Mbit/s";
  } else if (bits >= 1e3) {
    out << bits / 1e3 << " kbit/s";
  } else {
    out << bits << " bit/s";
  }
  out << ", latency " << link.latency.count() << " us, burst " << link.burst_bytes << " B";
  return out.str();
}

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
