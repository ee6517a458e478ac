// DistributedOptimizer over the local backend (ranks as threads): the error-feedback invariant,
// bitwise agreement between ranks and between runs, Signum/signSGD with majority vote, warm-up
// and small buckets by their byte counts, overlap, checkpoints, adversarial ranks, NaN policies,
// failures and bad options.
#include "optim/distributed_optimizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <thread>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/synthetic.h"
#include "tests/support/ranks.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

// With bucket_bytes = 4096 these fuse (in reverse) into buckets [p4], [p3], [p2, p1], [p0].
const std::vector<size_t> kSizes = {1000, 37, 513, 2049, 1};
constexpr size_t kBucketBytes = 4096;

// A toy model: parameters p0, p1, ... with the same initial values on every rank.
struct Toy {
  std::vector<std::vector<float>> value, grad;

  explicit Toy(const std::vector<size_t>& sizes) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      value.emplace_back(sizes[i]);
      grad.emplace_back(sizes[i], 0.0f);
      fill_synthetic(value[i], SyntheticDistribution::kNormal, 1000 + i);
    }
  }
  std::vector<ParamView> views() {
    std::vector<ParamView> v;
    for (size_t i = 0; i < value.size(); ++i) {
      v.push_back({detail::concat("p", i), value[i], grad[i]});
    }
    return v;
  }
  std::vector<float> flat() const {
    std::vector<float> out;
    for (const auto& v : value) out.insert(out.end(), v.begin(), v.end());
    return out;
  }
};

// The gradient of 0.25 * ||x||^2 plus uniform noise in [-noise/2, noise/2], a function of
// (x, rank, step, parameter, element) only; with `zeros`, every 13th element is exactly 0 (to
// exercise sgn(0) = +1).
float gradient_at(float x, int rank, uint64_t step, size_t param, size_t j, float noise,
                  bool zeros = true) {
  if (zeros && j % 13 == 0) return 0.0f;
  const RngKey key{.seed = 99,
                   .step = step,
                   .rank = static_cast<uint32_t>(rank),
                   .tensor = static_cast<uint32_t>(param)};
  const float u = uniform_from_word(philox_word(key, j)) - 0.5f;
  return 0.5f * x + noise * u;
}

void fill_grad(Toy& toy, size_t i, int rank, uint64_t step, float noise, bool zeros = true) {
  for (size_t j = 0; j < toy.value[i].size(); ++j) {
    toy.grad[i][j] = gradient_at(toy.value[i][j], rank, step, i, j, noise, zeros);
  }
}

struct RunSpec {
  int world = 3;
  OptimizerOptions opt{.name = "sgd"};
  DistributedOptimizerOptions dist{.bucket_bytes = kBucketBytes};
  std::vector<size_t> sizes = kSizes;
  int steps = 20;
  float noise = 1.0f;
  bool zeros = true;
  std::set<int> adversaries;
  std::function<float(int)> lr = [](int) { return 0.05f; };
  // Called on each rank after its gradients of step t are filled, before step().
  std::function<void(int rank, int t, const Toy&, float lr)> observe;
};

struct RankResult {
  std::vector<float> values;
  StateDict state;
  std::vector<StepStats> stats;
  std::vector<BucketLayout> layout;
};

// Steps [first, last) of one rank: announce lr, produce gradients in reverse order (as backward
// does) handing each to the optimizer at once, then step.
void run_steps(const RunSpec& s, DistributedOptimizer& d, Toy& toy, int me, int first, int last,
               std::vector<StepStats>* stats) {
  for (int t = first; t < last; ++t) {
    const float lr = s.lr(t);
    d.begin_step(lr);
    for (size_t i = toy.value.size(); i-- > 0;) {
      fill_grad(toy, i, me, t, s.noise, s.zeros);
      d.gradient_ready(i);
    }
    if (s.observe) s.observe(me, t, toy, lr);
    const StepStats st = d.step(lr);
    if (stats != nullptr) stats->push_back(st);
  }
}

DistributedOptimizerOptions options_for(const RunSpec& s, int rank) {
  DistributedOptimizerOptions o = s.dist;
  o.adversarial = s.adversaries.count(rank) > 0;
  return o;
}

std::vector<RankResult> run(const RunSpec& s) {
  std::vector<RankResult> out(s.world);
  run_ranks(s.world, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(s.sizes);
    DistributedOptimizer d(comm, make_optimizer(s.opt), toy.views(), options_for(s, me));
    run_steps(s, d, toy, me, 0, s.steps, &out[me].stats);
    out[me].values = toy.flat();
    out[me].state = d.export_state();
    out[me].layout = d.buckets();
  });
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// What the fp32 allreduce of comm/communicator.h moves for n floats.
uint64_t fp32_sent(size_t n, int world, int r) { return 4 * allreduce_volume(n, world, r).sent; }
uint64_t fp32_received(size_t n, int world, int r) {
  return 4 * allreduce_volume(n, world, r).received;
}

TEST(DistributedOptimizer, FusesParametersInReverseOrder) {
  run_ranks(1, [](Communicator& comm) {
    Toy toy(kSizes);
    DistributedOptimizer d(comm, make_optimizer({}), toy.views(),
                           {.bucket_bytes = kBucketBytes, .min_compress_bytes = 2000});
    const auto& b = d.buckets();
    EXPECT_EQ(b.size(), 4u);
    if (b.size() != 4u) return;
    EXPECT_EQ(b[0].params, (std::vector<size_t>{4}));
    EXPECT_EQ(b[1].params, (std::vector<size_t>{3}));
    EXPECT_EQ(b[2].params, (std::vector<size_t>{2, 1}));
    EXPECT_EQ(b[2].offsets, (std::vector<size_t>{0, 513}));
    EXPECT_EQ(b[2].size, 550u);
    EXPECT_EQ(b[3].params, (std::vector<size_t>{0}));
    EXPECT_FALSE(b[0].compressible);  // 4 bytes < 2000
    EXPECT_TRUE(b[1].compressible);
    EXPECT_TRUE(b[2].compressible);  // 2200 bytes
    EXPECT_TRUE(b[3].compressible);
  });
}

