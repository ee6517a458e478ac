#include "core/codecs/sign.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

using namespace qgrad::testing;

bool bit(std::span<const std::byte> body, size_t i) {
  return (std::to_integer<unsigned>(body[i / 8]) >> (i % 8)) & 1;
}

TEST(Sign, PlainBodyIsOneBitPerElementLittleEndian) {
  const auto codec = make_codec("sign");
  for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 4097, 100003}) {
    const auto v = normal_vector(n, 17 + static_cast<uint32_t>(n));
    const auto p = codec->encode(v, RngKey{});
    ASSERT_EQ(p.size(), kHeaderBytes + ceil_div(n, 8)) << n;
    const auto body = std::span<const std::byte>(p).subspan(kHeaderBytes);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(bit(body, i), v[i] < 0) << n << " " << i;
    for (size_t i = n; i < 8 * body.size(); ++i) ASSERT_FALSE(bit(body, i)) << "padding " << i;
  }
}

TEST(Sign, BitOrderAndSignOfZero) {
  const auto codec = make_codec("sign");
  const std::vector<float> v = {-1, 2, -3, 0, -0.0f, 5, 6, -7, 8, -9};
  const auto p = codec->encode(v, RngKey{});
  ASSERT_EQ(p.size(), kHeaderBytes + 2);
  EXPECT_EQ(std::to_integer<int>(p[kHeaderBytes]), 0x85);      // elements 0, 2, 7
  EXPECT_EQ(std::to_integer<int>(p[kHeaderBytes + 1]), 0x02);  // element 9
  std::vector<float> out(v.size(), 10.0f);
  codec->decode_add(p, out, 0.5f);
  const std::vector<float> want = {9.5f,  10.5f, 9.5f, 10.5f, 10.5f,
                                   10.5f, 10.5f, 9.5f, 10.5f, 9.5f};
  EXPECT_EQ(out, want);  // sgn(0) = sgn(-0) = +1
}

TEST(Sign, DecodeAccumulatesWeightedSigns) {
  for (const char* spec : {"sign", "sign:scale=l1,bucket=64"}) {
    const auto codec = make_codec(spec);
    const size_t n = 1000;
    const auto v = normal_vector(n, 3);
    const auto p = codec->encode(v, RngKey{});
    const auto once = decode(*codec, p, n);
    std::vector<float> out = normal_vector(n, 4), start = out;
    codec->decode_add(p, out, -0.75f);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], start[i] + -0.75f * once[i]) << spec << i;
  }
}

TEST(Sign, PropertiesAndCompressionRatio) {
  const auto plain = make_codec("sign");
  const auto l1 = make_codec("sign:scale=l1");
  EXPECT_EQ(plain->aggregation(), Aggregation::kMajorityVote);
  EXPECT_EQ(l1->aggregation(), Aggregation::kMean);
  EXPECT_FALSE(plain->unbiased());
  EXPECT_FALSE(l1->unbiased());
  const size_t n = 25'000'000;
  EXPECT_GE(4.0 * n / plain->max_encoded_bytes(n), 31.0);
  EXPECT_EQ(plain->max_encoded_bytes(n), kHeaderBytes + n / 8);
  EXPECT_EQ(l1->max_encoded_bytes(n), kHeaderBytes + 4 * ceil_div(n, 4096) + n / 8);
  EXPECT_GE(4.0 * n / l1->max_encoded_bytes(n), 31.0);
}

TEST(Sign, ScaledSignMatchesPapersFact12) {
  const auto codec = make_codec("sign:scale=l1");
  const std::vector<float> x = {1, -2, 3, -4};
  const auto p = codec->encode(x, RngKey{});
  EXPECT_EQ(p.size(), kHeaderBytes + 4 + 1);
  const auto c = decode(*codec, p, 4);
  EXPECT_EQ(c, (std::vector<float>{2.5f, -2.5f, 2.5f, -2.5f}));
  double err = 0;
  for (size_t i = 0; i < 4; ++i) err += (c[i] - x[i]) * (c[i] - x[i]);
  EXPECT_DOUBLE_EQ(err, 5.0);  // (1 - delta) ||x||^2 with delta = 100/120
  // With a zero: one bit has no third value, so sgn(0) = +1 (documented deviation from
  // torch.sign, which would give (1.5, -1.5, 1.5, 0)).
  const std::vector<float> z = {1, -2, 3, 0};
  EXPECT_EQ(decode(*codec, codec->encode(z, RngKey{}), 4),
            (std::vector<float>{1.5f, -1.5f, 1.5f, 1.5f}));
}

