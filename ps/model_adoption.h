// The server's model and run, and how registrations give them and are held to them.
//
// The model is either given in ServerOptions (shape, initial values, optimizer: tests and
// embedding), or, when ServerOptions::shape is empty (qgrad-ps, which knows no model), adopted
// from the first worker that registers: the shape of the keys this server owns, their initial
// values, the optimizer and the run's identity fields (model, data, codec, lr schedule, seed,
// ...). A first registration without shape, initial values or optimizer is refused with
// FAILED_PRECONDITION; one with malformed values (wrong size, not finite) or options the
// optimizer refuses with INVALID_ARGUMENT. Every later registration is compared with what was
// adopted and refused with FAILED_PRECONDITION naming the first field that differs ("run.seed",
// "optimizer.momentum", "key 3", "initial values") and where the server's value came from. The
// initial values are compared by CRC-32C: the server keeps the checksum, not a second copy.
//
// The model never changes shape once adopted, so the push decoder may read `shape` without the
// server's lock as soon as a worker is registered.
// Thread-safety: plain state and functions, used under the server's lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "optim/optimizer.h"
#include "ps/call_status.h"

namespace qgrad::ps {

// The run's identity fields, in the order the first worker sent them.
using RunFieldList = std::vector<std::pair<std::string, std::string>>;

// A Register call as the server reads it (ps/ps.proto RegisterRequest).
struct Registration {
  uint32_t worker = 0;
  std::vector<ParamShape> shape;
  std::vector<std::string_view> initial;  // per key, the raw fp32 bytes as sent (may be none)
  std::optional<OptimizerOptions> optimizer;
  RunFieldList run;
};

struct ServerModel {
  bool present = false;  // set once: by the options, a checkpoint or the first registration
  std::vector<ParamShape> shape;
  OptimizerOptions optimizer_options;
  std::unique_ptr<Optimizer> optimizer;
  std::vector<std::vector<float>> params;  // x, one vector per key
  uint32_t initial_crc = 0;                // of the initial values, which workers send
  std::string source;                      // "worker 0", "the server's options", for messages
};

struct AdoptedRun {
  bool adopted = false;
  RunFieldList fields;
  std::string source;  // "worker 0", "the checkpoint <path>", for messages
};

// CRC-32C of the tensors' fp32 bytes, one after the other.
uint32_t crc_of(const std::vector<std::vector<float>>& tensors);

// Takes the model. Throws InvalidArgument (optimizer options, duplicate key names) and then
// leaves `model` as it was.
void adopt_model(ServerModel& model, std::vector<ParamShape> shape,
                 std::vector<std::vector<float>> initial, const OptimizerOptions& optimizer,
                 std::string source);

// The first registration of a server without a model gives it one (see above).
CallStatus adopt_registration(const Registration& reg, ServerModel& model);

// A registration against the model and run the server has: the first difference is named.
CallStatus compare_registration(const Registration& reg, const ServerModel& model,
                                const AdoptedRun& run);

// The first registration that reaches a server without run fields gives it them (also an empty
// list: a worker that sends none is then held to none).
void adopt_run(const Registration& reg, AdoptedRun& run);

// The first field in which two optimizer configurations differ ("" when none), as
// "optimizer.<field>: worker W sends X, the server runs Y".
std::string optimizer_difference(const OptimizerOptions& theirs, const OptimizerOptions& ours,
                                 uint32_t worker);

}  // namespace qgrad::ps
