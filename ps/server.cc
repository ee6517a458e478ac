// The gRPC service glue of the ParameterServer (see server.h): each handler admits the call,
// hands the request to the parts under the one mutex (decoding a push outside it), and answers
// with what they return (ps/server_proto.h translates).
#include "ps/server.h"

#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <utility>

#include "core/error.h"
#include "ps/auth.h"
#include "ps/call_status.h"
#include "ps/downlink.h"
#include "ps/model_adoption.h"
#include "ps/push_decoder.h"
#include "ps/server_checkpoint.h"
#include "ps/server_proto.h"
#include "ps/step_policy.h"
#include "ps/worker_table.h"

namespace qgrad::ps {

// Parameters travel as raw fp32 bytes; a big-endian host would need a byte swap here.
static_assert(std::endian::native == std::endian::little);

namespace {

ServerOptions checked(ServerOptions options) {
  check_server_options(options);
  return options;
}

}  // namespace

class ParameterServer::Impl final : public v1::ParameterServer::Service {
 public:
  explicit Impl(ServerOptions options)
      : options_(checked(std::move(options))),
        downlink_(options_.downlink_codec),
        policy_(make_step_policy(options_)) {
    if (!options_.shape.empty()) {
      check_given_model(options_);
      adopt_model(model_, options_.shape, options_.initial, options_.optimizer,
                  "the server's options");
      downlink_.reset(model_.params);
    }
    workers_.resize(options_.workers);
    if (!options_.checkpoint_dir.empty()) {
      checkpoint_path_ = prepare_checkpoint_dir(options_.checkpoint_dir);
      if (std::filesystem::exists(checkpoint_path_)) {
        applied_ = resume_server(checkpoint_path_, options_.workers, model_, downlink_, run_);
        resumed_from_ = applied_;
        checkpoint_step_ = applied_;
        if (options_.log) {
          options_.log(detail::concat("resumed from the checkpoint ", checkpoint_path_, " at step ",
                                      applied_));
        }
      }
    }

    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen, server_credentials(options_), &port_);
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

  int port() const { return port_; }

  std::string address() const {
    std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
    if (host == "0.0.0.0" || host == "[::]" || host.empty()) host = "127.0.0.1";
    return host + ":" + std::to_string(port_);
  }

  ServerStats stats() const {
    std::lock_guard lock(mu_);
    return snapshot();
  }

  std::vector<std::vector<float>> parameters() const {
    std::lock_guard lock(mu_);
    return model_.params;
  }

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    const grpc::Status s = to_grpc(do_register(*req, resp));
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Push(grpc::ServerContext* ctx, const v1::PushRequest* req,
                    v1::PushResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    const grpc::Status s = to_grpc(do_push(*req, resp));
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Pull(grpc::ServerContext* ctx, const v1::PullRequest* req,
                    v1::PullResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    const grpc::Status s = to_grpc(do_pull(ctx, *req, resp));
    account(s, req->ByteSizeLong(), resp->ByteSizeLong());
    return s;
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    CallStatus s = check_worker_id(req->worker_id(), options_.workers);
    if (s.ok()) {
      std::lock_guard lock(mu_);
      come_back(workers_[req->worker_id()], req->worker_id(), applied_, options_.log);
      resp->set_applied_steps(applied_);
    }
    const grpc::Status status = to_grpc(s);
    account(status, req->ByteSizeLong(), resp->ByteSizeLong());
    return status;
  }

  grpc::Status Status(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                      v1::StatusResponse* resp) override {
    if (auto s = admit(ctx, req->version()); !s.ok()) return s;
    {
      std::lock_guard lock(mu_);
      fill_status(snapshot(), options_.workers, resp);
    }
    account(grpc::Status::OK, req->ByteSizeLong(), resp->ByteSizeLong());
    return grpc::Status::OK;
  }

 private:
  // Authentication and protocol version, before anything of the request is looked at.
  grpc::Status admit(const grpc::ServerContext* ctx, uint32_t version) {
    const auto& md = ctx->client_metadata();
    const auto it = md.find("authorization");
    std::optional<std::string_view> authorization;
    if (it != md.end()) authorization.emplace(it->second.data(), it->second.size());
    const CallStatus s = admit_call(authorization, options_.token, version);
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      ++counters_.rejected;
    }
    return to_grpc(s);
  }

