#include "ps/server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "ps/client.h"  // read_pem_file
#include "ps/ps.grpc.pb.h"
#include "core/codec_registry.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "core/wire.h"
#include "core/checkpoint.h"

namespace qgrad::ps {

// Parameters travel as raw fp32 bytes; a big-endian host would need a byte swap here.
static_assert(std::endian::native == std::endian::little);

namespace {

constexpr uint32_t kProtocolVersion = 2;

grpc::Status invalid(const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, what);
}
grpc::Status precondition(const std::string& what) {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, what);
}
// A call from a worker this server does not know. Its own code (not FAILED_PRECONDITION, which
// is final): after a server restart a worker's next call can reach the new server before the
// worker learns of the restart, and NOT_FOUND tells it to register again and retry.
grpc::Status unregistered(uint32_t worker, const char* call) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND,
                      detail::concat("worker ", worker, " ", call,
                                     " before it registered with this server (restarted?): "
                                     "register first"));
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

// The first field in which two optimizer configurations differ ("" when none), as
// "optimizer.<field>: worker W sends X, the server runs Y".
std::string optimizer_difference(const OptimizerOptions& theirs, const OptimizerOptions& ours,
                                 uint32_t worker) {
  const auto differ = [&](const char* field, const auto& a, const auto& b) {
    return detail::concat("optimizer.", field, ": worker ", worker, " sends ", a,
                          ", the server runs ", b);
  };
  if (theirs.name != ours.name) {
    return differ("name", "'" + theirs.name + "'", "'" + ours.name + "'");
  }
  if (theirs.momentum != ours.momentum) return differ("momentum", theirs.momentum, ours.momentum);
  if (theirs.nesterov != ours.nesterov) return differ("nesterov", theirs.nesterov, ours.nesterov);
  if (theirs.worker_momentum != ours.worker_momentum) {
    return differ("worker_momentum", theirs.worker_momentum, ours.worker_momentum);
  }
  if (theirs.weight_decay != ours.weight_decay) {
    return differ("weight_decay", theirs.weight_decay, ours.weight_decay);
  }
  if (theirs.beta1 != ours.beta1) return differ("beta1", theirs.beta1, ours.beta1);
  if (theirs.beta2 != ours.beta2) return differ("beta2", theirs.beta2, ours.beta2);
  if (theirs.eps != ours.eps) return differ("eps", theirs.eps, ours.eps);
  return "";
}

grpc::Status aborted(const std::string& what) {
  return grpc::Status(grpc::StatusCode::ABORTED, what);
}

