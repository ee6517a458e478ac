// Optimizers (SGD with momentum, Nesterov and weight decay; Signum; Adam) written for
// compressed data-parallel training: each one is split at the exchange, so that it composes with
// a codec and error feedback (docs/algorithms.md) and every rank applies the same update.
//
//   worker r:  c_r = s(lr) * T(g_r)                  contribution(): worker-local, before encoding
//              p_r = c_r + e_r;  send C(p_r);  e_r = p_r - D(C(p_r))   (error feedback, optional)
//   exchange:  a = (1/W) sum_r D(C(p_r))            mean codecs (the DistributedOptimizer divides)
//              a = s(lr) * sign(sum_r sign(p_r))    majority-vote codecs (`sign`)
//   every rank: apply(a) -> x                       identical a, identical state, identical x
//
// where s(lr) = compression_scale(lr). What each optimizer puts where:
//
//   sgd     T(g) = g; s = lr, so the contribution and the error memory are in parameter units
//           (EF-SGD, Karimireddy et al. 2019: p = lr * g + e). After the exchange, a is the step:
//             u = a + (lr * wd) * x                  (L2 weight decay, on every rank, uncompressed)
//             m = mu * m + u;  x -= m                (heavy ball; momentum buffer in parameter
//             units) m = mu * m + u;  x -= u + mu * m       (Nesterov) x -= u (mu = 0)
//           With a constant lr this is PyTorch's SGD (buf = mu buf + g + wd x; x -= lr buf); when
//           lr changes, the momentum keeps the lr it was accumulated with (Sutskever et al.'s
//           form), as the error memory does. The momentum sits after the exchange, so every rank
//           holds the same buffer; no dampening.
//           worker_momentum: m' = mu m + g on each worker, T(g) = m' (Nesterov: g + mu m'),
//           committed in apply(); after the exchange x -= a + (lr * wd) * x.
//   signum  T(g) = m' = beta * m + (1 - beta) * g, the worker's own momentum (Bernstein et al.
//           2019, Algorithm 1: momentum before the sign); s = 1 (the sign is scale-free; an error
//           memory, where one is used with a mean codec, is in momentum units). After the exchange:
//             x -= lr * (sgn(a) + wd * x)            (decoupled weight decay after the vote)
//           with sgn(0) = +1, the vote's tie rule (vote_sign, core/aggregation.h). With the
//           majority-vote codec a is already the vote; with a mean codec (e.g. `none`) sgn(a) is
//           the sign of the averaged momentum, so on one rank `none` and `sign` give the same
//           steps. m is committed in apply() (from the
//           same gradient, with the same expression), so a skipped step leaves it unchanged.
//           beta = 0 is signSGD bit for bit: m' = g and x -= lr * sign(vote).
//   adam    T(g) = g; s = 1: Adam is not linear in its input, so lr cannot move into the
//           compressed quantity, and an error memory is in gradient units. After the exchange
//           (Kingma & Ba, with decoupled weight decay as AdamW):
//             t += 1;  m = b1 m + (1 - b1) a;  v = b2 v + (1 - b2) a^2
//             x -= lr * ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * x)
//
// State for checkpoints: export_state() gives named fp32 buffers ("<optimizer>/<what>/<param>")
// and scalars ("adam/step"); import_state() checks every name and size before it changes
// anything, so a checkpoint from another model or optimizer is a clear error.
// Thread-safety: contribution() is const and may run on the exchange thread while nothing else
// touches the optimizer; everything else is called by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "optim/param.h"

namespace qgrad {

// A parameter as the optimizer needs to know it: a unique name and its element count.
struct ParamShape {
  std::string name;
  size_t size = 0;
};

// Checkpointable state: named fp32 buffers and scalars (counters are stored exactly as doubles).
struct StateDict {
  std::map<std::string, std::vector<float>> buffers;
  std::map<std::string, double> scalars;
};

struct OptimizerOptions {
  std::string name = "sgd";  // sgd | signum | adam
  float momentum = 0.0f;     // sgd: mu; signum: beta (0 = signSGD). In [0, 1).
  bool nesterov = false;     // sgd with momentum > 0 only
  // sgd: keep the momentum on each worker, before compression (T(g) = mu m + g), instead of
  // after the exchange. This is the order of the EF-SGD reference optimizer (Karimireddy et al.
  // 2019: momentum before error correction); biased codecs with error feedback need it
  // (measured: sign:scale=l1 with EF and momentum after the exchange diverged to 30% on
  // Fashion-MNIST, docs/measurements.md).
  // The momentum buffer is then per rank, like Signum's.
  bool worker_momentum = false;
  float weight_decay = 0.0f;  // sgd: L2 (coupled); signum, adam: decoupled
  float beta1 = 0.9f;         // adam only
  float beta2 = 0.999f;       // adam only
  float eps = 1e-8f;          // adam only
};

// "sgd, signum, adam": for messages and --help.
std::string_view optimizer_names();

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual std::string_view name() const = 0;
  const OptimizerOptions& options() const { return options_; }

