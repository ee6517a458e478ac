// ParameterServer: holds the model for its keys, collects the workers' encoded pushes, aggregates
// them, applies the optimizer and serves the new parameters (issue 5).
//
// The model: either given in ServerOptions (shape, initial values, optimizer: tests and
// embedding), or, when ServerOptions::shape is empty (qgrad-ps, which knows no model), adopted
// from the first worker that registers: the shape of the keys this server owns, their initial
// values, the optimizer and the run's identity fields (model, data, codec, lr schedule, seed, ...).
// Every later registration is compared with what was adopted and refused with
// FAILED_PRECONDITION naming the first field that differs ("run.seed", "optimizer.momentum",
// "key 3", "initial values").
//
// Synchronous mode (the default): step t is applied once every one of the `workers` workers has
// pushed it, or, with a timeout, once `timeout` has passed since the step's first push and at
// least `quorum` workers have pushed it: the mean is then over the workers that pushed, the step is counted in
// quorum_steps, each missing worker's `missed` grows, and `log` names them. A worker that stays
// away is reported (every `timeout` while the quorum is not there), never waited on silently. A
// late push of a step applied without it is refused with ABORTED ("step S was applied without
// worker W after the timeout"): the worker pulls the current model and continues at the server's
// step. A worker may register at any time (a restart: same id) and starts at the server's step. Per key the server decodes each payload with codec_for_payload,
// then aggregates in worker-id order, so that the same pushes give the same bits whatever the
// arrival order:
//   mean codecs            a = (1/W) sum_r D(p_r)
//   majority-vote codecs   a = s(lr) * sign(sum_r D(p_r)), a tie counting as +1
// and calls Optimizer::update(a) with the step's lr, which every push carries (all pushes of a
// step must carry the same lr). As in the DistributedOptimizer, workers push s(lr) * T(g) (SGD:
// lr * g), so an error memory on the worker stays in the units it has there. Optimizers with
// state on the workers work as in the collective path: the worker computes T(g) from its own
// momentum (Signum: m' = beta m + (1 - beta) g; sgd --worker-momentum) and commits it, the
// server runs only the shared half (Signum: x -= lr (sgn(a) + wd x)).
//
// Pushes are idempotent: (worker, step, request_id) seen before is answered as a duplicate and
// counted once. Every call must carry `authorization: Bearer <token>`. Bad payloads are refused
// with INVALID_ARGUMENT naming the key and the problem; nothing of that push is kept.
//
// Checkpoints (checkpoint_dir): every checkpoint_every applied steps the server writes
// <dir>/ps-server.qgck atomically (train/checkpoint.h: temp file, fsync, rename): parameters,
// optimizer state, applied steps, the adopted shape, optimizer options and run fields. A server
// started on a directory that holds one resumes from it (as if the model had been adopted); a
// damaged one is an error naming the file, not a silent fresh start.
//
// Asynchronous mode (async): each push is applied when it arrives, alone: a = (1/W) D(p) for
// mean codecs (W pushes make one mean step; majority-vote codecs are refused: one push is no
// vote), then Optimizer::update(a) with the push's lr, and the version (applied_steps) grows by
// one per push. A pull answers at once with the current model and its version. Every push says
// which version its gradient was computed on (model_version); its staleness is applied_steps -
// model_version, and a push staler than max_staleness is refused with ABORTED naming both (the
// worker pulls and continues). Pushes stay idempotent by (worker, step, request id), where step
// is the worker's own push count. No quorum, timeout or downlink codec (the downlink keeps one
// copy of the workers' model, which workers on different versions do not share): refused.
//
// tools/qgrad_ps.cc wraps it.
//
// Thread-safety: all public methods may be called from any thread; gRPC handlers run on gRPC's
// own threads and share one mutex (a step's work is done by the push that completes it, or by
// the quorum's timer thread after the timeout; checkpoints are written under the lock).
#pragma once

#include <cstddef>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace qgrad::ps {

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // port 0: pick a free one, see ParameterServer::port()
  std::string token;                   // required; compared with every call's bearer token
  uint32_t workers = 1;                // W: pushes needed per step
  // The model, or nothing (shape empty): then it is adopted from the first registration.
  std::vector<ParamShape> shape;            // key i is shape[i]
  std::vector<std::vector<float>> initial;  // the starting parameters, one per key
  OptimizerOptions optimizer;
  // Largest request the server accepts; larger ones fail with RESOURCE_EXHAUSTED before they are
  // parsed. Responses (pulls) are not bounded by it.
  size_t max_message_bytes = 64u << 20;
  // Asynchronous mode (see the top of the file) and its staleness bound: a push computed on a
  // model more than max_staleness versions old is refused.
  bool async = false;
  uint64_t max_staleness = UINT64_MAX;
  // Quorum: 0 waits for every worker forever; otherwise a step waits at most this long after its
  // first push, then is applied if at least `quorum` workers pushed (0: a majority, W/2 + 1).
  std::chrono::milliseconds timeout{0};
  uint32_t quorum = 0;
  // Checkpoints: "" for none; every checkpoint_every applied steps (>= 1).
  std::string checkpoint_dir;
  uint64_t checkpoint_every = 100;
  // Downlink codec ("" : pulls carry fp32 values): the server keeps the workers' model x^ beside
  // its own x; after each step it encodes u = x - x^ (so what earlier steps' encodings left out
  // is in u: the server's error memory), adds D(payload) to x^ and sends the payload to workers
  // that hold x^ of the step before; others (joining, resynchronizing) get x^ as fp32. Workers
  // train on x^; all of them hold the same bits. Majority-vote codecs are refused (their decoded
  // values do not estimate u).
  std::string downlink_codec;
  // TLS: PEM files. tls_cert + tls_key: serve TLS only (plain clients cannot connect); tls_ca as
  // well: mutual TLS, every client must present a certificate signed by that CA. All empty:
  // plaintext (loopback and trusted networks only: the token then travels in clear).
  std::string tls_cert, tls_key, tls_ca;
  // Where the server says what it did that a person should know (quorum steps, absent workers,
  // checkpoints, resuming). Called under the server's lock: keep it short, never call back.
  std::function<void(const std::string&)> log;
};

struct ServerStats {
  bool has_model = false;  // given in the options, or adopted from a registration
  uint64_t parameters = 0;  // elements over every key
  size_t keys = 0;
  uint64_t applied_steps = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t rejected = 0;
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

class ParameterServer {
 public:
  // Checks the options (InvalidArgument naming the problem), binds and starts serving. Throws
  // CommError when the address cannot be bound.
  explicit ParameterServer(ServerOptions options);
  // Stops serving: waiting pulls are answered with UNAVAILABLE.
  ~ParameterServer();
  ParameterServer(const ParameterServer&) = delete;
  ParameterServer& operator=(const ParameterServer&) = delete;

  int port() const;
  std::string address() const;  // "127.0.0.1:<port>" style, for clients
  ServerStats stats() const;
  // A copy of the current parameters, one vector per key (none before a model was adopted).
  std::vector<std::vector<float>> parameters() const;
  void shutdown();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace qgrad::ps
