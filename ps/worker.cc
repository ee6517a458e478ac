#include "ps/worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <thread>

#include "comm/communicator.h"
#include "core/codec_registry.h"
#include "core/error.h"
#include "core/error_feedback.h"
#include "core/timer.h"
#include "core/wire.h"

namespace qgrad::ps {
namespace {

std::string slice_name(const ParamShape& p, size_t offset, size_t size) {
  return detail::concat(p.name, "[", offset, ":", offset + size, "]");
}

}  // namespace

std::vector<PsKey> plan_keys(std::span<const ParamShape> params, size_t servers,
                             size_t max_key_elements) {
  QGRAD_CHECK(servers >= 1, "parameter server: no server given");
  QGRAD_CHECK(max_key_elements >= 1, "parameter server: keys must hold at least one element");
  // The flat order: parameters in reverse (backward's order), as the DistributedOptimizer's
  // buckets.
  std::vector<size_t> order;
  size_t total = 0;
  for (size_t i = params.size(); i-- > 0;) {
    order.push_back(i);
    total += params[i].size;
  }
  QGRAD_CHECK(total >= servers, "parameter server: the model has ", total,
              " parameters (elements), fewer than the ", servers, " servers; use fewer servers");
  std::vector<PsKey> keys;
  size_t cursor = 0;  // position in `order`
  size_t within = 0;  // elements of params[order[cursor]] already assigned
  for (size_t s = 0; s < servers; ++s) {
    const ChunkRange range = balanced_chunk(total, static_cast<int>(servers), static_cast<int>(s));
    const size_t n = range.size();
    const size_t count = (n + max_key_elements - 1) / max_key_elements;
    for (size_t k = 0; k < count; ++k) {
      PsKey key;
      key.server = static_cast<uint32_t>(s);
      key.index = static_cast<uint32_t>(k);
      key.size = balanced_chunk(n, static_cast<int>(count), static_cast<int>(k)).size();
      size_t filled = 0;
      while (filled < key.size) {
        const size_t i = order[cursor];
        const size_t take = std::min(params[i].size - within, key.size - filled);
        if (take > 0) {
          key.slices.push_back({i, within, filled, take});
          filled += take;
          within += take;
        }
        if (within == params[i].size) {
          ++cursor;
          within = 0;
        }
      }
      // Parameters of size 0 between slices belong to no key; nothing to send for them.
      const KeySlice& first = key.slices.front();
      const KeySlice& last = key.slices.back();
      key.name = slice_name(params[first.param], first.param_offset, first.size);
      if (key.slices.size() > 2) {
        key.name = detail::concat(key.name, "+(", key.slices.size() - 2, " more)");
      }
      if (key.slices.size() > 1) {
        key.name = detail::concat(key.name, "+",
                                  slice_name(params[last.param], last.param_offset, last.size));
      }
      keys.push_back(std::move(key));
    }
  }
  return keys;
}

PsExchange::PsExchange(std::vector<ParamView> params, std::unique_ptr<Optimizer> optimizer,
                       PsExchangeOptions options)
    : params_(std::move(params)), optimizer_(std::move(optimizer)), options_(std::move(options)) {
  QGRAD_CHECK(optimizer_ != nullptr, "parameter server worker: no optimizer given");
  QGRAD_CHECK(!options_.servers.empty(), "parameter server worker: no server address given");
  QGRAD_CHECK(options_.workers >= 1 && options_.worker_id < options_.workers,
              "parameter server worker: worker id ", options_.worker_id,
              " must be below the number of workers (", options_.workers, ")");
  QGRAD_CHECK(options_.exchange.bucket_bytes >= 4,
              "parameter server worker: bucket_bytes must hold at least one float");
  QGRAD_CHECK(options_.exchange.nan_policy == NanPolicy::kError,
              "the nan policy 'skip-step' needs the workers to agree on skipping a step, which the "
              "parameter-server path does not do yet; use --nan error");
  encoder_ = std::make_unique<WorkerEncoder>(*optimizer_, options_.exchange, options_.worker_id);

  std::vector<ParamShape> shapes;
  for (const ParamView& p : params_) {
    QGRAD_CHECK(p.value.size() == p.grad.size(), "parameter server worker: parameter '", p.name,
                "' has ", p.value.size(), " values but ", p.grad.size(), " gradient elements");
    shapes.push_back({p.name, p.value.size()});
    elements_ += p.value.size();
  }
  optimizer_->init(shapes);
  const size_t servers = options_.servers.size();
  keys_ = plan_keys(shapes, servers, std::max<size_t>(1, options_.exchange.bucket_bytes / 4));
  server_keys_.resize(servers);
  memories_.resize(keys_.size());
  key_buffers_.resize(keys_.size());
  for (size_t k = 0; k < keys_.size(); ++k) {
    server_keys_[keys_[k].server].push_back(k);
    key_buffers_[k].assign(keys_[k].size, 0.0f);
    memories_[k] = encoder_->make_memory(keys_[k].size);
  }
  contributions_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) contributions_[i].assign(params_[i].value.size(), 0);
  counters_.pushes.assign(servers, 0);
  counters_.resends.assign(servers, 0);
  counters_.duplicates.assign(servers, 0);
  counters_.bytes_pushed.assign(servers, 0);
  counters_.bytes_pulled.assign(servers, 0);

