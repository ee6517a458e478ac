// The optimizers alone (no exchange): hand-computed steps on tiny vectors, PyTorch's SGD as a
// double-precision reference, the factory's errors, and state export/import.
#include "optim/optimizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/synthetic.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

// A tiny model: named parameters that own their buffers.
struct Params {
  std::vector<std::string> names;
  std::vector<std::vector<float>> value, grad;

  explicit Params(std::initializer_list<std::vector<float>> init) : value(init) {
    for (size_t i = 0; i < value.size(); ++i) {
      names.push_back(detail::concat("p", i));
      grad.emplace_back(value[i].size(), 0.0f);
    }
  }
  std::vector<ParamView> views() {
    std::vector<ParamView> v;
    for (size_t i = 0; i < value.size(); ++i) v.push_back({names[i], value[i], grad[i]});
    return v;
  }
  std::vector<ParamShape> shapes() const {
    std::vector<ParamShape> s;
    for (size_t i = 0; i < value.size(); ++i) s.push_back({names[i], value[i].size()});
    return s;
  }
};

std::unique_ptr<Optimizer> make(OptimizerOptions o, const Params& p) {
  auto opt = make_optimizer(o);
  opt->init(p.shapes());
  return opt;
}

TEST(Sgd, PlainStepIsXMinusLrTimesG) {
  Params p({{1.0f, -2.0f, 0.5f}});
  auto opt = make({.name = "sgd"}, p);
  p.grad[0] = {0.5f, 1.0f, -4.0f};
  local_step(*opt, p.views(), 0.1f);
  EXPECT_FLOAT_EQ(p.value[0][0], 0.95f);
  EXPECT_FLOAT_EQ(p.value[0][1], -2.1f);
  EXPECT_FLOAT_EQ(p.value[0][2], 0.9f);
  EXPECT_TRUE(opt->export_state().buffers.empty());  // plain SGD keeps no state
}

TEST(Sgd, HeavyBallMomentumByHand) {
  // g = 1, lr = 0.1, mu = 0.9: m = 0.1, 0.19, 0.271; x = 1 - 0.561 after three steps.
  Params p({{1.0f}});
  auto opt = make({.name = "sgd", .momentum = 0.9f}, p);
  p.grad[0] = {1.0f};
  const float expected[] = {0.9f, 0.71f, 0.439f};
  for (float want : expected) {
    local_step(*opt, p.views(), 0.1f);
    EXPECT_NEAR(p.value[0][0], want, 1e-6f);
  }
  EXPECT_NEAR(opt->export_state().buffers.at("sgd/momentum/p0")[0], 0.271f, 1e-6f);
}

TEST(Sgd, NesterovByHand) {
  // u = 0.1: step 1 moves u + 0.9 * u = 0.19, step 2 moves u + 0.9 * 0.19 = 0.271.
  Params p({{1.0f}});
  auto opt = make({.name = "sgd", .momentum = 0.9f, .nesterov = true}, p);
  p.grad[0] = {1.0f};
  local_step(*opt, p.views(), 0.1f);
  EXPECT_NEAR(p.value[0][0], 0.81f, 1e-6f);
  local_step(*opt, p.views(), 0.1f);
  EXPECT_NEAR(p.value[0][0], 0.539f, 1e-6f);
}

TEST(Sgd, WeightDecayByHand) {
  // u = lr * (g + wd * x): 0.1 * (0.5 + 0.01 * 2) = 0.052, then 0.1 * (0.5 + 0.01 * 1.948).
  Params p({{2.0f}});
  auto opt = make({.name = "sgd", .weight_decay = 0.01f}, p);
  p.grad[0] = {0.5f};
  local_step(*opt, p.views(), 0.1f);
  EXPECT_NEAR(p.value[0][0], 1.948f, 1e-6f);
  local_step(*opt, p.views(), 0.1f);
  EXPECT_NEAR(p.value[0][0], 1.896052f, 1e-6f);
}

