// ServerOptions: everything a ParameterServer (ps/server.h) is configured with, and the checks
// that refuse a combination that cannot work before anything is bound or loaded. Each field says
// which part of the server it configures; the parts' headers hold their contracts.
// Thread-safety: a value type; the checks are functions of it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace qgrad::ps {

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // port 0: pick a free one, see ParameterServer::port()
  std::string token;                   // required; compared with every call's bearer token
  uint32_t workers = 1;                // W: pushes needed per step
  // The model, or nothing (shape empty): then it is adopted from the first registration
  // (ps/model_adoption.h).
  std::vector<ParamShape> shape;            // key i is shape[i]
  std::vector<std::vector<float>> initial;  // the starting parameters, one per key
  OptimizerOptions optimizer;
  // Largest request the server accepts; larger ones fail with RESOURCE_EXHAUSTED before they are
  // parsed. Responses (pulls) are not bounded by it.
  size_t max_message_bytes = 64u << 20;
  // Asynchronous mode (ps/async_apply.h) and its staleness bound: a push computed on a model more
  // than max_staleness versions old is refused.
  bool async = false;
  uint64_t max_staleness = UINT64_MAX;
  // Quorum (ps/sync_round.h): 0 waits for every worker forever; otherwise a step waits at most
  // this long after its first push, then is applied if at least `quorum` workers pushed (0: a
  // majority, W/2 + 1).
  std::chrono::milliseconds timeout{0};
  uint32_t quorum = 0;
  // Checkpoints (ps/server_checkpoint.h): "" for none; every checkpoint_every applied steps (>= 1).
  std::string checkpoint_dir;
  uint64_t checkpoint_every = 100;
  // Downlink codec (ps/downlink.h; "" : pulls carry fp32 values): the server keeps the workers'
  // model x^ beside its own x; after each step it encodes u = x - x^ (so what earlier steps'
  // encodings left out is in u: the server's error memory), adds D(payload) to x^ and sends the
  // payload to workers that hold x^ of the step before; others (joining, resynchronizing) get x^
  // as fp32. Workers train on x^; all of them hold the same bits. Majority-vote codecs are
  // refused (their decoded values do not estimate u).
  std::string downlink_codec;
  // TLS (ps/tls.h): PEM files. tls_cert + tls_key: serve TLS only (plain clients cannot
  // connect); tls_ca as well: mutual TLS, every client must present a certificate signed by that
  // CA. All empty: plaintext (loopback and trusted networks only: the token then travels in
  // clear).
  std::string tls_cert, tls_key, tls_ca;
  // Where the server says what it did that a person should know (quorum steps, absent workers,
  // checkpoints, resuming). Called under the server's lock: keep it short, never call back.
  std::function<void(const std::string&)> log;
};

// The log callback as the parts receive it (may be empty: then they say nothing).
using ServerLog = std::function<void(const std::string&)>;

// InvalidArgument naming the problem: an empty token, no workers, a message bound out of
// [1024, 2^31), a negative timeout, a quorum above W or without a timeout, checkpoint_every 0,
// and the options of one mode given to the other (timeout, quorum and the downlink codec are
// synchronous; max_staleness is asynchronous). The model, the downlink codec's spec and the TLS
// files are checked by the parts that use them.
void check_server_options(const ServerOptions& options);

// InvalidArgument unless options.initial has one tensor per key of options.shape, each of the
// key's size (only for a model given in the options: options.shape not empty).
void check_given_model(const ServerOptions& options);

// The pushes a synchronous step needs: every worker without a timeout; with one, `quorum` or,
// when that is 0, a majority (W/2 + 1).
uint32_t effective_quorum(const ServerOptions& options);

}  // namespace qgrad::ps
