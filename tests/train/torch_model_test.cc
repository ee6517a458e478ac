// The LibTorch MLP and CNN through qgrad::Model: parameter layout and aliasing, grad_ready
// timing, determinism, training to high accuracy, thread settings and shape errors.
#include "train/torch/torch_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "core/error.h"
#include "tests/train/torch_testing.h"

namespace qgrad {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace qgrad::testing;

TorchModelOptions mlp_options(std::vector<size_t> hidden, uint64_t seed = 1) {
  TorchModelOptions o;
  o.hidden = std::move(hidden);
  o.seed = seed;
  return o;
}

TorchModelOptions cnn_options(std::vector<size_t> channels, uint64_t seed = 1) {
  TorchModelOptions o;
  o.channels = std::move(channels);
  o.seed = seed;
  return o;
}

std::vector<std::string> names_of(Model& m) {
  std::vector<std::string> names;
  for (const ParamView& p : m.params()) names.push_back(p.name);
  return names;
}

std::vector<size_t> sizes_of(Model& m) {
  std::vector<size_t> sizes;
  for (const ParamView& p : m.params()) {
    EXPECT_EQ(p.value.size(), p.grad.size()) << p.name;
    sizes.push_back(p.value.size());
  }
  return sizes;
}

bool all_zero(std::span<const float> v) {
  for (float x : v) {
    if (x != 0.0f) return false;
  }
  return true;
}

TEST(TorchModel, DefaultMlpIs784x256x10) {
  const Dataset data = random_dataset(4, 784, 10, 1);
  auto model = make_torch_model("mlp", TorchModelOptions{}, data);
  EXPECT_EQ(model->name(), "mlp");
  EXPECT_THAT(names_of(*model), ElementsAre("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"));
  EXPECT_THAT(sizes_of(*model), ElementsAre(784 * 256, 256, 256 * 10, 10));
}

TEST(TorchModel, DefaultCnnLayout) {
  const Dataset data = with_image_shape(random_dataset(4, 784, 10, 1), 1, 28, 28);
  auto model = make_torch_model("cnn", TorchModelOptions{}, data);
  EXPECT_EQ(model->name(), "cnn");
  EXPECT_THAT(names_of(*model), ElementsAre("conv1.weight", "conv1.bias", "conv2.weight",
                                            "conv2.bias", "fc.weight", "fc.bias"));
  // 16x5x5 conv, 32x16x5x5 conv, then 32 x 7 x 7 = 1568 features into 10 classes.
  EXPECT_THAT(sizes_of(*model), ElementsAre(400, 16, 12800, 32, 15680, 10));
  size_t total = 0;
  for (size_t s : sizes_of(*model)) total += s;
  EXPECT_EQ(total, 28938u);  // the count documented in torch_model.h
}

TEST(TorchModel, MlpWithoutHiddenLayersIsSoftmaxRegression) {
  const Dataset data = random_dataset(4, 5, 3, 1);
  auto model = make_torch_model("mlp", mlp_options({}), data);
  EXPECT_THAT(names_of(*model), ElementsAre("fc1.weight", "fc1.bias"));
  EXPECT_THAT(sizes_of(*model), ElementsAre(15, 3));
}

// The init is documented exactly: U(-b, b), b = 1/sqrt(fan_in), from Philox stream
// {seed, 0, 0, tensor = index, kInitStream}, u = (raw >> 8) / 2^24, value = (2u - 1) b.
TEST(TorchModel, InitializationFollowsTheDocumentedPhiloxStreams) {
  const Dataset data = with_image_shape(random_dataset(2, 2 * 8 * 8, 4, 1), 2, 8, 8);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions o;
    o.hidden = {7};
    o.channels = {3, 5};
    o.seed = 1234;
    auto model = make_torch_model(name, o, data);
    const std::vector<ParamView> params = model->params();
    // fan_in of each layer: mlp 128, 7; cnn 2*25, 3*25, 5*2*2.
    const std::vector<size_t> fan_in = std::string(name) == "mlp"
                                           ? std::vector<size_t>{128, 128, 7, 7}
                                           : std::vector<size_t>{50, 50, 75, 75, 20, 20};
    ASSERT_EQ(params.size(), fan_in.size()) << name;
    for (size_t i = 0; i < params.size(); ++i) {
      const RngKey key{.seed = 1234,
                       .step = 0,
                       .rank = 0,
                       .tensor = static_cast<uint32_t>(i),
                       .bucket = kInitStream};
      const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in[i]));
      for (size_t j = 0; j < params[i].value.size(); ++j) {
        const float u = static_cast<float>(philox_raw_word(key, j) >> 8) * (1.0f / 16777216.0f);
        ASSERT_EQ(params[i].value[j], (2.0f * u - 1.0f) * bound)
            << name << " " << params[i].name << "[" << j << "]";
      }
      EXPECT_TRUE(all_zero(params[i].grad)) << params[i].name;
    }
  }
}

