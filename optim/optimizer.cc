#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/aggregation.h"
#include "core/error.h"
#include "core/simd/kernels.h"

namespace qgrad {
namespace {

constexpr std::string_view kNames = "sgd, signum, adam";

class Sgd final : public Optimizer {
 public:
  explicit Sgd(OptimizerOptions o) : Optimizer(std::move(o)) {}
  std::string_view name() const override { return "sgd"; }
  float compression_scale(float lr) const override { return lr; }
  bool contribution_is_gradient() const override { return !options_.worker_momentum; }

  // Worker momentum: T(g) = m' (or g + mu m' with Nesterov), m' = mu m + g, committed in commit().
  void contribution(size_t i, std::span<const float> g, std::span<float> out) const override {
    if (!options_.worker_momentum) {
      Optimizer::contribution(i, g, out);
      return;
    }
    check_param(i, out.size(), g.size(), out.size());
    const float mu = options_.momentum;
    const float* m = momentum_[i].data();
    const bool nesterov = options_.nesterov;
    for (size_t j = 0; j < out.size(); ++j) {
      const float next = mu * m[j] + g[j];
      out[j] = nesterov ? g[j] + mu * next : next;
    }
  }

  void commit(size_t i, std::span<const float> grad) override {
    if (!options_.worker_momentum) return;
    check_param(i, grad.size(), grad.size(), grad.size());
    // The momentum went into the contribution; commit it from the same gradient.
    const float mu = options_.momentum;
    float* m = momentum_[i].data();
    for (size_t j = 0; j < grad.size(); ++j) m[j] = mu * m[j] + grad[j];
  }

  void update(size_t i, std::span<float> x, std::span<const float> a, float lr) override {
    check_param(i, x.size(), a.size(), a.size());
    const float mu = options_.momentum;
    const float decay = lr * options_.weight_decay;  // in parameter units, like a
    const bool decays = options_.weight_decay != 0.0f;
    const size_t n = x.size();
    if (mu == 0.0f || options_.worker_momentum) {
      // With worker momentum the aggregate is the step.
      for (size_t j = 0; j < n; ++j) {
        const float u = decays ? a[j] + decay * x[j] : a[j];
        x[j] = x[j] - u;
      }
      return;
    }
    float* m = momentum_[i].data();
    const bool nesterov = options_.nesterov;
    for (size_t j = 0; j < n; ++j) {
      const float u = decays ? a[j] + decay * x[j] : a[j];
      m[j] = mu * m[j] + u;
      x[j] = x[j] - (nesterov ? u + mu * m[j] : m[j]);
    }
  }

 private:
  void allocate() override {
    momentum_.clear();
    if (options_.momentum == 0.0f) return;  // plain SGD keeps no state
    for (const ParamShape& p : params()) momentum_.emplace_back(p.size, 0.0f);
  }
  StateRefs state_refs() override {
    StateRefs refs;
    for (size_t i = 0; i < momentum_.size(); ++i) {
      refs.buffers.emplace_back("sgd/momentum/" + params()[i].name, &momentum_[i]);
    }
    return refs;
  }

  std::vector<std::vector<float>> momentum_;
};

class Signum final : public Optimizer {
 public:
  explicit Signum(OptimizerOptions o) : Optimizer(std::move(o)) {}
  std::string_view name() const override { return "signum"; }
  float compression_scale(float) const override { return 1.0f; }
  bool contribution_is_gradient() const override { return false; }

  void contribution(size_t i, std::span<const float> g, std::span<float> out) const override {
    check_param(i, out.size(), g.size(), out.size());
    momentum_update(momentum_[i].data(), g, out.data());
  }

  void commit(size_t i, std::span<const float> g) override {
    check_param(i, g.size(), g.size(), g.size());
    float* m = momentum_[i].data();
    momentum_update(m, g, m);  // the same expression contribution() sent: now committed
  }

