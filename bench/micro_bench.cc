// Microbenchmarks of the building blocks behind the codecs (Google Benchmark). Bytes per second
// are reported against the fp32 input, like qgrad-bench codecs; BM_Memcpy is the baseline.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "core/codec_registry.h"
#include "core/crc32c.h"
#include "core/philox.h"
#include "core/simd/kernels.h"
#include "core/synthetic.h"

namespace qgrad {
namespace {

constexpr size_t kN = 1 << 20;  // 4 MB of fp32: in L2/L3, isolates compute from DRAM

std::vector<float> gradient() {
  std::vector<float> v(kN);
  fill_synthetic(v, SyntheticDistribution::kGradient, 1);
  return v;
}

void BM_Memcpy(benchmark::State& state) {
  const auto in = gradient();
  std::vector<float> out(kN);
  for (auto _ : state) {
    std::memcpy(out.data(), in.data(), 4 * kN);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * 4 * kN);
}
BENCHMARK(BM_Memcpy);

void BM_PhiloxFill(benchmark::State& state) {
  std::vector<uint32_t> words(kN);
  RngKey key{.seed = 1};
  for (auto _ : state) {
    philox_fill(key, 0, kN, words.data());
    benchmark::DoNotOptimize(words.data());
  }
  state.SetBytesProcessed(state.iterations() * 4 * kN);
}
BENCHMARK(BM_PhiloxFill);

void BM_Crc32c(benchmark::State& state) {
  const auto in = gradient();
  for (auto _ : state) {
    benchmark::DoNotOptimize(crc32c({reinterpret_cast<const std::byte*>(in.data()), 4 * kN}));
  }
  state.SetBytesProcessed(state.iterations() * 4 * kN);
}
BENCHMARK(BM_Crc32c);

void BM_AbsMax(benchmark::State& state) {
  const auto in = gradient();
  for (auto _ : state) benchmark::DoNotOptimize(simd::absmax(in.data(), kN));
  state.SetBytesProcessed(state.iterations() * 4 * kN);
}
BENCHMARK(BM_AbsMax);

void BM_Encode(benchmark::State& state, const char* spec) {
  const auto codec = make_codec(spec);
  const auto in = gradient();
  std::vector<std::byte> out(codec->max_encoded_bytes(kN));
  RngKey key{.seed = 1};
  for (auto _ : state) {
    ++key.step;
    benchmark::DoNotOptimize(codec->encode(in, key, out));
  }
  state.SetBytesProcessed(state.iterations() * 4 * kN);
}

void BM_Decode(benchmark::State& state, const char* spec) {
  const auto codec = make_codec(spec);
  const auto in = gradient();
  const auto payload = codec->encode(in, RngKey{.seed = 1});
  std::vector<float> out(kN);
  for (auto _ : state) {
    codec->decode_add(payload, out, 1.0f);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * 4 * kN);
}

BENCHMARK_CAPTURE(BM_Encode, qsgd, "qsgd");
BENCHMARK_CAPTURE(BM_Decode, qsgd, "qsgd");
BENCHMARK_CAPTURE(BM_Encode, sign, "sign");
BENCHMARK_CAPTURE(BM_Decode, sign, "sign");
BENCHMARK_CAPTURE(BM_Encode, int8, "int8");
BENCHMARK_CAPTURE(BM_Decode, int8, "int8");
BENCHMARK_CAPTURE(BM_Encode, zipml, "zipml");
BENCHMARK_CAPTURE(BM_Decode, zipml, "zipml");

}  // namespace
}  // namespace qgrad

BENCHMARK_MAIN();