  for (size_t s = 0; s < servers; ++s) {
    clients_.push_back(std::make_unique<PsClient>(options_.servers[s], options_.token,
                                                  options_.worker_id, options_.client));
    std::vector<ParamShape> shape;
    RegisterModel model;
    for (const size_t k : server_keys_[s]) {
      const PsKey& key = keys_[k];
      shape.push_back({key.name, key.size});
      std::vector<float> initial(key.size);
      for (const KeySlice& sl : key.slices) {
        const auto value = params_[sl.param].value.subspan(sl.param_offset, sl.size);
        std::copy(value.begin(), value.end(), initial.begin() + sl.key_offset);
      }
      model.initial.push_back(std::move(initial));
    }
    model.optimizer = optimizer_->options();
    model.run = options_.run;
    model.run.emplace_back("servers", std::to_string(servers));
    model.run.emplace_back("shard", std::to_string(s));
    server_shapes_.push_back(shape);
    register_models_.push_back(std::move(model));
  }
  // A server that has applied steps: this worker (re)joins a running job at the servers' step
  // with their current model. Servers in the middle of a step may be one apart.
  std::vector<uint64_t> at(servers);
  const auto give_up = std::chrono::steady_clock::now() + options_.reconnect_for;
  for (size_t s = 0; s < servers; ++s) at[s] = reconnect(s, give_up, "Register");
  first_step_ = *std::max_element(at.begin(), at.end());
  have_.resize(servers);
  // A new run: every worker holds the initial model, the servers' model of step 0.
  if (first_step_ == 0) std::fill(have_.begin(), have_.end(), uint64_t{0});
  if (*async_) {
    // Each server has its own version: take every server's current model.
    for (size_t s = 0; s < servers; ++s) {
      copy_in(s, clients_[s]->pull(0, std::nullopt));
    }
  } else if (first_step_ > 0) {
    for (size_t s = 0; s < servers; ++s) {
      QGRAD_CHECK(
          at[s] + 1 >= first_step_, "parameter server ", options_.servers[s], " is at step ", at[s],
          ", another at step ", first_step_,
          ": the servers are not at the same step (one restarted from an older checkpoint?)");
      copy_in(s, clients_[s]->pull(first_step_, have_[s]));
    }
  }
  step_ = first_step_;
}

