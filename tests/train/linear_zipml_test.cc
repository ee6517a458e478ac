// ZipML double sampling on least squares (ZipML's section 3.3; docs/algorithms.md): the naive
// quantized gradient is biased towards a ridge-like solution, the double-sampled one is unbiased.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <vector>

#include "tests/train/linear_testing.h"
#include "train/linear/linear_model.h"

namespace qgrad {
namespace {

using namespace qgrad::linear_testing;

// ---- Fact 16 ----

// a = (0.3, 0.7), x = (1, 1), b = 0. Grid [0, 1.5] with 2 bits has levels {0, 0.5, 1, 1.5}, so
// 0.3 and 0.7 round within {0, 0.5} and {0.5, 1}: the levels {0, 0.5, 1} of fact 16.
Dataset fact16_data() {
  Dataset d;
  d.name = "fact16";
  d.rows = 1;
  d.dim = 2;
  d.features = {0.3f, 0.7f};
  d.targets = {0.0f};
  return d;
}

std::unique_ptr<LinearModel> fact16_model(bool double_sampling) {
  LinearModelOptions o;
  o.dim = 2;
  o.bias = false;
  o.data_bits = 2;
  o.double_sampling = double_sampling;
  o.data_seed = 16;
  o.grid = FeatureGrid{{0.0f, 0.0f}, {1.5f, 1.5f}};
  auto model = std::make_unique<LinearModel>(o);
  auto w = model->params()[0].value;
  w[0] = w[1] = 1.0f;
  return model;
}

// Exact mean and variance of the model's gradient and loss, by enumerating the roundings:
// Q(0.3) = 0.5 w.p. 0.6 else 0; Q(0.7) = 1 w.p. 0.4 else 0.5. Index 0, 1: gradient; 2: loss.
struct Moments {
  double mean[3] = {0, 0, 0};
  double var[3] = {0, 0, 0};
};

Moments exact_moments(bool double_sampling) {
  const double q0[2] = {0.0, 0.5}, p0[2] = {0.4, 0.6};
  const double q1[2] = {0.5, 1.0}, p1[2] = {0.6, 0.4};
  Moments m;
  double sq[3] = {0, 0, 0};
  auto add = [&](double p, const double v[3]) {
    for (int c = 0; c < 3; ++c) {
      m.mean[c] += p * v[c];
      sq[c] += p * v[c] * v[c];
    }
  };
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      const double pa = p0[i] * p1[j];
      const double a[2] = {q0[i], q1[j]};
      const double za = a[0] + a[1];
      if (!double_sampling) {
        const double v[3] = {a[0] * za, a[1] * za, 0.5 * za * za};
        add(pa, v);
        continue;
      }
      for (int k = 0; k < 2; ++k)
        for (int l = 0; l < 2; ++l) {
          const double b[2] = {q0[k], q1[l]};
          const double zb = b[0] + b[1];
          const double v[3] = {0.5 * (a[0] * zb + b[0] * za), 0.5 * (a[1] * zb + b[1] * za),
                               0.5 * za * zb};
          add(pa * p0[k] * p1[l], v);
        }
    }
  for (int c = 0; c < 3; ++c) m.var[c] = sq[c] - m.mean[c] * m.mean[c];
  return m;
}

TEST(LinearZipml, Fact16ExactExpectations) {
  const Moments naive = exact_moments(false), ds = exact_moments(true);
  EXPECT_NEAR(naive.mean[0], 0.36, 1e-12);
  EXPECT_NEAR(naive.mean[1], 0.76, 1e-12);
  EXPECT_NEAR(naive.mean[2], 0.56, 1e-12);  // 1/2 (1 + 0.06 + 0.06)
  EXPECT_NEAR(ds.mean[0], 0.3, 1e-12);
  EXPECT_NEAR(ds.mean[1], 0.7, 1e-12);
  EXPECT_NEAR(ds.mean[2], 0.5, 1e-12);  // the true loss 1/2 (a^T x)^2
}

TEST(LinearZipml, Fact16MonteCarlo) {
  const Dataset data = fact16_data();
  const size_t row = 0;
  const int kDraws = 20000;
  for (const bool ds : {false, true}) {
    auto model = fact16_model(ds);
    const auto grad = model->params()[0].grad;
    double sum[3] = {0, 0, 0};
    for (int k = 0; k < kDraws; ++k) {
      const double loss = model->forward_backward(data, {&row, 1}, {});
      sum[0] += grad[0];
      sum[1] += grad[1];
      sum[2] += loss;
    }
    const Moments m = exact_moments(ds);
    for (int c = 0; c < 3; ++c) {
      const double mean = sum[c] / kDraws, sigma = std::sqrt(m.var[c] / kDraws);
      EXPECT_NEAR(mean, m.mean[c], 5 * sigma) << (ds ? "double sampling" : "naive") << " c=" << c;
    }
    // The naive bias (0.06 per coordinate) is far outside the noise: the test can tell them apart.
    if (!ds) {
      EXPECT_GT(sum[0] / kDraws - 0.3, 10 * std::sqrt(m.var[0] / kDraws));
      EXPECT_GT(sum[1] / kDraws - 0.7, 10 * std::sqrt(m.var[1] / kDraws));
    }
  }
}

// ---- Least squares: double sampling converges to x_ls, naive quantization to the ridge-like
// solution (A^T A + sum_k D_k)^-1 A^T b ----

struct Problem {
  Dataset data;
  Eigen::MatrixXd a;
  Eigen::VectorXd b;
  Eigen::VectorXd x_ls;
  double f_ls = 0;
};

double objective(const Problem& p, const Eigen::VectorXd& x) {
  return 0.5 * (p.a * x - p.b).squaredNorm() / static_cast<double>(p.a.rows());
}

Problem make_problem() {
  Problem p;
  p.data = make_regression(2000, 20, 0.0, 1.0, 0.3, 7, nullptr);
  const auto n = static_cast<Eigen::Index>(p.data.rows), d = static_cast<Eigen::Index>(p.data.dim);
  p.a.resize(n, d);
  p.b.resize(n);
  for (Eigen::Index r = 0; r < n; ++r) {
    for (Eigen::Index j = 0; j < d; ++j)
      p.a(r, j) = p.data.features[static_cast<size_t>(r * d + j)];
    p.b[r] = p.data.targets[static_cast<size_t>(r)];
  }
  p.x_ls = (p.a.transpose() * p.a).ldlt().solve(p.a.transpose() * p.b);
  p.f_ls = objective(p, p.x_ls);
  return p;
}

// sum_k D_k for the grid of the data (per-feature min/max, 2^bits uniform levels), computed
// here from the definition: Var Q(a) = (a - l)(l + step - a) for the level l below a.
Eigen::VectorXd sum_rounding_variance(const Problem& p, int bits) {
  const auto n = p.a.rows(), d = p.a.cols();
  Eigen::VectorXd lo = p.a.colwise().minCoeff(), hi = p.a.colwise().maxCoeff();
  Eigen::VectorXd total = Eigen::VectorXd::Zero(d);
  const double top = static_cast<double>((1 << bits) - 1);
  for (Eigen::Index j = 0; j < d; ++j) {
    const double step = (hi[j] - lo[j]) / top;
    for (Eigen::Index r = 0; r < n; ++r) {
      const double t = (p.a(r, j) - lo[j]) / step;
      const double l = lo[j] + std::min(std::floor(t), top - 1) * step;
      total[j] += (p.a(r, j) - l) * (l + step - p.a(r, j));
    }
  }
  return total;
}

// Plain SGD, batch 32, step 0.2 / (1 + t / 100), 20000 steps (320 epochs of 2000 rows): long
// enough that the SGD noise (|x - x_ls| ~ 0.006 at full precision, <= 0.01 with quantized data
// over several seeds tried) is well below the bias to be measured (|x_ridge - x_ls| = 0.11 at 3
// bits). Features in [0, 1]: a 20-dimensional problem with condition number ~60.
constexpr size_t kSteps = 20000;
constexpr size_t kBatch = 32;
constexpr double kLr = 0.2;
constexpr double kT0 = 100;

Eigen::VectorXd train(const Problem& p, int bits, bool ds) {
  LinearModelOptions o;
  o.bias = false;
  o.data_bits = bits;
  o.double_sampling = ds;
  o.data_seed = 1234;
  auto model = make_linear_model("linear", p.data, o);
  run_sgd(*model, p.data, kSteps, kBatch, kLr, kT0, 99);
  const auto w = model->params()[0].value;
  Eigen::VectorXd x(static_cast<Eigen::Index>(w.size()));
  for (size_t j = 0; j < w.size(); ++j) x[static_cast<Eigen::Index>(j)] = w[j];
  return x;
}

TEST(LinearZipml, DoubleSamplingConvergesNaiveIsBiased) {
  const Problem p = make_problem();
  const Eigen::VectorXd x_fp = train(p, 0, false);
  std::printf("f_ls %.6f  fp32 SGD: f %.6f |x - x_ls| %.5f\n", p.f_ls, objective(p, x_fp),
              (x_fp - p.x_ls).norm());
  EXPECT_LT(objective(p, x_fp), 1.01 * p.f_ls);  // the SGD loop itself converges
  for (const int bits : {2, 3}) {
    SCOPED_TRACE(bits);
    const Eigen::VectorXd d = sum_rounding_variance(p, bits);
    const Eigen::MatrixXd ata = p.a.transpose() * p.a;
    const Eigen::VectorXd x_ridge =
        (ata + Eigen::MatrixXd(d.asDiagonal())).ldlt().solve(p.a.transpose() * p.b);
    const Eigen::VectorXd x_naive = train(p, bits, false), x_ds = train(p, bits, true);
    const double gap = (x_ridge - p.x_ls).norm();
    const double f_ridge = objective(p, x_ridge), f_naive = objective(p, x_naive),
                 f_ds = objective(p, x_ds);
    std::printf(
        "bits %d: f_ridge %.6f (|x_ridge - x_ls| %.5f)\n"
        "  naive: f %.6f (%+.2f%%) |x - x_ls| %.5f |x - x_ridge| %.5f\n"
        "  ds:    f %.6f (%+.2f%%) |x - x_ls| %.5f |x - x_ridge| %.5f\n",
        bits, f_ridge, gap, f_naive, 100 * (f_naive / p.f_ls - 1), (x_naive - p.x_ls).norm(),
        (x_naive - x_ridge).norm(), f_ds, 100 * (f_ds / p.f_ls - 1), (x_ds - p.x_ls).norm(),
        (x_ds - x_ridge).norm());
    // The predicted bias is there to be measured: the ridge-like solution is clearly worse.
    ASSERT_GT(f_ridge, 1.01 * p.f_ls);
    // Double sampling converges to the full-precision solution...
    EXPECT_LT(f_ds, 1.01 * p.f_ls);
    EXPECT_LT(f_ds - p.f_ls, 0.25 * (f_ridge - p.f_ls));
    EXPECT_LT((x_ds - p.x_ls).norm(), gap / 4);
    // ...naive quantization near the ridge-like one, far from x_ls.
    EXPECT_LT((x_naive - x_ridge).norm(), gap / 4);
    EXPECT_GT((x_naive - p.x_ls).norm(), 3 * gap / 4);
    EXPECT_GT(f_naive - p.f_ls, 0.5 * (f_ridge - p.f_ls));
  }
}

}  // namespace
}  // namespace qgrad