TEST(Sign, ScaledSignUsesEachBucketsOwnL1Mean) {
  for (size_t bucket : {4, 7, 64, 1000}) {
    const auto codec = make_codec("sign:scale=l1,bucket=" + std::to_string(bucket));
    const size_t n = 2 * bucket + bucket / 2 + 1;  // a short tail bucket
    const auto v = normal_vector(n, 5 + static_cast<uint32_t>(bucket));
    const auto p = codec->encode(v, RngKey{});
    const size_t nb = ceil_div(n, bucket);
    ASSERT_EQ(p.size(), kHeaderBytes + 4 * nb + ceil_div(n, 8));
    const auto out = decode(*codec, p, n);
    for (size_t j = 0; j < nb; ++j) {
      const size_t lo = j * bucket, hi = std::min(n, lo + bucket);
      double l1 = 0;
      for (size_t i = lo; i < hi; ++i) l1 += std::fabs(v[i]);
      const double want = l1 / static_cast<double>(hi - lo);
      const float s = load_f32(p.data() + kHeaderBytes + 4 * j);
      EXPECT_NEAR(s, want, 1e-6 * want) << bucket << " bucket " << j;
      for (size_t i = lo; i < hi; ++i) ASSERT_EQ(out[i], v[i] < 0 ? -s : s) << i;
    }
  }
}

// EF-signSGD with a test-local error-feedback loop (docs/algorithms.md, "EF-signSGD and error
// feedback").
TEST(Sign, ErrorFeedbackTraceMatchesPapersFact13) {
  const auto codec = make_codec("sign:scale=l1");
  const std::vector<float> g = {1, -2, 3, -4};
  std::vector<float> e(4, 0.0f), p(4), delta_sum(4, 0.0f);
  const std::vector<std::vector<float>> want_delta = {{2.5f, -2.5f, 2.5f, -2.5f},
                                                      {-2.75f, -2.75f, 2.75f, -2.75f},
                                                      {3.625f, -3.625f, 3.625f, -3.625f}};
  const std::vector<std::vector<float>> want_e = {{-1.5f, 0.5f, 0.5f, -1.5f},
                                                  {2.25f, 1.25f, 0.75f, -2.75f}};
  const int steps = 3;
  for (int t = 0; t < steps; ++t) {
    for (size_t i = 0; i < 4; ++i) p[i] = g[i] + e[i];
    if (t == 1) {
      EXPECT_EQ(p, (std::vector<float>{-0.5f, -1.5f, 3.5f, -5.5f}));
    }
    const auto payload = codec->encode(p, RngKey{.step = static_cast<uint64_t>(t)});
    const auto delta = decode(*codec, payload, 4);
    EXPECT_EQ(delta, want_delta[t]) << "step " << t;
    codec->residual(p, payload, e);
    if (t < 2) {
      EXPECT_EQ(e, want_e[t]) << "step " << t;
    }
    for (size_t i = 0; i < 4; ++i) delta_sum[i] += delta[i];
  }
  // Nothing is lost: sum_t Delta_t + e_T = T * g (exact here: every value is dyadic).
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(delta_sum[i] + e[i], steps * g[i]) << i;
}

TEST(Sign, ErrorFeedbackLosesNothingOnRandomGradients) {
  const auto codec = make_codec("sign:scale=l1,bucket=16");
  const size_t n = 100;
  std::vector<double> sent(n, 0.0), wanted(n, 0.0);
  std::vector<float> e(n, 0.0f), p(n);
  for (int t = 0; t < 50; ++t) {
    const auto g = normal_vector(n, 100 + t);
    for (size_t i = 0; i < n; ++i) {
      p[i] = g[i] + e[i];
      wanted[i] += g[i];
    }
    const auto payload = codec->encode(p, RngKey{});
    const auto delta = decode(*codec, payload, n);
    codec->residual(p, payload, e);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(e[i], p[i] - delta[i]);
      sent[i] += delta[i];
    }
  }
  // Only float rounding of p = g + e and e = p - Delta separates the two sides.
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(sent[i] + e[i], wanted[i], 1e-4) << i;
}

TEST(Sign, EmptyInput) {
  for (const char* spec : {"sign", "sign:scale=l1"}) {
    const auto codec = make_codec(spec);
    const auto p = codec->encode(std::span<const float>(), RngKey{});
    EXPECT_EQ(p.size(), kHeaderBytes) << spec;
    std::vector<float> out;
    codec->decode_add(p, out, 1.0f);
  }
}

