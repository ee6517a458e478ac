// The linear models (train/linear/linear_model.h): analytic gradients against finite
// differences (full precision and quantized data), the Model contract (parameters, grad_ready,
// overwritten gradients, evaluate), option and data checks, and learning separable data.
#include "train/linear/linear_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "core/error.h"
#include "tests/train/linear_testing.h"

namespace qgrad {
namespace {

using namespace qgrad::linear_testing;

// rows x dim features uniform in [-1, 1); targets N(0, 1) (classes = 0), +-1 (classes = 2) or
// class ids (classes > 2), drawn independently of the features.
Dataset random_data(size_t rows, size_t dim, size_t classes, uint64_t seed) {
  Dataset d;
  d.name = "random";
  d.rows = rows;
  d.dim = dim;
  d.num_classes = classes;
  d.features.resize(rows * dim);
  for (size_t i = 0; i < d.features.size(); ++i)
    d.features[i] = static_cast<float>(2 * uniform(seed, 0, i) - 1);
  d.targets.resize(rows);
  for (size_t r = 0; r < rows; ++r) {
    const double u = uniform(seed, 1, r);
    if (classes == 0) d.targets[r] = static_cast<float>(normal(seed, 2, r));
    if (classes == 2) d.targets[r] = u < 0.5 ? -1.0f : 1.0f;
    if (classes > 2)
      d.targets[r] = static_cast<float>(std::floor(u * static_cast<double>(classes)));
  }
  return d;
}

std::vector<size_t> iota_rows(size_t n) {
  std::vector<size_t> rows(n);
  for (size_t i = 0; i < n; ++i) rows[i] = i;
  return rows;
}

LinearModelOptions options_for(LinearLoss loss, const Dataset& d, float init_scale = 0.5f) {
  LinearModelOptions o;
  o.loss = loss;
  o.dim = d.dim;
  o.num_classes = d.num_classes;
  o.init_scale = init_scale;
  o.init_seed = 11;
  return o;
}

// Central differences of the loss that forward_backward returns, at the same data step (so a
// quantized model sees the same quantized batch), against the gradient it wrote.
void expect_gradient_matches_fd(LinearModel& model, const Dataset& data,
                                const std::vector<size_t>& rows, double h, double tol) {
  const uint64_t step = model.data_step();
  auto params = model.params();
  model.forward_backward(data, rows, {});
  std::vector<std::vector<float>> grads;
  for (const auto& p : params) grads.emplace_back(p.grad.begin(), p.grad.end());
  size_t checked = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    for (size_t i = 0; i < params[k].value.size(); ++i) {
      float& v = params[k].value[i];
      const float orig = v;
      v = orig + static_cast<float>(h);
      const double up = v;
      model.set_data_step(step);
      const double lp = model.forward_backward(data, rows, {});
      v = orig - static_cast<float>(h);
      const double down = v;
      model.set_data_step(step);
      const double lm = model.forward_backward(data, rows, {});
      v = orig;
      const double fd = (lp - lm) / (up - down);
      EXPECT_NEAR(grads[k][i], fd, tol * (1 + std::abs(fd)))
          << params[k].name << "[" << i << "] " << model.name();
      ++checked;
    }
  }
  EXPECT_GT(checked, 0u);
  model.set_data_step(step);
}

TEST(LinearModelGradient, LeastSquaresMatchesFiniteDifferences) {
  const Dataset d = random_data(40, 6, 0, 1);
  LinearModel model(options_for(LinearLoss::kSquared, d));
  model.params()[1].value[0] = 0.3f;
  expect_gradient_matches_fd(model, d, iota_rows(d.rows), 1e-2, 2e-4);
}

TEST(LinearModelGradient, BinaryLogisticMatchesFiniteDifferences) {
  const Dataset d = random_data(40, 6, 2, 2);
  LinearModel model(options_for(LinearLoss::kLogistic, d, 1.0f));
  model.params()[1].value[0] = -0.2f;
  expect_gradient_matches_fd(model, d, iota_rows(d.rows), 1e-2, 2e-4);
}

TEST(LinearModelGradient, MultinomialLogisticMatchesFiniteDifferences) {
  const Dataset d = random_data(40, 6, 4, 3);
  LinearModel model(options_for(LinearLoss::kLogistic, d, 1.0f));
  EXPECT_EQ(model.outputs(), 4u);
  auto bias = model.params()[1].value;
  for (size_t c = 0; c < bias.size(); ++c) bias[c] = 0.1f * static_cast<float>(c);
  expect_gradient_matches_fd(model, d, iota_rows(d.rows), 1e-2, 2e-4);
}

TEST(LinearModelGradient, HingeMatchesFiniteDifferencesAwayFromTheKink) {
  const Dataset d = random_data(40, 6, 2, 4);
  LinearModel model(options_for(LinearLoss::kHinge, d, 3.0f));
  const double h = 1e-3;
  // The hinge is linear on each side of y z = 1: central differences are exact there as long as
  // no row crosses the kink, i.e. |1 - y z| > h (sum |a| + 1). Check that, and that both sides
  // are represented, so the test covers active and inactive rows.
  auto params = model.params();
  size_t active = 0;
  for (size_t r = 0; r < d.rows; ++r) {
    double z = params[1].value[0], reach = 1;
    for (size_t j = 0; j < d.dim; ++j) {
      z += params[0].value[j] * d.features[r * d.dim + j];
      reach += std::abs(d.features[r * d.dim + j]);
    }
    const double m = d.targets[r] * z;
    ASSERT_GT(std::abs(1 - m), 2 * h * reach) << "row " << r << " sits on the kink";
    active += m < 1;
  }
  EXPECT_GT(active, 5u);
  EXPECT_LT(active, d.rows - 5);
  expect_gradient_matches_fd(model, d, iota_rows(d.rows), h, 2e-3);
}

// With quantized data the gradient is the exact gradient of the loss forward_backward reports on
// that step's quantized batch: naive for every loss, double sampling for least squares (where
// the loss is 1/2 (z(Q1) - y)(z(Q2) - y)).
TEST(LinearModelGradient, QuantizedDataMatchesFiniteDifferences) {
  struct Case {
    LinearLoss loss;
    size_t classes;
    bool ds;
  };
  for (const Case c :
       {Case{LinearLoss::kSquared, 0, false}, Case{LinearLoss::kSquared, 0, true},
        Case{LinearLoss::kLogistic, 2, false}, Case{LinearLoss::kLogistic, 3, false}}) {
    const Dataset d = random_data(40, 6, c.classes, 5);
    LinearModelOptions o = options_for(c.loss, d, 1.0f);
    o.data_bits = 3;
    o.double_sampling = c.ds;
    o.data_seed = 77;
    o.grid = fit_feature_grid(d);
    LinearModel model(o);
    model.set_data_step(12);
    SCOPED_TRACE(::testing::Message()
                 << model.name() << " classes " << c.classes << " ds " << c.ds);
    expect_gradient_matches_fd(model, d, iota_rows(d.rows), 1e-2, 2e-4);
  }
}

// ---- The Model contract ----

TEST(LinearModel, ParamsNamesShapesAndViews) {
  const Dataset bin = random_data(10, 5, 2, 6), multi = random_data(10, 5, 3, 6);
  LinearModel ls(options_for(LinearLoss::kSquared, bin));
  auto p = ls.params();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "linear.weight");
  EXPECT_EQ(p[0].value.size(), 5u);
  EXPECT_EQ(p[1].name, "linear.bias");
  EXPECT_EQ(p[1].value.size(), 1u);
  for (const auto& v : p) EXPECT_EQ(v.value.size(), v.grad.size());
  // Views are stable and are the model's own storage: writing a weight changes the loss.
  EXPECT_EQ(ls.params()[0].value.data(), p[0].value.data());
  const double before = ls.evaluate(bin).loss;
  p[1].value[0] += 1.0f;
  EXPECT_NE(ls.evaluate(bin).loss, before);