// With a constant learning rate, SGD with momentum, Nesterov and weight decay is PyTorch's
// torch.optim.SGD (dampening 0), computed here in double.
TEST(Sgd, MatchesPyTorchFormulationAtConstantLr) {
  for (bool nesterov : {false, true}) {
    const size_t n = 257;
    Params p({std::vector<float>(n)});
    fill_synthetic(p.value[0], SyntheticDistribution::kNormal, 3);
    std::vector<double> x(p.value[0].begin(), p.value[0].end()), buf(n, 0.0);
    const double lr = 0.05, mu = 0.9, wd = 1e-3;
    auto opt =
        make({.name = "sgd", .momentum = 0.9f, .nesterov = nesterov, .weight_decay = 1e-3f}, p);
    for (uint64_t t = 0; t < 30; ++t) {
      fill_synthetic(p.grad[0], SyntheticDistribution::kNormal, 100 + t);
      for (size_t j = 0; j < n; ++j) {
        const double d = p.grad[0][j] + wd * x[j];
        buf[j] = t == 0 ? d : mu * buf[j] + d;
        x[j] -= lr * (nesterov ? d + mu * buf[j] : buf[j]);
      }
      local_step(*opt, p.views(), static_cast<float>(lr));
    }
    for (size_t j = 0; j < n; ++j) {
      // 30 steps of float rounding on values of size ~10: well under 1e-4.
      EXPECT_NEAR(p.value[0][j], x[j], 1e-4 * (1 + std::fabs(x[j])))
          << j << " nesterov " << nesterov;
    }
  }
}

// Worker momentum (momentum before compression, the EF-SGD reference order): with a constant lr
// and no decay it takes PyTorch's steps too, but its buffer is in gradient units, its
// contribution carries the momentum, and the step is the aggregate itself.
TEST(Sgd, WorkerMomentumMatchesPyTorchAndCarriesTheMomentumInItsContribution) {
  for (bool nesterov : {false, true}) {
    const size_t n = 129;
    Params p({std::vector<float>(n)});
    fill_synthetic(p.value[0], SyntheticDistribution::kNormal, 4);
    std::vector<double> x(p.value[0].begin(), p.value[0].end()), buf(n, 0.0);
    const double lr = 0.05, mu = 0.9;
    auto opt =
        make({.name = "sgd", .momentum = 0.9f, .nesterov = nesterov, .worker_momentum = true}, p);
    for (uint64_t t = 0; t < 30; ++t) {
      fill_synthetic(p.grad[0], SyntheticDistribution::kNormal, 200 + t);
      for (size_t j = 0; j < n; ++j) {
        const double d = p.grad[0][j];
        buf[j] = t == 0 ? d : mu * buf[j] + d;
        x[j] -= lr * (nesterov ? d + mu * buf[j] : buf[j]);
      }
      std::vector<float> c(n);
      opt->contribution(0, p.grad[0], c);
      for (size_t j = 0; j < n; ++j) {
        const double want = nesterov ? p.grad[0][j] + mu * buf[j] : buf[j];
        ASSERT_NEAR(c[j], want, 1e-4 * (1 + std::fabs(want))) << j;
      }
      local_step(*opt, p.views(), static_cast<float>(lr));
    }
    for (size_t j = 0; j < n; ++j) {
      EXPECT_NEAR(p.value[0][j], x[j], 1e-4 * (1 + std::fabs(x[j]))) << j;
    }
  }
  EXPECT_THROW(make_optimizer({.name = "sgd", .worker_momentum = true}), InvalidArgument);
  EXPECT_THROW(make_optimizer({.name = "adam", .momentum = 0.9f, .worker_momentum = true}),
               InvalidArgument);
}

// The momentum buffer is in parameter units: after an lr change, the old velocity keeps the lr
// it was accumulated with (documented in optimizer.h).
TEST(Sgd, MomentumKeepsTheLrItWasAccumulatedWith) {
  Params p({{0.0f}});
  auto opt = make({.name = "sgd", .momentum = 0.5f}, p);
  p.grad[0] = {1.0f};
  local_step(*opt, p.views(), 1.0f);  // m = 1
  local_step(*opt, p.views(), 0.1f);  // m = 0.5 * 1 + 0.1 = 0.6
  EXPECT_NEAR(p.value[0][0], -1.6f, 1e-6f);
}

