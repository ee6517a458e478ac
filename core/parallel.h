// A small process-wide thread pool for codec kernels. Work is split in fixed chunks whose
// boundaries do not depend on the thread count, so results never do either.
// Thread-safe: parallel_for may be called from several threads at once (calls are serialized).
#pragma once

#include <cstddef>
#include <functional>

namespace qgrad {

// Threads used by parallel_for (default 1: the caller's thread only). n <= 0 means the number of
// hardware threads.
void set_num_threads(int n);
int num_threads();

// Calls fn(begin, end) for consecutive ranges [i*grain, min((i+1)*grain, n)) covering [0, n),
// spread over num_threads() threads. Rethrows the exception of the lowest failing range.
void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

}  // namespace qgrad
