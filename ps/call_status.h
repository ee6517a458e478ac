// CallStatus: how the parameter server's parts answer a call: a code and a message naming what
// was wrong. Only the service glue maps it to grpc::Status (ps/server_proto.h), so that every
// other part of the server is free of gRPC and can be tested without one.
//
// The codes are the gRPC codes the server answers with; what a worker does on each is its
// contract with the server (ps/client.h, ps/worker.h):
//   kInvalidArgument     a bad request (payload, id, lr): a bug or an attack, never retried
//   kFailedPrecondition  the request does not fit the server's run or step: final
//   kNotFound            the worker is not registered (the server restarted): register, retry
//   kAborted             the server moved on without this push: pull the model and continue
//   kAlreadyExists       the worker pushed this step already under another request id
//   kUnauthenticated     no or a wrong token
//   kCancelled, kUnavailable  the client gave up, the server is shutting down
// Thread-safety: a value type.
#pragma once

#include <string>
#include <utility>

namespace qgrad::ps {

enum class CallCode {
  kOk,
  kCancelled,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kAborted,
  kUnauthenticated,
  kUnavailable,
};

struct CallStatus {
  CallCode code = CallCode::kOk;
  std::string message;

  bool ok() const { return code == CallCode::kOk; }
};

inline CallStatus call_ok() { return {}; }
inline CallStatus invalid(std::string what) {
  return {CallCode::kInvalidArgument, std::move(what)};
}
inline CallStatus precondition(std::string what) {
  return {CallCode::kFailedPrecondition, std::move(what)};
}
inline CallStatus aborted(std::string what) { return {CallCode::kAborted, std::move(what)}; }

}  // namespace qgrad::ps
