#include "core/elias.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace qgrad::elias {
namespace {

std::string bit_string(const BitWriter& w) {
  const std::vector<uint8_t> bytes = w.finish();
  std::string s;
  for (uint64_t i = 0; i < w.bit_count(); ++i) s += (bytes[i / 8] >> (7 - i % 8)) & 1 ? '1' : '0';
  return s;
}

std::span<const std::byte> as_bytes(const std::vector<uint8_t>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size()};
}

TEST(Elias, OmegaLengthsArePinned) {
  // The paper's Elias omega (recursive) lengths, not gamma's (docs/algorithms.md, "QSGD").
  const uint64_t k[] = {1, 2, 3, 4, 7, 8, 15, 16, 100};
  const int len[] = {1, 3, 3, 6, 6, 7, 7, 11, 13};
  for (size_t i = 0; i < std::size(k); ++i) {
    EXPECT_EQ(omega_length(k[i]), len[i]) << "k=" << k[i];
    BitWriter w;
    omega_put(w, k[i]);
    EXPECT_EQ(w.bit_count(), static_cast<uint64_t>(len[i])) << "k=" << k[i];
  }
}

TEST(Elias, OmegaCodewords) {
  const std::pair<uint64_t, const char*> cases[] = {
      {1, "0"},      {2, "100"},     {3, "110"},          {4, "101000"},
      {7, "101110"}, {8, "1110000"}, {16, "10100100000"}, {100, "1011011001000"}};
  for (const auto& [k, code] : cases) {
    BitWriter w;
    omega_put(w, k);
    EXPECT_EQ(bit_string(w), code) << "k=" << k;
  }
  BitWriter w;
  EXPECT_THROW(omega_put(w, 0), InvalidArgument);
}

TEST(Elias, LengthIsMonotoneInK) {
  int prev = 0;
  for (uint64_t k = 1; k < 70000; ++k) {
    const int len = omega_length(k);
    EXPECT_GE(len, prev) << k;
    prev = len;
  }
}

TEST(Elias, RandomSparseVectorsRoundTripLosslessly) {
  // A sparse integer vector as (gap, sign, value) triples, the shape of a QSGD bucket.
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 3000;
    std::vector<int64_t> v(n, 0);
    const double density = (rng() % 100) / 100.0;
    std::bernoulli_distribution nz(density);
    std::geometric_distribution<int64_t> mag(0.2);
    for (auto& x : v) {
      if (!nz(rng)) continue;
      x = 1 + mag(rng);
      if (rng() % 50 == 0) x = static_cast<int64_t>(rng() >> 14);  // up to 2^50
      if (rng() % 2) x = -x;
    }
    BitWriter w;
    uint64_t expected_bits = 0, nnz = 0;
    for (int64_t x : v) nnz += x != 0;
    omega_put(w, nnz + 1);
    expected_bits += omega_length(nnz + 1);
    size_t next = 0;
    for (size_t i = 0; i < n; ++i) {
      if (v[i] == 0) continue;
      omega_put(w, i + 1 - next);
      w.put(v[i] < 0, 1);
      omega_put(w, static_cast<uint64_t>(std::llabs(v[i])));
      expected_bits += omega_length(i + 1 - next) + 1 + omega_length(std::llabs(v[i]));
      next = i + 1;
    }
    ASSERT_EQ(w.bit_count(), expected_bits);
    const std::vector<uint8_t> bytes = w.finish();
    ASSERT_EQ(bytes.size(), (expected_bits + 7) / 8);

    BitReader r(as_bytes(bytes));
    std::vector<int64_t> back(n, 0);
    const uint64_t count = omega_get(r) - 1;
    ASSERT_EQ(count, nnz);
    size_t pos = 0;
    for (uint64_t j = 0; j < count; ++j) {
      pos += omega_get(r);
      const bool negative = r.get(1) != 0;
      const auto value = static_cast<int64_t>(omega_get(r));
      ASSERT_LE(pos, n);
      back[pos - 1] = negative ? -value : value;
    }
    EXPECT_EQ(r.position(), expected_bits);
    EXPECT_EQ(back, v) << "trial " << trial;
  }
}