  LinearModel softmax(options_for(LinearLoss::kLogistic, multi));
  EXPECT_EQ(softmax.params()[0].value.size(), 15u);
  EXPECT_EQ(softmax.params()[1].value.size(), 3u);

  LinearModelOptions o = options_for(LinearLoss::kHinge, bin);
  o.bias = false;
  LinearModel nobias(o);
  ASSERT_EQ(nobias.params().size(), 1u);
  EXPECT_EQ(nobias.name(), "svm");
  EXPECT_EQ(ls.name(), "linear");
  EXPECT_EQ(softmax.name(), "logistic");
}

TEST(LinearModel, InitIsZeroOrSeededUniform) {
  const Dataset d = random_data(10, 50, 0, 7);
  LinearModel zero(options_for(LinearLoss::kSquared, d, 0.0f));
  const auto zero_params = zero.params();
  for (const float w : zero_params[0].value) EXPECT_EQ(w, 0.0f);
  LinearModel a(options_for(LinearLoss::kSquared, d, 0.25f)),
      b(options_for(LinearLoss::kSquared, d, 0.25f));
  auto other = options_for(LinearLoss::kSquared, d, 0.25f);
  other.init_seed = 12;
  LinearModel c(other);
  const auto wa = a.params()[0].value, wb = b.params()[0].value, wc = c.params()[0].value;
  EXPECT_TRUE(std::equal(wa.begin(), wa.end(), wb.begin()));
  EXPECT_FALSE(std::equal(wa.begin(), wa.end(), wc.begin()));
  for (const float w : wa) {
    EXPECT_GE(w, -0.25f);
    EXPECT_LT(w, 0.25f);
  }
  EXPECT_EQ(a.params()[1].value[0], 0.0f);
}

