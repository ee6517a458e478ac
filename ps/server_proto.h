// The server's translation between gRPC / ps.proto and the plain types its parts work on:
// CallStatus to grpc::Status, ServerTls to gRPC credentials, requests to Registration and
// payload views, ServerStats to a StatusResponse. Used by the service glue (ps/server.cc) only:
// the one place besides it that includes gRPC on the server side.
// Thread-safety: functions of their arguments.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ps/call_status.h"
#include "ps/model_adoption.h"
#include "ps/ps.grpc.pb.h"
#include "ps/push_decoder.h"
#include "ps/server_options.h"
#include "ps/server_stats.h"

namespace qgrad::ps {

grpc::Status to_grpc(const CallStatus& s);

// Plaintext, TLS, or mutual TLS from options.tls_* (ps/tls.h; InvalidArgument naming a missing
// or unreadable file).
std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServerOptions& options);

OptimizerOptions from_proto(const v1::OptimizerConfig& c);

// The registration as the parts read it; its initial values are views into `req`.
Registration registration_of(const v1::RegisterRequest& req);

// The push's payloads, as views into `req`.
std::vector<KeyPayloadView> payload_views(const v1::PushRequest& req);

// The Status call's answer: the counters and the per-worker lists of `stats` (staleness as its
// mean).
void fill_status(const ServerStats& stats, uint32_t workers, v1::StatusResponse* resp);

}  // namespace qgrad::ps
