#include "ps/worker_table.h"

#include "core/error.h"

namespace qgrad::ps {

CallStatus check_worker_id(uint32_t id, uint32_t workers) {
  if (id < workers) return call_ok();
  return invalid(detail::concat("worker id ", id, " is not below the world size ", workers));
}

CallStatus unregistered(uint32_t worker, const char* call) {
  return {CallCode::kNotFound, detail::concat("worker ", worker, " ", call,
                                              " before it registered with this server "
                                              "(restarted?): register first")};
}

bool already_counted(const WorkerState& w, uint64_t step, uint64_t request_id) {
  return w.last_step == static_cast<int64_t>(step) && w.last_request_id == request_id &&
         w.pushes > 0;
}

void come_back(WorkerState& w, uint32_t id, uint64_t applied, const ServerLog& log) {
  if (!w.absent) return;
  w.absent = false;
  if (log) log(detail::concat("worker ", id, " is back (server at step ", applied, ")"));
}

}  // namespace qgrad::ps