TEST(TorchModel, SameSeedSameParametersOtherSeedOthers) {
  const Dataset data = with_image_shape(random_dataset(2, 784, 10, 1), 1, 28, 28);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions a, b, c;
    a.seed = b.seed = 7;
    c.seed = 8;
    auto ma = make_torch_model(name, a, data);
    auto mb = make_torch_model(name, b, data);
    auto mc = make_torch_model(name, c, data);
    EXPECT_EQ(flat_values(*ma), flat_values(*mb)) << name;
    const std::vector<float> va = flat_values(*ma), vc = flat_values(*mc);
    size_t same = 0;
    for (size_t i = 0; i < va.size(); ++i) same += va[i] == vc[i];
    EXPECT_LT(same, va.size() / 100) << name;
  }
}

// Writing through the value spans changes what the model computes; the gradient spans hold the
// gradient. With a zero last layer every class has logit 0: loss = log K exactly, and the bias
// gradient is softmax - one-hot averaged over the batch: 1/K - (count of class k)/B.
TEST(TorchModel, ValueAndGradSpansAliasTheModel) {
  const Dataset data = with_image_shape(random_dataset(50, 2 * 8 * 8, 5, 3), 2, 8, 8);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions o;
    o.hidden = {16};
    o.channels = {3, 4};
    auto model = make_torch_model(name, o, data);
    std::vector<ParamView> params = model->params();
    const Evaluation before = model->evaluate(data);
    EXPECT_NE(before.loss, std::log(5.0)) << name;
    ParamView& w = params[params.size() - 2];
    ParamView& b = params[params.size() - 1];
    std::fill(w.value.begin(), w.value.end(), 0.0f);
    std::fill(b.value.begin(), b.value.end(), 0.0f);
    EXPECT_NEAR(model->evaluate(data).loss, std::log(5.0), 1e-6) << name;

    const std::vector<size_t> rows = iota_rows(0, 40);
    const double loss = model->forward_backward(data, rows, {});
    EXPECT_NEAR(loss, std::log(5.0), 1e-6) << name;
    std::vector<double> count(5, 0);
    for (size_t r : rows) count[static_cast<size_t>(data.targets[r])] += 1;
    for (size_t k = 0; k < 5; ++k) {
      EXPECT_NEAR(b.grad[k], 0.2 - count[k] / 40.0, 1e-6) << name << " class " << k;
    }
    // The hidden layers get no gradient through a zero last layer.
    EXPECT_TRUE(all_zero(params[0].grad)) << name;

    // A large bias for class 3 makes every prediction 3.
    b.value[3] = 100.0f;
    const Evaluation biased = model->evaluate(data);
    size_t threes = 0;
    for (float t : data.targets) threes += t == 3.0f;
    EXPECT_DOUBLE_EQ(biased.accuracy, static_cast<double>(threes) / 50.0) << name;
    EXPECT_EQ(biased.rows, 50u);
  }
}