// ---- The error-feedback invariant (EF-SGD, Karimireddy et al. 2019) through the whole pipeline

struct InvariantCase {
  const char* codec;
  int world;
  Strategy strategy;
};

class EfInvariant : public ::testing::TestWithParam<InvariantCase> {};

// Plain SGD with an lr schedule: x_0 - x_T + (1/W) (sum_r e_r + owner memories) must equal
// sum_t lr_t * mean_r g_{r,t}: what compression dropped is still in the memories.
TEST_P(EfInvariant, AppliedUpdatesPlusMemoriesEqualScaledMeanGradients) {
  const InvariantCase c = GetParam();
  RunSpec s;
  s.world = c.world;
  s.dist = {.codec = c.codec,
            .strategy = c.strategy,
            .error_feedback = true,
            .bucket_bytes = kBucketBytes,
            .seed = 3};
  s.steps = 12;
  s.lr = [](int t) { return std::array{0.5f, 0.1f, 0.1f, 0.02f}[t % 4]; };
  const size_t np = kSizes.size();
  // wanted[r][i][j] = sum_t lr_t * g_{r,t}, in double.
  std::vector<std::vector<std::vector<double>>> wanted(c.world);
  for (auto& w : wanted) {
    for (size_t n : kSizes) w.emplace_back(n, 0.0);
  }
  s.observe = [&](int r, int, const Toy& toy, float lr) {
    for (size_t i = 0; i < np; ++i) {
      for (size_t j = 0; j < kSizes[i]; ++j) wanted[r][i][j] += double{lr} * toy.grad[i][j];
    }
  };
  const std::vector<RankResult> out = run(s);
  const Toy initial(kSizes);

  // Every rank's memories, mapped back to parameter positions and summed.
  std::vector<std::vector<double>> memory;
  for (size_t n : kSizes) memory.emplace_back(n, 0.0);
  bool any_owner = false;
  for (int r = 0; r < c.world; ++r) {
    const auto& layout = out[r].layout;
    for (size_t b = 0; b < layout.size(); ++b) {
      std::vector<double> bucket(layout[b].size, 0.0);
      const auto& w = out[r].state.buffers.at("exchange/ef_worker/" + std::to_string(b));
      for (size_t j = 0; j < bucket.size(); ++j) bucket[j] += w[j];
      const auto it = out[r].state.buffers.find("exchange/ef_owner/" + std::to_string(b));
      if (it != out[r].state.buffers.end()) {
        any_owner = true;
        const ChunkRange own = owned_chunk(layout[b].size, c.world, r);
        for (size_t j = 0; j < own.size(); ++j) bucket[own.begin + j] += it->second[j];
      }
      for (size_t k = 0; k < layout[b].params.size(); ++k) {
        const size_t i = layout[b].params[k];
        for (size_t j = 0; j < kSizes[i]; ++j) memory[i][j] += bucket[layout[b].offsets[k] + j];
      }
    }
  }
  EXPECT_EQ(any_owner, out[0].stats.back().buckets[0].strategy == Strategy::kScatterReduce);

  double worst = 0, worst_without_memory = 0, scale = 0;
  size_t flat = 0;
  for (size_t i = 0; i < np; ++i) {
    for (size_t j = 0; j < kSizes[i]; ++j, ++flat) {
      double want = 0;
      for (int r = 0; r < c.world; ++r) want += wanted[r][i][j];
      want /= c.world;
      const double applied = double{initial.value[i][j]} - out[0].values[flat];
      const double e = memory[i][j] / c.world;
      worst = std::max(worst, std::fabs(applied + e - want));
      worst_without_memory = std::max(worst_without_memory, std::fabs(applied - want));
      scale =
          std::max({scale, std::fabs(want), std::fabs(double{initial.value[i][j]}), std::fabs(e)});
    }
  }
  // Float rounding only: x is rounded once per step (half an ulp, <= 2^-24 * scale), 12 steps;
  // the other roundings (lr * g, p = c + e, the residual, sum / W) act on values no larger and
  // are allowed 4 more. (Measured: about 1.1e-7 * scale.) What compression dropped is much
  // larger: without the memories the check fails by more than 10x for every codec here.
  const double tolerance = (s.steps + 4) * std::ldexp(1.0, -24) * scale;
  EXPECT_LE(worst, tolerance) << c.codec << " world " << c.world;
  EXPECT_GT(worst_without_memory, 10 * tolerance) << "the memories hold nothing: vacuous test";
}

