// PsExchange: the worker side of training through parameter servers, behind the same
// GradientExchange interface as the DistributedOptimizer, so the worker loop (train/trainer.h)
// runs unchanged on either.
//
// Keys. The model's parameters are laid end to end in reverse order (the order backward
// produces them, as the DistributedOptimizer's buckets), the flat vector is cut into one
// contiguous range per server, balanced to within one element (balanced_chunk), and each range
// into keys of at most bucket_bytes. Neither the model's tensors nor the optimizer's buckets
// would do as keys: in the Fashion-MNIST MLP one tensor (fc1.weight) holds 99% of the bytes, so
// two servers sharded by tensor would carry 99% and 1%, and the whole model is a single 4 MiB
// bucket. Slices balance the servers by bytes for any model and any number of servers; the codecs
// do not care where a slice starts (a bucket of a codec is a run of elements of the key).
// The assignment is a pure function of the parameter shapes, the server count and bucket_bytes,
// so every worker derives the same keys; the servers check it (the shape of their keys) when the
// workers register.
//
// One step t of worker w (synchronous); the worker-side half is the WorkerEncoder's
// (optim/worker_encoder.h), shared with the DistributedOptimizer:
//   c = s(lr) * T(g) per parameter (Optimizer::contribution with the worker's own optimizer
//       state, e.g. Signum's momentum; negated for an adversary), every parameter scanned for
//       NaN/Inf before anything is pushed: InvalidArgument naming the parameter, the element and
//       the worker (as "rank w", the collective path's wording);
//   per key k: p = c_k + e_k; payload = C(p); e_k = p - D(payload)  (error feedback, optional)
//       with RngKey{seed, t, w, tensor = k's global index}; plain fp32 (codec none, no memory)
//       during the first warmup_steps steps and for keys smaller than min_compress_bytes;
//   per server, in parallel (one thread per server beyond the first): push the server's keys
//       (PsClient::push, retried with the same request id after a transient failure, below),
//       then pull step t + 1 and copy the new values into the model's parameters;
//   commit the worker-side optimizer state (Optimizer::commit: Signum's momentum).
// Every worker ends the step with the servers' parameters, bit for bit the same on all of them.
//
// Registration (in the constructor): each server receives the shape of its keys, their initial
// values, the optimizer options and the run's identity fields (plus "servers" and "shard", so a
// worker that lists the servers in another order is refused). A server that has applied steps
// already (a restarted worker rejoining a running job) gives its step: the worker pulls the
// current model and starts there (first_step()).
//
// Faults. A push of a step the server applied without this worker (quorum after the server's
// timeout) is answered ABORTED: the worker puts the dropped payload back into its error memory
// (e = p: the whole compensated contribution is sent with the next step, so with error feedback
// none of the gradient is lost; without error feedback that step's gradient is dropped), pulls
// the current model and continues at the server's step (StepStats::continue_at). On UNAVAILABLE,
// DEADLINE_EXCEEDED or CANCELLED (a server restarting, or shutting down while it answered: this
// worker never cancels its own calls) a call is retried with backoff (100 ms doubling to
// 2 s) for at most reconnect_for, registering again before each retry; a server that comes back
// from an older checkpoint moves the worker back to its step (the pushes it lost go back into
// the error memory as above). Past reconnect_for: CommError naming the server and the time.
// Several servers must agree on the step to within one (a step in flight); a server restarted
// from a checkpoint older than that is an error naming both servers.
// Downlink codec (a server option): a pull may carry the server's encoded update instead of the
// values; the worker adds it to the model it holds (copy_in), keeping the server's bits.
// Asynchronous servers (qgrad-ps --mode async, learned at registration): step t pushes with the
// version of the model it was computed on (the last pull's) and pulls the current model at once;
// the worker's step counts its own pushes (no waiting, no continue_at). A push refused as too
// stale (ABORTED) goes back into the error memory as above, and the worker pulls and goes on.
// Majority-vote codecs are refused (the server applies one push at a time).
// Not yet: overlap of pushes with backward, worker checkpoints (export_state throws: the servers
// checkpoint, a restarted worker rejoins), the nan policy skip-step (it needs the workers to
// agree).
// Thread-safety: as GradientExchange; gradient_ready() only records.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "optim/exchange_options.h"
#include "optim/gradient_exchange.h"
#include "optim/worker_encoder.h"
#include "ps/client.h"

