// The only translation unit that includes LibTorch. It includes ATen's per-operator headers and
// the few autograd headers it needs instead of <torch/torch.h> (the whole C++ frontend), which
// keeps its compile time and memory down.
#include "train/torch/torch_model.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/max_pool2d.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/philox.h"

namespace qgrad {
namespace {

constexpr int64_t kKernel = 5;
constexpr int64_t kPadding = 2;  // "same" convolution for a 5x5 kernel
constexpr size_t kEvalChunk = 256;

using BlasGetFn = int (*)();
using BlasSetFn = void (*)(int);

BlasGetFn blas_get_threads() {
  static const auto fn =
      reinterpret_cast<BlasGetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn;
}

// Torch's intra-op pool and OpenBLAS's pool are per process; torch 1.13 never sets OpenBLAS's
// thread count (it only knows MKL), and Debian's OpenBLAS starts one thread per core, so both are
// set here. OpenBLAS is looked up at run time: no link dependency, and a no-op with another BLAS.
// at::set_num_threads is cheap to check but not to call (it resizes pools), hence the compare.
void apply_threads(int threads) {
  if (threads <= 0) return;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
  const BlasGetFn blas_get = blas_get_threads();
  static const auto blas_set =
      reinterpret_cast<BlasSetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (blas_get != nullptr && blas_set != nullptr && blas_get() != threads) blas_set(threads);
}

// Runs a block of LibTorch calls and turns LibTorch's own errors into qgrad errors.
template <typename Fn>
auto torch_call(const char* what, Fn&& fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    throw Error(detail::concat(what, ": LibTorch error: ", e.what_without_backtrace()));
  }
}

struct Param {
  std::string name;
  size_t fan_in = 0;
  at::Tensor value;  // leaf tensor, requires_grad
  at::Tensor grad;   // value's .grad, allocated once; backward adds into it in place
  // Held so that autograd reuses this node (and its post-hook) in every forward pass: a
  // parameter keeps only a weak reference to its accumulator.
  std::shared_ptr<torch::autograd::Node> accumulator;
  uintptr_t hook_key = 0;
};

class TorchModel final : public Model {
 public:
  enum class Kind { kMlp, kCnn };

  TorchModel(Kind kind, const TorchModelOptions& options, const Dataset& data)
      : kind_(kind),
        threads_(options.threads),
        dim_(data.dim),
        classes_(data.num_classes),
        channels_(data.channels),
        height_(data.height),
        width_(data.width) {
    apply_threads(threads_);
    torch_call("building the model", [&] {
      if (kind_ == Kind::kMlp) {
        size_t in = dim_;
        for (size_t i = 0; i < options.hidden.size(); ++i) {
          add_layer("fc" + std::to_string(i + 1), {int64_t(options.hidden[i]), int64_t(in)});
          in = options.hidden[i];
        }
        add_layer("fc" + std::to_string(options.hidden.size() + 1),
                  {int64_t(classes_), int64_t(in)});
      } else {
        size_t in = channels_, h = height_, w = width_;
        for (size_t i = 0; i < options.channels.size(); ++i) {
          add_layer("conv" + std::to_string(i + 1),
                    {int64_t(options.channels[i]), int64_t(in), kKernel, kKernel});
          in = options.channels[i];
          h /= 2;
          w /= 2;
        }
        add_layer("fc", {int64_t(classes_), int64_t(in * h * w)});
      }
      init_params(options.seed);
    });
  }

  // The hooks point at this object.
  TorchModel(const TorchModel&) = delete;
  TorchModel& operator=(const TorchModel&) = delete;

  // A graph that outlives the model may still hold an accumulator: unhook it.
  ~TorchModel() override {
    for (Param& p : params_) {
      if (p.accumulator) p.accumulator->del_post_hook(p.hook_key);
    }
  }

  std::string name() const override { return kind_ == Kind::kMlp ? "mlp" : "cnn"; }