std::string id_list(const std::vector<uint32_t>& ids) {
  std::string out;
  for (const uint32_t id : ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

// Doubles (optimizer scalars such as Adam's step) as text that reads back to the same bits.
std::string exact(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

uint32_t crc_of(const std::vector<std::vector<float>>& tensors) {
  uint32_t crc = 0;
  for (const auto& t : tensors) crc = crc32c(std::as_bytes(std::span<const float>(t)), crc);
  return crc;
}

}  // namespace

class ParameterServer::Impl final : public v1::ParameterServer::Service {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)) {
    QGRAD_CHECK(!options_.token.empty(), "ParameterServer: the token must not be empty");
    QGRAD_CHECK(options_.workers >= 1, "ParameterServer: workers must be >= 1, got ",
                options_.workers);
    QGRAD_CHECK(options_.max_message_bytes >= 1024 && options_.max_message_bytes <= (1u << 31) - 1,
                "ParameterServer: max_message_bytes must be in [1024, 2^31), got ",
                options_.max_message_bytes);
    QGRAD_CHECK(options_.timeout.count() >= 0, "ParameterServer: the timeout must be >= 0");
    QGRAD_CHECK(options_.quorum <= options_.workers, "ParameterServer: quorum ", options_.quorum,
                " is more than the ", options_.workers, " workers");
    QGRAD_CHECK(options_.quorum == 0 || options_.timeout.count() > 0,
                "ParameterServer: a quorum needs a timeout (without one every step waits for "
                "every worker)");
    QGRAD_CHECK(options_.checkpoint_every >= 1, "ParameterServer: checkpoint_every must be >= 1");
    if (options_.async) {
      // Sync-only machinery: a quorum completes a step, the downlink keeps one copy of the
      // workers' model; in async mode there are no steps to complete and no shared copy.
      QGRAD_CHECK(options_.timeout.count() == 0 && options_.quorum == 0, "ParameterServer: "
                  "--timeout and --quorum are for the synchronous mode (async mode applies each "
                  "push when it arrives and waits for nobody)");
      QGRAD_CHECK(options_.downlink_codec.empty(), "ParameterServer: --downlink-codec needs "
                  "the synchronous mode: the server keeps one copy of the workers' model, and "
                  "asynchronous workers hold different versions");
    } else {
      QGRAD_CHECK(options_.max_staleness == UINT64_MAX, "ParameterServer: --max-staleness is "
                  "for the asynchronous mode (--mode async)");
    }
    if (!options_.downlink_codec.empty()) {
      downlink_ = make_codec(options_.downlink_codec);  // names a bad spec
      QGRAD_CHECK(downlink_->aggregation() == Aggregation::kMean, "ParameterServer: downlink "
                  "codec '", options_.downlink_codec, "' sends a majority vote of signs, which "
                  "does not estimate the update; use e.g. qsgd:bits=8 or sign:scale=l1");
    }
    quorum_ = options_.quorum > 0 ? options_.quorum : options_.workers / 2 + 1;
    if (options_.timeout.count() == 0) quorum_ = options_.workers;
    if (!options_.shape.empty()) {
      QGRAD_CHECK(options_.initial.size() == options_.shape.size(), "ParameterServer: ",
                  options_.initial.size(), " initial tensors for ", options_.shape.size(),
                  " keys");
      for (size_t k = 0; k < options_.shape.size(); ++k) {
        QGRAD_CHECK(options_.initial[k].size() == options_.shape[k].size,
                    "ParameterServer: initial value of key ", k, " ('", options_.shape[k].name,
                    "') has ", options_.initial[k].size(), " elements, the shape says ",
                    options_.shape[k].size);
      }
      adopt(options_.shape, options_.initial, options_.optimizer, "the server's options");
    }
    workers_.resize(options_.workers);
    pending_.resize(options_.workers);
    if (!options_.checkpoint_dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(options_.checkpoint_dir, ec);
      QGRAD_CHECK(!ec, "ParameterServer: cannot create the checkpoint directory '",
                  options_.checkpoint_dir, "': ", ec.message());
      checkpoint_path_ = (std::filesystem::path(options_.checkpoint_dir) / "ps-server.qgck").string();
      if (std::filesystem::exists(checkpoint_path_)) resume(checkpoint_path_);
    }

    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen, credentials(), &port_);
    builder.RegisterService(this);
    builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      throw CommError(detail::concat("ParameterServer: cannot listen on '", options_.listen,
                                     "' (address in use or malformed?)"));
    }
    if (options_.timeout.count() > 0) monitor_ = std::thread([this] { monitor(); });
  }

  ~Impl() override { shutdown(); }

  // Plaintext, TLS, or mutual TLS (see ServerOptions).
  std::shared_ptr<grpc::ServerCredentials> credentials() const {
    QGRAD_CHECK(options_.tls_cert.empty() == options_.tls_key.empty(),
                "ParameterServer: TLS needs both the certificate (--tls-cert) and its key "
                "(--tls-key)");
    QGRAD_CHECK(options_.tls_ca.empty() || !options_.tls_cert.empty(),
                "ParameterServer: --tls-ca (client certificates) needs --tls-cert and --tls-key");
    if (options_.tls_cert.empty()) return grpc::InsecureServerCredentials();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({read_pem_file(options_.tls_key, "--tls-key"),
                                      read_pem_file(options_.tls_cert, "--tls-cert")});
    if (!options_.tls_ca.empty()) {
      ssl.pem_root_certs = read_pem_file(options_.tls_ca, "--tls-ca");
      ssl.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    return grpc::SslServerCredentials(ssl);
  }

  void shutdown() {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    applied_cv_.notify_all();
    if (monitor_.joinable()) monitor_.join();
    // Pulls waiting for a step see stopping_ and return; the deadline bounds any other call.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }

  // Takes the model: from the options, or (under mu_) from the first registration. The shape
  // never changes afterwards, so decode_push may read it without the lock once model_ is set.
  void adopt(std::vector<ParamShape> shape, std::vector<std::vector<float>> initial,
             const OptimizerOptions& optimizer, std::string source) {
    optimizer_ = make_optimizer(optimizer);  // checks the options
    optimizer_->init(shape);                 // checks that names are unique
    optimizer_options_ = optimizer;
    shape_ = std::move(shape);
    initial_crc_ = crc_of(initial);
    replica_ = initial;
    params_ = std::move(initial);
    update_.clear();
    model_source_ = std::move(source);
    model_ = true;
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
    s.has_model = model_;
    s.keys = shape_.size();
    for (const ParamShape& p : shape_) s.parameters += p.size;
    s.applied_steps = applied_;
    s.bytes_in = bytes_in_;
    s.bytes_out = bytes_out_;
    s.rejected = rejected_;
    s.quorum_steps = quorum_steps_;
    s.checkpoint_step = checkpoint_step_;
    s.resumed_from = resumed_from_;
    s.async_applied = async_applied_;
    s.stale_refused = stale_refused_;
    s.staleness_max = staleness_max_;
    s.staleness_sum = staleness_sum_;
    for (const WorkerState& w : workers_) {
      s.missed.push_back(w.missed);
      s.registered.push_back(w.registered);
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
      come_back(req->worker_id());
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
        ws->set_missed(workers_[w].missed);
      }
      resp->set_quorum_steps(quorum_steps_);
      resp->set_checkpoint_step(checkpoint_step_);
      resp->set_async_applied(async_applied_);
      resp->set_stale_refused(stale_refused_);
      resp->set_staleness_max(staleness_max_);
      resp->set_staleness_mean(async_applied_ > 0 ? static_cast<double>(staleness_sum_) /
                                                        static_cast<double>(async_applied_)
                                                  : 0.0);
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
    uint64_t missed = 0;
    // Missed the last step applied: later steps do not wait for it until it calls again.
    bool absent = false;
    std::chrono::steady_clock::time_point last_seen{};
  };
  // A worker's push of the current step, decoded. Kept per worker (not summed on arrival) so
  // that the sum runs in worker-id order: the same pushes give the same bits in any arrival
  // order, at the cost of W copies of the model for one step.
  struct PendingPush {
    bool present = false;
    uint64_t request_id = 0;
    float lr = 0;
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
    const uint32_t id = req.worker_id();
    if (req.world_size() != options_.workers) {
      return precondition(detail::concat("worker ", id, " expects ", req.world_size(),
                                         " workers, the server runs with ", options_.workers));
    }
    if (id >= options_.workers) {
      return invalid(detail::concat("worker id ", id, " is not below the world size ",
                                    options_.workers));
    }
    std::vector<ParamShape> shape;
    for (const v1::ParamShape& p : req.shape()) shape.push_back({p.name(), p.size()});
    std::lock_guard lock(mu_);
    bool adopted = false;
    if (!model_) {
      if (grpc::Status s = adopt_from(req, std::move(shape)); !s.ok()) return s;
      adopted = true;
    } else if (grpc::Status s = compare(req, shape); !s.ok()) {
      return s;
    }
    if (!run_adopted_) {
      for (const v1::RunField& f : req.run()) run_.emplace_back(f.key(), f.value());
      run_adopted_ = true;
      run_source_ = detail::concat("worker ", id);
    }
    WorkerState& w = workers_[id];
    if (w.registered && options_.log) {
      options_.log(detail::concat("worker ", id, " registered again (restarted?); it continues at "
                                  "step ", applied_));
    }
    w.registered = true;
    w.last_seen = std::chrono::steady_clock::now();
    come_back(id);
    resp->set_step(applied_);
    if (options_.async) {
      // A worker's step counts its own pushes, not the server's versions: a new worker starts
      // at 0 whatever the others did, a restarted one after its last counted push (so that it
      // never repeats a (step, request id) the server has counted).
      resp->set_step(static_cast<uint64_t>(w.last_step + 1));
      resp->set_asynchronous(true);
    }
    resp->set_adopted(adopted);
    return grpc::Status::OK;
  }

  // Under mu_: the first registration of a server without a model gives it one.
  grpc::Status adopt_from(const v1::RegisterRequest& req, std::vector<ParamShape> shape) {
    const uint32_t id = req.worker_id();
    if (shape.empty() || req.initial_size() == 0 || !req.has_optimizer()) {
      return precondition(detail::concat(
          "the server has no model yet: worker ", id, "'s registration must carry the shape of "
          "its keys, their initial values and the optimizer (it carries ", shape.size(),
          " keys, ", req.initial_size(), " initial tensors", req.has_optimizer() ? "" : ", no optimizer",
          ")"));
    }
    if (static_cast<size_t>(req.initial_size()) != shape.size()) {
      return invalid(detail::concat("worker ", id, " sends ", req.initial_size(),
                                    " initial tensors for ", shape.size(), " keys"));
    }
    std::vector<std::vector<float>> initial(shape.size());
    for (size_t k = 0; k < shape.size(); ++k) {
      const std::string& bytes = req.initial(static_cast<int>(k));
      if (bytes.size() != shape[k].size * sizeof(float)) {
        return invalid(detail::concat("key ", k, " ('", shape[k].name, "'): the initial value has ",
                                      bytes.size(), " bytes, the shape needs ",
                                      shape[k].size * sizeof(float)));
      }
      initial[k].resize(shape[k].size);
      std::memcpy(initial[k].data(), bytes.data(), bytes.size());
      for (size_t j = 0; j < initial[k].size(); ++j) {
        if (!std::isfinite(initial[k][j])) {
          return invalid(detail::concat("key ", k, " ('", shape[k].name, "'): initial element ",
                                        j, " is ", initial[k][j]));
        }
      }
    }
    try {
      adopt(std::move(shape), std::move(initial), from_proto(req.optimizer()),
            detail::concat("worker ", id));
    } catch (const Error& e) {
      return invalid(detail::concat("worker ", id, "'s model or optimizer: ", e.what()));
    }
    return grpc::Status::OK;
  }

  // Under mu_: a registration against the model the server has. The first difference is named.
  grpc::Status compare(const v1::RegisterRequest& req, const std::vector<ParamShape>& shape) {
    const uint32_t id = req.worker_id();
    const auto refuse = [&](const std::string& what, const std::string& source) {
      return precondition(detail::concat("worker ", id, " does not match this server's run: ",
                                         what, " (adopted from ", source, ")"));
    };
    if (run_adopted_) {
      for (const auto& [key, value] : run_) {
        const auto it = std::find_if(req.run().begin(), req.run().end(),
                                     [&](const v1::RunField& f) { return f.key() == key; });
        if (it == req.run().end()) {
          return refuse(detail::concat("run.", key, ": worker ", id, " does not send it"),
                        run_source_);
        }
        if (it->value() != value) {
          return refuse(detail::concat("run.", key, ": worker ", id, " has '", it->value(),
                                       "', the server's run has '", value, "'"),
                        run_source_);
        }
      }
      for (const v1::RunField& f : req.run()) {
        const bool known = std::any_of(run_.begin(), run_.end(),
                                       [&](const auto& kv) { return kv.first == f.key(); });
        if (!known) {
          return refuse(detail::concat("run.", f.key(), ": worker ", id, " has '", f.value(),
                                       "', the server's run has no such field"),
                        run_source_);
        }
      }
    }
    if (shape.size() != shape_.size()) {
      return refuse(detail::concat("worker ", id, " has ", shape.size(),
                                   " keys for this server, the server holds ", shape_.size()),
                    model_source_);
    }
    for (size_t k = 0; k < shape_.size(); ++k) {
      if (shape[k].name != shape_[k].name || shape[k].size != shape_[k].size) {
        return refuse(detail::concat("key ", k, ": worker ", id, " has '", shape[k].name, "' (",
                                     shape[k].size, " elements), the server holds '",
                                     shape_[k].name, "' (", shape_[k].size, " elements)"),
                      model_source_);
      }
    }
    if (req.has_optimizer()) {
      const std::string diff =
          optimizer_difference(from_proto(req.optimizer()), optimizer_options_, id);
      if (!diff.empty()) return refuse(diff, model_source_);
    }
    if (req.initial_size() > 0) {
      std::vector<std::vector<float>> initial;
      for (int k = 0; k < req.initial_size() && static_cast<size_t>(k) < shape_.size(); ++k) {
        const std::string& bytes = req.initial(k);
        std::vector<float> v(bytes.size() / sizeof(float));
        std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
        initial.push_back(std::move(v));
      }
      if (static_cast<size_t>(req.initial_size()) != shape_.size() ||
          crc_of(initial) != initial_crc_) {
        return refuse(detail::concat("initial values: worker ", id,
                                     "'s differ from the adopted ones (another --seed or "
                                     "model initialisation?)"),
                      model_source_);
      }
    }
    return grpc::Status::OK;
  }

  // Decodes and checks every payload of a push without the lock: the expensive part, and a bad
  // push leaves no trace in the step state.
  grpc::Status decode_push(const v1::PushRequest& req, PendingPush& out) const {
    const size_t keys = shape_.size();
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
      const ParamShape& shape = shape_[k];
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
      // Registered implies a model: shape_ is fixed from here on, decode_push reads it unlocked.
      if (!workers_[id].registered) {
        return unregistered(id, "pushed");
      }
    }
    if (!std::isfinite(req.lr()) || req.lr() < 0.0f) {
      return invalid(detail::concat("push of worker ", id, " step ", req.step(), ": lr ",
                                    req.lr(), " is not a finite number >= 0"));
    }
    PendingPush push;
    if (grpc::Status s = decode_push(req, push); !s.ok()) return s;
    push.present = true;
    push.request_id = req.request_id();
    push.lr = req.lr();
    if (options_.async) return apply_async(req, push, resp);

    std::unique_lock lock(mu_);
    // The step may have moved while we decoded.
    if (auto dup = check_duplicate(req, resp)) return *dup;
    WorkerState& w = workers_[id];
    if (!w.registered) {
      return unregistered(id, "pushed");
    }
    if (req.step() < applied_) {
      return aborted(detail::concat("step ", req.step(), " was applied without worker ", id,
                                    " after the timeout; the server is at step ", applied_,
                                    ": pull the current model and continue there"));
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
    for (uint32_t o = 0; o < options_.workers; ++o) {
      const PendingPush& other = pending_[o];
      if (!other.present) continue;
      if (std::bit_cast<uint32_t>(other.lr) != std::bit_cast<uint32_t>(push.lr)) {
        return invalid(detail::concat("worker ", id, " pushed step ", req.step(), " with lr ",
                                      push.lr, ", worker ", o, " with lr ", other.lr,
                                      " (workers must run the same lr schedule)"));
      }
      for (size_t k = 0; k < push.aggregation.size(); ++k) {
        if (other.aggregation[k] != push.aggregation[k]) {
          return invalid(detail::concat("key ", k, " ('", shape_[k].name,
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
    come_back(id);
    if (pushed_++ == 0) first_push_ = std::chrono::steady_clock::now();
    if (step_complete()) apply_step();
    resp->set_duplicate(false);
    resp->set_applied_steps(applied_);
    lock.unlock();
    applied_cv_.notify_all();
    return grpc::Status::OK;
  }

  // Asynchronous mode: the decoded push is applied now, alone (see server.h).
  grpc::Status apply_async(const v1::PushRequest& req, const PendingPush& push,
                           v1::PushResponse* resp) {
    const uint32_t id = req.worker_id();
    for (size_t k = 0; k < push.aggregation.size(); ++k) {
      if (push.aggregation[k] == Aggregation::kMajorityVote) {
        return invalid(detail::concat("key ", k, " ('", shape_[k].name, "'): this payload's "
                                      "codec aggregates by majority vote, which the asynchronous "
                                      "mode cannot do (one push is no vote); use a mean codec "
                                      "such as sign:scale=l1 or qsgd"));
      }
    }
    if (!req.has_model_version()) {
      return invalid(detail::concat("push of worker ", id, " step ", req.step(), " does not say "
                                    "which model version it was computed on (model_version), "
                                    "which the asynchronous mode needs (an older client?)"));
    }
    std::unique_lock lock(mu_);
    if (auto dup = check_duplicate(req, resp)) return *dup;
    WorkerState& w = workers_[id];
    if (!w.registered) {
      return precondition(detail::concat("worker ", id, " pushed before it registered"));
    }
    if (static_cast<int64_t>(req.step()) <= w.last_step) {
      return precondition(detail::concat("worker ", id, " pushed step ", req.step(), " after its "
                                         "step ", w.last_step, " (asynchronous mode: a worker's "
                                         "steps only grow)"));
    }
    const uint64_t version = req.model_version();
    w.last_seen = std::chrono::steady_clock::now();
    if (version > applied_) {
      return aborted(detail::concat("worker ", id, "'s push was computed on version ", version,
                                    ", the server is at version ", applied_, " (it restarted "
                                    "from an older checkpoint?): pull the current model and "
                                    "continue"));
    }
    const uint64_t staleness = applied_ - version;
    if (staleness > options_.max_staleness) {
      ++stale_refused_;
      return aborted(detail::concat("stale push: worker ", id, " step ", req.step(), " was "
                                    "computed on version ", version, ", the server is at version ",
                                    applied_, ": staleness ", staleness, " exceeds "
                                    "--max-staleness ", options_.max_staleness, "; pull the "
                                    "current model and continue"));
    }
    const float divisor = static_cast<float>(options_.workers);
    optimizer_->begin_update();
    std::vector<float> a;
    for (size_t k = 0; k < params_.size(); ++k) {
      a = push.decoded[k];
      if (options_.workers > 1) {
        for (float& v : a) v = v / divisor;  // as sync's mean: W pushes make one mean step
      }
      optimizer_->update(k, params_[k], a, push.lr);
    }
    ++applied_;
    ++async_applied_;
    staleness_max_ = std::max(staleness_max_, staleness);
    staleness_sum_ += staleness;
    w.last_step = static_cast<int64_t>(req.step());
    w.last_request_id = req.request_id();
    ++w.pushes;
    if (!checkpoint_path_.empty() && applied_ % options_.checkpoint_every == 0) save_checkpoint();
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

  // Under mu_: a worker that called again is waited for again.
  void come_back(uint32_t id) {
    WorkerState& w = workers_[id];
    if (!w.absent) return;
    w.absent = false;
    if (options_.log) {
      options_.log(detail::concat("worker ", id, " is back (server at step ", applied_, ")"));
    }
  }

  // Under mu_: every worker not marked absent has pushed, and at least the quorum.
  bool step_complete() const {
    if (pushed_ < quorum_) return false;
    for (uint32_t w = 0; w < options_.workers; ++w) {
      if (!pending_[w].present && !workers_[w].absent) return false;
    }
    return true;
  }

  // The quorum's timer: a step whose first push is `timeout` old is applied with the pushes it
  // has when they are a quorum; otherwise the missing workers are reported every `timeout`.
  void monitor() {
    std::unique_lock lock(mu_);
    auto next_report = std::chrono::steady_clock::time_point::min();
    uint64_t reported_step = ~uint64_t{0};
    while (!stopping_) {
      applied_cv_.wait_for(lock, std::chrono::milliseconds(20));
      if (stopping_ || pushed_ == 0) continue;
      const auto now = std::chrono::steady_clock::now();
      if (now - first_push_ < options_.timeout) continue;
      if (pushed_ >= quorum_) {
        apply_step();
        lock.unlock();
        applied_cv_.notify_all();
        lock.lock();
        continue;
      }
      if (reported_step == applied_ && now < next_report) continue;
      reported_step = applied_;
      next_report = now + options_.timeout;
      if (options_.log) {
        const double waited =
            std::chrono::duration<double>(now - first_push_).count();
        options_.log(detail::concat("step ", applied_, " has waited ", waited, " s: ", pushed_,
                                    " of ", options_.workers, " workers pushed, the quorum is ",
                                    quorum_, "; missing workers ", id_list(missing()),
                                    "; still waiting"));
      }
    }
  }

  std::vector<uint32_t> missing() const {
    std::vector<uint32_t> out;
    for (uint32_t w = 0; w < options_.workers; ++w) {
      if (!pending_[w].present) out.push_back(w);
    }
    return out;
  }

  // Under mu_, once step_complete() or the timeout with a quorum. The mean is over the workers
  // that pushed; the others are marked absent (not waited for until they call again).
  void apply_step() {
    const std::vector<uint32_t> missed = missing();
    std::vector<uint32_t> newly_absent;
    for (const uint32_t w : missed) {
      ++workers_[w].missed;
      if (!workers_[w].absent) newly_absent.push_back(w);
      workers_[w].absent = true;
    }
    if (!missed.empty()) {
      ++quorum_steps_;
      if (options_.log && !newly_absent.empty()) {
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - first_push_).count();
        options_.log(detail::concat("step ", applied_, " applied with ", pushed_, " of ",
                                    options_.workers, " workers after ", waited,
                                    " s (timeout); missing workers ", id_list(newly_absent),
                                    " (later steps do not wait for them until they call again)"));
      }
    }
    const PendingPush* first = nullptr;
    for (const PendingPush& p : pending_) {
      if (p.present && first == nullptr) first = &p;
    }
    const float lr = first->lr;  // every push of the step carries the same (checked)
    const float scale = optimizer_->compression_scale(lr);
    const float divisor = static_cast<float>(pushed_);
    optimizer_->begin_update();
    std::vector<float> a;
    for (size_t k = 0; k < params_.size(); ++k) {
      a.assign(params_[k].size(), 0.0f);
      for (const PendingPush& p : pending_) {
        if (!p.present) continue;
        const std::vector<float>& d = p.decoded[k];
        for (size_t j = 0; j < a.size(); ++j) a[j] += d[j];
      }
      if (first->aggregation[k] == Aggregation::kMajorityVote) {
        // The vote is a direction; s(lr) gives it the units of a mean aggregate, as in the
        // DistributedOptimizer.
        for (float& v : a) v = v >= 0.0f ? scale : -scale;
      } else if (pushed_ > 1) {
        for (float& v : a) v = v / divisor;
      }
      // Only the shared half of the optimizer: worker-side state (Signum's momentum) stays on
      // the workers, which commit it themselves.
      optimizer_->update(k, params_[k], a, lr);
    }
    for (PendingPush& p : pending_) p = PendingPush{};
    pushed_ = 0;
    ++applied_;
    if (downlink_) encode_downlink();
    if (!checkpoint_path_.empty() && applied_ % options_.checkpoint_every == 0) save_checkpoint();
  }

  // Under mu_, after step applied_ - 1: u = x - x^ per key, encoded; x^ += D(payload).
  void encode_downlink() {
    update_.resize(params_.size());
    std::vector<float> u;
    for (size_t k = 0; k < params_.size(); ++k) {
      u.resize(params_[k].size());
      for (size_t j = 0; j < u.size(); ++j) u[j] = params_[k][j] - replica_[k][j];
      const RngKey key{.seed = 0x5eed,
                       .step = applied_,
                       .rank = 0xFFFFFFFFu,  // the server, apart from every worker
                       .tensor = static_cast<uint32_t>(k),
                       .bucket = 0};
      update_[k] = downlink_->encode(u, key);
      downlink_->decode_add(update_[k], replica_[k], 1.0f);
    }
    update_step_ = applied_;
  }

  // Under mu_ (so that the state is one step's): what resume() reads back.
  void save_checkpoint() {
    Checkpoint c;
    c.set_integer("ps/format", 1);
    c.set_integer("ps/applied_steps", static_cast<int64_t>(applied_));
    c.set_integer("ps/workers", options_.workers);
    c.set_integer("ps/keys", static_cast<int64_t>(shape_.size()));
    c.set_integer("ps/initial_crc", initial_crc_);
    for (size_t k = 0; k < shape_.size(); ++k) {
      c.set_text(detail::concat("ps/key/", k, "/name"), shape_[k].name);
      c.set_buffer(detail::concat("ps/key/", k, "/values"), params_[k]);
      c.set_buffer(detail::concat("ps/key/", k, "/replica"), replica_[k]);
    }
    const OptimizerOptions& o = optimizer_options_;
    c.set_text("ps/optimizer/name", o.name);
    c.set_integer("ps/optimizer/nesterov", o.nesterov);
    c.set_integer("ps/optimizer/worker_momentum", o.worker_momentum);
    const float floats[] = {o.momentum, o.weight_decay, o.beta1, o.beta2, o.eps};
    c.set_buffer("ps/optimizer/floats", floats);
    const StateDict state = optimizer_->export_state();
    for (const auto& [name, values] : state.buffers) c.set_buffer("ps/state/" + name, values);
    for (const auto& [name, value] : state.scalars) c.set_text("ps/scalar/" + name, exact(value));
    c.set_integer("ps/run/fields", run_adopted_ ? static_cast<int64_t>(run_.size()) : -1);
    for (size_t i = 0; i < run_.size(); ++i) {
      c.set_text(detail::concat("ps/run/", i, "/key"), run_[i].first);
      c.set_text(detail::concat("ps/run/", i, "/value"), run_[i].second);
    }
    try {
      c.save(checkpoint_path_);
      checkpoint_step_ = applied_;
    } catch (const Error& e) {
      // Training goes on; the last good checkpoint stays in place (the write is atomic).
      if (options_.log) options_.log(detail::concat("checkpoint at step ", applied_, " failed: ",
                                                    e.what()));
    }
  }

  // In the constructor: the model, optimizer state, step and run from a checkpoint. Any damage
  // or mismatch is an error naming the file: silently starting over would lose the run.
  void resume(const std::string& path) {
    try {
      const Checkpoint c = Checkpoint::load(path);
      QGRAD_CHECK(c.integer("ps/format") == 1, "unknown format ", c.integer("ps/format"));
      QGRAD_CHECK(c.integer("ps/workers") == options_.workers, "it was written by a server with ",
                  c.integer("ps/workers"), " workers, this one runs with ", options_.workers);
      const int64_t keys = c.integer("ps/keys");
      QGRAD_CHECK(keys >= 1, "it holds ", keys, " keys");
      std::vector<ParamShape> shape;
      std::vector<std::vector<float>> values;
      for (int64_t k = 0; k < keys; ++k) {
        values.push_back(c.buffer(detail::concat("ps/key/", k, "/values")));
        shape.push_back({c.text(detail::concat("ps/key/", k, "/name")), values.back().size()});
      }
      OptimizerOptions o;
      o.name = c.text("ps/optimizer/name");
      o.nesterov = c.integer("ps/optimizer/nesterov") != 0;
      o.worker_momentum = c.integer("ps/optimizer/worker_momentum") != 0;
      const std::vector<float>& f = c.buffer("ps/optimizer/floats");
      QGRAD_CHECK(f.size() == 5, "ps/optimizer/floats holds ", f.size(), " values, not 5");
      o.momentum = f[0];
      o.weight_decay = f[1];
      o.beta1 = f[2];
      o.beta2 = f[3];
      o.eps = f[4];
      StateDict state;
      for (const std::string& name : c.names()) {
        if (name.rfind("ps/state/", 0) == 0) state.buffers[name.substr(9)] = c.buffer(name);
        if (name.rfind("ps/scalar/", 0) == 0) {
          state.scalars[name.substr(10)] = std::strtod(c.text(name).c_str(), nullptr);
        }
      }
      const uint32_t crc = static_cast<uint32_t>(c.integer("ps/initial_crc"));
      std::vector<std::vector<float>> replica;
      for (int64_t k = 0; k < keys; ++k) {
        replica.push_back(c.buffer(detail::concat("ps/key/", k, "/replica")));
        QGRAD_CHECK(replica.back().size() == values[static_cast<size_t>(k)].size(), "key ", k,
                    ": the workers' model has ", replica.back().size(), " elements, not ",
                    values[static_cast<size_t>(k)].size());
      }
      adopt(std::move(shape), std::move(values), o, "the checkpoint " + path);
      replica_ = std::move(replica);  // workers reconnecting pull it as fp32
      optimizer_->import_state(state);
      initial_crc_ = crc;  // adopt() took the crc of the current values; workers send initial ones
      const int64_t fields = c.integer("ps/run/fields");
      run_adopted_ = fields >= 0;
      for (int64_t i = 0; i < fields; ++i) {
        run_.emplace_back(c.text(detail::concat("ps/run/", i, "/key")),
                          c.text(detail::concat("ps/run/", i, "/value")));
      }
      run_source_ = "the checkpoint " + path;
      applied_ = static_cast<uint64_t>(c.integer("ps/applied_steps"));
      resumed_from_ = applied_;
      checkpoint_step_ = applied_;
    } catch (const Error& e) {
      throw InvalidArgument(detail::concat("ParameterServer: cannot resume from the checkpoint '",
                                           path, "': ", e.what(),
                                           " (move it away to start a new run)"));
    }
    if (options_.log) {
      options_.log(detail::concat("resumed from the checkpoint ", path, " at step ", applied_));
    }
  }

  grpc::Status do_pull(grpc::ServerContext* ctx, const v1::PullRequest& req,
                       v1::PullResponse* resp) {
    if (req.worker_id() >= options_.workers) {
      return invalid(detail::concat("worker id ", req.worker_id(), " is not below the world size ",
                                    options_.workers));
    }
    std::unique_lock lock(mu_);
    if (!workers_[req.worker_id()].registered) {
      return unregistered(req.worker_id(), "pulled");
    }
    come_back(req.worker_id());
    if (!options_.async && req.step() > applied_ + 1) {
      return precondition(detail::concat("worker ", req.worker_id(), " pulls step ", req.step(),
                                         ", the server is collecting step ", applied_,
                                         ": that step cannot be applied before the next one"));
    }
    // Wakes up now and then to notice a client that gave up (deadline or cancel).
    // Asynchronous mode answers at once with the current version, whatever step was asked.
    while (!options_.async && applied_ < req.step() && !stopping_) {
      if (ctx->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "pull cancelled by the client");
      }
      applied_cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (!options_.async && applied_ < req.step()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
    }
    resp->set_applied_steps(applied_);
    // With a downlink codec the workers hold x^: the update from the step they hold, or x^.
    const bool update = downlink_ && req.has_model() && update_step_ == applied_ &&
                        applied_ > 0 && req.have_step() + 1 == applied_ && !update_.empty();
    const std::vector<std::vector<float>>& model = downlink_ ? replica_ : params_;
    for (size_t k = 0; k < model.size(); ++k) {
      v1::KeyValues* kv = resp->add_params();
      kv->set_key(static_cast<uint32_t>(k));
      if (update) {
        kv->set_encoded_update(reinterpret_cast<const char*>(update_[k].data()),
                               update_[k].size());
      } else {
        kv->set_values(reinterpret_cast<const char*>(model[k].data()),
                       model[k].size() * sizeof(float));
      }
    }
    return grpc::Status::OK;
  }

  const ServerOptions options_;
  // The model (set once, by the constructor or the first registration, under mu_).
  bool model_ = false;
  std::vector<ParamShape> shape_;
  OptimizerOptions optimizer_options_;
  uint32_t initial_crc_ = 0;
  std::string model_source_;  // "worker 0" or "the server's options", for messages
  std::vector<std::pair<std::string, std::string>> run_;
  bool run_adopted_ = false;
  std::string run_source_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  mutable std::mutex mu_;
  std::condition_variable applied_cv_;
  std::vector<std::vector<float>> params_;
  std::unique_ptr<Codec> downlink_;            // null: pulls carry fp32 values of params_
  std::vector<std::vector<float>> replica_;    // x^: the workers' model (downlink codec)
  std::vector<std::vector<std::byte>> update_;  // per key: the encoded x^ update to update_step_
  uint64_t update_step_ = 0;
  uint64_t applied_ = 0;
  uint32_t pushed_ = 0;
  std::vector<PendingPush> pending_;
  std::vector<WorkerState> workers_;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  uint64_t rejected_ = 0;
  bool stopping_ = false;
  uint32_t quorum_ = 1;  // pushes a step needs (W without a timeout)
  std::chrono::steady_clock::time_point first_push_{};  // of the step being collected
  uint64_t quorum_steps_ = 0;
  std::string checkpoint_path_;
  uint64_t checkpoint_step_ = 0;
  uint64_t resumed_from_ = 0;
  uint64_t async_applied_ = 0;
  uint64_t stale_refused_ = 0;
  uint64_t staleness_max_ = 0;
  uint64_t staleness_sum_ = 0;
  std::thread monitor_;
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