TEST(Signum, MomentumBeforeSignDecoupledDecayAfter) {
  // Bernstein et al. 2019 (arXiv 1810.05291) Algorithm 1, beta = 0.5, lambda = 0.1, eta = 0.01:
  // m1 = (1, -0.5): x1 = x0 - 0.01 * ((1, -1) + 0.1 * (1, 1)) = (0.989, 1.009);
  // m2 = 0.5 * (-3, 0.2) + 0.5 * m1 = (-1, -0.15): x2 = x1 - 0.01 * ((-1, -1) + 0.1 * x1).
  Params p({{1.0f, 1.0f}});
  auto opt = make({.name = "signum", .momentum = 0.5f, .weight_decay = 0.1f}, p);
  p.grad[0] = {2.0f, -1.0f};
  local_step(*opt, p.views(), 0.01f);
  EXPECT_NEAR(p.value[0][0], 0.989f, 1e-6f);
  EXPECT_NEAR(p.value[0][1], 1.009f, 1e-6f);
  p.grad[0] = {-3.0f, 0.2f};
  local_step(*opt, p.views(), 0.01f);
  EXPECT_NEAR(p.value[0][0], 0.998011f, 1e-6f);
  EXPECT_NEAR(p.value[0][1], 1.017991f, 1e-6f);
  const auto m = opt->export_state().buffers.at("signum/momentum/p0");
  EXPECT_FLOAT_EQ(m[0], -1.0f);
  EXPECT_FLOAT_EQ(m[1], -0.15f);
}

TEST(Signum, BetaZeroIsSignSgdBitForBit) {
  const size_t n = 1001;
  Params p({std::vector<float>(n)});
  fill_synthetic(p.value[0], SyntheticDistribution::kNormal, 8);
  std::vector<float> x = p.value[0];
  auto opt = make({.name = "signum", .momentum = 0.0f}, p);
  for (uint64_t t = 0; t < 20; ++t) {
    fill_synthetic(p.grad[0], SyntheticDistribution::kSparse, 50 + t);  // zeros: sgn(0) = +1
    const float lr = 0.01f * static_cast<float>(t + 1);
    for (size_t j = 0; j < n; ++j) x[j] = x[j] - lr * (p.grad[0][j] >= 0.0f ? 1.0f : -1.0f);
    local_step(*opt, p.views(), lr);
    EXPECT_EQ(0, std::memcmp(x.data(), p.value[0].data(), n * sizeof(float))) << "step " << t;
  }
}

TEST(Adam, TwoStepsByHand) {
  // lr = 0.1, g = 0.5 then 0.25, defaults b1 = 0.9, b2 = 0.999, eps = 1e-8.
  // Step 1: m^ = g, v^ = g^2, x = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.9.
  // Step 2: m = 0.07, v = 0.00031225, m^ = 0.07 / 0.19, v^ = 0.00031225 / 0.001999,
  //         x = 0.9 - 0.1 * 0.3684211 / (0.3952246 + 1e-8) = 0.8067820.
  Params p({{1.0f}});
  auto opt = make({.name = "adam"}, p);
  p.grad[0] = {0.5f};
  local_step(*opt, p.views(), 0.1f);
  EXPECT_NEAR(p.value[0][0], 0.9f, 1e-6f);
  p.grad[0] = {0.25f};
  local_step(*opt, p.views(), 0.1f);
  EXPECT_NEAR(p.value[0][0], 0.8067820f, 2e-6f);
  const StateDict s = opt->export_state();
  EXPECT_EQ(s.scalars.at("adam/step"), 2.0);
  EXPECT_NEAR(s.buffers.at("adam/m/p0")[0], 0.07f, 1e-7f);
  // 1 - 0.999f is 0.00099998713 in float: v is off the decimal value by 1.3e-5 relative.
  EXPECT_NEAR(s.buffers.at("adam/v/p0")[0], 0.00031225f, 1e-8f);
}