  std::vector<ParamView> params() override {
    std::vector<ParamView> views;
    views.reserve(params_.size());
    for (Param& p : params_) {
      const size_t n = static_cast<size_t>(p.value.numel());
      views.push_back({p.name, {p.value.data_ptr<float>(), n}, {p.grad.data_ptr<float>(), n}});
    }
    return views;
  }

  double forward_backward(const Dataset& data, std::span<const size_t> rows,
                          const std::function<void(size_t)>& grad_ready) override {
    check_data(data, "forward_backward");
    QGRAD_CHECK(!rows.empty(), "forward_backward: empty batch (the mean loss needs a row)");
    apply_threads(threads_);
    return torch_call("forward_backward", [&] {
      at::Tensor x, y;
      make_batch(data, rows, x, y);
      for (Param& p : params_) p.grad.zero_();
      reported_.assign(params_.size(), false);
      callback_ = grad_ready ? &grad_ready : nullptr;
      callback_error_ = nullptr;
      double loss_value = 0;
      try {
        // Also when the caller sits in a no-grad scope: without a graph there is no backward.
        const at::AutoGradMode grad_mode(true);
        at::Tensor loss = at::cross_entropy_loss(forward(x), y);
        loss_value = loss.item<double>();
        loss.backward();
      } catch (...) {
        callback_ = nullptr;
        throw;
      }
      // A parameter that did not take part in this loss has a zero gradient, final already.
      for (size_t i = 0; i < params_.size(); ++i) {
        if (!reported_[i]) on_grad_final(i);
      }
      callback_ = nullptr;
      for (const Param& p : params_) {
        // The views hand out p.grad's storage; torch must have accumulated into it in place.
        const at::Tensor& g = p.value.grad();
        if (!g.is_same(p.grad) || g.data_ptr() != p.grad.data_ptr()) {
          throw Error("forward_backward: LibTorch replaced the gradient buffer of " + p.name);
        }
      }
      if (callback_error_) std::rethrow_exception(std::exchange(callback_error_, nullptr));
      return loss_value;
    });
  }

  Evaluation evaluate(const Dataset& data, std::span<const size_t> rows) override {
    check_data(data, "evaluate");
    std::vector<size_t> all;
    if (rows.empty()) {
      all.resize(data.rows);
      for (size_t i = 0; i < all.size(); ++i) all[i] = i;
      rows = all;
    }
    Evaluation result;
    result.rows = rows.size();
    if (rows.empty()) return result;
    apply_threads(threads_);
    torch_call("evaluate", [&] {
      at::NoGradGuard no_grad;
      double loss_sum = 0;
      int64_t correct = 0;
      for (size_t begin = 0; begin < rows.size(); begin += kEvalChunk) {
        const auto chunk = rows.subspan(begin, std::min(kEvalChunk, rows.size() - begin));
        at::Tensor x, y;
        make_batch(data, chunk, x, y);
        const at::Tensor logits = forward(x);
        loss_sum += at::cross_entropy_loss(logits, y, {}, at::Reduction::Sum).item<double>();
        correct += at::argmax(logits, 1).eq(y).sum().item<int64_t>();
      }
      result.loss = loss_sum / static_cast<double>(rows.size());
      result.accuracy = static_cast<double>(correct) / static_cast<double>(rows.size());
    });
    return result;
  }

