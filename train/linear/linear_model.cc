#include "train/linear/linear_model.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"

namespace qgrad {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct LinearModel::State {
  RowMatrix weight, weight_grad;    // K x d
  Eigen::VectorXf bias, bias_grad;  // K, or empty without a bias
  // Scratch reused between calls: features (B x d), scores and dl/dz (B x K), targets (B).
  RowMatrix x1, x2, z1, z2, dz1, dz2;
  Eigen::VectorXf y;
};

namespace {

// Rows per chunk in evaluate(): bounds the scratch for large data sets.
constexpr size_t kEvalChunk = 4096;

// log(1 + exp(-m)) and sigmoid(-m) without overflow for any m.
double softplus_neg(double m) { return std::log1p(std::exp(-std::abs(m))) + std::max(-m, 0.0); }
double sigmoid_neg(double m) {
  if (m >= 0) {
    const double e = std::exp(-m);
    return e / (1 + e);
  }
  return 1 / (1 + std::exp(m));
}

// Targets in the loss's form: real values (regression), +-1 (binary), class ids (multinomial).
void gather_targets(const Dataset& data, std::span<const size_t> rows, size_t outputs,
                    const std::string& model, Eigen::VectorXf& y) {
  y.resize(static_cast<Eigen::Index>(rows.size()));
  for (size_t i = 0; i < rows.size(); ++i) {
    const size_t r = rows[i];
    QGRAD_CHECK(r < data.rows, model, ": row ", r, " out of range (data set '", data.name, "' has ",
                data.rows, " rows)");
    const float t = data.targets[r];
    float v = t;
    if (data.num_classes == 0) {
      QGRAD_CHECK(std::isfinite(t), model, ": data set '", data.name, "' row ", r, " target is ",
                  t);
    } else if (outputs == 1) {
      QGRAD_CHECK(t == 1.0f || t == -1.0f || t == 0.0f, model, ": data set '", data.name, "' row ",
                  r, " has label ", t, "; binary labels must be +1 or -1 (or 1 / 0)");
      v = t == 1.0f ? 1.0f : -1.0f;
    } else {
      QGRAD_CHECK(t >= 0 && t < static_cast<float>(data.num_classes) && t == std::floor(t), model,
                  ": data set '", data.name, "' row ", r, " has label ", t,
                  "; expected a class id "
                  "in 0..",
                  data.num_classes - 1);
    }
    y[static_cast<Eigen::Index>(i)] = v;
  }
}

void gather_features(const Dataset& data, std::span<const size_t> rows, RowMatrix& x) {
  const size_t d = data.dim;
  x.resize(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(d));
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(data.features.data() + rows[i] * d, d, x.data() + i * d);
}

// Summed loss over the rows of z; with dz, also dl/dz per row (B x K).
double loss_and_derivative(LinearLoss loss, const RowMatrix& z, const Eigen::VectorXf& y,
                           RowMatrix* dz) {
  const Eigen::Index b = z.rows(), k = z.cols();
  if (dz) dz->resize(b, k);
  double total = 0;
  for (Eigen::Index i = 0; i < b; ++i) {
    const double t = y[i];
    switch (loss) {
      case LinearLoss::kSquared: {
        const double e = static_cast<double>(z(i, 0)) - t;
        total += 0.5 * e * e;
        if (dz) (*dz)(i, 0) = static_cast<float>(e);
        break;
      }
      case LinearLoss::kLogistic: {
        if (k == 1) {
          const double m = t * z(i, 0);
          total += softplus_neg(m);
          if (dz) (*dz)(i, 0) = static_cast<float>(-t * sigmoid_neg(m));
        } else {
          const auto label = static_cast<Eigen::Index>(t);
          const double top = z.row(i).maxCoeff();
          double sum = 0;
          for (Eigen::Index c = 0; c < k; ++c) sum += std::exp(static_cast<double>(z(i, c)) - top);
          total += std::log(sum) + top - z(i, label);
          if (dz) {
            for (Eigen::Index c = 0; c < k; ++c)
              (*dz)(i, c) = static_cast<float>(std::exp(static_cast<double>(z(i, c)) - top) / sum -
                                               (c == label ? 1.0 : 0.0));
          }
        }
        break;
      }
      case LinearLoss::kHinge: {
        const double m = t * z(i, 0);
        total += std::max(0.0, 1 - m);
        if (dz) (*dz)(i, 0) = m < 1 ? static_cast<float>(-t) : 0.0f;
        break;
      }
    }
  }
  return total;
}

// Correct predictions among the rows of z: sign (ties to +1) for one output, argmax otherwise.
size_t count_correct(const RowMatrix& z, const Eigen::VectorXf& y) {
  size_t correct = 0;
  for (Eigen::Index i = 0; i < z.rows(); ++i) {
    if (z.cols() == 1) {
      correct += (z(i, 0) >= 0 ? 1.0f : -1.0f) == y[i];
    } else {
      Eigen::Index best = 0;
      z.row(i).maxCoeff(&best);
      correct += static_cast<float>(best) == y[i];
    }
  }
  return correct;
}

}  // namespace

LinearLoss parse_linear_loss(std::string_view name) {
  if (name == "linear") return LinearLoss::kSquared;
  if (name == "logistic") return LinearLoss::kLogistic;
  if (name == "svm") return LinearLoss::kHinge;
  throw InvalidArgument(detail::concat("unknown linear model '", name,
                                       "'; valid: linear (least squares), logistic, svm"));
}

std::string_view linear_loss_name(LinearLoss loss) {
  switch (loss) {
    case LinearLoss::kSquared:
      return "linear";
    case LinearLoss::kLogistic:
      return "logistic";
    case LinearLoss::kHinge:
      return "svm";
  }
  return "?";
}

LinearModel::LinearModel(LinearModelOptions options)
    : options_(std::move(options)), state_(std::make_unique<State>()) {
  const auto& o = options_;
  const std::string_view model = linear_loss_name(o.loss);
  QGRAD_CHECK(o.dim > 0, model, ": the data set has no features (dim 0)");
  switch (o.loss) {
    case LinearLoss::kSquared:
      QGRAD_CHECK(o.num_classes == 0 || o.num_classes == 2,
                  "linear (least squares) needs a "
                  "regression or a binary (+-1) data set, got ",
                  o.num_classes, " classes");
      break;
    case LinearLoss::kLogistic:
      QGRAD_CHECK(o.num_classes >= 2,
                  "logistic regression needs a classification data set "
                  "(num_classes >= 2), got num_classes = ",
                  o.num_classes);
      break;
    case LinearLoss::kHinge:
      QGRAD_CHECK(o.num_classes == 2,
                  "svm (hinge loss) is binary: it needs labels +-1 "
                  "(num_classes = 2), got num_classes = ",
                  o.num_classes, "; use logistic for multi-class data");
      break;
  }
  QGRAD_CHECK(o.data_bits >= 0 && o.data_bits <= 8, model,
              ": data bits must be in 0..8 "
              "(0 = full precision), got ",
              o.data_bits);
  QGRAD_CHECK(!o.double_sampling || o.data_bits > 0, model,
              ": double sampling needs quantized data (data bits 1..8)");
  QGRAD_CHECK(std::isfinite(o.init_scale) && o.init_scale >= 0, model,
              ": init scale must be finite and >= 0, got ", o.init_scale);
  if (o.data_bits > 0) {
    QGRAD_CHECK(o.grid.has_value(), model,
                ": data quantization needs a feature grid "
                "(fit_feature_grid of the training data)");
    QGRAD_CHECK(o.grid->dim() == o.dim, model, ": feature grid has ", o.grid->dim(),
                " features, the model ", o.dim);
    quantizer_ = std::make_unique<DataQuantizer>(*o.grid, o.data_bits);
  }

  outputs_ = (o.loss == LinearLoss::kLogistic && o.num_classes > 2) ? o.num_classes : 1;
  const auto k = static_cast<Eigen::Index>(outputs_);
  const auto d = static_cast<Eigen::Index>(o.dim);
  auto& s = *state_;
  s.weight = RowMatrix::Zero(k, d);
  s.weight_grad = RowMatrix::Zero(k, d);
  s.bias = Eigen::VectorXf::Zero(o.bias ? k : 0);
  s.bias_grad = Eigen::VectorXf::Zero(o.bias ? k : 0);
  if (o.init_scale > 0) {
    const RngKey key{.seed = o.init_seed};
    float* w = s.weight.data();
    for (size_t i = 0; i < outputs_ * o.dim; ++i)
      w[i] = o.init_scale * (2.0f * uniform_from_word(philox_word(key, i)) - 1.0f);
  }
}

LinearModel::~LinearModel() = default;

std::string LinearModel::name() const { return std::string(linear_loss_name(options_.loss)); }

std::vector<ParamView> LinearModel::params() {
  auto& s = *state_;
  std::vector<ParamView> views;
  views.push_back({"linear.weight",
                   {s.weight.data(), static_cast<size_t>(s.weight.size())},
                   {s.weight_grad.data(), static_cast<size_t>(s.weight_grad.size())}});
  if (options_.bias)
    views.push_back({"linear.bias",
                     {s.bias.data(), static_cast<size_t>(s.bias.size())},
                     {s.bias_grad.data(), static_cast<size_t>(s.bias_grad.size())}});
  return views;
}

void LinearModel::check_data(const Dataset& data) const {
  QGRAD_CHECK(data.dim == options_.dim, name(), ": data set '", data.name, "' has ", data.dim,
              " features, the model was built for ", options_.dim);
  QGRAD_CHECK(data.num_classes == options_.num_classes, name(), ": data set '", data.name,
              "' has num_classes = ", data.num_classes, ", the model was built for ",
              options_.num_classes);
  QGRAD_CHECK(data.features.size() == data.rows * data.dim && data.targets.size() == data.rows,
              name(), ": data set '", data.name, "' is inconsistent (", data.features.size(),
              " feature values, ", data.targets.size(), " targets for ", data.rows, " x ", data.dim,
              ")");
}

double LinearModel::forward_backward(const Dataset& data, std::span<const size_t> rows,
                                     const std::function<void(size_t)>& grad_ready) {
  check_data(data);
  auto& s = *state_;
  const std::string model = name();
  gather_targets(data, rows, outputs_, model, s.y);
  const size_t b = rows.size();
  const uint64_t step = data_step_++;
  if (b == 0) {  // an empty batch has no mean: report 0 and a zero gradient
    s.weight_grad.setZero();
    s.bias_grad.setZero();
    if (grad_ready) grad_ready(0);
    if (grad_ready && options_.bias) grad_ready(1);
    return 0;
  }

  const bool ds = options_.double_sampling;
  const auto bi = static_cast<Eigen::Index>(b), d = static_cast<Eigen::Index>(options_.dim);
  if (quantizer_) {
    s.x1.resize(bi, d);
    quantizer_->quantize(data, rows, data_key(options_.data_seed, step, options_.rank, 0),
                         {s.x1.data(), b * options_.dim});
    if (ds) {
      s.x2.resize(bi, d);
      quantizer_->quantize(data, rows, data_key(options_.data_seed, step, options_.rank, 1),
                           {s.x2.data(), b * options_.dim});
    }
  } else {
    gather_features(data, rows, s.x1);
  }

  auto score = [&](const RowMatrix& x, RowMatrix& z) {
    z.noalias() = x * s.weight.transpose();
    if (options_.bias) z.rowwise() += s.bias.transpose();
  };
  const float inv_b = 1.0f / static_cast<float>(b);
  double loss = 0;
  score(s.x1, s.z1);
  if (!ds) {
    loss = loss_and_derivative(options_.loss, s.z1, s.y, &s.dz1) / static_cast<double>(b);
    s.weight_grad.noalias() = s.dz1.transpose() * s.x1;
    s.weight_grad *= inv_b;
    if (grad_ready) grad_ready(0);
    if (options_.bias) {
      s.bias_grad = s.dz1.colwise().sum().transpose() * inv_b;
      if (grad_ready) grad_ready(1);
    }
    return loss;
  }

  // Double sampling: each sample's features multiply the other sample's dl/dz.
  score(s.x2, s.z2);
  const double l1 = loss_and_derivative(options_.loss, s.z1, s.y, &s.dz1);
  const double l2 = loss_and_derivative(options_.loss, s.z2, s.y, &s.dz2);
  if (options_.loss == LinearLoss::kSquared) {
    // 1/2 (z1 - y)(z2 - y): unbiased for the true loss, and g below is its exact gradient.
    double sum = 0;
    for (Eigen::Index i = 0; i < bi; ++i)
      sum += 0.5 * static_cast<double>(s.dz1(i, 0)) * static_cast<double>(s.dz2(i, 0));
    loss = sum / static_cast<double>(b);
  } else {
    loss = 0.5 * (l1 + l2) / static_cast<double>(b);
  }
  s.weight_grad.noalias() = s.dz2.transpose() * s.x1;
  s.weight_grad.noalias() += s.dz1.transpose() * s.x2;
  s.weight_grad *= 0.5f * inv_b;
  if (grad_ready) grad_ready(0);
  if (options_.bias) {
    s.bias_grad = (s.dz1.colwise().sum() + s.dz2.colwise().sum()).transpose() * (0.5f * inv_b);
    if (grad_ready) grad_ready(1);
  }
  return loss;
}

Evaluation LinearModel::evaluate(const Dataset& data, std::span<const size_t> rows) {
  check_data(data);
  auto& s = *state_;
  const std::string model = name();
  std::vector<size_t> all;
  if (rows.empty()) {
    all.resize(data.rows);
    for (size_t i = 0; i < data.rows; ++i) all[i] = i;
    rows = all;
  }
  Evaluation ev;
  ev.rows = rows.size();
  if (rows.empty()) return ev;
  double total = 0;
  size_t correct = 0;
  for (size_t begin = 0; begin < rows.size(); begin += kEvalChunk) {
    const auto chunk = rows.subspan(begin, std::min(kEvalChunk, rows.size() - begin));
    gather_targets(data, chunk, outputs_, model, s.y);
    gather_features(data, chunk, s.x1);
    s.z1.noalias() = s.x1 * s.weight.transpose();
    if (options_.bias) s.z1.rowwise() += s.bias.transpose();
    total += loss_and_derivative(options_.loss, s.z1, s.y, nullptr);
    if (data.num_classes >= 2) correct += count_correct(s.z1, s.y);
  }
  ev.loss = total / static_cast<double>(rows.size());
  ev.accuracy = static_cast<double>(correct) / static_cast<double>(rows.size());
  return ev;
}

std::unique_ptr<LinearModel> make_linear_model(std::string_view name, const Dataset& train,
                                               LinearModelOptions options) {
  options.loss = parse_linear_loss(name);
  options.dim = train.dim;
  options.num_classes = train.num_classes;
  if (options.data_bits > 0 && !options.grid) options.grid = fit_feature_grid(train);
  return std::make_unique<LinearModel>(std::move(options));
}

}  // namespace qgrad
