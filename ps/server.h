// ParameterServer: holds the model for its keys, collects the workers' encoded pushes,
// aggregates them, applies the optimizer and serves the new parameters, over gRPC
// (ps/ps.proto). tools/qgrad_ps.cc wraps it; PsClient (ps/client.h) is the other end.
//
// The server is made of parts, each with its own contract in its header:
//   ps/server_options.h     the options and the checks of their combinations
//   ps/tls.h                plaintext, TLS or mutual TLS
//   ps/auth.h               the bearer token and protocol version of every call; byte counters
//   ps/model_adoption.h     the model given in the options or adopted from the first worker;
//                           later registrations held to it
//   ps/push_decoder.h       a push's payloads checked and decoded
//   ps/worker_table.h       per-worker state; pushes are idempotent by (worker, step, request id)
//   ps/step_policy.h        when a step is applied: ps/sync_round.h (default; quorum and timeout)
//                           or ps/async_apply.h (ServerOptions::async; staleness bound)
//   ps/downlink.h           pulls that carry an encoded update (ServerOptions::downlink_codec)
//   ps/server_checkpoint.h  checkpoints and resuming from them
//   ps/server_proto.h       gRPC / ps.proto to and from the parts' plain types
// This class is the gRPC service glue between them: every call is admitted (UNAUTHENTICATED or
// FAILED_PRECONDITION before anything of the request is looked at), then answered by the parts,
// and counted in ServerStats (ps/server_stats.h).
//
// Thread-safety: all public methods may be called from any thread. gRPC handlers run on gRPC's
// own threads and share one mutex; a push's payloads are decoded without it. A step's work is done
// by the push that completes it, or by the quorum's timer thread after the timeout; the downlink
// encoding and checkpoints are written under the lock, so that they hold one step's state.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ps/server_options.h"
#include "ps/server_stats.h"

namespace qgrad::ps {

class ParameterServer {
 public:
  // Checks the options (InvalidArgument naming the problem), resumes from the checkpoint in
  // checkpoint_dir if there is one, binds and starts serving. Throws CommError when the address
  // cannot be bound.
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