  void account(const grpc::Status& s, size_t in, size_t out) {
    std::lock_guard lock(mu_);
    counters_.count(s.ok(), in, out);
  }

  // Under mu_.
  ServerStats snapshot() const {
    ServerStats s;
    s.has_model = model_.present;
    s.keys = model_.shape.size();
    for (const ParamShape& p : model_.shape) s.parameters += p.size;
    s.applied_steps = applied_;
    s.bytes_in = counters_.bytes_in;
    s.bytes_out = counters_.bytes_out;
    s.rejected = counters_.rejected;
    s.checkpoint_step = checkpoint_step_;
    s.resumed_from = resumed_from_;
    policy_->add_stats(s);
    for (const WorkerState& w : workers_) {
      s.missed.push_back(w.missed);
      s.registered.push_back(w.registered);
      s.last_pushed_step.push_back(w.last_step);
      s.pushes.push_back(w.pushes);
      s.duplicates.push_back(w.duplicates);
    }
    return s;
  }

  // Under mu_: what the step policy works on.
  StepContext context() { return StepContext{applied_, workers_, model_, options_.log}; }

  CallStatus do_register(const v1::RegisterRequest& req, v1::RegisterResponse* resp) {
    const uint32_t id = req.worker_id();
    if (req.world_size() != options_.workers) {
      return precondition(detail::concat("worker ", id, " expects ", req.world_size(),
                                         " workers, the server runs with ", options_.workers));
    }
    if (CallStatus s = check_worker_id(id, options_.workers); !s.ok()) return s;
    const Registration reg = registration_of(req);
    std::lock_guard lock(mu_);
    bool adopted = false;
    if (!model_.present) {
      if (CallStatus s = adopt_registration(reg, model_); !s.ok()) return s;
      downlink_.reset(model_.params);
      adopted = true;
    } else if (CallStatus s = compare_registration(reg, model_, run_); !s.ok()) {
      return s;
    }
    adopt_run(reg, run_);
    WorkerState& w = workers_[id];
    if (w.registered && options_.log) {
      options_.log(detail::concat(
          "worker ", id, " registered again (restarted?); it continues at step ", applied_));
    }
    w.registered = true;
    come_back(w, id, applied_, options_.log);
    resp->set_step(policy_->start_step(w, applied_));
    if (policy_->asynchronous()) resp->set_asynchronous(true);
    resp->set_adopted(adopted);
    return call_ok();
  }

  // Under mu_: a retry of a counted push is answered as a duplicate (true).
  bool answer_duplicate(const v1::PushRequest& req, v1::PushResponse* resp) {
    WorkerState& w = workers_[req.worker_id()];
    if (!already_counted(w, req.step(), req.request_id())) return false;
    ++w.duplicates;
    resp->set_duplicate(true);
    resp->set_applied_steps(applied_);
    return true;
  }

  CallStatus do_push(const v1::PushRequest& req, v1::PushResponse* resp) {
    const uint32_t id = req.worker_id();
    if (CallStatus s = check_worker_id(id, options_.workers); !s.ok()) return s;
    {
      // A retry whose first attempt was counted: answer before decoding again.
      std::lock_guard lock(mu_);
      if (answer_duplicate(req, resp)) return call_ok();
      // Registered implies a model: its shape is fixed from here on, decoding reads it unlocked.
      if (!workers_[id].registered) return unregistered(id, "pushed");
    }
    if (CallStatus s = check_push_lr(id, req.step(), req.lr()); !s.ok()) return s;
    DecodedPush push;
    if (CallStatus s = decode_push(id, req.step(), payload_views(req), model_.shape, push);
        !s.ok()) {
      return s;
    }
    push.present = true;
    push.request_id = req.request_id();
    push.lr = req.lr();
    PushInfo info;
    info.worker = id;
    info.step = req.step();
    if (req.has_model_version()) info.model_version = req.model_version();
    if (CallStatus s = policy_->screen(info, push, model_.shape); !s.ok()) return s;

    std::unique_lock lock(mu_);
    // The step may have moved while we decoded.
    if (answer_duplicate(req, resp)) return call_ok();
    info.now = std::chrono::steady_clock::now();
    StepContext ctx = context();
    const PushOutcome outcome = policy_->on_push(info, std::move(push), ctx);
    if (!outcome.status.ok()) return outcome.status;
    if (outcome.applied) after_step();
    resp->set_duplicate(false);
    resp->set_applied_steps(applied_);
    lock.unlock();
    applied_cv_.notify_all();
    return call_ok();
  }

