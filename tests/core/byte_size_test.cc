// The byte-size parser (core/byte_size.h): every unit, the 64-bit boundary, and what it refuses.
#include "core/byte_size.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "core/error.h"

namespace qgrad {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

std::string why(std::string_view text) {
  std::string reason;
  EXPECT_FALSE(try_parse_byte_size(text, &reason).has_value()) << text;
  return reason;
}

TEST(ByteSize, EveryUnit) {
  EXPECT_EQ(try_parse_byte_size("0"), 0u);
  EXPECT_EQ(try_parse_byte_size("65536"), 65536u);
  EXPECT_EQ(try_parse_byte_size("7B"), 7u);
  EXPECT_EQ(try_parse_byte_size("3K"), 3u << 10);
  EXPECT_EQ(try_parse_byte_size("3KiB"), 3u << 10);
  EXPECT_EQ(try_parse_byte_size("4M"), 4u << 20);
  EXPECT_EQ(try_parse_byte_size("4MiB"), 4u << 20);
  EXPECT_EQ(try_parse_byte_size("2G"), uint64_t{2} << 30);
  EXPECT_EQ(try_parse_byte_size("2GiB"), uint64_t{2} << 30);
  EXPECT_EQ(try_parse_byte_size("007KiB"), 7u << 10);
}

TEST(ByteSize, FractionsThatAreWholeBytes) {
  EXPECT_EQ(try_parse_byte_size("1.5KiB"), 1536u);
  EXPECT_EQ(try_parse_byte_size("0.25M"), 1u << 18);
  EXPECT_EQ(try_parse_byte_size("2.0"), 2u);
  EXPECT_EQ(try_parse_byte_size("1.50KiB"), 1536u);
  EXPECT_EQ(why("0.5"), "not a whole number of bytes");
  EXPECT_EQ(why("1.1KiB"), "not a whole number of bytes");
  EXPECT_EQ(why("1."), "no digits after '.'");
  EXPECT_EQ(why(".5K"), "no digits before the unit");
  EXPECT_EQ(why("1.0000000000000000001"), "too many decimals");
}

TEST(ByteSize, SixtyFourBitsAndNoMore) {
  EXPECT_EQ(try_parse_byte_size("18446744073709551615"), kMax);
  EXPECT_EQ(why("18446744073709551616"), "more than 64 bits");
  EXPECT_EQ(why("99999999999999999999MiB"), "more than 64 bits");
  // 2^34 GiB = 2^64 bytes: one past the top; 2^34 - 1 GiB fits.
  EXPECT_EQ(try_parse_byte_size("17179869183GiB"), (uint64_t{17179869183}) << 30);
  EXPECT_EQ(why("17179869184GiB"), "more than 64 bits");
  EXPECT_EQ(why("17179869183.9999999990GiB"), "not a whole number of bytes");
  // The whole part fits, the fraction takes it past the top.
  EXPECT_EQ(try_parse_byte_size("17179869183.5GiB"), (uint64_t{17179869183} << 30) + (1u << 29));
  EXPECT_EQ(why("18446744073709551615.5K"), "more than 64 bits");
}

TEST(ByteSize, RefusesGarbage) {
  EXPECT_EQ(why(""), "empty");
  EXPECT_EQ(why("-5"), "negative");
  EXPECT_EQ(why("-5MiB"), "negative");
  EXPECT_EQ(why("+5"), "no digits before the unit");
  EXPECT_EQ(why("MiB"), "no digits before the unit");
  EXPECT_EQ(why(" 4MiB"), "no digits before the unit");
  EXPECT_THAT(why("4 MiB"), ::testing::HasSubstr("unknown unit ' MiB'"));
  EXPECT_THAT(why("4MiB "), ::testing::HasSubstr("unknown unit 'MiB '"));
  // Case matters: lower case is refused, not guessed at.
  EXPECT_THAT(why("4mib"), ::testing::HasSubstr("unknown unit 'mib' (valid: B, K, KiB"));
  EXPECT_THAT(why("4MB"), ::testing::HasSubstr("unknown unit 'MB'"));
  EXPECT_THAT(why("4k"), ::testing::HasSubstr("unknown unit 'k'"));
  EXPECT_THAT(why("1e3"), ::testing::HasSubstr("unknown unit 'e3'"));
  EXPECT_THAT(why("0x10"), ::testing::HasSubstr("unknown unit 'x10'"));
  EXPECT_THAT(why("4TiB"), ::testing::HasSubstr("unknown unit 'TiB'"));
}

TEST(ByteSize, TheThrowingFormNamesTheFlagAndTheText) {
  EXPECT_EQ(parse_byte_size("4MiB", "--bucket-bytes"), 4u << 20);
  try {
    (void)parse_byte_size("99999999999999999999MiB", "--bucket-bytes");
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "--bucket-bytes: '99999999999999999999MiB' is not a byte count (more than 64 "
                 "bits; e.g. 4MiB, 65536)");
  }
  EXPECT_THROW((void)parse_byte_size("-5", "--max-message-bytes"), InvalidArgument);
  EXPECT_EQ(byte_size_units(), "B, K, KiB, M, MiB, G, GiB");
}

}  // namespace
}  // namespace qgrad