TEST(LinearModel, GradReadyOncePerParameterAndGradientsAreOverwritten) {
  const Dataset d = random_data(30, 4, 2, 8);
  LinearModel model(options_for(LinearLoss::kLogistic, d));
  const auto rows = iota_rows(d.rows);
  std::vector<size_t> order;
  model.forward_backward(d, rows, [&](size_t i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1}));
  const auto p = model.params();
  const std::vector<float> first(p[0].grad.begin(), p[0].grad.end());
  model.forward_backward(d, rows, {});  // an empty grad_ready is fine
  EXPECT_TRUE(std::equal(first.begin(), first.end(), p[0].grad.begin()));  // not accumulated

  LinearModelOptions o = options_for(LinearLoss::kHinge, d);
  o.bias = false;
  LinearModel nobias(o);
  order.clear();
  nobias.forward_backward(d, rows, [&](size_t i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<size_t>{0}));

  // An empty batch: zero gradient, loss 0, grad_ready still called.
  order.clear();
  EXPECT_EQ(model.forward_backward(d, {}, [&](size_t i) { order.push_back(i); }), 0.0);
  EXPECT_EQ(order, (std::vector<size_t>{0, 1}));
  for (const float g : p[0].grad) EXPECT_EQ(g, 0.0f);
}

TEST(LinearModel, EvaluateMatchesForwardBackwardAndTouchesNothing) {
  for (const LinearLoss loss : {LinearLoss::kSquared, LinearLoss::kLogistic, LinearLoss::kHinge}) {
    const Dataset d = random_data(5000, 7, loss == LinearLoss::kSquared ? 0 : 2, 9);
    LinearModel model(options_for(loss, d));
    const std::vector<size_t> rows{3, 1, 4, 1, 5, 9, 2, 6};
    const double loss_fb = model.forward_backward(d, rows, {});
    const auto p = model.params();
    const std::vector<float> grad(p[0].grad.begin(), p[0].grad.end());
    const uint64_t step = model.data_step();
    const Evaluation ev = model.evaluate(d, rows);
    EXPECT_NEAR(ev.loss, loss_fb, 1e-6 * (1 + std::abs(loss_fb)));
    EXPECT_EQ(ev.rows, rows.size());
    EXPECT_TRUE(std::equal(grad.begin(), grad.end(), p[0].grad.begin()));
    EXPECT_EQ(model.data_step(), step);
    // No rows = every row (5000 > one evaluation chunk).
    const auto all = iota_rows(d.rows);
    const Evaluation e_all = model.evaluate(d), e_rows = model.evaluate(d, all);
    EXPECT_EQ(e_all.rows, d.rows);
    EXPECT_DOUBLE_EQ(e_all.loss, e_rows.loss);
    EXPECT_DOUBLE_EQ(e_all.accuracy, e_rows.accuracy);
  }
}

