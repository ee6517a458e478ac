// The worker-side encoder both exchange paths share (optim/worker_encoder.h): the error-feedback
// invariant c = D(C(p)) + e_new - e_old (bitwise where the arithmetic is exact, to a derived
// bound otherwise), the warm-up / min-compress choice of `none`, the adversarial sign, the NaN
// scan and its message, the RngKey numbering, and that a whole-unit encode gives the collective
// path's bits. Also the bucket plan (optim/bucket_plan.h).
#include "optim/worker_encoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "comm/strategies/compressed_allreduce.h"
#include "core/error.h"
#include "core/synthetic.h"
#include "core/wire.h"
#include "optim/bucket_plan.h"
#include "tests/support/ranks.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

constexpr double kU = 0x1p-24;  // the unit roundoff of fp32 (round to nearest)

std::unique_ptr<Optimizer> optimizer(std::vector<ParamShape> shapes,
                                     const std::string& name = "sgd") {
  auto o = make_optimizer({.name = name});
  o->init(std::move(shapes));
  return o;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

std::vector<float> decoded(const Codec& codec, std::span<const std::byte> payload, size_t n) {
  std::vector<float> d(n, 0.0f);
  codec.decode_add(payload, d, 1.0f);
  return d;
}

std::vector<float> synthetic(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  fill_synthetic(v, SyntheticDistribution::kGradient, seed);
  return v;
}

// ---- Error feedback: c = D(C(p)) + e_new - e_old -------------------------------------------

class EncoderInvariant : public ::testing::TestWithParam<std::string> {};

// Per element, with p = fl(c + e_old) and e_new = fl(p - d) (one rounding each, |delta| <= u):
//   d + e_new - e_old - c = (p - (c + e_old)) + (e_new - (p - d))
//   |...| <= u |c + e_old| + u |p - d| <= u / (1 - u) * (|p| + |e_new|).
// The left side is evaluated in double, where the four floats and their sum are exact up to
// 2^-53 of their magnitudes, which the bound's slack term covers.
TEST_P(EncoderInvariant, ContributionIsDecodedPayloadPlusMemoryChange) {
  const size_t n = 1000;
  const auto opt = optimizer({{"w", n}});
  const WorkerEncoder encoder(*opt, {.codec = GetParam(), .error_feedback = true, .seed = 3}, 1);
  const std::unique_ptr<ErrorFeedback> memory = encoder.make_memory(n);
  ASSERT_NE(memory, nullptr);
  std::vector<double> sent_sum(n, 0.0), c_sum(n, 0.0), bound_sum(n, 0.0);
  std::vector<std::byte> payload;
  for (uint64_t step = 0; step < 5; ++step) {
    const std::vector<float> grad = synthetic(n, 100 + step);
    std::vector<float> c(n);
    encoder.contribution(0, grad, c, encoder.factor(0.1f));
    const std::vector<float> e_old(memory->memory().begin(), memory->memory().end());
    encoder.encode(encoder.codec_for(step, n), c, memory.get(), encoder.key(step, 0), payload);
    const std::vector<float> d = decoded(encoder.codec(), payload, n);
    const std::span<const float> e_new = memory->memory();
    size_t violations = 0;
    for (size_t j = 0; j < n; ++j) {
      const float p = c[j] + e_old[j];
      const double lhs = double{d[j]} + double{e_new[j]} - double{e_old[j]} - double{c[j]};
      const double slack = 0x1p-52 * (std::fabs(double{d[j]}) + std::fabs(double{e_new[j]}) +
                                      std::fabs(double{e_old[j]}) + std::fabs(double{c[j]}));
      const double bound = kU / (1 - kU) * (std::fabs(double{p}) + std::fabs(double{e_new[j]}));
      if (std::fabs(lhs) > bound + slack) ++violations;
      sent_sum[j] += d[j];
      c_sum[j] += c[j];
      bound_sum[j] += bound + slack;
    }
    EXPECT_EQ(violations, 0u) << GetParam() << " step " << step;
  }
  // Summed over the steps the memory telescopes: sum_t c_t = sum_t D(C(p_t)) + e_T.
  for (size_t j = 0; j < n; ++j) {
    const double lhs = c_sum[j] - (sent_sum[j] + double{memory->memory()[j]});
    EXPECT_LE(std::fabs(lhs), bound_sum[j] * (1 + 1e-9)) << GetParam() << " element " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, EncoderInvariant,
                         ::testing::Values("none", "qsgd:bits=4", "sign:scale=l1", "int8",
                                           "topk:ratio=0.1", "terngrad", "fp16"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return s;
                         });

// With dyadic inputs every operation above is exact: the invariant holds bit for bit, and
// take_back() restores e = p exactly.
TEST(WorkerEncoder, ErrorFeedbackIsExactOnDyadicValues) {
  const auto opt = optimizer({{"w", 4}});
  const WorkerEncoder encoder(*opt, {.codec = "sign:scale=l1", .error_feedback = true}, 0);
  const std::unique_ptr<ErrorFeedback> memory = encoder.make_memory(4);
  ASSERT_NE(memory, nullptr);
  std::vector<std::byte> payload;
  // lr = 1: c = g. Step 0: p = c, mean |p| = 2, D = 2 sgn(p), e = p - D = {-1, -1, 1, 1}.
  // Step 1: p = c + e = {0.5, -1, 0, 0.5}, mean |p| = 1/2, and sgn(0) = +1.
  const std::vector<std::vector<float>> grads = {{1, -3, 3, -1}, {1.5f, 0, -1, -0.5f}};
  for (size_t t = 0; t < grads.size(); ++t) {
    std::vector<float> c(4);
    encoder.contribution(0, grads[t], c, encoder.factor(1.0f));
    const std::vector<float> e_old(memory->memory().begin(), memory->memory().end());
    encoder.encode(encoder.codec(), c, memory.get(), encoder.key(t, 0), payload);
    const std::vector<float> d = decoded(encoder.codec(), payload, 4);
    std::vector<float> rebuilt(4);
    for (size_t j = 0; j < 4; ++j) rebuilt[j] = d[j] + memory->memory()[j] - e_old[j];
    EXPECT_TRUE(same_bits(rebuilt, c)) << "step " << t;
    // A dropped push: the memory takes the payload back and holds p = c + e_old.
    ErrorFeedback copy(4);
    copy.load(memory->memory());
    WorkerEncoder::take_back(encoder.codec(), payload, copy);
    std::vector<float> p(4);
    for (size_t j = 0; j < 4; ++j) p[j] = c[j] + e_old[j];
    EXPECT_TRUE(same_bits(copy.memory(), p)) << "step " << t;
  }
  EXPECT_EQ(decoded(encoder.codec(), payload, 4), (std::vector<float>{0.5f, -0.5f, 0.5f, 0.5f}));
}

// The same key, codec and memory give the collective path's bits: compressed_allreduce on one
// rank (allgather: one whole-bucket encode through the worker memory) and encode() + decode
// agree on the result and on the new memory.
TEST(WorkerEncoder, WholeUnitEncodeMatchesTheCollectivePath) {
  const size_t n = 777;
  const auto opt = optimizer({{"w", n}});
  for (const std::string codec : {"qsgd:bits=4", "sign:scale=l1", "topk:ratio=0.05"}) {
    const WorkerEncoder encoder(*opt, {.codec = codec, .error_feedback = true, .seed = 9}, 0);
    const std::unique_ptr<ErrorFeedback> ours = encoder.make_memory(n);
    const std::unique_ptr<ErrorFeedback> theirs = encoder.make_memory(n);
    run_ranks(1, [&](Communicator& comm) {
      std::vector<std::byte> payload;
      for (uint64_t step = 0; step < 3; ++step) {
        const std::vector<float> grad = synthetic(n, 7 + step);
        std::vector<float> c(n);
        encoder.contribution(0, grad, c, encoder.factor(0.05f));
        const RngKey key = encoder.key(step, 4);
        std::vector<float> bucket = c;
        compressed_allreduce(comm, encoder.codec(), Strategy::kAllgather, bucket, key, theirs.get(),
                             nullptr, 1.0f);
        encoder.encode(encoder.codec(), c, ours.get(), key, payload);
        EXPECT_TRUE(same_bits(decoded(encoder.codec(), payload, n), bucket))
            << codec << " step " << step;
        EXPECT_TRUE(same_bits(ours->memory(), theirs->memory())) << codec << " step " << step;
      }
    });
  }
}

// ---- Warm-up and min-compress: fp32 `none`, no memory for small units ----------------------

TEST(WorkerEncoder, WarmupAndSmallUnitsChooseNone) {
  const auto opt = optimizer({{"w", 64}});
  const WorkerEncoder encoder(
      *opt,
      {.codec = "qsgd:bits=2", .error_feedback = true, .warmup_steps = 2, .min_compress_bytes = 64},
      0);
  EXPECT_EQ(encoder.codec().id(), CodecId::kQsgd);
  EXPECT_EQ(encoder.plain_codec().id(), CodecId::kNone);
  for (uint64_t step : {0u, 1u}) {
    EXPECT_FALSE(encoder.compresses(step, 64)) << step;
    EXPECT_EQ(&encoder.codec_for(step, 64), &encoder.plain_codec()) << step;
  }
  EXPECT_TRUE(encoder.compresses(2, 64));
  EXPECT_EQ(&encoder.codec_for(2, 64), &encoder.codec());
  // 15 floats are 60 bytes < 64: never compressed, no memory; 16 floats are exactly 64.
  EXPECT_FALSE(encoder.compressible(15));
  EXPECT_FALSE(encoder.compresses(1000, 15));
  EXPECT_EQ(&encoder.codec_for(1000, 15), &encoder.plain_codec());
  EXPECT_EQ(encoder.make_memory(15), nullptr);
  EXPECT_TRUE(encoder.compressible(16));
  ASSERT_NE(encoder.make_memory(16), nullptr);
  EXPECT_EQ(encoder.make_memory(16)->size(), 16u);

  // A warm-up payload is fp32: it decodes to c bit for bit.
  const std::vector<float> c = synthetic(64, 5);
  std::vector<std::byte> payload;
  encoder.encode(encoder.codec_for(0, 64), c, nullptr, encoder.key(0, 0), payload);
  EXPECT_EQ(read_header(payload).codec, CodecId::kNone);
  EXPECT_TRUE(same_bits(decoded(encoder.plain_codec(), payload, 64), c));

  // Without error feedback no unit has a memory.
  const WorkerEncoder plain(*opt, {.codec = "qsgd:bits=2"}, 0);
  EXPECT_EQ(plain.make_memory(1 << 20), nullptr);
}

// ---- The adversarial sign -------------------------------------------------------------------

TEST(WorkerEncoder, AdversarialWorkerSendsMinusC) {
  for (const std::string name : {"sgd", "signum", "adam"}) {
    const auto opt = optimizer({{"w", 300}}, name);
    const DistributedOptimizerOptions o{.codec = "qsgd:bits=4", .seed = 2};
    DistributedOptimizerOptions adv = o;
    adv.adversarial = true;
    const WorkerEncoder honest(*opt, o, 3), adversary(*opt, adv, 3);
    const float lr = 0.25f;
    EXPECT_EQ(honest.factor(lr), opt->compression_scale(lr)) << name;
    EXPECT_EQ(adversary.factor(lr), -opt->compression_scale(lr)) << name;
    const std::vector<float> grad = synthetic(300, 11);
    std::vector<float> c(300), bad(300), minus_c(300);
    honest.contribution(0, grad, c, honest.factor(lr));
    adversary.contribution(0, grad, bad, adversary.factor(lr));
    for (size_t j = 0; j < c.size(); ++j) minus_c[j] = -c[j];
    EXPECT_TRUE(same_bits(bad, minus_c)) << name;
    // What goes on the wire is the encoding of -c, with the same key.
    std::vector<std::byte> sent, expected;
    adversary.encode(adversary.codec(), bad, nullptr, adversary.key(4, 1), sent);
    honest.encode(honest.codec(), minus_c, nullptr, honest.key(4, 1), expected);
    EXPECT_EQ(sent, expected) << name;
  }
}

// ---- The NaN scan and its one message --------------------------------------------------------

TEST(WorkerEncoder, NonFiniteValuesAreNamedWithParameterElementAndRank) {
  const auto opt = optimizer({{"w", 5}, {"b", 3}});
  const WorkerEncoder encoder(*opt, {.codec = "qsgd"}, 2);
  std::vector<float> scratch;

  // A NaN in b's gradient at element 2.
  std::vector<float> g = {0.5f, -1, std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> c(3);
  const float f = encoder.factor(0.1f);
  encoder.contribution(1, g, c, f);
  std::optional<NonFinite> bad = encoder.scan(1, g, c);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->rank, 2u);
  EXPECT_EQ(bad->param, 1u);
  EXPECT_EQ(bad->element, 2u);
  EXPECT_FALSE(bad->in_contribution);
  EXPECT_EQ(encoder.describe(*bad),
            "non-finite gradient (NaN or Inf) in parameter 'b' at element 2 on rank 2");
  const std::optional<NonFinite> again = encoder.rescan(1, g, f, scratch);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->element, 2u);
  EXPECT_FALSE(again->in_contribution);

  // A finite gradient whose contribution lr * g overflows, at w's element 1.
  std::vector<float> big = {1, 3e38f, -2, 0, 4};
  std::vector<float> cw(5);
  const float f_big = encoder.factor(10.0f);
  encoder.contribution(0, big, cw, f_big);
  bad = encoder.scan(0, big, cw);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->param, 0u);
  EXPECT_EQ(bad->element, 1u);
  EXPECT_TRUE(bad->in_contribution);
  EXPECT_THAT(encoder.describe(*bad), HasSubstr("parameter 'w' element 1 on rank 2"));
  EXPECT_THAT(encoder.describe(*bad), HasSubstr("learning rate too large"));
  const std::optional<NonFinite> recomputed = encoder.rescan(0, big, f_big, scratch);
  ASSERT_TRUE(recomputed);
  EXPECT_EQ(recomputed->element, 1u);
  EXPECT_TRUE(recomputed->in_contribution);

  // Finite everywhere: nothing to report.
  std::vector<float> fine = {1, 2, 3, 4, 5};
  encoder.contribution(0, fine, cw, f);
  EXPECT_FALSE(encoder.scan(0, fine, cw));
  EXPECT_FALSE(encoder.rescan(0, fine, f, scratch));
}