std::vector<InvariantCase> invariant_cases() {
  std::vector<InvariantCase> out;
  for (const char* codec : {"qsgd", "sign:scale=l1", "topk:ratio=0.05", "int8"}) {
    for (int world : {1, 2, 3, 5}) out.push_back({codec, world, Strategy::kAuto});
    out.push_back({codec, 3, Strategy::kAllgather});
    out.push_back({codec, 2, Strategy::kScatterReduce});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Codecs, EfInvariant, ::testing::ValuesIn(invariant_cases()),
                         [](const auto& info) {
                           std::string name = info.param.codec;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name + "_w" + std::to_string(info.param.world) + "_" +
                                  (info.param.strategy == Strategy::kAuto        ? "auto"
                                   : info.param.strategy == Strategy::kAllgather ? "allgather"
                                                                                 : "scatter");
                         });

// ---- Every rank holds the same bits; the same seed gives the same run ----

struct AgreementCase {
  const char* label;
  int world;
  OptimizerOptions opt;
  DistributedOptimizerOptions dist;
};

class RanksAgree : public ::testing::TestWithParam<AgreementCase> {};

TEST_P(RanksAgree, ParametersAndSharedStateAreBitwiseIdentical) {
  const AgreementCase c = GetParam();
  RunSpec s;
  s.world = c.world;
  s.opt = c.opt;
  s.dist = c.dist;
  s.dist.bucket_bytes = kBucketBytes;
  s.steps = 30;
  s.lr = [](int t) { return t < 15 ? 0.05f : 0.01f; };
  const std::vector<RankResult> out = run(s);
  const Toy initial(kSizes);
  EXPECT_FALSE(same_bits(out[0].values, initial.flat())) << "nothing moved";
  for (int r = 1; r < c.world; ++r) {
    EXPECT_TRUE(same_bits(out[r].values, out[0].values)) << c.label << ": rank " << r;
    // SGD's momentum and Adam's moments are computed from the aggregate only: the same on
    // every rank. (Signum's momentum is the worker's own.)
    if (std::string(c.opt.name) != "signum") {
      for (const auto& [key, buf] : out[0].state.buffers) {
        if (key.rfind("optimizer/", 0) != 0) continue;
        EXPECT_TRUE(same_bits(out[r].state.buffers.at(key), buf)) << key << " rank " << r;
      }
    }
  }
}

const AgreementCase kAgreement[] = {
    {"sgd_nesterov_plain",
     4,
     {.name = "sgd", .momentum = 0.9f, .nesterov = true, .weight_decay = 1e-3f},
     {.codec = "none", .strategy = Strategy::kPlain}},
    {"sgd_qsgd_allgather_ef",
     3,
     {.name = "sgd", .momentum = 0.9f},
     {.codec = "qsgd", .strategy = Strategy::kAllgather, .error_feedback = true}},
    {"adam_qsgd_scatter_ef",
     4,
     {.name = "adam", .weight_decay = 1e-2f},
     {.codec = "qsgd:bits=2", .strategy = Strategy::kScatterReduce, .error_feedback = true}},
    {"sgd_int8_scatter_warmup_small",
     3,
     {.name = "sgd", .momentum = 0.5f},
     {.codec = "int8",
      .strategy = Strategy::kScatterReduce,
      .error_feedback = true,
      .warmup_steps = 2,
      .min_compress_bytes = 4000}},
    {"signum_majority",
     5,
     {.name = "signum", .momentum = 0.9f, .weight_decay = 1e-3f},
     {.codec = "sign", .strategy = Strategy::kMajority}},
    {"signum_sign_allgather",
     4,
     {.name = "signum", .momentum = 0.9f},
     {.codec = "sign", .strategy = Strategy::kAllgather}},
    {"sgd_scaled_sign_scatter_ef",
     3,
     {.name = "sgd", .momentum = 0.9f},
     {.codec = "sign:scale=l1", .strategy = Strategy::kScatterReduce, .error_feedback = true}},
    {"adam_topk_allgather_ef",
     2,
     {.name = "adam"},
     {.codec = "topk:ratio=0.1", .strategy = Strategy::kAllgather, .error_feedback = true}},
    {"sgd_terngrad_auto_adversary",
     3,
     {.name = "sgd"},
     {.codec = "terngrad", .adversarial = false}},
};

INSTANTIATE_TEST_SUITE_P(Strategies, RanksAgree, ::testing::ValuesIn(kAgreement),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(DistributedOptimizer, SameSeedSameParametersOtherSeedOther) {
  RunSpec s;
  s.world = 3;
  s.opt = {.name = "adam"};
  s.dist = {.codec = "qsgd",
            .strategy = Strategy::kScatterReduce,
            .error_feedback = true,
            .bucket_bytes = kBucketBytes,
            .seed = 7};
  s.steps = 10;
  const auto a = run(s), b = run(s);
  s.dist.seed = 8;
  const auto c = run(s);
  for (int r = 0; r < s.world; ++r) {
    EXPECT_TRUE(same_bits(a[r].values, b[r].values)) << "rank " << r;
    EXPECT_EQ(a[r].state.buffers, b[r].state.buffers) << "rank " << r;
    EXPECT_FALSE(same_bits(a[r].values, c[r].values)) << "the seed changed nothing";
  }
}

// One rank, codec none: exactly local_step (optim/optimizer.h).
TEST(DistributedOptimizer, OneRankWithoutCompressionIsLocalStep) {
  for (OptimizerOptions o :
       {OptimizerOptions{.name = "sgd", .momentum = 0.9f, .nesterov = true, .weight_decay = 0.01f},
        OptimizerOptions{.name = "signum", .momentum = 0.9f, .weight_decay = 0.01f},
        OptimizerOptions{.name = "adam", .weight_decay = 0.01f}}) {
    RunSpec s;
    s.world = 1;
    s.opt = o;
    s.steps = 10;
    const auto out = run(s);
    Toy toy(kSizes);
    auto opt = make_optimizer(o);
    std::vector<ParamShape> shapes;
    for (const ParamView& p : toy.views()) shapes.push_back({p.name, p.value.size()});
    opt->init(shapes);
    for (int t = 0; t < s.steps; ++t) {
      for (size_t i = 0; i < toy.value.size(); ++i) fill_grad(toy, i, 0, t, s.noise);
      local_step(*opt, toy.views(), s.lr(t));
    }
    EXPECT_TRUE(same_bits(out[0].values, toy.flat())) << o.name;
  }
}

// ---- Signum with majority vote (Bernstein et al. 2019, arXiv 1810.05291) ----

// beta = 0 is signSGD with majority vote: x -= lr * sign(sum_r sign(g_r)), ties and zeros +1.
TEST(Signum, BetaZeroWithMajorityVoteIsSignSgdBitForBit) {
  for (int world : {4, 5}) {  // even: ties happen
    RunSpec s;
    s.world = world;
    s.opt = {.name = "signum", .momentum = 0.0f};
    s.dist = {.codec = "sign", .bucket_bytes = kBucketBytes};
    s.steps = 15;
    s.lr = [](int t) { return 0.02f / static_cast<float>(1 + t); };
    const auto out = run(s);
    Toy ref(kSizes);
    size_t ties = 0;
    for (int t = 0; t < s.steps; ++t) {
      const float lr = s.lr(t);
      for (size_t i = 0; i < ref.value.size(); ++i) {
        std::vector<float> next = ref.value[i];
        for (size_t j = 0; j < next.size(); ++j) {
          int votes = 0;
          for (int r = 0; r < world; ++r) {
            votes += gradient_at(ref.value[i][j], r, t, i, j, s.noise) >= 0.0f ? 1 : -1;
          }
          ties += votes == 0;
          next[j] = ref.value[i][j] - lr * (votes >= 0 ? 1.0f : -1.0f);
        }
        ref.value[i] = next;
      }
    }
    for (int r = 0; r < world; ++r) {
      EXPECT_TRUE(same_bits(out[r].values, ref.flat())) << "world " << world << " rank " << r;
    }
    if (world == 4) {
      EXPECT_GT(ties, 0u);
    }
  }
}

// On one rank the vote is the sign of the momentum, so `sign` and `none` give the same steps.
TEST(Signum, OneRankSignCodecEqualsUncompressed) {
  RunSpec s;
  s.world = 1;
  s.opt = {.name = "signum", .momentum = 0.9f, .weight_decay = 1e-3f};
  s.steps = 12;
  s.dist = {.codec = "none", .bucket_bytes = kBucketBytes};
  const auto a = run(s);
  s.dist = {.codec = "sign", .bucket_bytes = kBucketBytes};
  const auto b = run(s);
  EXPECT_TRUE(same_bits(a[0].values, b[0].values));
  EXPECT_EQ(b[0].stats.back().buckets[3].strategy, Strategy::kMajority);
}

// signSGD with majority vote on 7 ranks, noisy gradients of 0.25 ||x||^2: with K < 7/2 ranks
// sending negated signs the vote still descends (Bernstein et al. 2019, Thm 2); with K = 4 the
// adversaries own the vote and x moves away from the minimum.
TEST(Signum, MajorityVoteToleratesAMinorityOfAdversaries) {
  auto final_ratio = [](std::set<int> adversaries) {
    RunSpec s;
    s.world = 7;
    s.sizes = {300};
    s.opt = {.name = "signum", .momentum = 0.0f};
    s.dist = {.codec = "sign", .bucket_bytes = kBucketBytes};
    s.steps = 150;
    s.noise = 2.0f;
    s.zeros = false;
    s.lr = [](int) { return 0.02f; };
    s.adversaries = std::move(adversaries);
    const auto out = run(s);
    const Toy initial(s.sizes);
    double before = 0, after = 0;
    for (size_t j = 0; j < 300; ++j) {
      before += double{initial.value[0][j]} * initial.value[0][j];
      after += double{out[0].values[j]} * out[0].values[j];
    }
    for (int r = 1; r < 7; ++r) EXPECT_TRUE(same_bits(out[r].values, out[0].values));
    return std::sqrt(after / before);
  };
  const double honest = final_ratio({}), two = final_ratio({1, 4}), three = final_ratio({0, 3, 5});
  const double four = final_ratio({0, 2, 4, 6});
  std::printf("|x_T| / |x_0| with K = 0, 2, 3, 4 adversaries: %.3f %.3f %.3f %.3f\n", honest, two,
              three, four);
  // Measured 0.115, 0.265, 0.586, 2.45: the minority slows descent (Thm 2's 1 / (1 - 2 alpha))
  // but does not stop it; a majority reverses it.
  EXPECT_LT(honest, 0.2);
  EXPECT_LT(two, 0.4);
  EXPECT_LT(three, 0.75);
  EXPECT_LT(honest, two);
  EXPECT_LT(two, three);
  EXPECT_GT(four, 1.5);
}

// ---- Warm-up and small buckets: fp32 volumes ----

TEST(DistributedOptimizer, WarmupAndSmallBucketsSendFp32) {
  const int world = 3;
  const std::vector<size_t> sizes = {3000, 10};  // buckets: [p1] (40 bytes), [p0] (12000)
  RunSpec s;
  s.world = world;
  s.sizes = sizes;
  s.opt = {.name = "sgd", .momentum = 0.9f};
  s.dist = {.codec = "qsgd",
            .strategy = Strategy::kScatterReduce,
            .error_feedback = true,
            .bucket_bytes = 1024,
            .warmup_steps = 2,
            .min_compress_bytes = 1000};
  s.steps = 4;
  const auto out = run(s);
  const auto codec = make_codec("qsgd");
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(out[r].stats.size(), 4u);
    for (int t = 0; t < 4; ++t) {
      const StepStats& st = out[r].stats[t];
      ASSERT_EQ(st.buckets.size(), 2u);
      const BucketStats& small = st.buckets[0];
      const BucketStats& big = st.buckets[1];
      EXPECT_FALSE(small.compressed);
      EXPECT_EQ(small.strategy, Strategy::kPlain);
      EXPECT_EQ(small.bytes_sent, fp32_sent(10, world, r));
      EXPECT_EQ(small.bytes_received, fp32_received(10, world, r));
      EXPECT_EQ(big.dense_bytes, 12000u);
      EXPECT_EQ(small.raw_bytes, fp32_sent(10, world, r));
      EXPECT_EQ(big.raw_bytes, fp32_sent(3000, world, r));
      if (t < 2) {
        EXPECT_FALSE(big.compressed) << "step " << t;
        EXPECT_EQ(big.strategy, Strategy::kPlain);
        EXPECT_EQ(big.bytes_sent, fp32_sent(3000, world, r));
        EXPECT_EQ(big.bytes_received, fp32_received(3000, world, r));
        EXPECT_EQ(st.compressed_buckets, 0u);
      } else {
        EXPECT_TRUE(big.compressed) << "step " << t;
        EXPECT_EQ(big.strategy, Strategy::kScatterReduce);
        // Chunk j goes encoded to rank j; the owner's re-encoded sum goes to every other rank.
        uint64_t sent = 0, received = 0;
        const size_t own = owned_chunk(3000, world, r).size();
        for (int j = 0; j < world; ++j) {
          if (j == r) continue;
          sent += codec->max_encoded_bytes(owned_chunk(3000, world, j).size());
          sent += codec->max_encoded_bytes(own);
          received += codec->max_encoded_bytes(own);
          received += codec->max_encoded_bytes(owned_chunk(3000, world, j).size());
        }
        EXPECT_EQ(big.bytes_sent, sent);
        EXPECT_EQ(big.bytes_received, received);
        EXPECT_LT(big.bytes_sent * 5, fp32_sent(3000, world, r));  // ~7.9x smaller
        EXPECT_EQ(st.compressed_buckets, 1u);
      }
      EXPECT_EQ(st.bytes_sent, small.bytes_sent + big.bytes_sent);
      EXPECT_EQ(st.bytes_received, small.bytes_received + big.bytes_received);
      EXPECT_EQ(st.dense_bytes, 12040u);
      EXPECT_EQ(st.raw_bytes, fp32_sent(10, world, r) + fp32_sent(3000, world, r));
    }
  }
  // The warm-up steps are lossless: after them, the same bits as a run without compression.
  s.steps = 2;
  const auto compressed = run(s);
  s.dist.codec = "none";
  s.dist.strategy = Strategy::kAuto;
  const auto plain = run(s);
  EXPECT_TRUE(same_bits(compressed[0].values, plain[0].values));
  for (float e : compressed[1].state.buffers.at("exchange/ef_worker/1")) EXPECT_EQ(e, 0.0f);
}

// Warm-up steps are lossless whatever the codec: the same bits as codec `none`. (With a
// majority-vote codec the warm-up aggregate is the mean, not lr * vote.)
TEST(DistributedOptimizer, WarmupStepsAreUncompressedForEveryCodec) {
  RunSpec s;
  s.world = 3;
  s.opt = {.name = "sgd", .momentum = 0.9f};
  s.steps = 3;
  s.dist = {.codec = "none", .bucket_bytes = kBucketBytes};
  const auto plain = run(s);
  for (const char* codec : {"qsgd", "sign", "sign:scale=l1", "topk"}) {
    s.dist = {.codec = codec,
              .error_feedback = std::string(codec) != "sign",
              .bucket_bytes = kBucketBytes,
              .warmup_steps = 3};
    const auto warm = run(s);
    for (int r = 0; r < s.world; ++r) {
      EXPECT_TRUE(same_bits(warm[r].values, plain[r].values)) << codec << " rank " << r;
      EXPECT_EQ(warm[r].stats.back().compressed_buckets, 0u);
    }
    s.steps = 4;  // one compressed step: now they differ
    const auto after = run(s);
    s.steps = 3;
    EXPECT_EQ(after[0].stats.back().compressed_buckets, 4u) << codec;
  }
}

// SGD with the majority-vote codec steps by lr * vote: signSGD with majority vote, the same bits
// as Signum with beta = 0.
TEST(DistributedOptimizer, SgdWithMajorityVoteIsSignSgd) {
  RunSpec s;
  s.world = 5;
  s.dist = {.codec = "sign", .bucket_bytes = kBucketBytes};
  s.lr = [](int t) { return 0.01f * static_cast<float>(1 + t % 3); };
  s.steps = 10;
  s.opt = {.name = "sgd"};
  const auto sgd = run(s);
  s.opt = {.name = "signum", .momentum = 0.0f};
  const auto signum = run(s);
  EXPECT_TRUE(same_bits(sgd[0].values, signum[0].values));
}

// ---- Overlap: buckets move while "backward" still runs ----

TEST(DistributedOptimizer, BucketsAreExchangedBeforeStep) {
  const int world = 3;
  run_ranks(world, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(kSizes);
    DistributedOptimizer d(comm, make_optimizer({.name = "sgd", .momentum = 0.9f}), toy.views(),
                           {.codec = "qsgd", .error_feedback = true, .bucket_bytes = kBucketBytes});
    const auto& buckets = d.buckets();
    auto wait_for = [&](size_t n) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (d.buckets_exchanged() < n && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return d.buckets_exchanged();
    };
    for (int t = 0; t < 3; ++t) {
      d.begin_step(0.05f);
      // Only bucket 0's gradients are ready: it is exchanged, and nothing after it can be.
      for (size_t i : buckets[0].params) {
        fill_grad(toy, i, me, t, 1.0f);
        d.gradient_ready(i);
      }
      EXPECT_EQ(wait_for(1), 1u);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      EXPECT_EQ(d.buckets_exchanged(), 1u);
      for (size_t b = 1; b < buckets.size(); ++b) {
        for (size_t i : buckets[b].params) {
          fill_grad(toy, i, me, t, 1.0f);
          d.gradient_ready(i);
        }
      }
      // Every bucket but the last leaves on the exchange thread; the last one (complete when
      // backward ends) waits for step(), which exchanges it on its own thread.
      const size_t early = buckets.size() - 1;
      EXPECT_EQ(wait_for(early), early);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      EXPECT_EQ(d.buckets_exchanged(), early);
      const StepStats st = d.step(0.05f);
      EXPECT_EQ(st.overlapped_buckets, early);
      for (size_t b = 0; b < st.buckets.size(); ++b) {
        EXPECT_EQ(st.buckets[b].before_step, b < early) << b;
        EXPECT_TRUE(st.buckets[b].exchanged) << b;
      }
      EXPECT_EQ(d.buckets_exchanged(), 0u);
    }
    // Without begin_step the learning rate (which SGD compresses: lr * g) is unknown until
    // step(lr): ready buckets wait for it.
    for (size_t i = 0; i < toy.value.size(); ++i) {
      fill_grad(toy, i, me, 3, 1.0f);
      d.gradient_ready(i);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(d.buckets_exchanged(), 0u);
    const StepStats st = d.step(0.05f);
    EXPECT_EQ(st.overlapped_buckets, 0u);
    EXPECT_EQ(d.steps(), 4u);
  });
}

// ---- Checkpoints ----

struct ResumeCase {
  const char* label;
  OptimizerOptions opt;
  DistributedOptimizerOptions dist;
};

class Resume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(Resume, ExportImportMidRunContinuesBitForBit) {
  const ResumeCase c = GetParam();
  RunSpec s;
  s.world = 3;
  s.opt = c.opt;
  s.dist = c.dist;
  s.dist.bucket_bytes = kBucketBytes;
  s.lr = [](int t) { return t < 6 ? 0.05f : 0.02f; };
  s.steps = 14;
  const auto uninterrupted = run(s);

  std::vector<RankResult> resumed(s.world);
  run_ranks(s.world, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(kSizes);
    StateDict saved;
    {
      DistributedOptimizer d(comm, make_optimizer(s.opt), toy.views(), options_for(s, me));
      run_steps(s, d, toy, me, 0, 8, nullptr);
      saved = d.export_state();
    }
    Toy restarted(kSizes);
    restarted.value = toy.value;  // what the model checkpoint would restore
    DistributedOptimizer d(comm, make_optimizer(s.opt), restarted.views(), options_for(s, me));
    d.import_state(saved);
    EXPECT_EQ(d.steps(), 8u);
    run_steps(s, d, restarted, me, 8, s.steps, nullptr);
    resumed[me].values = restarted.flat();
    resumed[me].state = d.export_state();
  });
  for (int r = 0; r < s.world; ++r) {
    EXPECT_TRUE(same_bits(resumed[r].values, uninterrupted[r].values)) << c.label << " rank " << r;
    EXPECT_EQ(resumed[r].state.buffers, uninterrupted[r].state.buffers) << c.label;
    EXPECT_EQ(resumed[r].state.scalars, uninterrupted[r].state.scalars) << c.label;
  }
}