uint64_t PsExchange::reconnect(size_t s, std::chrono::steady_clock::time_point give_up,
                               const char* call) {
  const auto started = std::chrono::steady_clock::now();
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    try {
      const RegisterResult r =
          clients_[s]->register_worker(options_.workers, server_shapes_[s], register_models_[s]);
      note_mode(s, r.async);
      return r.step;
    } catch (const RpcError& e) {
      // CANCELLED: the registration reached a server that was shutting down (this worker never
      // cancels its calls); its successor is what we wait for, as after UNAVAILABLE.
      const bool transient = e.code == grpc::StatusCode::UNAVAILABLE ||
                             e.code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                             e.code == grpc::StatusCode::CANCELLED;
      if (!transient) throw;
      if (std::chrono::steady_clock::now() + backoff > give_up) {
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        throw CommError(
            detail::concat("parameter server ", options_.servers[s], " unreachable: ", call,
                           " and registering again failed for ", waited,
                           " s (the reconnect limit, --timeout); last error: ", e.what()));
      }
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

void PsExchange::note_mode(size_t s, bool async) {
  if (!async_) {
    QGRAD_CHECK(
        !(async && encoder_->majority()), "parameter server ", options_.servers[s],
        " runs asynchronously, which applies one push at a time: the codec '",
        encoder_->codec().spec().str(),
        "' needs a majority vote of every worker; use a mean codec (e.g. sign:scale=l1, qsgd)");
    async_ = async;
  }
  QGRAD_CHECK(*async_ == async, "parameter server ", options_.servers[s], " runs ",
              async ? "asynchronously" : "synchronously", ", another server ",
              *async_ ? "asynchronously" : "synchronously", ": all must run in the same mode");
}

void PsExchange::restore_memories(size_t s, std::span<const std::vector<std::byte>> payloads,
                                  const std::vector<bool>& through_memory) {
  const std::vector<size_t>& mine = server_keys_[s];
  for (size_t j = 0; j < mine.size(); ++j) {
    if (!through_memory[j]) continue;  // through_memory: the key has a memory
    WorkerEncoder::take_back(encoder_->codec(), payloads[j], *memories_[mine[j]]);
  }
}

void PsExchange::copy_in(size_t s, const PullResult& pulled) {
  const std::vector<size_t>& mine = server_keys_[s];
  if (pulled.update) {
    // The server's downlink codec: x^ += D(payload), the same operation on the same bits as the
    // server's, so every worker keeps exactly the server's x^.
    QGRAD_CHECK(pulled.updates.size() == mine.size(), "parameter server ", options_.servers[s],
                " returned ", pulled.updates.size(), " key updates, this worker has ", mine.size());
    for (size_t j = 0; j < mine.size(); ++j) {
      const PsKey& key = keys_[mine[j]];
      std::vector<float>& x = key_buffers_[mine[j]];
      for (const KeySlice& sl : key.slices) {
        const auto v = params_[sl.param].value.subspan(sl.param_offset, sl.size);
        std::copy(v.begin(), v.end(), x.begin() + static_cast<std::ptrdiff_t>(sl.key_offset));
      }
      const std::span<const std::byte> payload(pulled.updates[j]);
      try {
        QGRAD_PAYLOAD_CHECK(read_header(payload).elements == key.size, "the update holds ",
                            read_header(payload).elements, " elements, the key ", key.size);
        codec_for_payload(payload)->decode_add(payload, x, 1.0f);
      } catch (const Error& e) {
        throw CommError(detail::concat("parameter server ", options_.servers[s],
                                       ": the update of key ", mine[j], " ('", key.name,
                                       "'): ", e.what()));
      }
      for (const KeySlice& sl : key.slices) {
        std::copy(x.begin() + static_cast<std::ptrdiff_t>(sl.key_offset),
                  x.begin() + static_cast<std::ptrdiff_t>(sl.key_offset + sl.size),
                  params_[sl.param].value.begin() + static_cast<std::ptrdiff_t>(sl.param_offset));
      }
    }
    have_[s] = pulled.applied_steps;
    return;
  }
  QGRAD_CHECK(pulled.params.size() == mine.size(), "parameter server ", options_.servers[s],
              " returned ", pulled.params.size(), " keys, this worker has ", mine.size());
  for (size_t j = 0; j < mine.size(); ++j) {
    const PsKey& key = keys_[mine[j]];
    const std::vector<float>& v = pulled.params[j];
    for (const KeySlice& sl : key.slices) {
      std::copy(v.begin() + static_cast<std::ptrdiff_t>(sl.key_offset),
                v.begin() + static_cast<std::ptrdiff_t>(sl.key_offset + sl.size),
                params_[sl.param].value.begin() + static_cast<std::ptrdiff_t>(sl.param_offset));
    }
  }
  have_[s] = pulled.applied_steps;
}

PsExchange::~PsExchange() = default;

std::string PsExchange::route() const {
  return options_.servers.size() == 1 ? "ps" : detail::concat("ps x", options_.servers.size());
}

void PsExchange::begin_step(float lr) {
  QGRAD_CHECK(std::isfinite(lr) && lr >= 0.0f, "learning rate must be finite and >= 0, got ", lr);
  begun_lr_ = lr;
}

void PsExchange::gradient_ready(size_t param_index) {
  QGRAD_CHECK(param_index < params_.size(), "gradient_ready(", param_index, "): there are ",
              params_.size(), " parameters");
}

PsCounters PsExchange::counters() const {
  std::lock_guard lock(counters_mutex_);
  return counters_;
}

StateDict PsExchange::export_state() const {
  throw InvalidArgument(
      "workers of the parameter-server path write no checkpoints: the servers do (qgrad-ps "
      "--checkpoint-dir) and a restarted worker rejoins at their step; run without "
      "--checkpoint-dir");
}

void PsExchange::import_state(const StateDict&) { (void)export_state(); }

uint64_t PsExchange::run_server(size_t s, uint64_t step, float lr, ServerWork& work) {
  const std::vector<size_t>& mine = server_keys_[s];
  std::vector<std::vector<std::byte>> payloads(mine.size());
  std::vector<bool> through_memory(mine.size(), false);
  {
    Stopwatch t(work.encode_s);
    for (size_t j = 0; j < mine.size(); ++j) {
      const size_t k = mine[j];
      const PsKey& key = keys_[k];
      std::vector<float>& c = key_buffers_[k];
      for (const KeySlice& sl : key.slices) {
        const std::vector<float>& from = contributions_[sl.param];
        std::copy(from.begin() + static_cast<std::ptrdiff_t>(sl.param_offset),
                  from.begin() + static_cast<std::ptrdiff_t>(sl.param_offset + sl.size),
                  c.begin() + static_cast<std::ptrdiff_t>(sl.key_offset));
      }
      // The key's global index numbers its random stream; uncompressed keys (warm-up, small
      // keys) leave the memory out: it holds 0 during warm-up, and small keys have none.
      const bool compressed = encoder_->compresses(step, key.size);
      ErrorFeedback* memory = compressed ? memories_[k].get() : nullptr;
      encoder_->encode(encoder_->codec_for(step, key.size), c, memory,
                       encoder_->key(step, static_cast<uint32_t>(k)), payloads[j]);
      through_memory[j] = memory != nullptr;
      work.compressed += compressed ? 1 : 0;
    }
  }
  const uint64_t request_id = step + 1;  // one push per (worker, step); retries repeat it
  // NOT_FOUND: the server does not know this worker, i.e. it restarted and this call reached
  // the new one first; registering again (reconnect) and retrying is the cure, as for the rest.
  const auto transient = [](const RpcError& e) {
    return e.code == grpc::StatusCode::UNAVAILABLE ||
           e.code == grpc::StatusCode::DEADLINE_EXCEEDED || e.code == grpc::StatusCode::CANCELLED ||
           e.code == grpc::StatusCode::NOT_FOUND;
  };
  const auto give_up = std::chrono::steady_clock::now() + options_.reconnect_for;
  bool lost = false;     // the server did not (or no longer) count this push
  bool counted = false;  // a push of this step was answered OK at least once
  bool resent = false;
  const auto lose = [&] {
    if (!lost) restore_memories(s, payloads, through_memory);
    lost = true;
  };
  const bool async = *async_;
  // Async: a pull answers at once with the current version (step 0 never waits).
  uint64_t target = async ? 0 : step + 1;  // the step to pull
  // Pushes, pulls and their retries are exchange time; copying the pull in is decode time.
  std::optional<Stopwatch> exchanging(std::in_place, work.exchange_s);
  PullResult pulled;
  for (bool push = true;;) {
    for (int attempt = 1; push && !lost; ++attempt) {
      try {
        const PushResult p = clients_[s]->push(step, request_id, payloads, lr, have_[s]);
        work.sent += p.request_bytes;
        std::lock_guard lock(counters_mutex_);
        counters_.bytes_pushed[s] += p.request_bytes;
        if (counted) {
          ++counters_.resends[s];
          if (p.duplicate) ++counters_.duplicates[s];
        } else {
          ++counters_.pushes[s];
        }
        counted = true;
        break;
      } catch (const RpcError& e) {
        if (e.code == grpc::StatusCode::ABORTED) {  // applied without us, or (async) too stale
          lose();
          // Already applied (or async): the pull answers at once with the current model.
          target = async ? 0 : step;
          break;
        }
        if (!transient(e)) throw;
      }
      // A transport failure may or may not have reached the server: registering again covers a
      // restarted server, and the same request id makes the retry safe (counted once).
      const uint64_t at = reconnect(s, give_up, "Push");
      if (!async && at < step) {  // restarted from an older checkpoint: go back to its step
        lose();
        target = at;
      }
    }
    push = false;
    if (options_.resend_every > 0 && !lost && (step + 1) % options_.resend_every == 0 && !resent) {
      // As a client whose response was lost: the same push again must be a duplicate.
      resent = true;
      const PushResult again = clients_[s]->push(step, request_id, payloads, lr, have_[s]);
      work.sent += again.request_bytes;
      std::lock_guard lock(counters_mutex_);
      counters_.bytes_pushed[s] += again.request_bytes;
      ++counters_.resends[s];
      if (again.duplicate) ++counters_.duplicates[s];
    }
    try {
      pulled = clients_[s]->pull(target, have_[s]);
      break;
    } catch (const RpcError& e) {
      // DEADLINE_EXCEEDED here means the step was not applied in time (workers missing and no
      // quorum): that is an error, not a reason to wait longer. CANCELLED comes from a server
      // shutting down (this worker never cancels its calls): as UNAVAILABLE. NOT_FOUND comes
      // from a restarted server that has not seen this worker register yet.
      if (e.code != grpc::StatusCode::UNAVAILABLE && e.code != grpc::StatusCode::CANCELLED &&
          e.code != grpc::StatusCode::NOT_FOUND) {
        throw;
      }
    }
    const uint64_t at = reconnect(s, give_up, "Pull");
    if (async) continue;             // the push was answered or lost already: pull again
    if (at < target && at < step) {  // restarted from a checkpoint before this step
      lose();
      target = at;
    } else if (at == step && !lost) {
      push = true;  // still collecting this step, or restarted just before it: push again
    }
  }
  exchanging.reset();
  work.received += pulled.response_bytes;
  {
    std::lock_guard lock(counters_mutex_);
    counters_.bytes_pulled[s] += pulled.response_bytes;
  }
  Stopwatch d(work.decode_s);
  copy_in(s, pulled);
  return pulled.applied_steps;
}

StepStats PsExchange::step(float lr) {
  QGRAD_CHECK(std::isfinite(lr) && lr >= 0.0f, "learning rate must be finite and >= 0, got ", lr);
  QGRAD_CHECK(begun_lr_ < 0 || begun_lr_ == lr, "step(", lr, ") in step ", step_,
              " after begin_step(", begun_lr_,
              "): the learning rate must not change within a step");
  begun_lr_ = -1;
  if (options_.stop_after > 0 && step_ >= options_.stop_after) {
    throw CommError(detail::concat("worker ", options_.worker_id, " stopped at step ", step_,
                                   " (test hook stop_after)"));
  }
  const WallClock clock;
  StepStats stats;
  stats.step = step_;
  stats.lr = lr;
  {
    Stopwatch t(stats.prepare_s);
    // Every parameter's c before any push: a NaN is an error before anything was sent.
    const float factor = encoder_->factor(lr);
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::span<const float> grad = params_[i].grad;
      encoder_->contribution(i, grad, contributions_[i], factor);
      const std::optional<NonFinite> bad = encoder_->scan(i, grad, contributions_[i]);
      QGRAD_CHECK(!bad, "step ", step_, ": ", encoder_->describe(*bad));
    }
  }
  if (options_.push_delay.count() > 0) std::this_thread::sleep_for(options_.push_delay);
  const size_t servers = clients_.size();
  std::vector<ServerWork> work(servers);
  std::vector<std::exception_ptr> errors(servers);
  std::vector<uint64_t> at(servers, 0);
  {
    std::vector<std::thread> threads;
    for (size_t s = 1; s < servers; ++s) {
      threads.emplace_back([&, s] {
        try {
          at[s] = run_server(s, step_, lr, work[s]);
        } catch (...) {
          errors[s] = std::current_exception();
        }
      });
    }
    try {
      at[0] = run_server(0, step_, lr, work[0]);
    } catch (...) {
      errors[0] = std::current_exception();
    }
    for (std::thread& t : threads) t.join();
  }
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  // Normally every server answers step_ + 1. After a dropped push or a server restart the
  // servers' step rules; servers one step behind are mid-step and get there.
  // Async: this worker's step counts its own pushes; the servers' versions are their own.
  const uint64_t next = *async_ ? step_ + 1 : *std::max_element(at.begin(), at.end());
  for (size_t s = 0; s < servers && !*async_; ++s) {
    if (at[s] == next) continue;
    QGRAD_CHECK(at[s] + 1 == next, "parameter server ", options_.servers[s], " is at step ", at[s],
                ", another at step ", next,
                ": the servers are not at the same step (one restarted from an older checkpoint?)");
    copy_in(s, clients_[s]->pull(next, have_[s]));
  }
  if (next != step_ + 1) stats.continue_at = next;
  {
    Stopwatch t(stats.update_s);
    for (size_t i = 0; i < params_.size(); ++i) optimizer_->commit(i, params_[i].grad);
  }
  for (const ServerWork& w : work) {
    stats.encode_s += w.encode_s;
    stats.exchange_s += w.exchange_s;
    stats.decode_s += w.decode_s;
    stats.bytes_sent += w.sent;
    stats.bytes_received += w.received;
    stats.compressed_buckets += w.compressed;
  }
  stats.dense_bytes = 4 * elements_;
  // The fp32 baseline of this path: pushing the contribution as plain fp32 (there is no ring).
  stats.raw_bytes = 4 * elements_;
  stats.wait_s = clock.seconds();
  step_ = next;
  return stats;
}

}  // namespace qgrad::ps