TEST(LinearModel, AccuracyCountsSignsAndArgmax) {
  // Two rows with known scores: z = w^T a + c.
  Dataset d;
  d.name = "tiny";
  d.rows = 4;
  d.dim = 2;
  d.num_classes = 2;
  d.features = {1, 0, 0, 1, -1, 0, 0, -1};
  d.targets = {1, 1, -1, 1};  // z = (2, -1, -2, 1) with w = (2, -1): 3 of 4 right
  LinearModelOptions o = options_for(LinearLoss::kHinge, d, 0.0f);
  LinearModel svm(o);
  svm.params()[0].value[0] = 2.0f;
  svm.params()[0].value[1] = -1.0f;
  const Evaluation ev = svm.evaluate(d);
  EXPECT_DOUBLE_EQ(ev.accuracy, 0.75);
  // Hinge: max(0, 1 - yz) = (0, 2, 0, 0) -> mean 0.5.
  EXPECT_DOUBLE_EQ(ev.loss, 0.5);

  d.num_classes = 3;
  d.targets = {0, 1, 2, 2};
  LinearModel softmax(options_for(LinearLoss::kLogistic, d, 0.0f));
  auto w = softmax.params()[0].value;  // 3 x 2: class 0 likes a_0, class 1 a_1, class 2 -a_0
  w[0] = 1;
  w[3] = 1;
  w[4] = -1;
  EXPECT_DOUBLE_EQ(softmax.evaluate(d).accuracy, 0.75);  // row 3 (a = (0, -1)) is argmax 0

  // Least squares on regression data reports accuracy 0.
  const Dataset reg = random_data(10, 2, 0, 1);
  LinearModel ls(options_for(LinearLoss::kSquared, reg));
  EXPECT_EQ(ls.evaluate(reg).accuracy, 0.0);
}

TEST(LinearModel, BinaryLabelsZeroOneMeanMinusOnePlusOne) {
  Dataset pm = random_data(30, 4, 2, 10);
  Dataset zo = pm;
  for (auto& t : zo.targets) t = t > 0 ? 1.0f : 0.0f;
  LinearModel a(options_for(LinearLoss::kLogistic, pm)), b(options_for(LinearLoss::kLogistic, zo));
  const auto rows = iota_rows(pm.rows);
  EXPECT_EQ(a.forward_backward(pm, rows, {}), b.forward_backward(zo, rows, {}));
  const auto ga = a.params()[0].grad, gb = b.params()[0].grad;
  EXPECT_TRUE(std::equal(ga.begin(), ga.end(), gb.begin()));
}

TEST(LinearModel, BadOptionsAndDataThrow) {
  const Dataset bin = random_data(10, 4, 2, 11), multi = random_data(10, 4, 3, 11),
                reg = random_data(10, 4, 0, 11);
  EXPECT_THROW(LinearModel(options_for(LinearLoss::kHinge, multi)), InvalidArgument);
  EXPECT_THROW(LinearModel(options_for(LinearLoss::kHinge, reg)), InvalidArgument);
  EXPECT_THROW(LinearModel(options_for(LinearLoss::kLogistic, reg)), InvalidArgument);
  EXPECT_THROW(LinearModel(options_for(LinearLoss::kSquared, multi)), InvalidArgument);
  auto o = options_for(LinearLoss::kSquared, reg);
  o.dim = 0;
  EXPECT_THROW(LinearModel{o}, InvalidArgument);
  o = options_for(LinearLoss::kSquared, reg);
  o.double_sampling = true;  // without data bits
  EXPECT_THROW(LinearModel{o}, InvalidArgument);
  o.data_bits = 9;
  o.grid = fit_feature_grid(reg);
  EXPECT_THROW(LinearModel{o}, InvalidArgument);
  o.data_bits = 2;
  o.grid.reset();  // missing grid
  EXPECT_THROW(LinearModel{o}, InvalidArgument);
  o.grid = FeatureGrid{{0, 0}, {1, 1}};  // grid of another dimension
  EXPECT_THROW(LinearModel{o}, InvalidArgument);
  o = options_for(LinearLoss::kSquared, reg);
  o.init_scale = -1;
  EXPECT_THROW(LinearModel{o}, InvalidArgument);
  EXPECT_THROW(make_linear_model("ridge", reg), InvalidArgument);

  // Data that does not fit the model.
  LinearModel logistic(options_for(LinearLoss::kLogistic, bin));
  const std::vector<size_t> rows{0, 1}, bad_row{10};
  EXPECT_THROW(logistic.forward_backward(multi, rows, {}), InvalidArgument);  // classes
  EXPECT_THROW(logistic.forward_backward(random_data(10, 5, 2, 1), rows, {}), InvalidArgument);
  EXPECT_THROW(logistic.forward_backward(bin, bad_row, {}), InvalidArgument);
  EXPECT_THROW(logistic.evaluate(bin, bad_row), InvalidArgument);
  Dataset bad_label = bin;
  bad_label.targets[1] = 2.0f;
  EXPECT_THROW(logistic.forward_backward(bad_label, rows, {}), InvalidArgument);
  LinearModel softmax(options_for(LinearLoss::kLogistic, multi));
  Dataset bad_class = multi;
  bad_class.targets[0] = 3.0f;
  EXPECT_THROW(softmax.forward_backward(bad_class, rows, {}), InvalidArgument);
  bad_class.targets[0] = 0.5f;
  EXPECT_THROW(softmax.evaluate(bad_class), InvalidArgument);
}