  // sgn(a) is the vote's tie rule, vote_sign (core/aggregation.h: sgn(0) = +1), so that with a
  // mean codec the step is the vote of the averaged momentum, as the majority codec's would be.
  void update(size_t i, std::span<float> x, std::span<const float> a, float lr) override {
    check_param(i, x.size(), a.size(), a.size());
    const float wd = options_.weight_decay;
    const size_t n = x.size();
    if (wd == 0.0f) {
      for (size_t j = 0; j < n; ++j) x[j] = x[j] - lr * vote_sign(a[j]);  // signSGD's exact step
    } else {
      for (size_t j = 0; j < n; ++j) x[j] = x[j] - lr * (vote_sign(a[j]) + wd * x[j]);
    }
  }

 private:
  // out = (1 - beta) * g + beta * m (out may alias m). beta = 0 copies g, so that Signum with
  // beta = 0 is signSGD bit for bit (no 0 * m or 1 * g rounding questions).
  void momentum_update(const float* m, std::span<const float> g, float* out) const {
    const float beta = options_.momentum;
    const size_t n = g.size();
    if (beta == 0.0f) {
      std::copy(g.begin(), g.end(), out);
      return;
    }
    const float keep = 1.0f - beta;
    for (size_t j = 0; j < n; ++j) out[j] = keep * g[j] + beta * m[j];
  }

  void allocate() override {
    momentum_.clear();
    for (const ParamShape& p : params()) momentum_.emplace_back(p.size, 0.0f);
  }
  StateRefs state_refs() override {
    StateRefs refs;
    // With beta = 0 the buffer is a copy of the last gradient and never read; it is still
    // exported so that a checkpoint's contents do not depend on beta.
    for (size_t i = 0; i < momentum_.size(); ++i) {
      refs.buffers.emplace_back("signum/momentum/" + params()[i].name, &momentum_[i]);
    }
    return refs;
  }

  std::vector<std::vector<float>> momentum_;
};

class Adam final : public Optimizer {
 public:
  explicit Adam(OptimizerOptions o) : Optimizer(std::move(o)) {}
  std::string_view name() const override { return "adam"; }
  float compression_scale(float) const override { return 1.0f; }

  void begin_update() override {
    ++step_;
    // Bias corrections in double, rounded once: identical on every rank (same code, same t).
    const double t = static_cast<double>(step_);
    correction1_ = static_cast<float>(1.0 - std::pow(double{options_.beta1}, t));
    correction2_ = static_cast<float>(1.0 - std::pow(double{options_.beta2}, t));
  }

  void update(size_t i, std::span<float> x, std::span<const float> a, float lr) override {
    check_param(i, x.size(), a.size(), a.size());
    QGRAD_CHECK(step_ > 0, "adam: update() before begin_update()");
    const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
    const float k1 = 1.0f - b1, k2 = 1.0f - b2;
    const float wd = options_.weight_decay;
    const float c1 = correction1_, c2 = correction2_;
    float* m = m_[i].data();
    float* v = v_[i].data();
    const size_t n = x.size();
    for (size_t j = 0; j < n; ++j) {
      m[j] = b1 * m[j] + k1 * a[j];
      v[j] = b2 * v[j] + k2 * (a[j] * a[j]);
      const float step = (m[j] / c1) / (std::sqrt(v[j] / c2) + eps);
      x[j] = x[j] - lr * (wd == 0.0f ? step : step + wd * x[j]);
    }
  }

 private:
  void allocate() override {
    m_.clear();
    v_.clear();
    for (const ParamShape& p : params()) {
      m_.emplace_back(p.size, 0.0f);
      v_.emplace_back(p.size, 0.0f);
    }
    step_ = 0;
  }
  StateRefs state_refs() override {
    StateRefs refs;
    for (size_t i = 0; i < m_.size(); ++i) {
      refs.buffers.emplace_back("adam/m/" + params()[i].name, &m_[i]);
      refs.buffers.emplace_back("adam/v/" + params()[i].name, &v_[i]);
    }
    refs.counters.emplace_back("adam/step", &step_);
    return refs;
  }

