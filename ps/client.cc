#include "ps/client.h"

#include <grpcpp/grpcpp.h>

#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "ps/protocol_version.h"
#include "ps/ps.grpc.pb.h"
#include "ps/tls.h"

namespace qgrad::ps {

static_assert(std::endian::native == std::endian::little);

std::string read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QGRAD_CHECK(in.good(), "--token-file: cannot read '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  QGRAD_CHECK(!token.empty(), "--token-file: '", path, "' holds no token");
  for (const char c : token) {
    const auto u = static_cast<unsigned char>(c);
    QGRAD_CHECK(u > 0x20 && u < 0x7f, "--token-file: '", path,
                "': the token must be printable "
                "ASCII without spaces (it travels in an HTTP/2 header)");
  }
  return token;
}

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN_STATUS_CODE";
  }
}

// The gRPC channel and the generated client class on it (kept out of the header, so users of
// PsClient do not compile gRPC).
struct PsClient::Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ParameterServer::Stub> rpc;
};

PsClient::PsClient(std::string address, std::string token, uint32_t worker_id,
                   ClientOptions options)
    : address_(std::move(address)),
      token_(std::move(token)),
      worker_id_(worker_id),
      options_(options),
      conn_(std::make_unique<Connection>()) {
  QGRAD_CHECK(!address_.empty(), "PsClient: empty server address");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<size_t>(options_.max_receive_bytes, (1u << 31) - 1)));
  // Sending is bounded by the server, which refuses oversize requests itself.
  args.SetMaxSendMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  QGRAD_CHECK(options_.tls_cert.empty() == options_.tls_key.empty(),
              "PsClient: a TLS client certificate needs its key and the key its certificate");
  QGRAD_CHECK(options_.tls_cert.empty() || !options_.tls_ca.empty(),
              "PsClient: a TLS client certificate needs the CA that verifies the server");
  if (!options_.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read_pem_file(options_.tls_ca, "--tls-ca");
    if (!options_.tls_cert.empty()) {
      ssl.pem_cert_chain = read_pem_file(options_.tls_cert, "--tls-cert");
      ssl.pem_private_key = read_pem_file(options_.tls_key, "--tls-key");
    }
    credentials = grpc::SslCredentials(ssl);
  }
  conn_->channel = grpc::CreateCustomChannel(address_, credentials, args);
  conn_->rpc = v1::ParameterServer::NewStub(conn_->channel);
}

PsClient::~PsClient() = default;

namespace {

void prepare(grpc::ClientContext& ctx, const std::string& token,
             std::chrono::milliseconds deadline) {
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
}

void check(const grpc::Status& s, const std::string& address, const std::string& call) {
  if (s.ok()) return;
  throw RpcError(detail::concat("parameter server ", address, ": ", call, " failed: ",
                                status_code_name(s.error_code()), ": ", s.error_message()),
                 s.error_code());
}

}  // namespace

uint64_t PsClient::register_worker(uint32_t world_size, const std::vector<ParamShape>& shape) {
  return register_worker(world_size, shape, RegisterModel{}).step;
}