TEST(Elias, AppendAtEveryAlignmentEqualsSequentialWrites) {
  std::mt19937_64 rng(3);
  for (int head = 0; head < 16; ++head) {
    BitWriter a, b, whole;
    a.put(rng(), head);
    for (int i = 0; i < 40; ++i) {
      const int len = static_cast<int>(rng() % 65);
      const uint64_t value = rng();
      b.put(value, len);
    }
    whole = a;
    whole.append(b);
    // The same bits written one by one.
    BitWriter ref = a;
    const std::string bits = bit_string(b);
    for (char c : bits) ref.put(c == '1', 1);
    EXPECT_EQ(bit_string(whole), bit_string(ref));
    EXPECT_EQ(whole.finish(), ref.finish());
  }
}

TEST(Elias, ReaderReturnsWhatWasWrittenAtAnyWidth) {
  std::mt19937_64 rng(5);
  std::vector<std::pair<uint64_t, int>> items;
  BitWriter w;
  for (int i = 0; i < 500; ++i) {
    const int len = static_cast<int>(rng() % 65);
    const uint64_t value = len == 0 ? 0 : rng() & (~uint64_t{0} >> (64 - len));
    w.put(value, len);
    items.emplace_back(value, len);
  }
  const auto bytes = w.finish();
  BitReader r(as_bytes(bytes));
  for (const auto& [value, len] : items) ASSERT_EQ(r.get(len), value);
  EXPECT_EQ(r.get(static_cast<int>(r.size_bits() - r.position())), 0u);  // zero padding
}

TEST(Elias, ReadsPastTheEndThrow) {
  const std::vector<uint8_t> bytes = {0xAB, 0xCD};
  BitReader r(as_bytes(bytes));
  EXPECT_EQ(r.get(12), 0xABCu);
  EXPECT_THROW(r.get(5), CorruptPayload);
  EXPECT_EQ(r.get(4), 0xDu);
  EXPECT_THROW(r.get(1), CorruptPayload);
  BitReader empty({});
  EXPECT_THROW(empty.get(1), CorruptPayload);
  EXPECT_EQ(empty.get(0), 0u);
}

TEST(Elias, TruncatedAndOverlongCodewordsThrow) {
  // A codeword cut short.
  BitWriter w;
  omega_put(w, 1000);
  auto bytes = w.finish();
  bytes.pop_back();
  BitReader r(as_bytes(bytes));
  EXPECT_THROW(omega_get(r), CorruptPayload);

  // omega(2^60) needs 73 bits: more than the decoder accepts.
  EXPECT_GT(omega_length(uint64_t{1} << 60), 64);
  BitWriter big;
  omega_put(big, uint64_t{1} << 60);
  const auto big_bytes = big.finish();
  BitReader rb(as_bytes(big_bytes));
  EXPECT_THROW(omega_get(rb), CorruptPayload);

  // The largest values whose codewords fit in 64 bits still decode.
  for (uint64_t k : {uint64_t{1} << 40, (uint64_t{1} << 50) + 12345}) {
    ASSERT_LE(omega_length(k), 64);
    BitWriter ok;
    omega_put(ok, k);
    const auto ok_bytes = ok.finish();
    BitReader ro(as_bytes(ok_bytes));
    EXPECT_EQ(omega_get(ro), k);
  }

  // All ones: every group says "more", so it is overlong or truncated, never a value.
  const std::vector<uint8_t> ones(64, 0xFF);
  BitReader r1(as_bytes(ones));
  EXPECT_THROW(omega_get(r1), CorruptPayload);
}

}  // namespace
}  // namespace qgrad::elias
