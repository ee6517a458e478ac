// What the parameter server knows of each worker, and the rules on it that both step policies
// share: which worker ids exist, which calls need a registration, when a push is a retry of one
// already counted, and when an absent worker is waited for again.
//
// Pushes are idempotent: a push whose (worker, step, request id) is the worker's last counted
// push is a retry (its first attempt reached the server, the answer did not reach the worker):
// it is answered as a duplicate and counted once, whatever the step policy.
// Thread-safety: plain state and functions, used under the server's lock.
#pragma once

#include <cstdint>
#include <vector>

#include "ps/call_status.h"
#include "ps/server_options.h"

namespace qgrad::ps {

struct WorkerState {
  bool registered = false;
  int64_t last_step = -1;  // of the last counted push (async: the worker's own push count)
  uint64_t last_request_id = 0;
  uint64_t pushes = 0;      // counted, duplicates left out
  uint64_t duplicates = 0;  // retries answered as duplicates
  uint64_t missed = 0;      // synchronous steps applied without this worker's push
  // Missed the last step applied: later steps do not wait for it until it calls again.
  bool absent = false;
};

// INVALID_ARGUMENT "worker id N is not below the world size W" for id >= workers.
CallStatus check_worker_id(uint32_t id, uint32_t workers);

// NOT_FOUND for a call (`call`: "pushed", "pulled") of a worker that did not register. Its own
// code, not FAILED_PRECONDITION (which is final): after a server restart a worker's next call can
// reach the new server before the worker learns of the restart, and NOT_FOUND tells it to
// register again and retry.
CallStatus unregistered(uint32_t worker, const char* call);

// The push (step, request_id) of `w` was counted already: a retry, to answer as a duplicate.
bool already_counted(const WorkerState& w, uint64_t step, uint64_t request_id);

// A worker that called again is waited for again; says so (with the server's step) when it was
// absent.
void come_back(WorkerState& w, uint32_t id, uint64_t applied, const ServerLog& log);

}  // namespace qgrad::ps
