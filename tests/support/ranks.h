// run_ranks: many ranks in one process for tests (gloo's and c10d's pattern). Runs fn on `world`
// threads joined by one LocalHub. The first exception of any rank aborts the hub, so peers throw
// CommError instead of hanging; run_ranks rethrows that first exception. Inside fn use EXPECT_*,
// never ASSERT_*: an ASSERT returns from one rank's lambda while its peers wait in a collective.
#pragma once

#include <chrono>
#include <functional>

#include "comm/local/local_communicator.h"

namespace qgrad {

inline void run_ranks(int world, const std::function<void(Communicator&)>& fn,
                      CommOptions options = {.timeout = std::chrono::seconds(10)}) {
  run_local(world, fn, options);
}

}  // namespace qgrad