RegisterResult PsClient::register_worker(uint32_t world_size, const std::vector<ParamShape>& shape,
                                         const RegisterModel& model) {
  v1::RegisterRequest req;
  req.set_version(kProtocolVersion);
  req.set_worker_id(worker_id_);
  req.set_world_size(world_size);
  for (const ParamShape& p : shape) {
    v1::ParamShape* ps = req.add_shape();
    ps->set_name(p.name);
    ps->set_size(p.size);
  }
  for (const std::vector<float>& v : model.initial) {
    req.add_initial(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  }
  if (model.optimizer) {
    const OptimizerOptions& o = *model.optimizer;
    v1::OptimizerConfig* c = req.mutable_optimizer();
    c->set_name(o.name);
    c->set_momentum(o.momentum);
    c->set_nesterov(o.nesterov);
    c->set_worker_momentum(o.worker_momentum);
    c->set_weight_decay(o.weight_decay);
    c->set_beta1(o.beta1);
    c->set_beta2(o.beta2);
    c->set_eps(o.eps);
  }
  for (const auto& [key, value] : model.run) {
    v1::RunField* f = req.add_run();
    f->set_key(key);
    f->set_value(value);
  }
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  prepare(ctx, token_, options_.deadline);
  check(conn_->rpc->Register(&ctx, req, &resp), address_,
        detail::concat("Register (worker ", worker_id_, ")"));
  shape_ = shape;
  return {resp.step(), resp.adopted(), resp.asynchronous()};
}

PushResult PsClient::push(uint64_t step, uint64_t request_id,
                          std::span<const std::vector<std::byte>> payloads, float lr,
                          std::optional<uint64_t> model_version) {
  v1::PushRequest req;
  req.set_version(kProtocolVersion);
  req.set_worker_id(worker_id_);
  req.set_step(step);
  req.set_request_id(request_id);
  req.set_lr(lr);
  if (model_version) req.set_model_version(*model_version);
  for (size_t k = 0; k < payloads.size(); ++k) {
    v1::KeyPayload* kp = req.add_payloads();
    kp->set_key(static_cast<uint32_t>(k));
    kp->set_payload(reinterpret_cast<const char*>(payloads[k].data()), payloads[k].size());
  }
  v1::PushResponse resp;
  grpc::ClientContext ctx;
  prepare(ctx, token_, options_.deadline);
  check(conn_->rpc->Push(&ctx, req, &resp), address_,
        detail::concat("Push (worker ", worker_id_, ", step ", step, ")"));
  return {resp.duplicate(), resp.applied_steps(), req.ByteSizeLong()};
}

PullResult PsClient::pull(uint64_t step, std::optional<uint64_t> have_step) {
  v1::PullRequest req;
  req.set_version(kProtocolVersion);
  req.set_worker_id(worker_id_);
  req.set_step(step);
  if (have_step) {
    req.set_has_model(true);
    req.set_have_step(*have_step);
  }
  v1::PullResponse resp;
  grpc::ClientContext ctx;
  prepare(ctx, token_, options_.pull_deadline);
  const std::string call = detail::concat("Pull (worker ", worker_id_, ", step ", step, ")");
  check(conn_->rpc->Pull(&ctx, req, &resp), address_, call);
  PullResult out;
  out.applied_steps = resp.applied_steps();
  out.response_bytes = resp.ByteSizeLong();
  out.params.resize(static_cast<size_t>(resp.params_size()));
  if (!shape_.empty() && shape_.size() != out.params.size()) {
    throw CommError(detail::concat("parameter server ", address_, ": ", call, " returned ",
                                   out.params.size(), " keys, registered ", shape_.size()));
  }
  out.update = resp.params_size() > 0 && !resp.params(0).encoded_update().empty();
  if (out.update) {
    out.params.clear();
    out.updates.resize(static_cast<size_t>(resp.params_size()));
    for (const v1::KeyValues& kv : resp.params()) {
      const std::string& bytes = kv.encoded_update();
      if (kv.key() >= out.updates.size() || bytes.empty()) {
        throw CommError(detail::concat("parameter server ", address_, ": ", call,
                                       " returned an update for key ", kv.key(), " of ",
                                       bytes.size(), " bytes among ", out.updates.size(), " keys"));
      }
      const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
      out.updates[kv.key()].assign(p, p + bytes.size());
    }
    return out;
  }
  for (const v1::KeyValues& kv : resp.params()) {
    const std::string& bytes = kv.values();
    if (kv.key() >= out.params.size() || bytes.size() % sizeof(float) != 0 ||
        (!shape_.empty() && bytes.size() / sizeof(float) != shape_[kv.key()].size)) {
      throw CommError(detail::concat("parameter server ", address_, ": ", call, " returned key ",
                                     kv.key(), " with ", bytes.size(),
                                     " bytes, which does not match the registered shape"));
    }
    std::vector<float>& v = out.params[kv.key()];
    v.resize(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), bytes.size());
  }
  return out;
}

uint64_t PsClient::heartbeat() {
  v1::HeartbeatRequest req;
  req.set_version(kProtocolVersion);
  req.set_worker_id(worker_id_);
  v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  prepare(ctx, token_, options_.deadline);
  check(conn_->rpc->Heartbeat(&ctx, req, &resp), address_,
        detail::concat("Heartbeat (worker ", worker_id_, ")"));
  return resp.applied_steps();
}

ServerStats PsClient::status() {
  v1::StatusRequest req;
  req.set_version(kProtocolVersion);
  v1::StatusResponse resp;
  grpc::ClientContext ctx;
  prepare(ctx, token_, options_.deadline);
  check(conn_->rpc->Status(&ctx, req, &resp), address_, "Status");
  ServerStats s;
  s.applied_steps = resp.applied_steps();
  s.bytes_in = resp.bytes_in();
  s.bytes_out = resp.bytes_out();
  s.rejected = resp.rejected();
  s.quorum_steps = resp.quorum_steps();
  s.checkpoint_step = resp.checkpoint_step();
  s.async_applied = resp.async_applied();
  s.stale_refused = resp.stale_refused();
  s.staleness_max = resp.staleness_max();
  // The wire carries the mean; the sum is what ServerStats keeps.
  s.staleness_sum = static_cast<uint64_t>(
      std::llround(resp.staleness_mean() * static_cast<double>(resp.async_applied())));
  for (const v1::WorkerStatus& w : resp.workers()) {
    s.registered.push_back(w.registered());
    s.last_pushed_step.push_back(w.last_pushed_step());
    s.pushes.push_back(w.pushes());
    s.duplicates.push_back(w.duplicates());
    s.missed.push_back(w.missed());
  }
  return s;
}

}  // namespace qgrad::ps
