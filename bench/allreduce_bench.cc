#include "bench/allreduce_bench.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "comm/mpi/mpi_communicator.h"
#include "comm/strategies/compressed_allreduce.h"
#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/synthetic.h"

namespace qgrad::bench {
namespace {

// The slowest rank's time is the collective's time.
double max_over_ranks(double seconds) {
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return seconds;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Row {
  std::string codec, strategy;
  size_t size = 0;
  double seconds = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
};

}  // namespace

std::vector<std::string> default_allreduce_specs() {
  return {"none",          "fp16",     "qsgd", "qsgd:bits=2,bucket=128", "int8", "zipml", "sign",
          "sign:scale=l1", "terngrad", "topk"};
}

void run_allreduce_bench(const AllreduceBenchOptions& options) {
  MpiCommunicator comm(MPI_COMM_WORLD, CommOptions{.timeout = std::chrono::minutes(10)});
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;
  set_num_threads(options.threads);

  const std::vector<std::string> spec_texts =
      options.specs.empty() ? default_allreduce_specs() : options.specs;
  std::vector<std::unique_ptr<Codec>> codecs;
  for (const auto& s : spec_texts) codecs.push_back(make_codec(s));  // typos fail at once
  std::vector<Strategy> wanted;
  for (const auto& s : options.strategies) {
    if (s == "all") {
      wanted = {Strategy::kAuto, Strategy::kAllgather, Strategy::kScatterReduce,
                Strategy::kMajority};
      break;
    }
    wanted.push_back(parse_strategy(s));
  }
  QGRAD_CHECK(options.repetitions >= 1, "--reps must be at least 1");

  if (lead && !options.json) {
    std::printf(
        "qgrad-bench allreduce: %d ranks, median of %d (after one warm-up), codec threads %d\n",
        world, options.repetitions, options.threads);
    std::printf("%-54s %-15s %10s %10s %13s %13s %9s\n", "codec", "strategy", "size", "seconds",
                "sent/rank", "recv/rank", "speedup");
  }
  for (size_t n : options.sizes) {
    // Each rank its own gradient-like input (seed = rank), restored before every run.
    std::vector<float> input(n), bucket(n);
    fill_synthetic(input, SyntheticDistribution::kGradient, 1000 + rank);

    // The baseline: fp32 MPI_Allreduce of the same buffer, in this run.
    std::vector<double> times;
    for (int r = -1; r < options.repetitions; ++r) {
      std::memcpy(bucket.data(), input.data(), 4 * n);
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, bucket.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
      const double t = max_over_ranks(MPI_Wtime() - t0);
      if (r >= 0) times.push_back(t);
    }
    const double baseline = median(times);
    const uint64_t ring_bytes = world > 1 ? 2ull * (world - 1) * 4 * n / world : 0;
    auto print = [&](const Row& row) {
      if (!lead) return;
      const double speedup = baseline / row.seconds;
      if (options.json) {
        const nlohmann::json j = {{"codec", row.codec},
                                  {"strategy", row.strategy},
                                  {"size", row.size},
                                  {"ranks", world},
                                  {"seconds", row.seconds},
                                  {"bytes_sent", row.bytes_sent},
                                  {"bytes_received", row.bytes_received},
                                  {"raw_bytes", 4 * row.size},
                                  {"fp32_mpi_allreduce_seconds", baseline},
                                  {"speedup_vs_fp32", speedup}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("%-54s %-15s %10zu %10.4f %13llu %13llu %8.2fx\n", row.codec.c_str(),
                    row.strategy.c_str(), row.size, row.seconds,
                    static_cast<unsigned long long>(row.bytes_sent),
                    static_cast<unsigned long long>(row.bytes_received), speedup);
      }
      std::fflush(stdout);
    };
    // MPI does not say what MPI_Allreduce put on the wire: a ring's volume is shown.
    print({"fp32 MPI_Allreduce", "mpi", n, baseline, ring_bytes, ring_bytes});

    for (const auto& codec : codecs) {
      std::vector<Strategy> strategies;
      for (Strategy s : wanted) {
        try {
          const Strategy resolved = resolve_strategy(s, *codec, world);
          if (std::find(strategies.begin(), strategies.end(), resolved) == strategies.end())
            strategies.push_back(resolved);
        } catch (const InvalidArgument&) {
          // A pair that cannot work (e.g. majority with qsgd) is skipped when several were asked.
          if (wanted.size() == 1) throw;
        }
      }
      for (Strategy strategy : strategies) {
        times.clear();
        ExchangeStats stats;
        for (int r = -1; r < options.repetitions; ++r) {
          std::memcpy(bucket.data(), input.data(), 4 * n);
          comm.barrier();
          const double t0 = MPI_Wtime();
          stats = compressed_allreduce(comm, *codec, strategy, bucket,
                                       RngKey{.seed = 1, .step = static_cast<uint64_t>(r + 1)},
                                       nullptr, nullptr);
          const double t = max_over_ranks(MPI_Wtime() - t0);
          if (r >= 0) times.push_back(t);
        }
        print({codec->spec().str(), std::string(strategy_name(strategy)), n, median(times),
               stats.bytes_sent, stats.bytes_received});
      }
    }
  }
}

}  // namespace qgrad::bench
