#include "comm/ps/server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>

#include "comm/ps/ps.grpc.pb.h"
#include "core/codec_registry.h"
#include "core/error.h"
#include "core/wire.h"

namespace qgrad::ps {

// Parameters travel as raw fp32 bytes; a big-endian host would need a byte swap here.
static_assert(std::endian::native == std::endian::little);

namespace {

constexpr uint32_t kProtocolVersion = 1;

grpc::Status invalid(const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, what);
}
grpc::Status precondition(const std::string& what) {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, what);
}

// Constant time, so that a wrong token's running time says nothing about how much of it matched.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned>(a[i] ^ b[i]);
  return diff == 0;
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

class ParameterServer::Impl final : public v1::ParameterServer::Service {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)) {
    QGRAD_CHECK(!options_.token.empty(), "ParameterServer: the token must not be empty");
    QGRAD_CHECK(options_.workers >= 1, "ParameterServer: workers must be >= 1, got ",
                options_.workers);
    QGRAD_CHECK(!options_.shape.empty(), "ParameterServer: the model shape is empty");
    QGRAD_CHECK(options_.initial.size() == options_.shape.size(), "ParameterServer: ",
                options_.initial.size(), " initial tensors for ", options_.shape.size(), " keys");
    for (size_t k = 0; k < options_.shape.size(); ++k) {
      QGRAD_CHECK(options_.initial[k].size() == options_.shape[k].size,
                  "ParameterServer: initial value of key ", k, " ('", options_.shape[k].name,
                  "') has ", options_.initial[k].size(), " elements, the shape says ",
                  options_.shape[k].size);
    }
    QGRAD_CHECK(options_.lr >= 0.0f && std::isfinite(options_.lr),
                "ParameterServer: lr must be finite and >= 0, got ", options_.lr);
    QGRAD_CHECK(options_.max_message_bytes >= 1024 && options_.max_message_bytes <= (1u << 31) - 1,
                "ParameterServer: max_message_bytes must be in [1024, 2^31), got ",
                options_.max_message_bytes);
    // The server sees only the aggregate, never a worker's gradient, so optimizers that commit
    // worker-side state from that gradient cannot run here.
    QGRAD_CHECK(options_.optimizer.name != "signum" && !options_.optimizer.worker_momentum,
                "ParameterServer: optimizer '", options_.optimizer.name,
                (options_.optimizer.worker_momentum ? "' with worker_momentum" : "'"),
                " keeps its state on the workers; the server supports sgd (momentum after the "
                "exchange) and adam");
    optimizer_ = make_optimizer(options_.optimizer);
    optimizer_->init(options_.shape);
    params_ = options_.initial;
    workers_.resize(options_.workers);
    pending_.resize(options_.workers);

    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen, grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      throw CommError(detail::concat("ParameterServer: cannot listen on '", options_.listen,
                                     "' (address in use or malformed?)"));
    }
  }

  ~Impl() override { shutdown(); }

  void shutdown() {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    applied_cv_.notify_all();
    // Pulls waiting for a step see stopping_ and return; the deadline bounds any other call.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }

  int port() const { return port_; }

  std::string address() const {
    std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
    if (host == "0.0.0.0" || host == "[::]" || host.empty()) host = "127.0.0.1";
    return host + ":" + std::to_string(port_);
  }

  ServerStats stats() const {
    std::lock_guard lock(mu_);
    ServerStats s;
    s.applied_steps = applied_;
    s.bytes_in = bytes_in_;
    s.bytes_out = bytes_out_;
    s.rejected = rejected_;
    for (const WorkerState& w : workers_) {
      s.last_pushed_step.push_back(w.last_step);
      s.pushes.push_back(w.pushes);
      s.duplicates.push_back(w.duplicates);
    }
    return s;
  }

  std::vector<std::vector<float>> parameters() const {
    std::lock_guard lock(mu_);
    return params_;
  }

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    grpc::Status s = do_register(*req, resp);
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Push(grpc::ServerContext* ctx, const v1::PushRequest* req,
                    v1::PushResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    grpc::Status s = do_push(*req, resp);
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Pull(grpc::ServerContext* ctx, const v1::PullRequest* req,
                    v1::PullResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    grpc::Status s = do_pull(ctx, *req, resp);
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    grpc::Status s = grpc::Status::OK;
    if (req->worker_id() >= options_.workers) {
      s = invalid(detail::concat("worker id ", req->worker_id(), " is not below the world size ",
                                 options_.workers));
    } else {
      std::lock_guard lock(mu_);
      workers_[req->worker_id()].last_seen = std::chrono::steady_clock::now();
      resp->set_applied_steps(applied_);
    }
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Status(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                      v1::StatusResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    {
      std::lock_guard lock(mu_);
      resp->set_applied_steps(applied_);
      resp->set_world_size(options_.workers);
      for (uint32_t w = 0; w < options_.workers; ++w) {
        v1::WorkerStatus* ws = resp->add_workers();
        ws->set_worker_id(w);
        ws->set_registered(workers_[w].registered);
        ws->set_last_pushed_step(workers_[w].last_step);
        ws->set_pushes(workers_[w].pushes);
        ws->set_duplicates(workers_[w].duplicates);
      }
      resp->set_bytes_in(bytes_in_);
      resp->set_bytes_out(bytes_out_);
      resp->set_rejected(rejected_);
    }
    account(grpc::Status::OK, req->ByteSizeLong(), resp->ByteSizeLong());
    return grpc::Status::OK;
  }

 private:
  struct WorkerState {
    bool registered = false;
    int64_t last_step = -1;
    uint64_t last_request_id = 0;
    uint64_t pushes = 0;
    uint64_t duplicates = 0;
    std::chrono::steady_clock::time_point last_seen{};
  };
  // A worker's push of the current step, decoded. Kept per worker (not summed on arrival) so
  // that the sum runs in worker-id order: the same pushes give the same bits in any arrival
  // order, at the cost of W copies of the model for one step.
  struct PendingPush {
    bool present = false;
    uint64_t request_id = 0;
    std::vector<std::vector<float>> decoded;
    std::vector<Aggregation> aggregation;
  };

  // Authentication and protocol version, before anything of the request is looked at.
  grpc::Status admit(const grpc::ServerContext* ctx, uint32_t version) {
    const auto& md = ctx->client_metadata();
    const auto it = md.find("authorization");
    grpc::Status s = grpc::Status::OK;
    if (it == md.end()) {
      s = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                       "missing 'authorization: Bearer <token>' metadata");
    } else if (!same_secret(std::string_view(it->second.data(), it->second.size()),
                            "Bearer " + options_.token)) {
      s = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong token");
    } else if (version != kProtocolVersion) {
      s = precondition(detail::concat("protocol version ", version, " is not supported (server ",
                                      "speaks version ", kProtocolVersion, ")"));
    }
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      ++rejected_;
    }
    return s;
  }

  void account(const grpc::Status& s, size_t in, size_t out) {
    std::lock_guard lock(mu_);
    if (s.ok()) {
      bytes_in_ += in;
      bytes_out_ += out;
    } else {
      ++rejected_;
    }
  }

  grpc::Status do_register(const v1::RegisterRequest& req, v1::RegisterResponse* resp) {
    if (req.world_size() != options_.workers) {
      return precondition(detail::concat("worker ", req.worker_id(), " expects ",
                                         req.world_size(), " workers, the server runs with ",
                                         options_.workers));
    }
    if (req.worker_id() >= options_.workers) {
      return invalid(detail::concat("worker id ", req.worker_id(), " is not below the world size ",
                                    options_.workers));
    }
    if (static_cast<size_t>(req.shape_size()) != options_.shape.size()) {
      return invalid(detail::concat("worker ", req.worker_id(), " has ", req.shape_size(),
                                    " parameters, the server holds ", options_.shape.size()));
    }
    for (size_t k = 0; k < options_.shape.size(); ++k) {
      const v1::ParamShape& p = req.shape(static_cast<int>(k));
      if (p.name() != options_.shape[k].name || p.size() != options_.shape[k].size) {
        return invalid(detail::concat("key ", k, ": worker ", req.worker_id(), " has '", p.name(),
                                      "' (", p.size(), " elements), the server holds '",
                                      options_.shape[k].name, "' (", options_.shape[k].size,
                                      " elements)"));
      }
    }
    std::lock_guard lock(mu_);
    WorkerState& w = workers_[req.worker_id()];
    w.registered = true;
    w.last_seen = std::chrono::steady_clock::now();
    resp->set_step(applied_);
    return grpc::Status::OK;
  }

  // Decodes and checks every payload of a push without the lock: the expensive part, and a bad
  // push leaves no trace in the step state.
  grpc::Status decode_push(const v1::PushRequest& req, PendingPush& out) const {
    const size_t keys = options_.shape.size();
    if (static_cast<size_t>(req.payloads_size()) != keys) {
      return invalid(detail::concat("push of worker ", req.worker_id(), " step ", req.step(),
                                    " carries ", req.payloads_size(), " keys, the server holds ",
                                    keys, " (a push must carry every key)"));
    }
    out.decoded.assign(keys, {});
    out.aggregation.assign(keys, Aggregation::kMean);
    std::vector<bool> seen(keys, false);
    for (const v1::KeyPayload& kp : req.payloads()) {
      const uint32_t k = kp.key();
      if (k >= keys) return invalid(detail::concat("key ", k, " does not exist (", keys, " keys)"));
      if (seen[k]) return invalid(detail::concat("key ", k, " appears twice in one push"));
      seen[k] = true;
      const ParamShape& shape = options_.shape[k];
      const std::span<const std::byte> payload = as_bytes(kp.payload());
      try {
        const std::unique_ptr<Codec> codec = codec_for_payload(payload);
        const WireHeader h = read_header(payload);
        if (h.elements != shape.size) {
          return invalid(detail::concat("key ", k, " ('", shape.name, "'): the payload holds ",
                                        h.elements, " elements, the key has ", shape.size));
        }
        std::vector<float> values(shape.size, 0.0f);
        codec->decode_add(payload, values, 1.0f);
        for (size_t j = 0; j < values.size(); ++j) {
          if (!std::isfinite(values[j])) {
            return invalid(detail::concat("key ", k, " ('", shape.name, "'): element ", j,
                                          " decodes to ", values[j]));
          }
        }
        out.decoded[k] = std::move(values);
        out.aggregation[k] = codec->aggregation();
      } catch (const Error& e) {
        return invalid(detail::concat("key ", k, " ('", shape.name, "'): ", e.what()));
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status do_push(const v1::PushRequest& req, v1::PushResponse* resp) {
    const uint32_t id = req.worker_id();
    if (id >= options_.workers) {
      return invalid(detail::concat("worker id ", id, " is not below the world size ",
                                    options_.workers));
    }
    {
      // A retry whose first attempt was counted: answer before decoding again.
      std::lock_guard lock(mu_);
      if (auto dup = check_duplicate(req, resp)) return *dup;
    }
    PendingPush push;
    if (grpc::Status s = decode_push(req, push); !s.ok()) return s;
    push.present = true;
    push.request_id = req.request_id();

    std::unique_lock lock(mu_);
    // The step may have moved while we decoded.
    if (auto dup = check_duplicate(req, resp)) return *dup;
    WorkerState& w = workers_[id];
    if (!w.registered) {
      return precondition(detail::concat("worker ", id, " pushed before it registered"));
    }
    if (req.step() != applied_) {
      return precondition(detail::concat("worker ", id, " pushed step ", req.step(),
                                         ", the server is collecting step ", applied_,
                                         " (synchronous mode)"));
    }
    if (pending_[id].present) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          detail::concat("worker ", id, " already pushed step ", req.step(),
                                         " with request id ", pending_[id].request_id,
                                         "; this push has request id ", req.request_id()));
    }
    for (const PendingPush& other : pending_) {
      if (!other.present) continue;
      for (size_t k = 0; k < push.aggregation.size(); ++k) {
        if (other.aggregation[k] != push.aggregation[k]) {
          return invalid(detail::concat("key ", k, " ('", options_.shape[k].name,
                                        "'): this payload's codec aggregates by ",
                                        name(push.aggregation[k]), ", another worker's by ",
                                        name(other.aggregation[k]), " in the same step"));
        }
      }
    }
    pending_[id] = std::move(push);
    w.last_step = static_cast<int64_t>(req.step());
    w.last_request_id = req.request_id();
    w.last_seen = std::chrono::steady_clock::now();
    ++w.pushes;
    if (++pushed_ == options_.workers) apply_step();
    resp->set_duplicate(false);
    resp->set_applied_steps(applied_);
    lock.unlock();
    applied_cv_.notify_all();
    return grpc::Status::OK;
  }

  // Under mu_. OK with duplicate=true when (worker, step, request id) was counted already.
  std::optional<grpc::Status> check_duplicate(const v1::PushRequest& req,
                                              v1::PushResponse* resp) {
    WorkerState& w = workers_[req.worker_id()];
    const bool counted = w.last_step == static_cast<int64_t>(req.step()) &&
                         w.last_request_id == req.request_id() && w.pushes > 0;
    if (!counted) return std::nullopt;
    ++w.duplicates;
    resp->set_duplicate(true);
    resp->set_applied_steps(applied_);
    return grpc::Status::OK;
  }

  static const char* name(Aggregation a) {
    return a == Aggregation::kMajorityVote ? "majority vote" : "mean";
  }

  // Under mu_, once every worker has pushed step applied_.
  void apply_step() {
    const float scale = optimizer_->compression_scale(options_.lr);
    const float divisor = static_cast<float>(options_.workers);
    optimizer_->begin_update();
    std::vector<float> a;
    for (size_t k = 0; k < params_.size(); ++k) {
      a.assign(params_[k].size(), 0.0f);
      for (const PendingPush& p : pending_) {
        const std::vector<float>& d = p.decoded[k];
        for (size_t j = 0; j < a.size(); ++j) a[j] += d[j];
      }
      if (pending_[0].aggregation[k] == Aggregation::kMajorityVote) {
        // The vote is a direction; s(lr) gives it the units of a mean aggregate, as in the
        // DistributedOptimizer.
        for (float& v : a) v = v >= 0.0f ? scale : -scale;
      } else if (options_.workers > 1) {
        for (float& v : a) v = v / divisor;
      }
      // The aggregate stands in for the gradient: the optimizers allowed here do not read it.
      optimizer_->apply(k, params_[k], a, a, options_.lr);
    }
    for (PendingPush& p : pending_) p = PendingPush{};
    pushed_ = 0;
    ++applied_;
  }

  grpc::Status do_pull(grpc::ServerContext* ctx, const v1::PullRequest& req,
                       v1::PullResponse* resp) {
    if (req.worker_id() >= options_.workers) {
      return invalid(detail::concat("worker id ", req.worker_id(), " is not below the world size ",
                                    options_.workers));
    }
    std::unique_lock lock(mu_);
    if (req.step() > applied_ + 1) {
      return precondition(detail::concat("worker ", req.worker_id(), " pulls step ", req.step(),
                                         ", the server is collecting step ", applied_,
                                         ": that step cannot be applied before the next one"));
    }
    // Wakes up now and then to notice a client that gave up (deadline or cancel).
    while (applied_ < req.step() && !stopping_) {
      if (ctx->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "pull cancelled by the client");
      }
      applied_cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (applied_ < req.step()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
    }
    resp->set_applied_steps(applied_);
    for (size_t k = 0; k < params_.size(); ++k) {
      v1::KeyValues* kv = resp->add_params();
      kv->set_key(static_cast<uint32_t>(k));
      kv->set_values(reinterpret_cast<const char*>(params_[k].data()),
                     params_[k].size() * sizeof(float));
    }
    return grpc::Status::OK;
  }

  const ServerOptions options_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  mutable std::mutex mu_;
  std::condition_variable applied_cv_;
  std::vector<std::vector<float>> params_;
  uint64_t applied_ = 0;
  uint32_t pushed_ = 0;
  std::vector<PendingPush> pending_;
  std::vector<WorkerState> workers_;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  uint64_t rejected_ = 0;
  bool stopping_ = false;
};

ParameterServer::ParameterServer(ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
ParameterServer::~ParameterServer() = default;
int ParameterServer::port() const { return impl_->port(); }
std::string ParameterServer::address() const { return impl_->address(); }
ServerStats ParameterServer::stats() const { return impl_->stats(); }
std::vector<std::vector<float>> ParameterServer::parameters() const { return impl_->parameters(); }
void ParameterServer::shutdown() { impl_->shutdown(); }

}  // namespace qgrad::ps