TEST(Adam, MatchesDoubleReferenceWithDecoupledWeightDecay) {
  const size_t n = 129;
  Params p({std::vector<float>(n)});
  fill_synthetic(p.value[0], SyntheticDistribution::kNormal, 4);
  std::vector<double> x(p.value[0].begin(), p.value[0].end()), m(n, 0.0), v(n, 0.0);
  auto opt =
      make({.name = "adam", .weight_decay = 0.01f, .beta1 = 0.8f, .beta2 = 0.99f, .eps = 1e-6f}, p);
  for (int t = 1; t <= 25; ++t) {
    fill_synthetic(p.grad[0], SyntheticDistribution::kNormal, 200 + t);
    const double lr = t < 10 ? 0.01 : 0.003;
    for (size_t j = 0; j < n; ++j) {
      const double g = p.grad[0][j];
      m[j] = double{0.8f} * m[j] + (1 - double{0.8f}) * g;
      v[j] = double{0.99f} * v[j] + (1 - double{0.99f}) * g * g;
      const double mh = m[j] / (1 - std::pow(double{0.8f}, t));
      const double vh = v[j] / (1 - std::pow(double{0.99f}, t));
      x[j] -= lr * (mh / (std::sqrt(vh) + double{1e-6f}) + double{0.01f} * x[j]);
    }
    local_step(*opt, p.views(), static_cast<float>(lr));
  }
  for (size_t j = 0; j < n; ++j) EXPECT_NEAR(p.value[0][j], x[j], 2e-5) << j;
}

TEST(Optimizers, ContributionDoesNotChangeState) {
  for (const char* name : {"sgd", "signum", "adam"}) {
    OptimizerOptions o{.name = name};
    if (std::string(name) != "adam") o.momentum = 0.9f;
    Params p({{1.0f, 2.0f, 3.0f}});
    auto opt = make(o, p);
    p.grad[0] = {0.5f, -0.5f, 0.25f};
    local_step(*opt, p.views(), 0.1f);
    const StateDict before = opt->export_state();
    std::vector<float> out(3);
    opt->contribution(0, p.grad[0], out);
    opt->contribution(0, p.grad[0], out);
    const StateDict after = opt->export_state();
    EXPECT_EQ(before.buffers, after.buffers) << name;
    EXPECT_EQ(before.scalars, after.scalars) << name;
  }
}

// The DistributedOptimizer sends scaled_contribution: the fused pass must give the bits of
// contribution() followed by the scaling, for identity and non-identity T alike.
TEST(Optimizers, ScaledContributionIsContributionTimesScale) {
  for (const char* name : {"sgd", "sgd-worker-momentum", "signum", "adam"}) {
    OptimizerOptions o{.name = std::string(name).substr(0, std::string(name).find('-'))};
    if (o.name != "adam") o.momentum = 0.9f;
    o.worker_momentum = std::string(name) == "sgd-worker-momentum";
    const size_t n = 257;
    Params p({std::vector<float>(n, 1.0f)});
    auto opt = make(o, p);
    for (size_t j = 0; j < n; ++j) p.grad[0][j] = std::sin(0.37f * float(j)) * 3.1f;
    local_step(*opt, p.views(), 0.1f);  // momentum buffers become non-zero
    for (float scale : {1.0f, 0.0123f, -0.7f}) {
      std::vector<float> fused(n), reference(n);
      opt->scaled_contribution(0, p.grad[0], fused, scale);
      opt->contribution(0, p.grad[0], reference);
      for (float& v : reference) v = scale * v;
      EXPECT_EQ(std::memcmp(fused.data(), reference.data(), 4 * n), 0) << name << " " << scale;
    }
  }
}

TEST(Optimizers, ExportImportContinuesBitForBit) {
  for (const char* name : {"sgd", "signum", "adam"}) {
    OptimizerOptions o{.name = name};
    if (std::string(name) != "adam") o.momentum = 0.9f;
    if (std::string(name) == "sgd") o.nesterov = true;
    const size_t n = 100;
    Params a({std::vector<float>(n), std::vector<float>(7)});
    fill_synthetic(a.value[0], SyntheticDistribution::kNormal, 1);
    auto first = make(o, a);
    auto grads = [&](Params& p, uint64_t t) {
      fill_synthetic(p.grad[0], SyntheticDistribution::kNormal, 10 + t);
      fill_synthetic(p.grad[1], SyntheticDistribution::kNormal, 1000 + t);
    };
    for (uint64_t t = 0; t < 5; ++t) {
      grads(a, t);
      local_step(*first, a.views(), 0.01f);
    }
    Params b = a;
    auto second = make(o, b);
    second->import_state(first->export_state());
    for (uint64_t t = 5; t < 10; ++t) {
      grads(a, t);
      grads(b, t);
      local_step(*first, a.views(), 0.01f);
      local_step(*second, b.views(), 0.01f);
    }
    EXPECT_EQ(a.value, b.value) << name;
  }
}