const ResumeCase kResume[] = {
    {"adam_qsgd_scatter_ef_warmup",
     {.name = "adam"},
     {.codec = "qsgd",
      .strategy = Strategy::kScatterReduce,
      .error_feedback = true,
      .warmup_steps = 3}},
    {"signum_majority", {.name = "signum", .momentum = 0.9f}, {.codec = "sign"}},
    {"sgd_nesterov_topk_allgather_ef_small",
     {.name = "sgd", .momentum = 0.9f, .nesterov = true},
     {.codec = "topk:ratio=0.05",
      .strategy = Strategy::kAllgather,
      .error_feedback = true,
      .min_compress_bytes = 2000}},
};

INSTANTIATE_TEST_SUITE_P(Configs, Resume, ::testing::ValuesIn(kResume),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(DistributedOptimizer, ImportRejectsAnotherRankWorldOrConfiguration) {
  StateDict world_one;
  run_ranks(1, [&](Communicator& comm) {
    Toy toy(kSizes);
    DistributedOptimizer d(comm, make_optimizer({}), toy.views(),
                           {.codec = "qsgd", .error_feedback = true, .bucket_bytes = kBucketBytes});
    world_one = d.export_state();
  });
  std::vector<StateDict> saved(2);
  run_ranks(2, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(kSizes);
    DistributedOptimizerOptions o{
        .codec = "qsgd", .error_feedback = true, .bucket_bytes = kBucketBytes};
    {
      DistributedOptimizer d(comm, make_optimizer({}), toy.views(), o);
      RunSpec s;
      run_steps(s, d, toy, me, 0, 2, nullptr);
      saved[me] = d.export_state();
    }
    comm.barrier();  // both ranks' states are saved
    auto message = [&](const StateDict& state, DistributedOptimizerOptions opts) -> std::string {
      DistributedOptimizer d(comm, make_optimizer({}), toy.views(), opts);
      try {
        d.import_state(state);
      } catch (const InvalidArgument& e) {
        return e.what();
      }
      return "";
    };
    EXPECT_THAT(message(saved[1 - me], o), HasSubstr("error memories are per rank"));
    EXPECT_THAT(message(world_one, o), HasSubstr("1 ranks, this one has 2"));
    DistributedOptimizerOptions no_ef = o;
    no_ef.error_feedback = false;
    EXPECT_THAT(message(saved[me], no_ef), HasSubstr("exchange/ef_worker/0"));
    DistributedOptimizerOptions other_buckets = o;
    other_buckets.bucket_bytes = 1 << 20;
    EXPECT_THAT(message(saved[me], other_buckets), HasSubstr("bucket"));
    StateDict adam = saved[me];
    adam.buffers["optimizer/adam/m/p0"] = std::vector<float>(1000);
    EXPECT_THAT(message(adam, o), HasSubstr("adam/m/p0"));
    EXPECT_EQ(message(saved[me], o), "");
    // Keys outside optimizer/ and exchange/ (the model's, say) are left to their owner.
    StateDict with_model = saved[me];
    with_model.buffers["model/p0"] = std::vector<float>(3);
    EXPECT_EQ(message(with_model, o), "");
  });
}

