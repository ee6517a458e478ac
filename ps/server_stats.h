// ServerStats: what a ParameterServer (ps/server.h) reports about itself, in the process
// (ParameterServer::stats) or over the wire (PsClient::status, which fills the fields the Status
// call carries: counters and the per-worker lists, not has_model, parameters, keys or
// resumed_from). Its own header so that the client and the server share it without including
// each other.
// Thread-safety: a value type (a snapshot taken under the server's lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qgrad::ps {

struct ServerStats {
  bool has_model = false;   // given in the options, or adopted from a registration
  uint64_t parameters = 0;  // elements over every key
  size_t keys = 0;
  uint64_t applied_steps = 0;
  uint64_t bytes_in = 0;         // serialized requests of the calls that succeeded
  uint64_t bytes_out = 0;        // serialized responses of the calls that succeeded
  uint64_t rejected = 0;         // calls refused, for any reason
  uint64_t quorum_steps = 0;     // applied without every worker (after the timeout)
  uint64_t checkpoint_step = 0;  // the latest checkpoint written or resumed from (0: none)
  uint64_t resumed_from = 0;     // the checkpoint's step this server started from (0: none)
  // Asynchronous mode: pushes applied, pushes refused as too stale, and the staleness of the
  // applied ones (staleness_sum / async_applied is the mean).
  uint64_t async_applied = 0;
  uint64_t stale_refused = 0;
  uint64_t staleness_max = 0;
  uint64_t staleness_sum = 0;
  std::vector<bool> registered;           // per worker
  std::vector<int64_t> last_pushed_step;  // per worker, -1 before the first push
  std::vector<uint64_t> pushes;           // counted, duplicates left out
  std::vector<uint64_t> duplicates;
  std::vector<uint64_t> missed;  // per worker: steps applied without its push
};

}  // namespace qgrad::ps
