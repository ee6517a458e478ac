// `qgrad-bench codecs`: encode and decode throughput of every codec, in GB/s of fp32 input, next
// to memcpy of the same buffer measured in the same run, and the wire ratio against fp32.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace qgrad::bench {

struct CodecBenchOptions {
  size_t n = 25'000'000;           // elements (25M floats = 100 MB)
  int threads = 1;                 // codec threads (qgrad::set_num_threads)
  int repetitions = 5;             // best of
  std::vector<std::string> specs;  // empty: every codec with defaults plus common variants
  bool json = false;
};

struct CodecBenchResult {
  std::string codec;
  size_t n = 0;
  int threads = 1;
  size_t encoded_bytes = 0;
  double encode_seconds = 0, decode_seconds = 0, memcpy_seconds = 0;
  double encode_gbps() const { return 4.0 * n / encode_seconds / 1e9; }
  double decode_gbps() const { return 4.0 * n / decode_seconds / 1e9; }
  double memcpy_gbps() const { return 4.0 * n / memcpy_seconds / 1e9; }
  double wire_ratio() const { return 4.0 * n / encoded_bytes; }
};

// The specs measured when none are given.
std::vector<std::string> default_bench_specs();

// Runs the benchmark, printing a table (or JSON lines) as each codec finishes.
std::vector<CodecBenchResult> run_codec_bench(const CodecBenchOptions& options);

}  // namespace qgrad::bench
