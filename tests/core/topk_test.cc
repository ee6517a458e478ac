#include "core/codecs/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
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

// The reference selection: sort by |v| descending, then index ascending; keep k; sort indices.
std::vector<uint32_t> reference_topk(const std::vector<float>& v, size_t k) {
  std::vector<uint32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](uint32_t a, uint32_t b) { return std::fabs(v[a]) > std::fabs(v[b]); });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<uint32_t> payload_indices(const std::vector<std::byte>& p, size_t k) {
  std::vector<uint32_t> idx(k);
  for (size_t t = 0; t < k; ++t) idx[t] = load_u32(p.data() + kHeaderBytes + 4 * t);
  return idx;
}

TEST(TopK, CountFormula) {
  EXPECT_EQ(topk_count(0, 0.01f), 0u);
  EXPECT_EQ(topk_count(1, 0.01f), 1u);
  EXPECT_EQ(topk_count(100, 0.01f), 1u);
  EXPECT_EQ(topk_count(101, 0.01f), 2u);
  EXPECT_EQ(topk_count(1000, 0.01f), 10u);
  EXPECT_EQ(topk_count(7, 0.5f), 4u);
  EXPECT_EQ(topk_count(10, 1.0f), 10u);
  EXPECT_EQ(topk_count(10, 1e-9f), 1u);
  EXPECT_FALSE(make_codec("topk")->unbiased());
  EXPECT_EQ(make_codec("topk")->aggregation(), Aggregation::kMean);
}

TEST(TopK, PicksExactlyTheTopKAndSizesAreExact) {
  for (size_t n : {0, 1, 2, 7, 64, 10007, 100003}) {
    for (const char* ratio : {"0.01", "0.3", "1"}) {
      const auto codec = make_codec(std::string("topk:ratio=") + ratio);
      const auto v = normal_vector(n, 3 + static_cast<uint32_t>(n));
      const size_t k = topk_count(n, std::stof(ratio));
      const auto p = codec->encode(v, RngKey{});
      ASSERT_EQ(p.size(), kHeaderBytes + 8 * k) << n << " " << ratio;
      const auto idx = payload_indices(p, k);
      ASSERT_EQ(idx, reference_topk(v, k)) << n << " " << ratio;
      for (size_t t = 0; t < k; ++t)
        ASSERT_EQ(load_f32(p.data() + kHeaderBytes + 4 * k + 4 * t), v[idx[t]]);
      const auto out = decode(*codec, p, n);
      std::vector<float> want(n, 0.0f);
      for (uint32_t i : idx) want[i] = v[i];
      ASSERT_EQ(out, want);
    }
  }
}

TEST(TopK, TiesGoToTheLowerIndex) {
  const auto codec = make_codec("topk:ratio=0.3");
  const std::vector<float> v = {1, -3, 3, 2, -3, 0.5f};  // k = ceil(1.8) = 2
  EXPECT_EQ(payload_indices(codec->encode(v, RngKey{}), 2), (std::vector<uint32_t>{1, 2}));
  const std::vector<float> zeros(10, 0.0f);  // k = ceil(0.3f * 10) = 4 (0.3f > 0.3)
  const auto pz = codec->encode(zeros, RngKey{});
  EXPECT_EQ(payload_indices(pz, 4), (std::vector<uint32_t>{0, 1, 2, 3}));
  const std::vector<float> signed_zeros = {0.0f, -0.0f, 0.0f, -1e-45f, 0.0f};  // k = 2
  EXPECT_EQ(payload_indices(codec->encode(signed_zeros, RngKey{}), 2),
            (std::vector<uint32_t>{0, 3}));
}

TEST(TopK, DecodeAddsWeightedValuesAtTheirIndices) {
  const auto codec = make_codec("topk:ratio=0.25");
  const std::vector<float> v = {0.1f, -5, 0.2f, 0.3f, 4, 0.0f, -0.4f, 0.5f};  // k = 2
  const auto p = codec->encode(v, RngKey{});
  std::vector<float> out(8, 1.0f);
  codec->decode_add(p, out, -0.5f);
  EXPECT_EQ(out, (std::vector<float>{1, 3.5f, 1, 1, -1, 1, 1, 1}));
}

