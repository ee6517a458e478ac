// PsClient: one worker's connection to a ParameterServer (ps/server.h). Every call carries
// the shared token and a deadline; a failure throws RpcError naming the server address, the call
// and the gRPC status code, so that a log line says which server refused what.
//
// The protocol of a synchronous step t: push(t, payloads) then pull(t + 1), which waits until the
// server has every worker's push of step t and has applied it. A push that failed with a
// transport error can be retried with the same request id; the server counts it once.
//
// Thread-safety: the calls may be made from several threads at once (one gRPC channel).
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "optim/optimizer.h"
#include "ps/server_stats.h"
#include "ps/tls.h"  // read_pem_file, for the TLS flags of the client programs

namespace qgrad::ps {

// The shared secret from --token-file: the file's content without trailing whitespace.
// InvalidArgument naming the file when it cannot be read, is empty, or holds whitespace or
// control characters inside the token (which could not travel in a gRPC header).
std::string read_token_file(const std::string& path);

struct RpcError : CommError {
  RpcError(const std::string& what, grpc::StatusCode code) : CommError(what), code(code) {}
  grpc::StatusCode code;
};

// "UNAUTHENTICATED", "INVALID_ARGUMENT", ...
const char* status_code_name(grpc::StatusCode code);

struct ClientOptions {
  // Deadline of each call but pull.
  std::chrono::milliseconds deadline{10000};
  // Deadline of pull, which waits for the slowest worker's push.
  std::chrono::milliseconds pull_deadline{60000};
  // Largest response accepted (a pull carries the whole model as fp32).
  size_t max_receive_bytes = 1u << 30;
  // TLS: PEM files. tls_ca: connect with TLS and verify the server against this CA (the server's
  // certificate must name the host of the address); tls_cert + tls_key: this client's
  // certificate, for servers that require one (mutual TLS). All empty: plaintext.
  std::string tls_ca, tls_cert, tls_key;
};

// What a registration may carry besides the shape, for a server that adopts its model from
// the first worker (qgrad-ps): see ParameterServer (ps/server.h).
struct RegisterModel {
  std::vector<std::vector<float>> initial;  // one per key; empty: send none
  std::optional<OptimizerOptions> optimizer;
  std::vector<std::pair<std::string, std::string>> run;  // the run's identity fields
};

struct RegisterResult {
  uint64_t step = 0;     // the step the server collects next
  bool adopted = false;  // this registration gave the server its model
  bool async = false;    // the server applies each push on arrival (see server.h)
};

struct PushResult {
  bool duplicate = false;  // the server had counted this (step, request id) already
  uint64_t applied_steps = 0;
  uint64_t request_bytes = 0;  // the serialized request: what this push put on the wire
};

struct PullResult {
  uint64_t applied_steps = 0;
  // One per key, sizes as registered; or, when `update` (a server with a downlink codec and a
  // worker that holds the model of applied_steps - 1), `updates`: one wire payload per key to
  // add to that model (decode_add with factor 1), params left empty.
  std::vector<std::vector<float>> params;
  bool update = false;
  std::vector<std::vector<std::byte>> updates;
  uint64_t response_bytes = 0;  // the serialized response
};

class PsClient {
 public:
  // Connects lazily: the first call reports an unreachable server. An empty token sends no
  // authorization metadata (for tests of the server's refusal).
  PsClient(std::string address, std::string token, uint32_t worker_id, ClientOptions options = {});
  ~PsClient();
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  const std::string& address() const { return address_; }
  uint32_t worker_id() const { return worker_id_; }

  // Returns the step the server collects next: where a (re)joining worker starts.
  uint64_t register_worker(uint32_t world_size, const std::vector<ParamShape>& shape);
  RegisterResult register_worker(uint32_t world_size, const std::vector<ParamShape>& shape,
                                 const RegisterModel& model);
  // payloads[k] is the wire payload of key k (core/codec.h), every key once; lr is the step's
  // learning rate (the same on every worker). model_version: the version (PullResult::
  // applied_steps) the gradient was computed on; an asynchronous server needs it.
  PushResult push(uint64_t step, uint64_t request_id,
                  std::span<const std::vector<std::byte>> payloads, float lr,
                  std::optional<uint64_t> model_version = std::nullopt);
  // Waits until `step` steps are applied; checks the sizes against the registered shape.
  // have_step: the step whose model this worker holds (a downlink codec may then answer with
  // the update from it).
  PullResult pull(uint64_t step, std::optional<uint64_t> have_step = std::nullopt);
  uint64_t heartbeat();
  ServerStats status();

 private:
  struct Connection;
  std::string address_;
  std::string token_;
  uint32_t worker_id_;
  ClientOptions options_;
  std::vector<ParamShape> shape_;
  std::unique_ptr<Connection> conn_;
};

}  // namespace qgrad::ps