  std::vector<std::vector<float>> m_, v_;
  uint64_t step_ = 0;  // applied steps (skipped steps do not count)
  float correction1_ = 1.0f, correction2_ = 1.0f;
};

void check_unit_interval(float v, const char* what, const std::string& optimizer) {
  QGRAD_CHECK(std::isfinite(v) && v >= 0.0f && v < 1.0f, "optimizer '", optimizer, "': ", what,
              " must be in [0, 1), got ", v);
}

}  // namespace

std::string_view optimizer_names() { return kNames; }

void Optimizer::init(std::vector<ParamShape> params) {
  std::set<std::string> names;
  for (const ParamShape& p : params) {
    QGRAD_CHECK(names.insert(p.name).second, "optimizer: parameter name '", p.name,
                "' appears twice; names must be unique (they name the checkpoint state)");
  }
  params_ = std::move(params);
  allocate();
}

void Optimizer::contribution(size_t i, std::span<const float> grad, std::span<float> out) const {
  check_param(i, out.size(), grad.size(), out.size());
  std::copy(grad.begin(), grad.end(), out.begin());
}

void Optimizer::scaled_contribution(size_t i, std::span<const float> grad, std::span<float> out,
                                    float scale) const {
  if (contribution_is_gradient()) {
    check_param(i, out.size(), grad.size(), out.size());
    for (size_t j = 0; j < out.size(); ++j) out[j] = scale * grad[j];
    return;
  }
  contribution(i, grad, out);
  if (scale != 1.0f) {
    for (float& v : out) v = scale * v;
  }
}

void Optimizer::apply(size_t i, std::span<float> value, std::span<const float> grad,
                      std::span<const float> update_values, float lr) {
  check_param(i, value.size(), grad.size(), update_values.size());
  commit(i, grad);
  update(i, value, update_values, lr);
}

void Optimizer::commit(size_t i, std::span<const float> grad) {
  check_param(i, grad.size(), grad.size(), grad.size());
}

void Optimizer::check_param(size_t i, size_t value_size, size_t grad_size,
                            size_t update_size) const {
  QGRAD_CHECK(i < params_.size(), "optimizer '", name(), "': parameter index ", i,
              " out of range (", params_.size(), " parameters; was init() called?)");
  const size_t n = params_[i].size;
  QGRAD_CHECK(value_size == n && grad_size == n && update_size == n, "optimizer '", name(),
              "': parameter '", params_[i].name, "' has ", n, " elements, got value ", value_size,
              ", gradient ", grad_size, ", update ", update_size);
}

StateDict Optimizer::export_state() const {
  StateDict out;
  // state_refs() hands out pointers for import as well; export only reads through them.
  const StateRefs refs = const_cast<Optimizer*>(this)->state_refs();
  for (const auto& [key, buffer] : refs.buffers) out.buffers[key] = *buffer;
  for (const auto& [key, counter] : refs.counters) out.scalars[key] = static_cast<double>(*counter);
  return out;
}

void Optimizer::import_state(const StateDict& state) {
  const StateRefs refs = state_refs();
  std::set<std::string> expected;
  for (const auto& [key, buffer] : refs.buffers) {
    expected.insert(key);
    const auto it = state.buffers.find(key);
    QGRAD_CHECK(it != state.buffers.end(), "optimizer '", name(), "': the saved state has no '",
                key, "' (saved by another optimizer or model?)");
    QGRAD_CHECK(it->second.size() == buffer->size(), "optimizer '", name(), "': saved '", key,
                "' has ", it->second.size(), " elements, the parameter has ", buffer->size());
  }
  for (const auto& [key, counter] : refs.counters) {
    expected.insert(key);
    const auto it = state.scalars.find(key);
    QGRAD_CHECK(it != state.scalars.end(), "optimizer '", name(), "': the saved state has no '",
                key, "'");
    const double v = it->second;
    QGRAD_CHECK(v >= 0 && v < 9007199254740992.0 && v == std::floor(v), "optimizer '", name(),
                "': saved '", key, "' must be a non-negative integer, got ", v);
  }
  for (const auto& [key, buffer] : state.buffers) {
    QGRAD_CHECK(expected.count(key) != 0, "optimizer '", name(), "': the saved state holds '", key,
                "', which this optimizer does not have (saved by another optimizer, "
                "other options or another model?)");
  }
  for (const auto& [key, value] : state.scalars) {
    QGRAD_CHECK(expected.count(key) != 0, "optimizer '", name(), "': the saved state holds '", key,
                "', which this optimizer does not have");
  }
  // Everything checked: now change the state.
  for (const auto& [key, buffer] : refs.buffers) *buffer = state.buffers.at(key);
  for (const auto& [key, counter] : refs.counters) {
    *counter = static_cast<uint64_t>(state.scalars.at(key));
  }
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerOptions& o) {
  const OptimizerOptions defaults;
  const std::string& n = o.name;
  QGRAD_CHECK(n == "sgd" || n == "signum" || n == "adam", "unknown optimizer '", n,
              "'; valid optimizers: ", kNames);
  QGRAD_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0f, "optimizer '", n,
              "': weight_decay must be finite and >= 0, got ", o.weight_decay);
  if (n != "adam") {
    check_unit_interval(o.momentum, n == "sgd" ? "momentum" : "momentum (beta)", n);
    QGRAD_CHECK(o.beta1 == defaults.beta1 && o.beta2 == defaults.beta2 && o.eps == defaults.eps,
                "optimizer '", n, "': beta1, beta2 and eps apply to adam only",
                n == "signum" ? "; signum's beta is 'momentum'" : "");
  } else {
    QGRAD_CHECK(o.momentum == 0.0f,
                "optimizer 'adam': momentum applies to sgd and signum; "
                "adam's moments are set by beta1 and beta2");
    check_unit_interval(o.beta1, "beta1", n);
    check_unit_interval(o.beta2, "beta2", n);
    QGRAD_CHECK(std::isfinite(o.eps) && o.eps > 0.0f,
                "optimizer 'adam': eps must be finite and "
                "> 0, got ",
                o.eps);
  }
  if (o.worker_momentum) {
    QGRAD_CHECK(n == "sgd", "optimizer '", n,
                "': worker momentum applies to sgd only (signum's momentum is always per worker)");
    QGRAD_CHECK(o.momentum > 0.0f, "optimizer 'sgd': worker momentum needs momentum > 0");
  }
  if (o.nesterov) {
    QGRAD_CHECK(n == "sgd", "optimizer '", n, "': nesterov applies to sgd only");
    QGRAD_CHECK(o.momentum > 0.0f, "optimizer 'sgd': nesterov needs momentum > 0");
  }
  if (n == "sgd") return std::make_unique<Sgd>(o);
  if (n == "signum") return std::make_unique<Signum>(o);
  return std::make_unique<Adam>(o);
}

void local_step(Optimizer& optimizer, std::span<const ParamView> params, float lr) {
  QGRAD_CHECK(std::isfinite(lr) && lr >= 0.0f, "learning rate must be finite and >= 0, got ", lr);
  QGRAD_CHECK(params.size() == optimizer.params().size(), "local_step: ", params.size(),
              " parameters, the optimizer was initialised with ", optimizer.params().size());
  const float s = optimizer.compression_scale(lr);
  std::vector<std::vector<float>> updates(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamView& p = params[i];
    const size_t bad = simd::find_nonfinite(p.grad.data(), p.grad.size());
    QGRAD_CHECK(bad == p.grad.size(), "non-finite gradient (NaN or Inf) in parameter '", p.name,
                "' at element ", bad);
    updates[i].resize(p.grad.size());
    optimizer.contribution(i, p.grad, updates[i]);
    if (s != 1.0f) {
      for (float& u : updates[i]) u = s * u;
    }
  }
  optimizer.begin_update();
  for (size_t i = 0; i < params.size(); ++i) {
    optimizer.apply(i, params[i].value, params[i].grad, updates[i], lr);
  }
}

}  // namespace qgrad