TEST(TorchModel, GradSpansKeepTheirStorageAndAreOverwrittenEachStep) {
  const Dataset data = with_image_shape(random_dataset(96, 3 * 8 * 8, 4, 5), 3, 8, 8);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions o;
    o.hidden = {16, 8};
    o.channels = {4};
    auto model = make_torch_model(name, o, data);
    auto fresh = make_torch_model(name, o, data);
    const std::vector<ParamView> first = model->params();
    // Buffers are distinct and do not overlap.
    std::vector<std::pair<const float*, const float*>> ranges;
    for (const ParamView& p : first) {
      ranges.push_back({p.value.data(), p.value.data() + p.value.size()});
      ranges.push_back({p.grad.data(), p.grad.data() + p.grad.size()});
    }
    for (size_t i = 0; i < ranges.size(); ++i) {
      for (size_t j = i + 1; j < ranges.size(); ++j) {
        EXPECT_TRUE(ranges[i].second <= ranges[j].first || ranges[j].second <= ranges[i].first);
      }
    }
    const std::vector<size_t> a = iota_rows(0, 32), b = iota_rows(32, 48);
    model->forward_backward(data, a, {});
    const std::vector<float> grad_a = flat_grads(*model);
    EXPECT_FALSE(all_zero(grad_a)) << name;
    // Overwrite, not accumulate: the same batch again gives the same gradient.
    model->forward_backward(data, a, {});
    EXPECT_EQ(flat_grads(*model), grad_a) << name;
    // After another batch the spans hold exactly that batch's gradient.
    model->forward_backward(data, b, {});
    fresh->forward_backward(data, b, {});
    EXPECT_EQ(flat_grads(*model), flat_grads(*fresh)) << name;
    EXPECT_NE(flat_grads(*model), grad_a) << name;
    // ... and the views handed out before still point at the live buffers.
    const std::vector<ParamView> later = model->params();
    ASSERT_EQ(later.size(), first.size());
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(later[i].value.data(), first[i].value.data()) << first[i].name;
      EXPECT_EQ(later[i].grad.data(), first[i].grad.data()) << first[i].name;
    }
    // After an SGD step through the spans, too.
    sgd_step(*model, 0.1f);
    model->forward_backward(data, a, {});
    const std::vector<ParamView> after_step = model->params();
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(after_step[i].grad.data(), first[i].grad.data()) << first[i].name;
    }
  }
}

// grad_ready(i): once per parameter, layer by layer from the output, while backward still runs
// (the first layer's gradient is still zero when the last layer is reported), and with the
// buffer already final (what it holds at the call is what it holds at the end).
TEST(TorchModel, GradReadyOncePerParamInReverseLayerOrderWithFinalBuffers) {
  const Dataset data = with_image_shape(random_dataset(40, 2 * 12 * 12, 6, 9), 2, 12, 12);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions o;
    o.hidden = {32, 16};
    o.channels = {4, 8};
    auto model = make_torch_model(name, o, data);
    const std::vector<ParamView> params = model->params();
    ASSERT_EQ(params.size(), 6u);
    for (int step = 0; step < 2; ++step) {
      std::vector<size_t> order;
      std::vector<std::vector<float>> at_call(params.size());
      bool first_layer_untouched_at_first_call = false;
      const std::vector<size_t> rows = iota_rows(step * 20, 20);
      model->forward_backward(data, rows, [&](size_t i) {
        ASSERT_LT(i, params.size());
        if (order.empty()) {
          first_layer_untouched_at_first_call =
              all_zero(params[0].grad) && all_zero(params[1].grad);
        }
        order.push_back(i);
        at_call[i].assign(params[i].grad.begin(), params[i].grad.end());
      });
      ASSERT_EQ(order.size(), params.size()) << name;
      std::vector<size_t> sorted = order;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_THAT(sorted, ElementsAre(0, 1, 2, 3, 4, 5)) << name;
      for (size_t k = 1; k < order.size(); ++k) {
        EXPECT_GE(order[k - 1] / 2, order[k] / 2)
            << name << ": layer order " << ::testing::PrintToString(order);
      }
      EXPECT_TRUE(first_layer_untouched_at_first_call) << name;
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_TRUE(std::equal(at_call[i].begin(), at_call[i].end(), params[i].grad.begin(),
                               params[i].grad.end()))
            << name << " " << params[i].name << " changed after grad_ready";
        EXPECT_FALSE(all_zero(params[i].grad)) << name << " " << params[i].name;
      }
    }
  }
}