 private:
  void add_layer(const std::string& layer, std::vector<int64_t> weight_shape) {
    int64_t fan_in = 1;
    for (size_t d = 1; d < weight_shape.size(); ++d) fan_in *= weight_shape[d];
    const auto options = at::TensorOptions().dtype(at::kFloat);
    Param weight, bias;
    weight.name = layer + ".weight";
    bias.name = layer + ".bias";
    weight.fan_in = bias.fan_in = static_cast<size_t>(fan_in);
    weight.value = at::empty(weight_shape, options);
    bias.value = at::empty({weight_shape[0]}, options);
    params_.push_back(std::move(weight));
    params_.push_back(std::move(bias));
  }

  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from 24 random bits per value; then the gradient buffer
  // and the accumulator hook.
  void init_params(uint64_t seed) {
    for (size_t i = 0; i < params_.size(); ++i) {
      Param& p = params_[i];
      const size_t n = static_cast<size_t>(p.value.numel());
      std::vector<uint32_t> words(n);
      const RngKey key{.seed = seed,
                       .step = 0,
                       .rank = 0,
                       .tensor = static_cast<uint32_t>(i),
                       .bucket = kInitStream};
      philox_fill_raw(key, 0, n, words.data());
      const float bound = 1.0f / std::sqrt(static_cast<float>(p.fan_in));
      float* v = p.value.data_ptr<float>();
      for (size_t j = 0; j < n; ++j) {
        const float u = static_cast<float>(words[j] >> 8) * (1.0f / 16777216.0f);
        v[j] = (2.0f * u - 1.0f) * bound;
      }
      p.value.requires_grad_(true);
      p.value.mutable_grad() = at::zeros_like(p.value);
      p.grad = p.value.grad();
      p.accumulator = torch::autograd::impl::grad_accumulator(p.value);
      QGRAD_CHECK(p.accumulator != nullptr, "no gradient accumulator for ", p.name);
      p.hook_key =
          p.accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
              [this, i](const torch::autograd::variable_list& outputs,
                        const torch::autograd::variable_list&) {
                on_grad_final(i);
                return outputs;
              }));
    }
  }

  // Runs after AccumulateGrad has added parameter i's whole gradient into its .grad buffer.
  void on_grad_final(size_t i) {
    if (i >= reported_.size() || reported_[i]) return;
    reported_[i] = true;
    if (callback_ == nullptr || callback_error_) return;
    try {
      (*callback_)(i);
    } catch (...) {
      // Thrown through autograd it would abandon the backward pass half done; keep it for later.
      callback_error_ = std::current_exception();
    }
  }

  void check_data(const Dataset& data, const char* what) const {
    QGRAD_CHECK(data.dim == dim_, what, ": data set '", data.name, "' has ", data.dim,
                " features per row, the ", name(), " model was built for ", dim_);
    QGRAD_CHECK(data.num_classes == classes_, what, ": data set '", data.name, "' has ",
                data.num_classes, " classes, the ", name(), " model was built for ", classes_);
    QGRAD_CHECK(data.features.size() == data.rows * data.dim && data.targets.size() == data.rows,
                what, ": data set '", data.name, "' has ", data.features.size(),
                " feature values and ", data.targets.size(), " targets for ", data.rows,
                " rows of ", data.dim);
    if (kind_ == Kind::kCnn) {
      QGRAD_CHECK(data.channels == channels_ && data.height == height_ && data.width == width_,
                  what, ": data set '", data.name, "' has image shape ", data.channels, "x",
                  data.height, "x", data.width, ", the cnn model was built for ", channels_, "x",
                  height_, "x", width_);
    }
  }

  // x: [B, dim] float (the rows' features), y: [B] int64 class ids.
  void make_batch(const Dataset& data, std::span<const size_t> rows, at::Tensor& x,
                  at::Tensor& y) const {
    const auto b = static_cast<int64_t>(rows.size());
    x = at::empty({b, static_cast<int64_t>(dim_)}, at::TensorOptions().dtype(at::kFloat));
    y = at::empty({b}, at::TensorOptions().dtype(at::kLong));
    float* xp = x.data_ptr<float>();
    int64_t* yp = y.data_ptr<int64_t>();
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t r = rows[i];
      QGRAD_CHECK(r < data.rows, "row ", r, " is out of range for data set '", data.name, "' of ",
                  data.rows, " rows");
      const float t = data.targets[r];
      QGRAD_CHECK(t >= 0 && t < static_cast<float>(classes_) && t == std::floor(t), "row ", r,
                  " of data set '", data.name, "' has target ", t, ", not a class id in [0, ",
                  classes_, ")");
      std::memcpy(xp + i * dim_, data.features.data() + r * dim_, dim_ * sizeof(float));
      yp[i] = static_cast<int64_t>(t);
    }
    if (kind_ == Kind::kCnn) {
      x = x.view({b, static_cast<int64_t>(channels_), static_cast<int64_t>(height_),
                  static_cast<int64_t>(width_)});
    }
  }

  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor h = x;
    const size_t layers = params_.size() / 2;
    for (size_t l = 0; l + 1 < layers; ++l) {
      const at::Tensor& w = params_[2 * l].value;
      const at::Tensor& b = params_[2 * l + 1].value;
      if (kind_ == Kind::kMlp) {
        h = at::relu(at::linear(h, w, b));
      } else {
        h = at::max_pool2d(at::relu(at::conv2d(h, w, b, {1, 1}, {kPadding, kPadding})), {2, 2},
                           {2, 2});
      }
    }
    if (kind_ == Kind::kCnn) h = h.flatten(1);
    return at::linear(h, params_[2 * layers - 2].value, params_[2 * layers - 1].value);
  }

  Kind kind_;
  int threads_;
  size_t dim_, classes_, channels_, height_, width_;
  std::vector<Param> params_;
  // State of the forward_backward in progress (read by the hooks).
  const std::function<void(size_t)>* callback_ = nullptr;
  std::vector<bool> reported_;
  std::exception_ptr callback_error_;
};

}  // namespace