TEST(TopK, ResidualIsTheInputWithTheKeptEntriesZeroed) {
  const auto codec = make_codec("topk:ratio=0.05");
  const auto v = normal_vector(5003, 8);
  const auto p = codec->encode(v, RngKey{});
  std::vector<float> r(v.size());
  codec->residual(v, p, r);
  const auto kept = reference_topk(v, topk_count(v.size(), 0.05f));
  std::vector<float> want = v;
  for (uint32_t i : kept) want[i] = 0.0f;
  EXPECT_EQ(r, want);
  // delta = k/n contraction: ||C(v) - v||^2 <= (1 - k/n) ||v||^2.
  double err = 0, norm = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    err += double{r[i]} * r[i];
    norm += double{v[i]} * v[i];
  }
  EXPECT_LE(err, (1.0 - static_cast<double>(kept.size()) / v.size()) * norm);
}

TEST(TopK, HeavyTiesAcrossChunksAreThreadInvariant) {
  // Longer than two histogram tasks; few distinct magnitudes, so the threshold's ties span
  // many placement tasks.
  const size_t n = (size_t{1} << 21) + 12345;
  std::mt19937 rng(5);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(static_cast<int>(rng() % 7) - 3);
  const auto codec = make_codec("topk:ratio=0.2");
  const size_t k = topk_count(n, 0.2f);
  set_num_threads(1);
  const auto want = codec->encode(v, RngKey{});
  ASSERT_EQ(payload_indices(want, k), reference_topk(v, k));
  for_each_thread_count(
      [&](int t) { EXPECT_EQ(codec->encode(v, RngKey{}), want) << "threads " << t; });
}

TEST(TopK, NonFiniteInputNamesTheIndex) {
  const auto codec = make_codec("topk");
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    for (size_t at : {0, 4242, 1999999}) {
      auto v = normal_vector(2000000, 1);
      v[at] = bad;
      try {
        codec->encode(v, RngKey{});
        FAIL() << "accepted a non-finite value at " << at;
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("element " + std::to_string(at) + " "),
                  std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(TopK, CorruptBodiesAreRejectedAndLeaveOutputUntouched) {
  const auto codec = make_codec("topk:ratio=0.3");
  const size_t n = 10;  // k = 4: indices at 0, 4, 8, 12; values at 16..28
  const auto p = codec->encode(normal_vector(n, 2), RngKey{});
  const std::vector<float> start(n, 1.0f);
  const auto expect_corrupt = [&](const std::vector<std::byte>& q) {
    std::vector<float> out = start;
    EXPECT_THROW(codec->decode_add(q, out, 1.0f), CorruptPayload);
    EXPECT_EQ(out, start);
  };
  const auto set_index = [](size_t t, uint32_t i) {
    return [t, i](std::span<std::byte> b) { store_u32(b.data() + 4 * t, i); };
  };
  const uint32_t i0 = load_u32(p.data() + kHeaderBytes), i1 = load_u32(p.data() + kHeaderBytes + 4);
  expect_corrupt(tampered(p, set_index(2, 10)));            // out of range
  expect_corrupt(tampered(p, set_index(2, 0xFFFFFFFF)));    // far out of range
  expect_corrupt(tampered(p, set_index(1, i0)));            // repeated
  expect_corrupt(tampered(p, [&](std::span<std::byte> b) {  // decreasing
    store_u32(b.data(), i1);
    store_u32(b.data() + 4, i0);
  }));
  for (float bad : {std::nanf(""), INFINITY})
    expect_corrupt(tampered(p, [bad](std::span<std::byte> b) { store_f32(b.data() + 16, bad); }));
  expect_corrupt(std::vector<std::byte>(p.begin(), p.end() - 4));
  std::vector<float> out(n);
  EXPECT_THROW(make_codec("topk:ratio=0.5")->decode_add(p, out, 1.0f), CorruptPayload);
}

}  // namespace
}  // namespace qgrad
