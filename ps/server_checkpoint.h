// Server checkpoints: the parameter server's state in one file, written every checkpoint_every
// applied steps and read back by a server started on the same directory.
//
// <dir>/ps-server.qgck (core/checkpoint.h: temp file, fsync, rename, so a crash leaves the old
// checkpoint or the new one) holds the parameters, the workers' model x^ (ps/downlink.h), the
// optimizer's options and state, the applied steps, the shape, the CRC of the initial values and
// the run's fields: format 1, entries "ps/...". Optimizer scalars (Adam's step) are exact reals
// under "ps/scalar/<name>"; checkpoints of earlier servers hold them as C99 hex-float text
// ("%a"), which reads back to the same bits and is still accepted.
//
// A server started on a directory that holds a checkpoint resumes from it, as if the model had
// been adopted from it; a damaged one, or one written for another number of workers, is an
// InvalidArgument naming the file ("... (move it away to start a new run)"), never a silent
// fresh start, which would lose the run. A failed write is logged and training goes on: the last
// good checkpoint stays in place.
// Thread-safety: functions of their arguments; the server calls them under its lock, so that
// the state saved is one step's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "optim/optimizer.h"
#include "ps/downlink.h"
#include "ps/model_adoption.h"
#include "ps/server_options.h"

namespace qgrad::ps {

// Creates the directory (InvalidArgument naming it when it cannot) and returns the checkpoint's
// path in it.
std::string prepare_checkpoint_dir(const std::string& dir);

// The checkpoint of a server at `applied` steps.
Checkpoint server_checkpoint(uint64_t applied, uint32_t workers, const ServerModel& model,
                             const Downlink& downlink, const AdoptedRun& run);

// A checkpoint's content, checked: every key's values and replica of the same size, the workers'
// count as `workers`. Throws Error naming the problem (not the file).
struct ServerCheckpointState {
  uint64_t applied = 0;
  std::vector<ParamShape> shape;
  std::vector<std::vector<float>> values, replica;
  OptimizerOptions optimizer;
  StateDict state;
  uint32_t initial_crc = 0;
  AdoptedRun run;  // source left empty
};
ServerCheckpointState read_server_checkpoint(const Checkpoint& c, uint32_t workers);

// Loads `path` into the model, the downlink's replica and the run; returns the applied steps.
// Throws InvalidArgument naming the file (see above).
uint64_t resume_server(const std::string& path, uint32_t workers, ServerModel& model,
                       Downlink& downlink, AdoptedRun& run);

// Writes the checkpoint; true when it was written, else logs why not.
bool save_server_checkpoint(const std::string& path, uint64_t applied, uint32_t workers,
                            const ServerModel& model, const Downlink& downlink,
                            const AdoptedRun& run, const ServerLog& log);

}  // namespace qgrad::ps