TEST(Sign, NonFiniteInputNamesTheIndex) {
  // bucket=100000 takes the two-pass path (buckets longer than a parallel task).
  for (const char* spec : {"sign", "sign:scale=l1", "sign:scale=l1,bucket=100000"}) {
    const auto codec = make_codec(spec);
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      for (size_t at : {0, 5, 70000, 149999}) {
        auto v = normal_vector(150000, 9);
        v[at] = bad;
        if (at + 3 < v.size()) v[at + 3] = bad;  // the first one is named
        try {
          codec->encode(v, RngKey{});
          FAIL() << spec << " accepted a non-finite value at " << at;
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("element " + std::to_string(at) + " "),
                    std::string::npos)
              << e.what();
        }
      }
    }
  }
}

TEST(Sign, HugeFiniteValuesGiveFiniteScales) {
  const auto codec = make_codec("sign:scale=l1,bucket=8");
  const std::vector<float> v(8, 3e38f);  // the float l1 sum overflows
  const auto out = decode(*codec, codec->encode(v, RngKey{}), 8);
  for (float x : out) EXPECT_EQ(x, 3e38f);
}

TEST(Sign, SameBytesForAnyThreadCount) {
  for (const char* spec :
       {"sign", "sign:scale=l1", "sign:scale=l1,bucket=7", "sign:scale=l1,bucket=100000"}) {
    const auto codec = make_codec(spec);
    const size_t n = 300001;
    const auto v = normal_vector(n, 21);
    set_num_threads(1);
    const auto want = codec->encode(v, RngKey{});
    const auto want_out = decode(*codec, want, n);
    for_each_thread_count([&](int t) {
      EXPECT_EQ(codec->encode(v, RngKey{}), want) << spec << " threads " << t;
      EXPECT_EQ(decode(*codec, want, n), want_out) << spec << " threads " << t;
    });
  }
}

TEST(Sign, SameBytesOnEverySimdTarget) {
  for (const char* spec : {"sign", "sign:scale=l1,bucket=7"}) {
    const auto codec = make_codec(spec);
    const size_t n = 10007;
    auto v = normal_vector(n, 8);
    v[3] = 0.0f;
    v[100] = -0.0f;
    std::vector<std::byte> want;
    std::vector<float> want_out;
    for_each_simd_target([&](const char* target) {
      const auto p = codec->encode(v, RngKey{});
      std::vector<float> out = normal_vector(n, 2);
      codec->decode_add(p, out, 0.3f);
      if (want.empty()) {
        want = p;
        want_out = out;
      }
      EXPECT_EQ(p, want) << spec << " " << target;
      EXPECT_EQ(out, want_out) << spec << " " << target;
    });
  }
}

TEST(Sign, CorruptBodiesAreRejectedAndLeaveOutputUntouched) {
  const size_t n = 10;
  const auto v = normal_vector(n, 1);
  const std::vector<float> start(n, 1.0f);
  const auto expect_corrupt = [&](const Codec& c, const std::vector<std::byte>& p) {
    std::vector<float> out = start;
    EXPECT_THROW(c.decode_add(p, out, 1.0f), CorruptPayload);
    EXPECT_EQ(out, start);
  };
  const auto plain = make_codec("sign");
  const auto p = plain->encode(v, RngKey{});
  expect_corrupt(*plain, tampered(p, [](std::span<std::byte> b) { b[1] |= std::byte{0x80}; }));
  expect_corrupt(*plain, std::vector<std::byte>(p.begin(), p.end() - 1));  // truncated
  auto flipped = p;
  flipped.back() ^= std::byte{1};  // body CRC
  expect_corrupt(*plain, flipped);
  // A body one byte longer, with valid CRCs.
  auto longer = p;
  longer.push_back(std::byte{0});
  reseal(longer);
  expect_corrupt(*plain, longer);

  const auto l1 = make_codec("sign:scale=l1,bucket=4");
  const auto q = l1->encode(v, RngKey{});
  for (float bad : {std::nanf(""), INFINITY, -1.0f}) {
    expect_corrupt(*l1,
                   tampered(q, [bad](std::span<std::byte> b) { store_f32(b.data() + 4, bad); }));
  }
  expect_corrupt(*plain, q);  // scaled payload to a plain decoder
  expect_corrupt(*l1, p);
}

// ---- majority vote ----