// ---- NaN / Inf ----

// Step 2: rank 1 has a NaN in p2, rank 2 an Inf in p1 (both in bucket 2, after buckets 0 and 1
// were exchanged and their error memories changed).
void poison(Toy& toy, int rank) {
  if (rank == 1) toy.grad[2][5] = std::numeric_limits<float>::quiet_NaN();
  if (rank == 2) toy.grad[1][3] = -std::numeric_limits<float>::infinity();
}

void nan_run(NanPolicy policy, const std::string& codec = "qsgd") {
  const int world = 3;
  run_ranks(world, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(kSizes);
    DistributedOptimizer d(
        comm, make_optimizer({.name = "sgd", .momentum = 0.9f}), toy.views(),
        {.codec = codec,
         .strategy = codec == "none" ? Strategy::kPlain : Strategy::kScatterReduce,
         .error_feedback = codec != "none",
         .bucket_bytes = kBucketBytes,
         .nan_policy = policy});
    RunSpec s;
    run_steps(s, d, toy, me, 0, 2, nullptr);
    const std::vector<float> before = toy.flat();
    const StateDict state_before = d.export_state();

    d.begin_step(0.05f);
    for (size_t i = toy.value.size(); i-- > 0;) {
      fill_grad(toy, i, me, 2, 1.0f);
      if (i == 1) poison(toy, me);
      d.gradient_ready(i);
    }
    std::string message;
    if (policy == NanPolicy::kError) {
      try {
        d.step(0.05f);
        ADD_FAILURE() << "rank " << me << ": no error";
      } catch (const InvalidArgument& e) {
        message = e.what();
      }
      EXPECT_EQ(d.steps(), 2u);
    } else {
      const StepStats st = d.step(0.05f);
      EXPECT_TRUE(st.skipped);
      message = st.skip_reason;
      EXPECT_EQ(d.steps(), 3u);
      EXPECT_FALSE(st.buckets[3].exchanged);  // nothing after the flagged bucket moved
      EXPECT_TRUE(st.buckets[1].exchanged);
    }
    // Every rank names both culprits.
    EXPECT_THAT(message, HasSubstr("parameter 'p2' at element 5 on rank 1")) << "rank " << me;
    EXPECT_THAT(message, HasSubstr("parameter 'p1' at element 3 on rank 2")) << "rank " << me;
    // Nothing changed: parameters, optimizer state, error memories (restored).
    EXPECT_TRUE(same_bits(toy.flat(), before));
    const StateDict state_after = d.export_state();
    EXPECT_EQ(state_after.buffers, state_before.buffers);
    // And the run goes on, every rank in step.
    std::vector<StepStats> stats;
    run_steps(s, d, toy, me, 3, 6, &stats);
    for (const StepStats& st : stats) EXPECT_FALSE(st.skipped);
    std::vector<float> mine = toy.flat(), rank0 = mine;
    comm.broadcast(std::as_writable_bytes(std::span(rank0)), 0);
    EXPECT_TRUE(same_bits(mine, rank0)) << "rank " << me;
    EXPECT_FALSE(same_bits(mine, before));
  });
}

