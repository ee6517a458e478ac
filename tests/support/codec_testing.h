// Small helpers shared by the codec unit tests (tests/core/*_test.cc): seeded random inputs,
// decoding into a fresh vector, re-sealing payloads whose body a test edited (so that only a
// codec's semantic checks can reject them), spec strings, and the loops that run a check under
// every thread count and every SIMD target. Header-only; each helper is a plain function of its
// arguments except the two loops, which change process-wide settings (num_threads, Highway's
// target mask) and restore them on exit, so they are not for concurrent use.
//
// Note for users inside namespace qgrad: this namespace is qgrad::testing, so write GoogleTest's
// as ::testing (a plain `testing::` there names this one).
#pragma once

#include <hwy/targets.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/codec.h"
#include "core/codec_registry.h"
#include "core/parallel.h"
#include "core/wire.h"

namespace qgrad::testing {

// ---- Random inputs ----

// n draws of `dist` from a fresh Engine(seed), in index order (std::mt19937 keeps seed mod 2^32).
template <class Engine = std::mt19937, class Dist>
std::vector<float> random_vector(size_t n, uint64_t seed, Dist dist) {
  Engine rng(static_cast<typename Engine::result_type>(seed));
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// n draws of std::normal_distribution<float>(0, stddev) from a fresh Engine(seed), in index order.
template <class Engine = std::mt19937>
std::vector<float> normal_vector(size_t n, uint64_t seed, float stddev = 1.0f) {
  return random_vector<Engine>(n, seed, std::normal_distribution<float>(0.0f, stddev));
}

// ---- Sizes and spec strings ----

// ceil(a / b) for b > 0.
constexpr size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// spec + ":" + param, or spec + "," + param when spec already has parameters ("int8:map=tree").
inline std::string with_param(const std::string& spec, const std::string& param) {
  return spec + (spec.find(':') == std::string::npos ? ":" : ",") + param;
}

// `text` as a GoogleTest parameter name: every character that is not [A-Za-z0-9] becomes '_'.
inline std::string param_name(std::string text) {
  for (char& c : text)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return text;
}

// ---- Decoding and payloads ----

// A vector of n copies of `base` with weight * decode(payload) added by codec.decode_add.
inline std::vector<float> decode(const Codec& codec, std::span<const std::byte> payload, size_t n,
                                 float weight = 1.0f, float base = 0.0f) {
  std::vector<float> out(n, base);
  codec.decode_add(payload, out, weight);
  return out;
}

// A copy of a valid payload with edit(std::span<std::byte> body) applied and CRCs that match again.
template <class F>
std::vector<std::byte> tampered(std::vector<std::byte> payload, F&& edit) {
  const WireHeader h = read_header(payload);
  const std::span<std::byte> body = std::span<std::byte>(payload).subspan(kHeaderBytes);
  edit(body);
  write_header(payload, h.codec, h.params, h.elements, body);
  return payload;
}

// Rewrites the header of an edited or resized payload: same codec, params, n; matching size, CRCs.
inline void reseal(std::vector<std::byte>& payload) {
  WireParams params;
  std::memcpy(params.data(), payload.data() + 8, kWireParamBytes);
  write_header(payload, static_cast<CodecId>(payload[5]), params, load_u64(payload.data() + 24),
               std::span<const std::byte>(payload).subspan(kHeaderBytes));
}

// A payload of `codec` (its id and params) for n elements around `body`, with a valid header.
inline std::vector<std::byte> sealed_payload(const Codec& codec, size_t n,
                                             std::span<const std::byte> body) {
  std::vector<std::byte> p(kHeaderBytes + body.size());
  if (!body.empty()) std::memcpy(p.data() + kHeaderBytes, body.data(), body.size());
  write_header(p, codec.id(), pack_wire_params(codec.spec()), n,
               std::span<const std::byte>(p).subspan(kHeaderBytes));
  return p;
}

// ---- Thread counts and SIMD targets ----

// Sets the process back to one worker thread when it goes out of scope.
class ThreadCountGuard {
 public:
  ThreadCountGuard() = default;
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;
  ~ThreadCountGuard() { set_num_threads(1); }
};

// Calls fn(t) with set_num_threads(t) in effect for t = 2, 3, 4; leaves one thread set on exit.
template <class F>
void for_each_thread_count(F&& fn) {
  const ThreadCountGuard guard;
  for (int threads : {2, 3, 4}) {
    set_num_threads(threads);
    fn(threads);
  }
}

// Calls fn(name) with dispatch pinned to each SIMD target built and supported here; returns count.
template <class F>
size_t for_each_simd_target(F&& fn) {
  struct Restore {
    ~Restore() { hwy::SetSupportedTargetsForTest(0); }
  } restore;
  const auto targets = hwy::SupportedAndGeneratedTargets();
  for (const int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    fn(hwy::TargetName(target));
  }
  return targets.size();
}

}  // namespace qgrad::testing