namespace qgrad::ps {

// Part of a key: `size` elements of parameter `param` from `param_offset`, at `key_offset` in
// the key.
struct KeySlice {
  size_t param = 0;
  size_t param_offset = 0;
  size_t key_offset = 0;
  size_t size = 0;
};

struct PsKey {
  uint32_t server = 0;
  uint32_t index = 0;  // the key's index on its server (what the protocol calls the key)
  size_t size = 0;     // elements
  std::string name;    // e.g. "fc2.bias[0:10]+fc2.weight[0:2560]"
  std::vector<KeySlice> slices;
};

// The keys of `params` over `servers` servers, at most max_key_elements each (see the top of
// this file). Every server gets at least one key: InvalidArgument when the model has fewer
// elements than there are servers.
std::vector<PsKey> plan_keys(std::span<const ParamShape> params, size_t servers,
                             size_t max_key_elements);

struct PsExchangeOptions {
  std::vector<std::string> servers;  // "host:port", one per shard, in the same order everywhere
  std::string token;
  uint32_t worker_id = 0;
  uint32_t workers = 1;
  // codec, error_feedback, bucket_bytes (the largest key), warmup_steps, min_compress_bytes,
  // seed, adversarial, nan_policy (kError only); strategy is not used.
  DistributedOptimizerOptions exchange;
  // The run's identity (model, data, codec, lr schedule, seed, ...), checked by the servers.
  std::vector<std::pair<std::string, std::string>> run;
  ClientOptions client;
  // Tests: every K-th step's push is sent a second time with the same request id, as a client
  // whose response got lost would; the server must answer it as a duplicate (0: never).
  uint64_t resend_every = 0;
  // Tests: after this many steps the worker falls silent, as a killed process would: step()
  // throws CommError before pushing anything more (0: never).
  uint64_t stop_after = 0;
  // Tests: sleep this long before each step's pushes, as a slow worker (0: never).
  std::chrono::milliseconds push_delay{0};
  // How long a server may stay unreachable before the worker gives up (see the top of the file).
  std::chrono::milliseconds reconnect_for{60'000};
};

// What this worker sent, per server.
struct PsCounters {
  std::vector<uint64_t> pushes;      // distinct pushes (one per step)
  std::vector<uint64_t> resends;     // the same push sent again (retries and resend_every)
  std::vector<uint64_t> duplicates;  // resends the server answered as duplicates
  std::vector<uint64_t> bytes_pushed, bytes_pulled;
};

class PsExchange final : public GradientExchange {
 public:
  // Connects to and registers with every server. Throws InvalidArgument on bad options (no
  // server, a majority-vote codec with error feedback, nan policy skip-step), RpcError naming
  // the server when a registration is refused (wrong token, another run's model or options).
  PsExchange(std::vector<ParamView> params, std::unique_ptr<Optimizer> optimizer,
             PsExchangeOptions options);
  ~PsExchange() override;
  PsExchange(const PsExchange&) = delete;
  PsExchange& operator=(const PsExchange&) = delete;

  void begin_step(float lr) override;
  void gradient_ready(size_t param_index) override;
  StepStats step(float lr) override;

  const Codec& codec() const override { return encoder_->codec(); }
  std::string route() const override;
  const Optimizer& optimizer() const override { return *optimizer_; }
  // Workers write no checkpoints (the servers do): both throw InvalidArgument.
  StateDict export_state() const override;
  void import_state(const StateDict& state) override;

  const std::vector<PsKey>& keys() const { return keys_; }
  PsCounters counters() const;
  uint64_t steps() const { return step_; }
  uint64_t first_step() const override { return first_step_; }

 private:
  struct ServerWork {
    double encode_s = 0, exchange_s = 0, decode_s = 0;
    uint64_t sent = 0, received = 0;
    size_t compressed = 0;
  };
  // The server's step after this worker's step `step` (step + 1 unless it moved).
  uint64_t run_server(size_t s, uint64_t step, float lr, ServerWork& work);
  // Registers with server s until it answers or reconnect_for has passed; returns its step.
  uint64_t reconnect(size_t s, std::chrono::steady_clock::time_point give_up, const char* call);
  // Register's answer says whether the servers run asynchronously; all must agree.
  void note_mode(size_t s, bool async);
  // Payloads of a push the server did not count go back into the error memories.
  void restore_memories(size_t s, std::span<const std::vector<std::byte>> payloads,
                        const std::vector<bool>& through_memory);
  void copy_in(size_t s, const PullResult& pulled);

  std::vector<ParamView> params_;
  std::unique_ptr<Optimizer> optimizer_;
  PsExchangeOptions options_;
  std::unique_ptr<WorkerEncoder> encoder_;  // c, the scan, codec choice, keys, memories
  std::vector<PsKey> keys_;
  std::vector<std::vector<size_t>> server_keys_;  // per server: indices into keys_, in order
  std::vector<std::unique_ptr<PsClient>> clients_;
  std::vector<std::vector<ParamShape>> server_shapes_;
  std::vector<RegisterModel> register_models_;  // what (re)registration sends, per server
  uint64_t first_step_ = 0;
  std::optional<bool> async_;  // the servers' mode, from their first registration
  // Per server: the step whose model this worker holds (for a downlink codec's updates).
  std::vector<std::optional<uint64_t>> have_;
  std::vector<std::unique_ptr<ErrorFeedback>> memories_;  // per key; null where unused
  std::vector<std::vector<float>> contributions_;         // per parameter, this step's c
  std::vector<std::vector<float>> key_buffers_;           // per key, scratch
  mutable std::mutex counters_mutex_;
  PsCounters counters_;
  uint64_t step_ = 0;
  float begun_lr_ = -1;
  size_t elements_ = 0;
};

}  // namespace qgrad::ps