TEST(TorchModel, GradReadyExceptionIsRethrownAfterBackwardAndModelStaysUsable) {
  const Dataset data = random_dataset(30, 10, 3, 4);
  auto model = make_torch_model("mlp", mlp_options({8}), data);
  auto fresh = make_torch_model("mlp", mlp_options({8}), data);
  const std::vector<size_t> rows = iota_rows(0, 30);
  int calls = 0;
  EXPECT_THROW(
      {
        try {
          model->forward_backward(data, rows, [&](size_t) {
            ++calls;
            throw std::runtime_error("boom from grad_ready");
          });
        } catch (const std::runtime_error& e) {
          EXPECT_THAT(e.what(), HasSubstr("boom from grad_ready"));
          throw;
        }
      },
      std::runtime_error);
  EXPECT_EQ(calls, 1);
  int later = 0;
  const double loss = model->forward_backward(data, rows, [&](size_t) { ++later; });
  EXPECT_EQ(later, 4);
  EXPECT_EQ(loss, fresh->forward_backward(data, rows, {}));
  EXPECT_EQ(flat_grads(*model), flat_grads(*fresh));
}

// Same seed, same batches, same SGD steps (written here on the spans): bit-identical losses and
// parameters, also when the models run at the same time on different threads.
TEST(TorchModel, SameSeedSameLossCurveAcrossModelsAndThreads) {
  const Dataset data = with_image_shape(random_dataset(128, 784, 10, 11), 1, 28, 28);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions o;
    o.seed = 99;
    o.hidden = {64};
    o.channels = {4, 8};
    auto run = [&](std::vector<double>& losses, std::vector<float>& final_params) {
      auto model = make_torch_model(name, o, data);
      for (size_t step = 0; step < 5; ++step) {
        const std::vector<size_t> rows = iota_rows((step * 32) % 128, 32);
        losses.push_back(model->forward_backward(data, rows, {}));
        sgd_step(*model, 0.05f);
      }
      final_params = flat_values(*model);
    };
    std::vector<double> ref_losses;
    std::vector<float> ref_params;
    run(ref_losses, ref_params);
    EXPECT_LT(ref_losses.back(), ref_losses.front()) << name;
    constexpr int kThreads = 3;
    std::vector<std::vector<double>> losses(kThreads);
    std::vector<std::vector<float>> params(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back([&, t] { run(losses[t], params[t]); });
    for (std::thread& t : threads) t.join();
    for (int t = 0; t < kThreads; ++t) {
      EXPECT_EQ(losses[t], ref_losses) << name << " thread " << t;
      EXPECT_TRUE(params[t] == ref_params) << name << " thread " << t;
    }
  }
}

// The 784-256-10 MLP with plain SGD on 10 Gaussian blobs in 784 dimensions: from chance to
// nearly all held-out rows right.
TEST(TorchModel, MlpLearnsGaussianBlobs) {
  const Dataset train = blobs(2000, 784, 10, 0.25, 21, 1);
  const Dataset test = blobs(1000, 784, 10, 0.25, 21, 2);
  auto model = make_torch_model("mlp", TorchModelOptions{}, train);
  const Evaluation start = model->evaluate(test);
  EXPECT_LT(start.accuracy, 0.3);
  const std::vector<size_t> order = permutation(train.rows, 3);
  double first_loss = 0, last_loss = 0;
  for (size_t step = 0; step < 100; ++step) {
    const size_t begin = (step * 64) % (train.rows - 64);
    const std::span<const size_t> rows(order.data() + begin, 64);
    const double loss = model->forward_backward(train, rows, {});
    if (step == 0) first_loss = loss;
    last_loss = loss;
    sgd_step(*model, 0.1f);
  }
  const Evaluation end = model->evaluate(test);
  EXPECT_LT(last_loss, first_loss);
  EXPECT_GT(end.accuracy, 0.98) << "loss " << end.loss;
  EXPECT_LT(end.loss, start.loss);
  EXPECT_EQ(end.rows, 1000u);
}