  // Under mu_, after a policy applied step applied_ - 1: the downlink update, a checkpoint when
  // one is due.
  void after_step() {
    if (downlink_.enabled()) downlink_.encode(model_.params, applied_);
    if (!checkpoint_path_.empty() && applied_ % options_.checkpoint_every == 0) {
      if (save_server_checkpoint(checkpoint_path_, applied_, options_.workers, model_, downlink_,
                                 run_, options_.log)) {
        checkpoint_step_ = applied_;
      }
    }
  }

  // The quorum's timer (with a timeout only): the step policy decides, every 20 ms.
  void monitor() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      applied_cv_.wait_for(lock, std::chrono::milliseconds(20));
      if (stopping_) continue;
      StepContext ctx = context();
      if (!policy_->on_timer(ctx, std::chrono::steady_clock::now())) continue;
      after_step();
      lock.unlock();
      applied_cv_.notify_all();
      lock.lock();
    }
  }

  CallStatus do_pull(grpc::ServerContext* ctx, const v1::PullRequest& req, v1::PullResponse* resp) {
    const uint32_t id = req.worker_id();
    if (CallStatus s = check_worker_id(id, options_.workers); !s.ok()) return s;
    std::unique_lock lock(mu_);
    if (!workers_[id].registered) return unregistered(id, "pulled");
    come_back(workers_[id], id, applied_, options_.log);
    if (CallStatus s = policy_->check_pull(id, req.step(), applied_); !s.ok()) return s;
    // Wakes up now and then to notice a client that gave up (deadline or cancel).
    while (!policy_->pull_ready(req.step(), applied_) && !stopping_) {
      if (ctx->IsCancelled()) return {CallCode::kCancelled, "pull cancelled by the client"};
      applied_cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (!policy_->pull_ready(req.step(), applied_)) {
      return {CallCode::kUnavailable, "the server is shutting down"};
    }
    resp->set_applied_steps(applied_);
    // With a downlink codec the workers hold x^: the update from the step they hold, or x^.
    const bool update = downlink_.sends_update(req.has_model(), req.have_step(), applied_);
    const std::vector<std::vector<float>>& model =
        downlink_.enabled() ? downlink_.replica() : model_.params;
    for (size_t k = 0; k < model.size(); ++k) {
      v1::KeyValues* kv = resp->add_params();
      kv->set_key(static_cast<uint32_t>(k));
      if (update) {
        const std::vector<std::byte>& u = downlink_.update(k);
        kv->set_encoded_update(reinterpret_cast<const char*>(u.data()), u.size());
      } else {
        kv->set_values(reinterpret_cast<const char*>(model[k].data()),
                       model[k].size() * sizeof(float));
      }
    }
    return call_ok();
  }

  const ServerOptions options_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  mutable std::mutex mu_;
  std::condition_variable applied_cv_;
  // Everything below is guarded by mu_, but for model_.shape, which a registered worker's push
  // may read without it (it is set once, before the first registration succeeds).
  Downlink downlink_;
  std::unique_ptr<StepPolicy> policy_;
  ServerModel model_;
  AdoptedRun run_;
  std::vector<WorkerState> workers_;
  uint64_t applied_ = 0;
  CallCounters counters_;
  bool stopping_ = false;
  std::string checkpoint_path_;
  uint64_t checkpoint_step_ = 0;
  uint64_t resumed_from_ = 0;
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
