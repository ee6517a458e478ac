// qgrad-bench: measurements that print ratios against a baseline measured in the same run.
//   qgrad-bench codecs [--n N] [--threads T] [--reps R] [--codecs "SPEC;SPEC"] [--json]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <sstream>

#include "bench/codec_bench.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"qgrad-bench: codec throughput against memcpy measured in the same run"};
  app.require_subcommand(1);

  qgrad::bench::CodecBenchOptions codec_opts;
  std::string codec_list;
  CLI::App* codecs = app.add_subcommand(
      "codecs", "encode/decode GB/s of fp32 input for every codec, memcpy baseline, wire ratio");
  codecs->add_option("--n", codec_opts.n, "elements (float32)")->check(CLI::Range(size_t{1}, size_t{1} << 32));
  codecs->add_option("--threads", codec_opts.threads, "codec threads")->check(CLI::Range(1, 1024));
  codecs->add_option("--reps", codec_opts.repetitions, "repetitions (best of)")->check(CLI::Range(1, 1000));
  codecs->add_option("--codecs", codec_list, "specs separated by ';' (default: every codec)");
  codecs->add_flag("--json", codec_opts.json, "one JSON object per codec and line");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*codecs) {
      std::stringstream ss(codec_list);
      for (std::string s; std::getline(ss, s, ';');)
        if (!s.empty()) codec_opts.specs.push_back(s);
      qgrad::bench::run_codec_bench(codec_opts);
    }
  } catch (const qgrad::Error& e) {
    std::fprintf(stderr, "qgrad-bench: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qgrad-bench: out of memory (try a smaller --n)\n");
    return 2;
  }
  return 0;
}
