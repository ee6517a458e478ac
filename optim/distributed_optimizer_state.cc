// The DistributedOptimizer's checkpoint state (export_state / import_state): the optimizer's
// state under "optimizer/", the error memories and counters under "exchange/". Kept apart from
// the step pipeline in distributed_optimizer.cc; the contract is in distributed_optimizer.h.
#include "optim/distributed_optimizer.h"

#include <cmath>
#include <set>
#include <string>

#include "core/error.h"

namespace qgrad {
namespace {

constexpr std::string_view kOptimizerPrefix = "optimizer/";
constexpr std::string_view kExchangePrefix = "exchange/";

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

uint64_t checked_counter(const StateDict& state, const std::string& key) {
  const auto it = state.scalars.find(key);
  QGRAD_CHECK(it != state.scalars.end(), "distributed optimizer: the saved state has no '", key,
              "'");
  const double v = it->second;
  QGRAD_CHECK(v >= 0 && v < 9007199254740992.0 && v == std::floor(v),
              "distributed optimizer: saved '", key, "' must be a non-negative integer, got ", v);
  return static_cast<uint64_t>(v);
}

}  // namespace

std::string DistributedOptimizer::bucket_name(size_t b) const { return detail::concat(b); }

StateDict DistributedOptimizer::export_state() const {
  std::lock_guard lock(mutex_);
  QGRAD_CHECK(!active_, "export_state() in the middle of step ", step_, "; call it between steps");
  StateDict out;
  const StateDict inner = optimizer_->export_state();
  for (const auto& [key, buffer] : inner.buffers)
    out.buffers[std::string(kOptimizerPrefix) + key] = buffer;
  for (const auto& [key, value] : inner.scalars)
    out.scalars[std::string(kOptimizerPrefix) + key] = value;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (worker_ef_[b] != nullptr) {
      const auto m = worker_ef_[b]->memory();
      out.buffers["exchange/ef_worker/" + bucket_name(b)].assign(m.begin(), m.end());
    }
    if (owner_ef_[b] != nullptr) {
      const auto m = owner_ef_[b]->memory();
      out.buffers["exchange/ef_owner/" + bucket_name(b)].assign(m.begin(), m.end());
    }
  }
  out.scalars["exchange/step"] = static_cast<double>(step_);
  out.scalars["exchange/world"] = comm_.size();
  out.scalars["exchange/rank"] = comm_.rank();
  return out;
}

void DistributedOptimizer::import_state(const StateDict& state) {
  std::lock_guard lock(mutex_);
  QGRAD_CHECK(broken_.empty(), broken_);
  QGRAD_CHECK(!active_, "import_state() in the middle of step ", step_, "; call it between steps");
  const uint64_t world = checked_counter(state, "exchange/world");
  const uint64_t rank = checked_counter(state, "exchange/rank");
  QGRAD_CHECK(world == static_cast<uint64_t>(comm_.size()),
              "distributed optimizer: the saved state is from a run with ", world,
              " ranks, this one has ", comm_.size());
  QGRAD_CHECK(rank == static_cast<uint64_t>(comm_.rank()),
              "distributed optimizer: the saved state is rank ", rank, "'s, this is rank ",
              comm_.rank(), " (error memories are per rank)");
  const uint64_t step = checked_counter(state, "exchange/step");

  std::set<std::string> expected;
  auto expect = [&](const std::string& key, size_t size, size_t b, const char* what) {
    expected.insert(key);
    const auto it = state.buffers.find(key);
    QGRAD_CHECK(it != state.buffers.end(), "distributed optimizer: the saved state has no '", key,
                "' (", what, " of bucket ", b,
                "); was it saved with error feedback off, another --bucket-bytes, "
                "--min-compress-bytes, strategy or model?");
    QGRAD_CHECK(it->second.size() == size, "distributed optimizer: saved '", key, "' has ",
                it->second.size(), " elements, bucket ", b, " here needs ", size,
                " (another --bucket-bytes or model?)");
  };
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (worker_ef_[b] != nullptr) {
      expect("exchange/ef_worker/" + bucket_name(b), worker_ef_[b]->size(), b,
             "the worker error memory");
    }
    if (owner_ef_[b] != nullptr) {
      expect("exchange/ef_owner/" + bucket_name(b), owner_ef_[b]->size(), b,
             "the owner error memory");
    }
  }
  StateDict inner;
  for (const auto& [key, buffer] : state.buffers) {
    if (starts_with(key, kOptimizerPrefix)) {
      inner.buffers[key.substr(kOptimizerPrefix.size())] = buffer;
    } else if (starts_with(key, kExchangePrefix)) {
      QGRAD_CHECK(expected.count(key) != 0, "distributed optimizer: the saved state holds '", key,
                  "', which this run does not have (saved with error feedback on, another "
                  "strategy, --bucket-bytes or model?)");
    }
  }
  for (const auto& [key, value] : state.scalars) {
    if (starts_with(key, kOptimizerPrefix)) {
      inner.scalars[key.substr(kOptimizerPrefix.size())] = value;
    } else if (starts_with(key, kExchangePrefix)) {
      QGRAD_CHECK(key == "exchange/step" || key == "exchange/world" || key == "exchange/rank",
                  "distributed optimizer: unknown saved scalar '", key, "'");
    }
  }
  optimizer_->import_state(inner);  // checks everything before it changes anything
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (worker_ef_[b] != nullptr) {
      worker_ef_[b]->load(state.buffers.at("exchange/ef_worker/" + bucket_name(b)));
    }
    if (owner_ef_[b] != nullptr) {
      owner_ef_[b]->load(state.buffers.at("exchange/ef_owner/" + bucket_name(b)));
    }
  }
  step_ = step;
}

}  // namespace qgrad
