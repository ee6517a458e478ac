// GradientExchange: the step pipeline as the worker loop (train/trainer.h) drives it, whatever
// moves the gradients. Two implementations: DistributedOptimizer (optim/, collectives over a
// Communicator: MPI or threads) and ps::PsExchange (ps/, push to parameter servers and pull
// the model back). Both start from the same worker-side contract, written once in
// optim/worker_encoder.h (docs/architecture.md):
//
//   c = s(lr) * T(g) per parameter (Optimizer::contribution, negated for an adversary);
//   p = c + e; send C(p); e = p - D(C(p))   (error feedback, optional, one memory per bucket/key)
//
// and end with the model's parameters updated by the aggregate of every worker's contribution.
// One step: begin_step(lr) (optional, lets buckets go while backward runs), gradient_ready(i)
// for each parameter as backward produces it, step(lr).
// Thread-safety: gradient_ready() may be called from any thread; the rest from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/strategies/compressed_allreduce.h"
#include "core/codec.h"
#include "optim/optimizer.h"

namespace qgrad {

// What one bucket of the DistributedOptimizer did in a step (the parameter-server path reports
// the step's totals only: StepStats::buckets stays empty there).
struct BucketStats {
  Strategy strategy = Strategy::kPlain;  // what ran; kPlain (codec none) when uncompressed
  bool compressed = false;
  bool exchanged = false;    // false when a NaN stopped the step before this bucket
  bool before_step = false;  // its exchange had finished when step() was called
  uint64_t bytes_sent = 0;   // flag + data, as counted by the Communicator
  uint64_t bytes_received = 0;
  uint64_t dense_bytes = 0;  // 4 * elements: one fp32 copy of the bucket
  uint64_t raw_bytes = 0;    // what the plain fp32 ring allreduce would send from this rank
};

struct StepStats {
  uint64_t step = 0;  // the step's index (RngKey.step)
  float lr = 0;
  bool skipped = false;     // nan policy skip-step: nothing was updated
  std::string skip_reason;  // names the parameter, element and rank
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t dense_bytes = 0;  // 4 * elements of every bucket: one fp32 copy of the model
  // The fp32 baseline: what the plain ring allreduce would send from this rank for the same
  // buckets; on the parameter-server path (no ring), 4 * elements, pushing c as fp32.
  uint64_t raw_bytes = 0;
  double prepare_s = 0;   // contribution c and the finiteness check, on the exchange thread
  double encode_s = 0;    // from compressed_allreduce (worker and owner encodes)
  double exchange_s = 0;  // inside collectives, the NaN flag included
  double decode_s = 0;    // decoding, summing, voting, dividing by W
  double update_s = 0;    // Optimizer::apply (parameter server: Optimizer::commit)
  double wait_s = 0;      // how long step() waited for the exchange thread
  size_t compressed_buckets = 0;
  size_t overlapped_buckets = 0;  // buckets exchanged before step() was called
  std::vector<BucketStats> buckets;
  // Set when training must continue at another step than step + 1 (parameter servers: this
  // worker's push was dropped because the step was applied without it, or a server restarted
  // from an older checkpoint); the parameters hold that step's model already.
  std::optional<uint64_t> continue_at;
};

class GradientExchange {
 public:
  virtual ~GradientExchange() = default;

  // This step's learning rate is known: exchanges may start while backward runs.
  virtual void begin_step(float lr) = 0;
  // The gradient of parameter i is final for this step. Once per parameter and step.
  virtual void gradient_ready(size_t param_index) = 0;
  // Finishes the step: every gradient is exchanged and the parameters hold the new values.
  // Throws on failure; NaN handling per the implementation (DistributedOptimizer: nan policy).
  virtual StepStats step(float lr) = 0;

  // The gradient codec (compressed buckets/keys).
  virtual const Codec& codec() const = 0;
  // How gradients travel, for headers and metrics: "scatter-reduce", "majority", "ps", ...
  virtual std::string route() const = 0;
  // The optimizer this worker runs (its worker-side half, for the parameter server).
  virtual const Optimizer& optimizer() const = 0;

  // Checkpoint state of this worker (optimizer state and error memories), between steps.
  virtual StateDict export_state() const = 0;
  virtual void import_state(const StateDict& state) = 0;
  // The step training starts at: 0, or for a worker that joined a running job (parameter
  // servers) the servers' step, whose model the exchange has put into the parameters already.
  virtual uint64_t first_step() const { return 0; }
};

}  // namespace qgrad
