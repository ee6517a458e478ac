// qgrad-bench: measurements that print ratios against a baseline measured in the same run.
//   qgrad-bench codecs [--n N] [--threads T] [--reps R] [--codecs "SPEC;SPEC"] [--json]
//   mpirun -np 4 qgrad-bench allreduce [--sizes N,N] [--codecs "SPEC;SPEC"]
//                                      [--strategies auto,allgather,...|all] [--reps R] [--json]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <sstream>

#include "bench/allreduce_bench.h"
#include "bench/codec_bench.h"
#include "core/error.h"
#include "train/backends/build.h"
#include "train/backends/communicators.h"

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string s; std::getline(ss, s, sep);)
    if (!s.empty()) out.push_back(s);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qgrad-bench: codec throughput against memcpy measured in the same run"};
  app.require_subcommand(1);

  qgrad::bench::CodecBenchOptions codec_opts;
  std::string codec_list;
  CLI::App* codecs = app.add_subcommand(
      "codecs", "encode/decode GB/s of fp32 input for every codec, memcpy baseline, wire ratio");
  codecs->add_option("--n", codec_opts.n, "elements (float32)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32));
  codecs->add_option("--threads", codec_opts.threads, "codec threads")->check(CLI::Range(1, 1024));
  codecs->add_option("--reps", codec_opts.repetitions, "repetitions (best of)")
      ->check(CLI::Range(1, 1000));
  codecs->add_option("--codecs", codec_list, "specs separated by ';' (default: every codec)");
  codecs->add_flag("--json", codec_opts.json, "one JSON object per codec and line");

  // In a build without MPI the subcommand is still there and says what is missing.
  qgrad::bench::AllreduceBenchOptions ar_opts;
  std::string ar_codecs, ar_sizes, ar_strategies = "auto";
  CLI::App* allreduce =
      app.add_subcommand("allreduce",
                         "compressed allreduce per codec, strategy and size vs fp32 MPI_Allreduce "
                         "(run under mpirun)");
  allreduce->add_option("--sizes", ar_sizes, "elements per bucket, comma-separated (25000000)");
  allreduce->add_option("--codecs", ar_codecs, "specs separated by ';' (default: a set of codecs)");
  allreduce->add_option("--strategies", ar_strategies,
                        "comma-separated: auto, none, allgather, scatter-reduce, majority, or all");
  allreduce->add_option("--reps", ar_opts.repetitions, "timed runs (median)")
      ->check(CLI::Range(1, 1000));
  allreduce->add_option("--threads", ar_opts.threads, "codec threads per rank")
      ->check(CLI::Range(1, 1024));
  allreduce->add_flag("--json", ar_opts.json, "one JSON object per row");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*codecs) {
      codec_opts.specs = split(codec_list, ';');
      qgrad::bench::run_codec_bench(codec_opts);
    }
    if (*allreduce) {
      ar_opts.specs = split(ar_codecs, ';');
      ar_opts.strategies = split(ar_strategies, ',');
      if (!ar_sizes.empty()) {
        ar_opts.sizes.clear();
        for (const auto& s : split(ar_sizes, ',')) {
          size_t n = 0;
          try {
            n = std::stoull(s);
          } catch (const std::exception&) {
            throw qgrad::InvalidArgument("--sizes: '" + s + "' is not a number of elements");
          }
          ar_opts.sizes.push_back(n);
        }
      }
      // Throws in a build without MPI, naming QGRAD_WITH_MPI; allreduce_bench.cc is built only
      // with MPI, and the discarded branch below needs no definition of it.
      const auto world = qgrad::join_world("mpi", &argc, &argv);
      if constexpr (qgrad::kBuild.mpi) qgrad::bench::run_allreduce_bench(ar_opts);
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