TEST(NanPolicy, ErrorThrowsOnEveryRankNamingTheParameter) { nan_run(NanPolicy::kError); }

TEST(NanPolicy, SkipStepSkipsOnEveryRank) { nan_run(NanPolicy::kSkipStep); }

// The plain fp32 sum exchanges the flags only after a non-finite sum: the same verdicts.
TEST(NanPolicy, PlainSumNamesTheRankToo) {
  nan_run(NanPolicy::kError, "none");
  nan_run(NanPolicy::kSkipStep, "none");
}

// Finite gradients whose sum over ranks overflows: every rank sees the same Inf aggregate.
TEST(NanPolicy, OverflowingAggregateIsCaughtEverywhere) {
  for (NanPolicy policy : {NanPolicy::kError, NanPolicy::kSkipStep}) {
    run_ranks(2, [&](Communicator& comm) {
      std::vector<float> x = {1.0f, 2.0f}, g = {3e38f, 1.0f};
      DistributedOptimizer d(comm, make_optimizer({}), {{"w", x, g}}, {.nan_policy = policy});
      if (policy == NanPolicy::kError) {
        try {
          d.step(1.0f);
          ADD_FAILURE() << "no error";
        } catch (const InvalidArgument& e) {
          EXPECT_THAT(e.what(), HasSubstr("parameter 'w' at element 0"));
          EXPECT_THAT(e.what(), HasSubstr("overflowed"));
        }
      } else {
        const StepStats st = d.step(1.0f);
        EXPECT_TRUE(st.skipped);
        EXPECT_THAT(st.skip_reason, HasSubstr("overflowed"));
      }
      EXPECT_EQ(x, (std::vector<float>{1.0f, 2.0f}));
    });
  }
  EXPECT_EQ(parse_nan_policy("skip-step"), NanPolicy::kSkipStep);
  EXPECT_EQ(nan_policy_name(NanPolicy::kError), "error");
  try {
    parse_nan_policy("ignore");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("error, skip-step"));
  }
}