TEST(LinearModel, QuantizedGradientsAreReproducibleAndPerRankStreams) {
  const Dataset d = random_data(64, 8, 0, 12);
  auto opts = [&](uint32_t rank) {
    LinearModelOptions o;
    o.data_bits = 2;
    o.double_sampling = true;
    o.data_seed = 5;
    o.rank = rank;
    return o;
  };
  auto a = make_linear_model("linear", d, opts(0)), b = make_linear_model("linear", d, opts(0)),
       c = make_linear_model("linear", d, opts(1));
  ASSERT_NE(a->quantizer(), nullptr);
  EXPECT_EQ(a->quantizer()->grid().lo, fit_feature_grid(d).lo);
  const auto rows = iota_rows(16);
  for (int step = 0; step < 3; ++step) {
    a->params()[0].value[0] = b->params()[0].value[0] = c->params()[0].value[0] = 0.5f;
    const double la = a->forward_backward(d, rows, {}), lb = b->forward_backward(d, rows, {});
    const double lc = c->forward_backward(d, rows, {});
    EXPECT_EQ(la, lb);
    EXPECT_NE(la, lc);
    const auto ga = a->params()[0].grad, gb = b->params()[0].grad;
    EXPECT_TRUE(std::equal(ga.begin(), ga.end(), gb.begin()));
  }
  EXPECT_EQ(a->data_step(), 3u);
  // Resuming at a saved data step replays the same quantization.
  const double again = [&] {
    a->set_data_step(1);
    return a->forward_backward(d, rows, {});
  }();
  b->set_data_step(1);
  EXPECT_EQ(again, b->forward_backward(d, rows, {}));
}

// ---- Learning linearly separable data (heart_scale-like: 13 features in [-1, 1]) ----

double train_accuracy(const std::string& name, const Dataset& d, int bits, bool ds) {
  LinearModelOptions o;
  o.data_bits = bits;
  o.double_sampling = ds;
  o.data_seed = 3;
  auto model = make_linear_model(name, d, o);
  run_sgd(*model, d, 4000, 16, name == "svm" ? 0.1 : 1.0, 1000, 17);
  const double acc = model->evaluate(d).accuracy;
  std::printf("%-8s classes %zu bits %d ds %d: training accuracy %.4f\n", name.c_str(),
              d.num_classes, bits, ds, acc);
  return acc;
}

TEST(LinearModelLearning, SeparableBinaryData) {
  const Dataset d = make_separable(1000, 13, 2, 0.05, 21);
  for (const std::string name : {"logistic", "svm", "linear"}) {
    SCOPED_TRACE(name);
    const double full = train_accuracy(name, d, 0, false);
    EXPECT_GE(full, name == "linear" ? 0.9 : 0.98);  // least squares is no classifier
    if (name == "linear") continue;
    EXPECT_GE(train_accuracy(name, d, 8, false), 0.97);
    EXPECT_GE(train_accuracy(name, d, 4, true), 0.95);
  }
}

TEST(LinearModelLearning, SeparableMultiClassData) {
  const Dataset d = make_separable(1500, 13, 4, 0.1, 22);
  EXPECT_GE(train_accuracy("logistic", d, 0, false), 0.95);
  EXPECT_GE(train_accuracy("logistic", d, 8, false), 0.94);
}

}  // namespace
}  // namespace qgrad