TEST(TorchModel, CnnLearnsSquarePositions) {
  const Dataset train = squares(1000, 16, 1.0, 31);
  const Dataset test = squares(500, 16, 1.0, 32);
  TorchModelOptions o;
  o.channels = {8, 16};
  auto model = make_torch_model("cnn", o, train);
  const Evaluation start = model->evaluate(test);
  EXPECT_LT(start.accuracy, 0.3);
  const std::vector<size_t> order = permutation(train.rows, 4);
  for (size_t step = 0; step < 150; ++step) {
    const size_t begin = (step * 32) % (train.rows - 32);
    model->forward_backward(train, std::span<const size_t>(order.data() + begin, 32), {});
    sgd_step(*model, 0.05f);
  }
  const Evaluation end = model->evaluate(test);
  EXPECT_GT(end.accuracy, 0.98) << "loss " << end.loss;
}

TEST(TorchModel, EvaluateSubsetsAndChunksAgree) {
  // 2500 rows: evaluate runs in chunks of 256 rows; the result must be the mean over all rows.
  const Dataset data = random_dataset(2500, 12, 4, 8);
  auto model = make_torch_model("mlp", mlp_options({6}), data);
  const Evaluation all = model->evaluate(data);
  const Evaluation head = model->evaluate(data, iota_rows(0, 1000));
  const Evaluation tail = model->evaluate(data, iota_rows(1000, 1500));
  EXPECT_EQ(all.rows, 2500u);
  EXPECT_NEAR(all.loss, (head.loss * 1000 + tail.loss * 1500) / 2500, 1e-5);
  EXPECT_NEAR(all.accuracy, (head.accuracy * 1000 + tail.accuracy * 1500) / 2500, 1e-12);
  // evaluate leaves gradients alone.
  model->forward_backward(data, iota_rows(0, 10), {});
  const std::vector<float> g = flat_grads(*model);
  model->evaluate(data);
  EXPECT_EQ(flat_grads(*model), g);
}

TEST(TorchModel, ThreadsOptionSetsTorchAndOpenBlas) {
  const Dataset data = random_dataset(4, 6, 2, 1);
  TorchModelOptions o = mlp_options({3});
  o.threads = 2;
  auto two = make_torch_model("mlp", o, data);
  EXPECT_EQ(torch_threads().intra_op, 2);
  const int blas = torch_threads().blas;
  if (blas != -1) {
    EXPECT_EQ(blas, 2);
  }
  o.threads = 1;
  auto one = make_torch_model("mlp", o, data);
  EXPECT_EQ(torch_threads().intra_op, 1);
  if (blas != -1) {
    EXPECT_EQ(torch_threads().blas, 1);
  }
  o.threads = 0;  // leaves the setting alone
  auto keep = make_torch_model("mlp", o, data);
  EXPECT_EQ(torch_threads().intra_op, 1);
  // A model re-applies its own count before it computes.
  two->forward_backward(data, iota_rows(0, 4), {});
  EXPECT_EQ(torch_threads().intra_op, 2);
  one->evaluate(data);
  EXPECT_EQ(torch_threads().intra_op, 1);
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(no InvalidArgument thrown)";
}