std::vector<std::byte> signs_payload(const Codec& c, const std::vector<int>& s) {
  std::vector<float> v(s.begin(), s.end());
  return c.encode(v, RngKey{});
}

std::vector<float> vote(const std::vector<std::vector<std::byte>>& ps, size_t n) {
  std::vector<std::span<const std::byte>> spans(ps.begin(), ps.end());
  std::vector<float> out(n, 123.0f);
  majority_vote(spans, out);
  return out;
}

TEST(MajorityVote, PapersFact9) {
  const auto c = make_codec("sign");
  const auto pos = signs_payload(*c, {1, -1, 0, 1}), neg = signs_payload(*c, {-1, 1, -1, -1});
  EXPECT_EQ(vote({pos, pos, neg}, 4), (std::vector<float>{1, -1, 1, 1}));
  EXPECT_EQ(vote({pos, pos, neg, neg}, 4), (std::vector<float>{1, 1, 1, 1}));  // ties -> +1
  EXPECT_EQ(vote({pos, neg, neg, neg}, 4), (std::vector<float>{-1, 1, -1, -1}));
  EXPECT_EQ(vote({neg}, 4), (std::vector<float>{-1, 1, -1, -1}));
}

TEST(MajorityVote, MatchesNaiveCountForRandomWorkers) {
  const ThreadCountGuard guard;
  const auto c = make_codec("sign");
  std::mt19937 rng(77);
  for (size_t n : {1, 63, 64, 1000, 70001}) {
    for (size_t m = 1; m <= 9; ++m) {
      std::vector<std::vector<float>> grads;
      std::vector<std::vector<std::byte>> ps;
      for (size_t w = 0; w < m; ++w) {
        grads.push_back(normal_vector(n, static_cast<uint32_t>(rng())));
        // Some exact zeros, which vote +.
        for (size_t i = w; i < n; i += 11) grads.back()[i] = 0.0f;
        ps.push_back(c->encode(grads.back(), RngKey{}));
      }
      std::vector<float> want(n);
      for (size_t i = 0; i < n; ++i) {
        int plus = 0, minus = 0;
        for (size_t w = 0; w < m; ++w) (grads[w][i] < 0 ? minus : plus)++;
        want[i] = plus >= minus ? 1.0f : -1.0f;
      }
      set_num_threads(static_cast<int>(1 + m % 4));
      ASSERT_EQ(vote(ps, n), want) << "n " << n << " M " << m;
      // The re-encoded vote is the plain sign payload of the +-1 vector.
      std::vector<std::span<const std::byte>> spans(ps.begin(), ps.end());
      const auto vp = majority_vote_payload(spans);
      ASSERT_EQ(vp, c->encode(want, RngKey{})) << "n " << n << " M " << m;
      EXPECT_EQ(decode(*c, vp, n), want);
    }
  }
}

TEST(MajorityVote, RejectsBadInputs) {
  const auto c = make_codec("sign");
  const auto a = c->encode(normal_vector(10, 1), RngKey{});
  const auto b = c->encode(normal_vector(10, 2), RngKey{});
  std::vector<float> out(10, 7.0f);
  const auto check = [&](std::vector<std::vector<std::byte>> ps) {
    std::vector<std::span<const std::byte>> spans(ps.begin(), ps.end());
    EXPECT_THROW(majority_vote(spans, out), CorruptPayload);
    EXPECT_THROW(majority_vote_payload(spans), CorruptPayload);
    EXPECT_EQ(out, std::vector<float>(10, 7.0f));
  };
  check({a, make_codec("sign:scale=l1")->encode(normal_vector(10, 3), RngKey{})});
  check({a, make_codec("sign:bucket=8")->encode(normal_vector(10, 3), RngKey{})});
  check({a, c->encode(normal_vector(11, 3), RngKey{})});
  check({a, make_codec("terngrad")->encode(normal_vector(10, 3), RngKey{})});
  check({a, tampered(b, [](std::span<std::byte> body) { body[1] |= std::byte{0x40}; })});
  check({a, std::vector<std::byte>(b.begin(), b.end() - 1)});
  {
    const std::vector<std::span<const std::byte>> spans = {a, b};
    std::vector<float> wrong(9);
    EXPECT_THROW(majority_vote(spans, wrong), CorruptPayload);
  }
  std::vector<std::span<const std::byte>> none;
  EXPECT_THROW(majority_vote(none, out), InvalidArgument);
}

}  // namespace
}  // namespace qgrad
