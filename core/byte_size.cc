#include "core/byte_size.h"

#include <limits>
#include <utility>

#include "core/error.h"

namespace qgrad {
namespace {

constexpr std::string_view kUnits = "B, K, KiB, M, MiB, G, GiB";
// 10^18 is the largest power of ten below 2^64: more decimals than that cannot be exact.
constexpr size_t kMaxDecimals = 18;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

uint64_t unit_scale(std::string_view unit) {
  if (unit.empty() || unit == "B") return 1;
  if (unit == "K" || unit == "KiB") return uint64_t{1} << 10;
  if (unit == "M" || unit == "MiB") return uint64_t{1} << 20;
  if (unit == "G" || unit == "GiB") return uint64_t{1} << 30;
  return 0;
}

std::optional<uint64_t> fail(std::string* why, std::string reason) {
  if (why) *why = std::move(reason);
  return std::nullopt;
}

}  // namespace

std::optional<uint64_t> try_parse_byte_size(std::string_view text, std::string* why) {
  if (text.empty()) return fail(why, "empty");
  if (text.front() == '-') return fail(why, "negative");
  size_t pos = 0;
  while (pos < text.size() && is_digit(text[pos])) ++pos;
  const std::string_view whole = text.substr(0, pos);
  if (whole.empty()) return fail(why, "no digits before the unit");
  std::string_view decimals;
  if (pos < text.size() && text[pos] == '.') {
    const size_t first = ++pos;
    while (pos < text.size() && is_digit(text[pos])) ++pos;
    decimals = text.substr(first, pos - first);
    if (decimals.empty()) return fail(why, "no digits after '.'");
    if (decimals.size() > kMaxDecimals) return fail(why, "too many decimals");
  }
  const std::string_view unit = text.substr(pos);
  const uint64_t scale = unit_scale(unit);
  if (scale == 0) {
    return fail(why, detail::concat("unknown unit '", unit, "' (valid: ", kUnits, ")"));
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  uint64_t value = 0;
  for (const char c : whole) {
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (kMax - digit) / 10) return fail(why, "more than 64 bits");
    value = value * 10 + digit;
  }
  if (value > kMax / scale) return fail(why, "more than 64 bits");
  value *= scale;
  if (!decimals.empty()) {
    uint64_t numerator = 0, denominator = 1;
    for (const char c : decimals) {
      numerator = numerator * 10 + static_cast<uint64_t>(c - '0');
      denominator *= 10;
    }
    // numerator / denominator < 1, so the fraction's bytes are below `scale` (at most 2^30):
    // 128 bits hold the product exactly.
    const unsigned __int128 product = static_cast<unsigned __int128>(numerator) * scale;
    if (product % denominator != 0) return fail(why, "not a whole number of bytes");
    const uint64_t extra = static_cast<uint64_t>(product / denominator);
    if (value > kMax - extra) return fail(why, "more than 64 bits");
    value += extra;
  }
  return value;
}

uint64_t parse_byte_size(std::string_view text, std::string_view what) {
  std::string why;
  const std::optional<uint64_t> value = try_parse_byte_size(text, &why);
  QGRAD_CHECK(value.has_value(), what, ": '", text, "' is not a byte count (", why,
              "; e.g. 4MiB, 65536)");
  return *value;
}

std::string_view byte_size_units() { return kUnits; }

}  // namespace qgrad