// ---- Keys and options -----------------------------------------------------------------------

TEST(WorkerEncoder, KeysAreSeedStepRankAndUnit) {
  const auto opt = optimizer({{"w", 1}});
  const WorkerEncoder encoder(*opt, {.seed = 0xfeedULL}, 6);
  const RngKey k = encoder.key(41, 9);
  EXPECT_EQ(k.seed, 0xfeedULL);
  EXPECT_EQ(k.step, 41u);
  EXPECT_EQ(k.rank, 6u);
  EXPECT_EQ(k.tensor, 9u);
  EXPECT_EQ(k.bucket, 0u);
  EXPECT_EQ(encoder.rank(), 6u);
}

TEST(WorkerEncoder, BadOptionsAreClearErrors) {
  const auto opt = optimizer({{"w", 1}});
  auto message = [&](const DistributedOptimizerOptions& o) -> std::string {
    try {
      WorkerEncoder encoder(*opt, o, 0);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_THAT(message({.codec = "sign", .error_feedback = true}), HasSubstr("sign:scale=l1"));
  EXPECT_THAT(message({.codec = "qsgdx"}), HasSubstr("qsgdx"));
  EXPECT_EQ(message({.codec = "sign:scale=l1", .error_feedback = true}), "");
  const WorkerEncoder sign(*opt, {.codec = "sign"}, 0);
  EXPECT_TRUE(sign.majority());
  const WorkerEncoder l1(*opt, {.codec = "sign:scale=l1"}, 0);
  EXPECT_FALSE(l1.majority());
}

// ---- The bucket plan ------------------------------------------------------------------------

TEST(BucketPlan, ReverseOrderClosedAtBucketBytes) {
  // bucket_bytes 32 (8 floats): 7 | 2 + 5 | 3, in reverse parameter order.
  const std::vector<size_t> sizes = {3, 5, 2, 7};
  const std::vector<BucketLayout> b = plan_buckets(sizes, 32, 28);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].params, (std::vector<size_t>{3}));
  EXPECT_EQ(b[1].params, (std::vector<size_t>{2, 1}));
  EXPECT_EQ(b[1].offsets, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(b[2].params, (std::vector<size_t>{0}));
  EXPECT_EQ(b[0].size, 7u);
  EXPECT_EQ(b[1].size, 7u);
  EXPECT_EQ(b[2].size, 3u);
  EXPECT_TRUE(b[0].compressible);  // 28 bytes >= 28
  EXPECT_TRUE(b[1].compressible);
  EXPECT_FALSE(b[2].compressible);  // 12 bytes
  EXPECT_EQ(locate(b[1], 0), (std::pair<size_t, size_t>{0, 0}));
  EXPECT_EQ(locate(b[1], 3), (std::pair<size_t, size_t>{1, 1}));

  // A parameter larger than bucket_bytes gets a bucket of its own; none for no parameters.
  const std::vector<size_t> large = {100};
  EXPECT_EQ(plan_buckets(large, 32, 0).size(), 1u);
  EXPECT_TRUE(plan_buckets({}, 32, 0).empty());

  // An empty parameter shares its offset with the next one: locate names the non-empty one.
  const std::vector<size_t> with_empty = {4, 0, 4};
  const std::vector<BucketLayout> e = plan_buckets(with_empty, 64, 0);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].params, (std::vector<size_t>{2, 1, 0}));
  EXPECT_EQ(e[0].offsets, (std::vector<size_t>{0, 4, 4}));
  EXPECT_EQ(locate(e[0], 4), (std::pair<size_t, size_t>{2, 0}));
  EXPECT_EQ(locate(e[0], 3), (std::pair<size_t, size_t>{0, 3}));
}

}  // namespace
}  // namespace qgrad
