#include "core/elias.h"

#include <bit>

#include "core/error.h"

namespace qgrad::elias {
void BitWriter::flush_word() {
  fill_ -= 32;
  const auto word = static_cast<uint32_t>(acc_ >> fill_);
  const uint8_t out[4] = {static_cast<uint8_t>(word >> 24), static_cast<uint8_t>(word >> 16),
                          static_cast<uint8_t>(word >> 8), static_cast<uint8_t>(word)};
  bytes_.insert(bytes_.end(), out, out + 4);
}

void BitWriter::put(uint64_t value, int nbits) {
  QGRAD_CHECK(nbits >= 0 && nbits <= 64, "BitWriter::put: ", nbits, " bits (0..64)");
  if (nbits > 32) {
    put_small(value >> 32, nbits - 32);
    put_small(value, 32);
  } else {
    put_small(value, nbits);
  }
}

void BitWriter::append(const BitWriter& other) {
  if (fill_ % 8 == 0) {  // byte-aligned: move the pending bytes out, then copy
    while (fill_ > 0) {
      fill_ -= 8;
      bytes_.push_back(static_cast<uint8_t>(acc_ >> fill_));
    }
    bytes_.insert(bytes_.end(), other.bytes_.begin(), other.bytes_.end());
  } else {
    const size_t n = other.bytes_.size();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      const uint32_t word = (uint32_t{other.bytes_[i]} << 24) |
                            (uint32_t{other.bytes_[i + 1]} << 16) |
                            (uint32_t{other.bytes_[i + 2]} << 8) | other.bytes_[i + 3];
      put_small(word, 32);
    }
    for (; i < n; ++i) put_small(other.bytes_[i], 8);
  }
  put_small(other.acc_, other.fill_);
}

std::vector<uint8_t> BitWriter::finish() const {
  std::vector<uint8_t> out = bytes_;
  const int padded = (fill_ + 7) / 8 * 8;
  const uint64_t tail = (acc_ & (fill_ == 0 ? 0 : ~uint64_t{0} >> (64 - fill_)))
                        << (padded - fill_);
  for (int b = padded - 8; b >= 0; b -= 8) out.push_back(static_cast<uint8_t>(tail >> b));
  return out;
}

uint64_t BitReader::peek_tail(size_t first) const {
  uint64_t window = 0;
  for (size_t i = 0; first + i < data_.size(); ++i)
    window |= uint64_t{static_cast<uint8_t>(data_[first + i])} << (56 - 8 * i);
  return window;
}

uint64_t BitReader::get(int nbits) {
  QGRAD_CHECK(nbits >= 0 && nbits <= 64, "BitReader::get: ", nbits, " bits (0..64)");
  QGRAD_PAYLOAD_CHECK(static_cast<uint64_t>(nbits) <= size_bits() - pos_,
                      "bit stream ends early: ", nbits, " bits wanted at bit ", pos_, " of ",
                      size_bits());
  if (nbits == 0) return 0;
  if (nbits > 32) {
    const uint64_t hi = peek(nbits - 32);
    pos_ += static_cast<uint64_t>(nbits - 32);
    const uint64_t lo = peek(32);
    pos_ += 32;
    return (hi << 32) | lo;
  }
  const uint64_t v = peek(nbits);
  pos_ += static_cast<uint64_t>(nbits);
  return v;
}

int omega_length(uint64_t k) {
  QGRAD_CHECK(k >= 1, "Elias omega codes start at 1, got ", k);
  if (k < detail::kSmall) return detail::kEncode[k].len;
  int len = 1;
  while (k > 1) {
    const int width = std::bit_width(k);
    len += width;
    k = static_cast<uint64_t>(width - 1);
  }
  return len;
}

void omega_put_large(BitWriter& w, uint64_t k) {
  QGRAD_CHECK(k >= 1, "Elias omega codes start at 1, got ", k);
  // The chain k, bitlen(k) - 1, ... is produced innermost-last but written innermost-first.
  uint64_t groups[8];
  int widths[8];
  int count = 0;
  while (k > 1) {
    const int width = std::bit_width(k);
    groups[count] = k;
    widths[count] = width;
    ++count;
    k = static_cast<uint64_t>(width - 1);
  }
  while (count > 0) {
    --count;
    w.put(groups[count], widths[count]);
  }
  w.put_small(0, 1);
}

uint64_t omega_get_slow(BitReader& r) {
  uint64_t n = 1;
  int used = 0;
  while (true) {
    if (r.get(1) == 0) return n;
    // A group of n + 1 bits whose first bit (already read) is 1; with the final 0 the codeword
    // would need used + n + 2 bits.
    QGRAD_PAYLOAD_CHECK(n <= 62 && used + static_cast<int>(n) + 2 <= 64,
                        "Elias omega codeword longer than 64 bits at bit ", r.position());
    used += static_cast<int>(n) + 1;
    n = (uint64_t{1} << n) | r.get(static_cast<int>(n));
  }
}

}  // namespace qgrad::elias