std::vector<std::string_view> torch_model_names() { return {"mlp", "cnn"}; }

TorchThreads torch_threads() {
  TorchThreads t;
  t.intra_op = at::get_num_threads();
  if (const BlasGetFn get = blas_get_threads()) t.blas = get();
  return t;
}

std::unique_ptr<Model> make_torch_model(std::string_view name, const TorchModelOptions& options,
                                        const Dataset& data) {
  QGRAD_CHECK(name == "mlp" || name == "cnn", "unknown LibTorch model '", name,
              "' (valid: mlp, cnn)");
  QGRAD_CHECK(options.threads >= 0, name,
              ": threads must be >= 0 (0 leaves LibTorch's setting), got ", options.threads);
  QGRAD_CHECK(data.num_classes >= 2, name, " needs a classification data set (num_classes >= 2); '",
              data.name, "' has num_classes = ", data.num_classes);
  QGRAD_CHECK(data.dim > 0, name, ": data set '", data.name, "' has no features");
  if (name == "mlp") {
    for (size_t h : options.hidden) QGRAD_CHECK(h > 0, "mlp: hidden layer widths must be > 0");
    return std::make_unique<TorchModel>(TorchModel::Kind::kMlp, options, data);
  }
  QGRAD_CHECK(data.channels > 0 && data.height > 0 && data.width > 0,
              "cnn needs an image shape "
              "(channels x height x width), but data set '",
              data.name, "' has none (", data.channels, "x", data.height, "x", data.width, ", dim ",
              data.dim, ")");
  QGRAD_CHECK(data.channels * data.height * data.width == data.dim, "cnn: data set '", data.name,
              "' has image shape ", data.channels, "x", data.height, "x", data.width,
              ", which does not match its ", data.dim, " features per row");
  QGRAD_CHECK(!options.channels.empty(), "cnn: needs at least one conv block (channels is empty)");
  for (size_t c : options.channels) QGRAD_CHECK(c > 0, "cnn: conv channel counts must be > 0");
  const size_t blocks = options.channels.size();
  QGRAD_CHECK(
      blocks < 32 && (data.height >> blocks) > 0 && (data.width >> blocks) > 0, "cnn: ", blocks,
      " conv blocks halve the image ", blocks, " times; ", data.height, "x", data.width,
      " is too small (needs height and width >= ", size_t{1} << std::min<size_t>(blocks, 31), ")");
  return std::make_unique<TorchModel>(TorchModel::Kind::kCnn, options, data);
}

}  // namespace qgrad