// A finite gradient whose contribution lr * g overflows is caught too, and named as such.
// Codec `none` looks for the culprit only once the sum is not finite, by recomputing the
// contributions; the report must be the same.
TEST(NanPolicy, OverflowingContributionIsNamed) {
  for (const char* codec : {"qsgd", "none"}) {
    run_ranks(2, [&](Communicator& comm) {
      std::vector<float> x = {1.0f, 2.0f}, g = {1.0f, comm.rank() == 1 ? 3e38f : 1.0f};
      DistributedOptimizer d(comm, make_optimizer({}), {{"w", x, g}}, {.codec = codec});
      try {
        d.step(1e3f);
        ADD_FAILURE() << codec << ": no error";
      } catch (const InvalidArgument& e) {
        EXPECT_THAT(e.what(), HasSubstr("parameter 'w' element 1 on rank 1")) << codec;
        EXPECT_THAT(e.what(), HasSubstr("learning rate too large")) << codec;
      }
    });
  }
}

// ---- Failures ----

// Ranks that disagree on the codec: decoding a peer's payload fails on the exchange thread; the
// communicator is aborted (no rank hangs) and step() rethrows; the object is unusable after.
TEST(DistributedOptimizer, ExchangeFailureIsRethrownByStep) {
  run_ranks(2, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(kSizes);
    DistributedOptimizer d(comm, make_optimizer({}), toy.views(),
                           {.codec = me == 0 ? "qsgd" : "int8",
                            .strategy = Strategy::kAllgather,
                            .bucket_bytes = kBucketBytes});
    for (size_t i = 0; i < toy.value.size(); ++i) fill_grad(toy, i, me, 0, 1.0f);
    EXPECT_THROW(d.step(0.1f), Error);
    try {
      d.step(0.1f);
      ADD_FAILURE() << "usable after a failed exchange";
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(), HasSubstr("unusable after a failed exchange"));
    }
  });
}