TEST(Optimizers, ImportRejectsForeignState) {
  Params p({{1.0f, 2.0f}});
  auto adam = make({.name = "adam"}, p);
  auto sgd = make({.name = "sgd", .momentum = 0.9f}, p);
  try {
    sgd->import_state(adam->export_state());
    ADD_FAILURE() << "adam state accepted by sgd";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("sgd/momentum/p0"));
  }
  StateDict s = sgd->export_state();
  s.buffers["sgd/momentum/p0"].push_back(1.0f);
  EXPECT_THROW(sgd->import_state(s), InvalidArgument);
  StateDict extra = sgd->export_state();
  extra.buffers["sgd/momentum/other"] = {1.0f};
  try {
    sgd->import_state(extra);
    ADD_FAILURE() << "unexpected buffer accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("sgd/momentum/other"));
  }
  StateDict bad_step = adam->export_state();
  bad_step.scalars["adam/step"] = 1.5;
  EXPECT_THROW(adam->import_state(bad_step), InvalidArgument);
  // A failed import changes nothing.
  Params q({{1.0f, 2.0f}});
  auto fresh = make({.name = "sgd", .momentum = 0.9f}, q);
  q.grad[0] = {1.0f, 1.0f};
  local_step(*fresh, q.views(), 0.1f);
  const StateDict before = fresh->export_state();
  EXPECT_THROW(fresh->import_state(extra), InvalidArgument);
  EXPECT_EQ(fresh->export_state().buffers, before.buffers);
}

TEST(OptimizerFactory, ClearErrors) {
  auto message = [](OptimizerOptions o) -> std::string {
    try {
      make_optimizer(o);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_THAT(message({.name = "sgdd"}), HasSubstr("valid optimizers: sgd, signum, adam"));
  EXPECT_THAT(message({.name = "sgd", .momentum = 1.0f}), HasSubstr("momentum must be in [0, 1)"));
  EXPECT_THAT(message({.name = "sgd", .momentum = -0.1f}), HasSubstr("[0, 1)"));
  EXPECT_THAT(message({.name = "sgd", .nesterov = true}), HasSubstr("nesterov needs momentum"));
  EXPECT_THAT(message({.name = "adam", .nesterov = true}), HasSubstr("nesterov applies to sgd"));
  EXPECT_THAT(message({.name = "adam", .momentum = 0.9f}), HasSubstr("beta1"));
  EXPECT_THAT(message({.name = "sgd", .beta1 = 0.5f}), HasSubstr("adam only"));
  EXPECT_THAT(message({.name = "signum", .eps = 1e-3f}), HasSubstr("signum's beta is 'momentum'"));
  EXPECT_THAT(message({.name = "adam", .eps = 0.0f}), HasSubstr("eps"));
  EXPECT_THAT(message({.name = "adam", .beta2 = 1.0f}), HasSubstr("beta2"));
  EXPECT_THAT(message({.name = "sgd", .weight_decay = -1.0f}), HasSubstr("weight_decay"));
  EXPECT_THAT(message({.name = "sgd", .weight_decay = std::numeric_limits<float>::quiet_NaN()}),
              HasSubstr("weight_decay"));
  EXPECT_EQ(message({.name = "signum", .momentum = 0.9f, .weight_decay = 1e-4f}), "");

  auto opt = make_optimizer({.name = "sgd"});
  EXPECT_THROW(opt->init({{"w", 3}, {"w", 4}}), InvalidArgument);  // names must be unique
  opt->init({{"w", 3}});
  std::vector<float> x(3), g(3), u(4);
  EXPECT_THROW(opt->apply(0, x, g, u, 0.1f), InvalidArgument);  // size mismatch
  EXPECT_THROW(opt->apply(1, x, g, g, 0.1f), InvalidArgument);  // no such parameter
}

TEST(LocalStep, NanGradientNamesTheParameter) {
  Params p({{1.0f}, {1.0f, 2.0f}});
  auto opt = make({.name = "sgd"}, p);
  p.grad[1][1] = std::numeric_limits<float>::infinity();
  try {
    local_step(*opt, p.views(), 0.1f);
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("'p1' at element 1"));
  }
  EXPECT_THROW(local_step(*opt, p.views(), -0.1f), InvalidArgument);
}

}  // namespace
}  // namespace qgrad
