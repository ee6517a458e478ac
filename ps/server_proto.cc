#include "ps/server_proto.h"

#include <cstddef>
#include <span>
#include <string>

#include "ps/tls.h"

namespace qgrad::ps {

namespace {

grpc::StatusCode grpc_code(CallCode code) {
  switch (code) {
    case CallCode::kOk:
      return grpc::StatusCode::OK;
    case CallCode::kCancelled:
      return grpc::StatusCode::CANCELLED;
    case CallCode::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case CallCode::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case CallCode::kAlreadyExists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case CallCode::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case CallCode::kAborted:
      return grpc::StatusCode::ABORTED;
    case CallCode::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
    case CallCode::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
  }
  return grpc::StatusCode::UNKNOWN;
}

}  // namespace

grpc::Status to_grpc(const CallStatus& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(grpc_code(s.code), s.message);
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServerOptions& options) {
  const ServerTls tls = load_server_tls(options.tls_cert, options.tls_key, options.tls_ca);
  if (!tls.enabled) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  if (!tls.client_ca_pem.empty()) {
    ssl.pem_root_certs = tls.client_ca_pem;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

OptimizerOptions from_proto(const v1::OptimizerConfig& c) {
  OptimizerOptions o;
  o.name = c.name();
  o.momentum = c.momentum();
  o.nesterov = c.nesterov();
  o.worker_momentum = c.worker_momentum();
  o.weight_decay = c.weight_decay();
  o.beta1 = c.beta1();
  o.beta2 = c.beta2();
  o.eps = c.eps();
  return o;
}

Registration registration_of(const v1::RegisterRequest& req) {
  Registration reg;
  reg.worker = req.worker_id();
  for (const v1::ParamShape& p : req.shape()) reg.shape.push_back({p.name(), p.size()});
  for (const std::string& bytes : req.initial()) reg.initial.emplace_back(bytes);
  if (req.has_optimizer()) reg.optimizer = from_proto(req.optimizer());
  for (const v1::RunField& f : req.run()) reg.run.emplace_back(f.key(), f.value());
  return reg;
}

std::vector<KeyPayloadView> payload_views(const v1::PushRequest& req) {
  std::vector<KeyPayloadView> out;
  out.reserve(static_cast<size_t>(req.payloads_size()));
  for (const v1::KeyPayload& kp : req.payloads()) {
    const std::string& bytes = kp.payload();
    out.push_back({kp.key(), {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}});
  }
  return out;
}

void fill_status(const ServerStats& s, uint32_t workers, v1::StatusResponse* resp) {
  resp->set_applied_steps(s.applied_steps);
  resp->set_world_size(workers);
  for (uint32_t w = 0; w < workers; ++w) {
    v1::WorkerStatus* ws = resp->add_workers();
    ws->set_worker_id(w);
    ws->set_registered(s.registered[w]);
    ws->set_last_pushed_step(s.last_pushed_step[w]);
    ws->set_pushes(s.pushes[w]);
    ws->set_duplicates(s.duplicates[w]);
    ws->set_missed(s.missed[w]);
  }
  resp->set_quorum_steps(s.quorum_steps);
  resp->set_checkpoint_step(s.checkpoint_step);
  resp->set_async_applied(s.async_applied);
  resp->set_stale_refused(s.stale_refused);
  resp->set_staleness_max(s.staleness_max);
  resp->set_staleness_mean(s.async_applied > 0 ? static_cast<double>(s.staleness_sum) /
                                                     static_cast<double>(s.async_applied)
                                               : 0.0);
  resp->set_bytes_in(s.bytes_in);
  resp->set_bytes_out(s.bytes_out);
  resp->set_rejected(s.rejected);
}

}  // namespace qgrad::ps
