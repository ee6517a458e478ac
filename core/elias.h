// Bit streams and Elias omega codes for sparse payloads (QSGD's "Efficient Coding of Gradients",
// Alistarh et al., NeurIPS 2017, section 3.1; docs/algorithms.md, "QSGD").
//
// Elias omega (recursive) code of an integer k >= 1 (Elias 1975): write "0"; while k > 1, prepend
// the binary form of k and set k = floor(log2 k). The codeword of k is therefore
// |omega(k)| = 1 + sum over the chain of bit lengths, e.g. 1 -> "0", 2 -> "100", 3 -> "110",
// 4 -> "101000", 16 -> "10100100000"; lengths 1,3,3,6,6,7,7,11,13 for k = 1,2,3,4,7,8,15,16,100.
// |omega(k)| <= log2 k + log2 log2 k + ... + 1, and it is non-decreasing in k (it depends only on
// the bit length of k). Decoding reads a group that starts with 1 and is n + 1 bits long, sets
// n to its value, and stops at the first group that starts with 0.
//
// Streams are MSB-first: stream bit j is bit (7 - j % 8) of byte j / 8, so binary numbers are
// written most significant bit first, as the omega code defines them. A stream is padded with
// zero bits to a whole byte.
//
// BitReader checks every read against the end of its buffer and throws CorruptPayload, so a
// decoder built on it never reads out of bounds. Thread-safety: writers and readers are plain
// values (one per thread); the free functions are pure.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace qgrad::elias {

namespace detail {
struct Codeword {
  uint32_t bits = 0;
  int len = 0;
};
// omega(k) built from its end: the final 0, then binary(k), binary(bitlen(k) - 1), ... in front.
constexpr Codeword small_omega(uint64_t k) {
  Codeword c{0, 1};
  while (k > 1) {
    const int width = std::bit_width(k);
    c.bits |= static_cast<uint32_t>(k << c.len);
    c.len += width;
    k = static_cast<uint64_t>(width - 1);
  }
  return c;
}
// Codewords of 1..63 (at most 12 bits) and a decode table indexed by the next 12 bits of a
// stream: value | len << 8, or 0 where those bits start a longer codeword.
inline constexpr uint64_t kSmall = 64;
inline constexpr int kPeek = 12;
inline constexpr auto kEncode = [] {
  std::array<Codeword, kSmall> t{};
  for (uint64_t k = 1; k < kSmall; ++k) t[k] = small_omega(k);
  return t;
}();
inline constexpr auto kDecode = [] {
  std::array<uint16_t, 1u << kPeek> t{};
  for (uint64_t k = 1; k < kSmall; ++k) {
    const Codeword c = kEncode[k];
    const uint32_t first = c.bits << (kPeek - c.len), count = 1u << (kPeek - c.len);
    for (uint32_t i = 0; i < count; ++i) t[first + i] = static_cast<uint16_t>(k | (c.len << 8));
  }
  return t;
}();
}  // namespace detail

// Appends bits to a growable byte buffer.
class BitWriter {
 public:
  // Appends the low `nbits` bits of `value` (nbits in [0, 64]), most significant first.
  void put(uint64_t value, int nbits);
  // The same for nbits in [0, 32], inline.
  void put_small(uint64_t value, int nbits) {
    if (nbits == 0) return;
    acc_ = (acc_ << nbits) | (value & (~uint64_t{0} >> (64 - nbits)));
    fill_ += nbits;
    if (fill_ >= 32) flush_word();
  }
  // Appends every bit written to `other` (not its padding).
  void append(const BitWriter& other);
  uint64_t bit_count() const { return 8 * bytes_.size() + static_cast<uint64_t>(fill_); }
  // The stream padded with zero bits to a whole byte (ceil(bit_count() / 8) bytes).
  std::vector<uint8_t> finish() const;
  void clear() {
    bytes_.clear();
    acc_ = 0;
    fill_ = 0;
  }

 private:
  void flush_word();

  std::vector<uint8_t> bytes_;  // the bytes written so far
  uint64_t acc_ = 0;            // the low fill_ bits are pending, first bit highest
  int fill_ = 0;                // 0..31 between calls
};

// Reads bits from a byte span; every read is bounds-checked.
class BitReader {
 public:
  explicit BitReader(std::span<const std::byte> data) : data_(data) {}
  // The next `nbits` bits (nbits in [0, 64]) as a number, first bit most significant. Throws
  // CorruptPayload when fewer than nbits bits are left.
  uint64_t get(int nbits);
  uint64_t position() const { return pos_; }
  uint64_t size_bits() const { return 8 * static_cast<uint64_t>(data_.size()); }
  uint64_t bits_left() const { return size_bits() - pos_; }
  // The next nbits bits (1..56) without consuming them; bits past the end read as 0.
  uint64_t peek(int nbits) const {
    const size_t first = pos_ / 8;
    uint64_t window = 0;
    if (first + 8 <= data_.size()) {
      std::memcpy(&window, data_.data() + first, 8);
      if constexpr (std::endian::native == std::endian::little) window = __builtin_bswap64(window);
    } else {
      window = peek_tail(first);
    }
    return (window << (pos_ % 8)) >> (64 - nbits);
  }
  // Consumes nbits bits already known to be in the stream (bits_left() >= nbits).
  void skip_checked(uint64_t nbits) { pos_ += nbits; }

 private:
  uint64_t peek_tail(size_t first) const;

  std::span<const std::byte> data_;
  uint64_t pos_ = 0;
};

// Codeword length in bits of omega(k), k >= 1.
int omega_length(uint64_t k);

void omega_put_large(BitWriter& w, uint64_t k);
// Appends omega(k); k >= 1 (InvalidArgument otherwise).
inline void omega_put(BitWriter& w, uint64_t k) {
  if (k - 1 < detail::kSmall - 1) {
    w.put_small(detail::kEncode[k].bits, detail::kEncode[k].len);
  } else {
    omega_put_large(w, k);
  }
}

uint64_t omega_get_slow(BitReader& r);
// Reads one omega codeword. Throws CorruptPayload if the stream ends inside it or if the codeword
// would be longer than 64 bits (no value this library writes needs that many).
inline uint64_t omega_get(BitReader& r) {
  const uint16_t entry = detail::kDecode[r.peek(detail::kPeek)];
  const auto len = static_cast<uint64_t>(entry >> 8);
  if (entry != 0 && len <= r.bits_left()) {
    r.skip_checked(len);
    return entry & 0xFFu;
  }
  return omega_get_slow(r);
}

}  // namespace qgrad::elias