// A rank that drops its optimizer in the middle of a step aborts the communicator, so its peer
// gets CommError at once instead of waiting for the timeout.
TEST(DistributedOptimizer, DestroyedMidStepAbortsPeers) {
  const auto start = std::chrono::steady_clock::now();
  run_ranks(2, [&](Communicator& comm) {
    const int me = comm.rank();
    Toy toy(kSizes);
    DistributedOptimizer d(comm, make_optimizer({}), toy.views(),
                           {.codec = "qsgd", .bucket_bytes = kBucketBytes});
    if (me == 1) {
      d.begin_step(0.1f);
      d.gradient_ready(4);  // bucket 0 only; then the rank gives up
      return;
    }
    EXPECT_THROW(d.step(0.1f), CommError);
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));  // < timeout
}

TEST(DistributedOptimizer, BadOptionsAndCallsAreClearErrors) {
  run_ranks(1, [](Communicator& comm) {
    std::vector<float> x(4), g(4), short_g(3);
    auto message = [&](DistributedOptimizerOptions o, std::vector<ParamView> params,
                       std::unique_ptr<Optimizer> opt = make_optimizer({})) -> std::string {
      try {
        DistributedOptimizer d(comm, std::move(opt), std::move(params), o);
      } catch (const InvalidArgument& e) {
        return e.what();
      }
      return "";
    };
    const std::vector<ParamView> one = {{"w", x, g}};
    EXPECT_THAT(message({.codec = "qsgd", .strategy = Strategy::kMajority}, one),
                HasSubstr("strategy 'majority' needs a majority-vote codec"));
    EXPECT_THAT(message({.codec = "qsgd", .strategy = Strategy::kPlain}, one),
                HasSubstr("needs codec 'none'"));
    EXPECT_THAT(message({.codec = "sign", .strategy = Strategy::kScatterReduce}, one),
                HasSubstr("majority vote"));
    EXPECT_THAT(message({.bucket_bytes = 0}, one), HasSubstr("bucket_bytes must be > 0"));
    EXPECT_THAT(message({.codec = "sign", .error_feedback = true}, one),
                HasSubstr("sign:scale=l1"));
    EXPECT_THAT(message({.codec = "qsgdx"}, one), HasSubstr("qsgdx"));
    EXPECT_THAT(message({}, {{"w", x, short_g}}), HasSubstr("'w' has 4 values but 3"));
    EXPECT_THAT(message({}, {{"w", x, g}, {"w", x, g}}), HasSubstr("appears twice"));
    EXPECT_THAT(message({}, one, nullptr), HasSubstr("no optimizer"));
    EXPECT_EQ(message({.codec = "sign:scale=l1", .error_feedback = true}, one), "");

    DistributedOptimizer d(comm, make_optimizer({}), one, {});
    EXPECT_THROW(d.step(-0.1f), InvalidArgument);
    EXPECT_THROW(d.step(std::numeric_limits<float>::quiet_NaN()), InvalidArgument);
    EXPECT_THROW(d.gradient_ready(1), InvalidArgument);
    d.begin_step(0.1f);
    EXPECT_THROW(d.begin_step(0.1f), InvalidArgument);
    EXPECT_THROW(d.export_state(), InvalidArgument);  // mid-step
    d.gradient_ready(0);
    EXPECT_THROW(d.gradient_ready(0), InvalidArgument);
    EXPECT_THROW(d.step(0.2f), InvalidArgument);  // begin_step said 0.1
    EXPECT_FALSE(d.step(0.1f).skipped);
    EXPECT_EQ(d.steps(), 1u);
  });
}

}  // namespace
}  // namespace qgrad
