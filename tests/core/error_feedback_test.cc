#include "core/error_feedback.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/synthetic.h"

namespace qgrad {
namespace {

class ErrorFeedbackInvariant : public ::testing::TestWithParam<const char*> {};

// sum_t D(C(p_t)) + e_T == sum_t lr * g_t: nothing is lost, only delayed (Karimireddy et al. 2019;
// docs/algorithms.md).
TEST_P(ErrorFeedbackInvariant, AppliedPlusMemoryEqualsScaledGradientSum) {
  const auto codec = make_codec(GetParam());
  const size_t n = 3001;  // not a multiple of any bucket
  ErrorFeedback ef(n);
  std::vector<float> g(n), applied(n, 0.0f);
  std::vector<double> wanted(n, 0.0);
  std::vector<std::byte> payload(codec->max_encoded_bytes(n));
  const float lrs[] = {0.5f, 0.1f, 0.1f, 0.02f};  // a schedule: memory is lr-scaled
  for (uint64_t t = 0; t < 40; ++t) {
    fill_synthetic(g, SyntheticDistribution::kNormal, 100 + t);
    const float lr = lrs[t % 4];
    const size_t bytes = ef.encode(*codec, g, lr, RngKey{.seed = 5, .step = t}, payload);
    codec->decode_add({payload.data(), bytes}, applied, 1.0f);
    for (size_t i = 0; i < n; ++i) wanted[i] += double{lr} * g[i];
  }
  double worst = 0, mag = 0;
  for (size_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::fabs(applied[i] + double{ef.memory()[i]} - wanted[i]));
    mag = std::max(mag, std::fabs(wanted[i]));
  }
  // Float rounding of 40 additions of values of size ~mag: a few ulps each.
  EXPECT_LE(worst, 1e-5 * mag + 1e-6) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Codecs, ErrorFeedbackInvariant,
                         ::testing::Values("none", "fp16", "qsgd", "qsgd:bits=2", "sign:scale=l1",
                                           "zipml", "int8", "terngrad", "topk:ratio=0.05"));

TEST(ErrorFeedback, NoneCodecKeepsNoMemory) {
  const auto codec = make_codec("none");
  ErrorFeedback ef(5);
  const std::vector<float> g = {1, -2, 3, -4, 5};
  std::vector<std::byte> out(codec->max_encoded_bytes(5));
  ef.encode(*codec, g, 0.5f, {}, out);
  for (float e : ef.memory()) EXPECT_EQ(e, 0.0f);
}

TEST(ErrorFeedback, NanGradientLeavesMemoryUntouched) {
  const auto codec = make_codec("qsgd");
  ErrorFeedback ef(4);
  std::vector<std::byte> out(codec->max_encoded_bytes(4));
  ef.encode(*codec, std::vector<float>{1, 2, 3, 4}, 1.0f, {}, out);
  const std::vector<float> before(ef.memory().begin(), ef.memory().end());
  const std::vector<float> bad = {1, std::numeric_limits<float>::quiet_NaN(), 3, 4};
  EXPECT_THROW(ef.encode(*codec, bad, 1.0f, {}, out), InvalidArgument);
  EXPECT_EQ(std::vector<float>(ef.memory().begin(), ef.memory().end()), before);
}

TEST(ErrorFeedback, WrongSizesAreClearErrors) {
  const auto codec = make_codec("none");
  ErrorFeedback ef(4);
  std::vector<std::byte> out(codec->max_encoded_bytes(8));
  EXPECT_THROW(ef.encode(*codec, std::vector<float>(8), 1.0f, {}, out), InvalidArgument);
  EXPECT_THROW(ef.load(std::vector<float>(3)), InvalidArgument);
}

TEST(ErrorFeedback, LoadRestoresMemoryForResume) {
  const auto codec = make_codec("sign:scale=l1");
  const size_t n = 100;
  std::vector<float> g(n);
  fill_synthetic(g, SyntheticDistribution::kNormal, 1);
  std::vector<std::byte> a(codec->max_encoded_bytes(n)), b(a.size());
  ErrorFeedback first(n), resumed(n);
  first.encode(*codec, g, 1.0f, {.step = 0}, a);
  resumed.load(first.memory());
  const size_t sa = first.encode(*codec, g, 1.0f, {.step = 1}, a);
  const size_t sb = resumed.encode(*codec, g, 1.0f, {.step = 1}, b);
  ASSERT_EQ(sa, sb);
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + sa, b.begin()));
}

}  // namespace
}  // namespace qgrad