  // Binds the optimizer to parameters (names unique) and zeroes its state. Call once before
  // anything else; calling it again starts over.
  void init(std::vector<ParamShape> params);
  const std::vector<ParamShape>& params() const { return params_; }

  // s(lr): the factor the DistributedOptimizer applies to contribution() before compression
  // (and to the majority vote after it). See the table at the top of this file.
  virtual float compression_scale(float lr) const = 0;

  // Writes T(grad) of parameter i into out (same size): what this worker contributes before
  // s(lr). Must not change any state: a step can still be skipped after it ran.
  virtual void contribution(size_t i, std::span<const float> grad, std::span<float> out) const;
  // out = scale * T(grad), the way the DistributedOptimizer sends it: one pass over the memory
  // where T is the identity (the common case), bitwise the same as contribution() then scaling.
  void scaled_contribution(size_t i, std::span<const float> grad, std::span<float> out,
                           float scale) const;

  // True when T(g) = g, so that scaled_contribution can fuse the copy and the scaling.
  virtual bool contribution_is_gradient() const { return true; }

  // Called once per applied step, before the apply() calls of that step.
  virtual void begin_update() {}

  // One step of parameter i on a rank of the collective path: commit(i, grad), then
  // update(i, value, update, lr). `update` is the aggregate a above, identical on every rank;
  // `grad` is this worker's raw gradient of the step. lr >= 0.
  void apply(size_t i, std::span<float> value, std::span<const float> grad,
             std::span<const float> update, float lr);

  // The two halves of apply(), apart for the parameter server (ps/), where the workers keep
  // the state contribution() reads and the server the state the update needs:
  // commit() stores the worker-local state that contribution() computed from this step's
  // gradient (Signum's momentum, SGD's worker momentum; nothing for the others), with the same
  // expression, so a skipped step (never committed) leaves it as it was.
  virtual void commit(size_t i, std::span<const float> grad);
  // update() moves x by the aggregate a, on the state every rank (or the server) shares: SGD's
  // momentum after the exchange, Adam's moments, weight decay.
  virtual void update(size_t i, std::span<float> value, std::span<const float> a, float lr) = 0;

  // The state as named buffers and scalars; import checks every name and size (missing,
  // unexpected or mis-sized entries are InvalidArgument) before it changes anything.
  StateDict export_state() const;
  void import_state(const StateDict& state);

 protected:
  explicit Optimizer(OptimizerOptions options) : options_(std::move(options)) {}

  // Where the state lives, for export/import: a buffer per name, a counter per name.
  struct StateRefs {
    std::vector<std::pair<std::string, std::vector<float>*>> buffers;
    std::vector<std::pair<std::string, uint64_t*>> counters;
  };
  // (Re)allocates zeroed state for params().
  virtual void allocate() = 0;
  virtual StateRefs state_refs() = 0;
  void check_param(size_t i, size_t value_size, size_t grad_size, size_t update_size) const;

  OptimizerOptions options_;

 private:
  std::vector<ParamShape> params_;
};

// Builds an optimizer from options. Throws InvalidArgument naming the problem: an unknown name
// (listing sgd, signum, adam), a value out of range, or an option that the chosen optimizer does
// not use set to a non-default value (e.g. nesterov with adam, beta1 with sgd).
std::unique_ptr<Optimizer> make_optimizer(const OptimizerOptions& options);

// One step of `optimizer` on one process without any exchange: exactly what a
// DistributedOptimizer on one rank with codec `none` does (a = s(lr) * T(g)). For tests and
// single-process loops. Throws InvalidArgument on a NaN/Inf gradient, naming the parameter.
void local_step(Optimizer& optimizer, std::span<const ParamView> params, float lr);

}  // namespace qgrad
