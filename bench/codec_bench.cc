#include "bench/codec_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/codec_registry.h"
#include "core/parallel.h"
#include "core/synthetic.h"

namespace qgrad::bench {
namespace {

using Clock = std::chrono::steady_clock;

template <typename Fn>
double best_of(int repetitions, Fn&& fn) {
  double best = INFINITY;
  for (int r = 0; r < repetitions; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Keeps the compiler from dropping work whose result is never read.
void consume(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

}  // namespace

std::vector<std::string> default_bench_specs() {
  return {"none",
          "fp16",
          "bf16",
          "qsgd",
          "qsgd:bits=2,bucket=128",
          "qsgd:bits=8",
          "qsgd:norm=l2,bits=2,coding=elias",
          "sign",
          "sign:scale=l1",
          "zipml",
          "zipml:bits=2",
          "zipml:levels=optimal",
          "int8",
          "int8:map=tree",
          "terngrad",
          "topk"};
}

std::vector<CodecBenchResult> run_codec_bench(const CodecBenchOptions& options) {
  const std::vector<std::string> specs =
      options.specs.empty() ? default_bench_specs() : options.specs;
  // Parse every spec before the long part starts, so a typo fails at once.
  std::vector<std::unique_ptr<Codec>> codecs;
  for (const auto& s : specs) codecs.push_back(make_codec(s));

  set_num_threads(options.threads);
  const size_t n = options.n;
  std::vector<float> grad(n), out(n), copy(n);
  fill_synthetic(grad, SyntheticDistribution::kGradient, /*seed=*/1);
  std::memset(out.data(), 0, 4 * n);  // touch every page before timing
  std::memset(copy.data(), 0, 4 * n);

  const double memcpy_s = best_of(options.repetitions, [&] {
    std::memcpy(copy.data(), grad.data(), 4 * n);
    consume(copy.data());
  });
  if (!options.json) {
    std::printf("qgrad-bench codecs: n=%zu (%.1f MB fp32), threads=%d, best of %d\n", n,
                4.0 * n / 1e6, options.threads, options.repetitions);
    std::printf("memcpy: %.2f GB/s\n\n", 4.0 * n / memcpy_s / 1e9);
    std::printf("%-48s %10s %10s %8s %8s %9s\n", "codec", "enc GB/s", "dec GB/s", "enc/mcpy",
                "dec/mcpy", "ratio");
  }

  std::vector<CodecBenchResult> results;
  for (const auto& codec : codecs) {
    std::vector<std::byte> payload(codec->max_encoded_bytes(n));
    std::memset(payload.data(), 0, payload.size());
    CodecBenchResult r;
    r.codec = codec->spec().str();
    r.n = n;
    r.threads = options.threads;
    r.memcpy_seconds = memcpy_s;
    RngKey key{.seed = 1};
    r.encode_seconds = best_of(options.repetitions, [&] {
      ++key.step;
      r.encoded_bytes = codec->encode(grad, key, payload);
      consume(payload.data());
    });
    const std::span<const std::byte> encoded(payload.data(), r.encoded_bytes);
    r.decode_seconds = best_of(options.repetitions, [&] {
      codec->decode_add(encoded, out, 1.0f);
      consume(out.data());
    });
    if (options.json) {
      const nlohmann::json j = {{"codec", r.codec},
                                {"n", r.n},
                                {"threads", r.threads},
                                {"encoded_bytes", r.encoded_bytes},
                                {"encode_GBps", r.encode_gbps()},
                                {"decode_GBps", r.decode_gbps()},
                                {"memcpy_GBps", r.memcpy_gbps()},
                                {"encode_vs_memcpy", r.encode_gbps() / r.memcpy_gbps()},
                                {"decode_vs_memcpy", r.decode_gbps() / r.memcpy_gbps()},
                                {"wire_ratio", r.wire_ratio()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%-48s %10.2f %10.2f %8.2f %8.2f %8.2fx\n", r.codec.c_str(), r.encode_gbps(),
                  r.decode_gbps(), r.encode_gbps() / r.memcpy_gbps(),
                  r.decode_gbps() / r.memcpy_gbps(), r.wire_ratio());
    }
    std::fflush(stdout);
    results.push_back(r);
  }
  return results;
}

}  // namespace qgrad::bench
