#include <gtest/gtest.h>

#include "core/codec_registry.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/wire.h"

namespace qgrad {
namespace {

TEST(Philox, KnownAnswerVectors) {
  // Random123's kat_vectors for philox4x32 with 10 rounds: counter, key -> output.
  EXPECT_EQ(philox4x32({0, 0, 0, 0}, {0, 0}),
            (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, SimdFillMatchesScalarAtEveryOffset) {
  const RngKey key{.seed = 42, .step = 7, .rank = 3, .tensor = 5, .bucket = 9};
  for (uint64_t first : {0ull, 1ull, 2ull, 3ull, 5ull, 4096ull, (1ull << 34) - 5}) {
    for (size_t n : {0, 1, 3, 4, 17, 64, 257}) {
      std::vector<uint32_t> words(n);
      philox_fill(key, first, n, words.data());
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(words[i], philox_word(key, first + i)) << first << "+" << i;
    }
  }
}

TEST(Philox, RawFillMatchesScalar) {
  const RngKey key{.seed = 3, .step = 1, .rank = 0, .tensor = 2, .bucket = 1};
  for (uint64_t first : {0ull, 1ull, 3ull, 1000ull}) {
    std::vector<uint32_t> words(301);
    philox_fill_raw(key, first, words.size(), words.data());
    for (size_t i = 0; i < words.size(); ++i) ASSERT_EQ(words[i], philox_raw_word(key, first + i));
  }
}

TEST(Philox, ElementWordsAreCentredHalves) {
  const RngKey key{.seed = 9};
  const uint32_t raw = philox_raw_word(key, 5);
  EXPECT_EQ(philox_word(key, 10), ((raw & 0xFFFFu) << 16) | 0x8000u);
  EXPECT_EQ(philox_word(key, 11), ((raw >> 16) << 16) | 0x8000u);
  EXPECT_FLOAT_EQ(uniform_from_word(philox_word(key, 10)), ((raw & 0xFFFFu) + 0.5f) / 65536.0f);
}

TEST(Crc32c, KnownValue) {
  // The standard check value of CRC-32C: "123456789" -> 0xE3069283.
  const char* s = "123456789";
  EXPECT_EQ(crc32c({reinterpret_cast<const std::byte*>(s), 9}), 0xE3069283u);
}

TEST(Crc32c, HardwareAndPortablePathsAgreeAtEveryLength) {
  std::vector<std::byte> data(3 * 4096 * 2 + 77);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(philox_raw_word({.seed = 1}, i));
  for (size_t len = 0; len <= data.size(); len += (len < 64 ? 1 : 997)) {
    const std::span<const std::byte> s(data.data(), len);
    ASSERT_EQ(crc32c(s), crc32c_portable(s)) << len;
    ASSERT_EQ(crc32c(s, 0x12345678u), crc32c_portable(s, 0x12345678u)) << len;
  }
  // Chaining: the CRC of a whole equals the CRC of its second part seeded with the first's.
  const std::span<const std::byte> all(data);
  EXPECT_EQ(crc32c(all), crc32c(all.subspan(5000), crc32c(all.first(5000))));
}

}  // namespace
}  // namespace qgrad
