// `qgrad-bench allreduce` (under mpirun): for each codec, strategy and size, the time of one
// compressed allreduce, the bytes each rank sent and received, and the speedup against fp32
// MPI_Allreduce of the same size measured in the same run. Run it on emulated links with
// scripts/netlab.sh to see where compression pays and where it does not.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace qgrad::bench {

struct AllreduceBenchOptions {
  std::vector<size_t> sizes = {25'000'000};        // elements per bucket (25M floats = 100 MB)
  std::vector<std::string> specs;                  // empty: default_allreduce_specs()
  std::vector<std::string> strategies = {"auto"};  // "auto", "allgather", ... or "all"
  int repetitions = 3;  // timed runs after one warm-up; the median is kept
  int threads = 1;      // codec threads per rank
  bool json = false;
};

std::vector<std::string> default_allreduce_specs();

// Needs MPI initialized (qgrad::MpiRuntime); every rank calls it, rank 0 prints.
void run_allreduce_bench(const AllreduceBenchOptions& options);

}  // namespace qgrad::bench