TEST(TorchModel, FactoryErrors) {
  const Dataset flat = random_dataset(4, 784, 10, 1);
  const Dataset image = with_image_shape(flat, 1, 28, 28);
  EXPECT_THAT(error_of([&] { make_torch_model("resnet", {}, flat); }),
              AllOf(HasSubstr("resnet"), HasSubstr("mlp"), HasSubstr("cnn")));
  EXPECT_THAT(error_of([&] { make_torch_model("cnn", {}, flat); }), HasSubstr("image shape"));
  EXPECT_THAT(error_of([&] { make_torch_model("cnn", {}, with_image_shape(flat, 1, 28, 27)); }),
              HasSubstr("does not match"));
  EXPECT_THAT(error_of([&] {
                make_torch_model("cnn", cnn_options({4, 4, 4}),
                                 with_image_shape(random_dataset(2, 36, 3, 1), 1, 6, 6));
              }),
              HasSubstr("too small"));
  EXPECT_THAT(error_of([&] { make_torch_model("cnn", cnn_options({}), image); }),
              HasSubstr("at least one"));
  EXPECT_THAT(error_of([&] {
                make_torch_model("cnn", cnn_options({16, 0}), image);
              }),
              HasSubstr("> 0"));
  EXPECT_THAT(error_of([&] { make_torch_model("mlp", mlp_options({0}), flat); }), HasSubstr("> 0"));
  Dataset regression = flat;
  regression.num_classes = 0;
  EXPECT_THAT(error_of([&] { make_torch_model("mlp", {}, regression); }),
              HasSubstr("classification"));
  TorchModelOptions bad_threads;
  bad_threads.threads = -1;
  EXPECT_THAT(error_of([&] { make_torch_model("mlp", bad_threads, flat); }), HasSubstr("threads"));
  // The cnn also works on the image's flat rows of the same shape with several channels.
  EXPECT_NO_THROW(make_torch_model("cnn", cnn_options({2}),
                                   with_image_shape(random_dataset(2, 3 * 2 * 2, 2, 1), 3, 2, 2)));
}

TEST(TorchModel, DataErrors) {
  const Dataset data = with_image_shape(random_dataset(20, 64, 4, 2), 1, 8, 8);
  for (const char* name : {"mlp", "cnn"}) {
    TorchModelOptions o;
    o.hidden = {5};
    o.channels = {2};
    auto model = make_torch_model(name, o, data);
    const std::vector<size_t> rows = iota_rows(0, 4);
    EXPECT_THAT(error_of([&] { model->forward_backward(data, {}, {}); }), HasSubstr("empty batch"));
    const std::vector<size_t> out_of_range{3, 20};
    EXPECT_THAT(error_of([&] { model->forward_backward(data, out_of_range, {}); }),
                HasSubstr("out of range"));
    EXPECT_THAT(error_of([&] { model->evaluate(data, out_of_range); }), HasSubstr("out of range"));
    const Dataset other_dim = with_image_shape(random_dataset(20, 49, 4, 2), 1, 7, 7);
    EXPECT_THAT(error_of([&] { model->forward_backward(other_dim, rows, {}); }),
                HasSubstr("features per row"));
    EXPECT_THAT(error_of([&] { model->evaluate(other_dim); }), HasSubstr("features per row"));
    Dataset other_classes = data;
    other_classes.num_classes = 5;
    EXPECT_THAT(error_of([&] { model->forward_backward(other_classes, rows, {}); }),
                HasSubstr("classes"));
    for (float bad : {4.0f, -1.0f, 1.5f, std::nanf("")}) {
      Dataset bad_target = data;
      bad_target.targets[2] = bad;
      EXPECT_THAT(error_of([&] { model->forward_backward(bad_target, rows, {}); }),
                  HasSubstr("not a class id"))
          << bad;
    }
    Dataset truncated = data;
    truncated.features.resize(10);
    EXPECT_THAT(error_of([&] { model->evaluate(truncated); }), HasSubstr("feature values"));
    // The model is still fine afterwards.
    EXPECT_TRUE(std::isfinite(model->forward_backward(data, rows, {})));
  }
  const Dataset image = with_image_shape(random_dataset(20, 64, 4, 2), 1, 8, 8);
  auto cnn = make_torch_model("cnn", cnn_options({2}), image);
  EXPECT_THAT(error_of([&] { cnn->evaluate(with_image_shape(image, 4, 4, 4)); }),
              HasSubstr("image shape"));
}

}  // namespace
}  // namespace qgrad
