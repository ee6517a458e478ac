#include "core/crc32c.h"

#include <array>
#include <cstring>

namespace qgrad {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

// Slicing-by-8 tables: 8 bytes per step without the hardware instruction.
struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  constexpr Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};
constexpr Tables kTables;

uint32_t crc_software(const unsigned char* p, size_t n, uint32_t c) {
  const auto& t = kTables.t;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= c;
    c = t[7][w & 0xFF] ^ t[6][(w >> 8) & 0xFF] ^ t[5][(w >> 16) & 0xFF] ^ t[4][(w >> 24) & 0xFF] ^
        t[3][(w >> 32) & 0xFF] ^ t[2][(w >> 40) & 0xFF] ^ t[1][(w >> 48) & 0xFF] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c;
}

// Multiplication of two reflected polynomials modulo the CRC polynomial (bit 31 = x^0).
uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

// x^(8 * bytes) mod P: what running a CRC register through `bytes` zero bytes multiplies it by.
uint32_t shift_operator(uint64_t bytes) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t power = 1u << 23;   // x^8
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1) result = multmodp(result, power);
    power = multmodp(power, power);
  }
  return result;
}

#if defined(__x86_64__)
// The crc32 instruction has a 3-cycle latency and a 1-cycle throughput: three independent
// streams over the three thirds of the buffer keep it busy. The raw register is linear, so the
// thirds' states combine as s = s1 * x^(8*len2) ^ s2, then the same with s3.
__attribute__((target("sse4.2"))) uint64_t crc_stream(const unsigned char* p, size_t words,
                                                      uint64_t c) {
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    c = __builtin_ia32_crc32di(c, w);
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t crc_hardware(const unsigned char* p, size_t n,
                                                        uint32_t c) {
  constexpr size_t kMinSplit = 3 * 4096;  // below this the combination costs more than it saves
  if (n >= kMinSplit) {
    const size_t third = n / 24 * 8;  // bytes per stream, a multiple of 8
    uint64_t c0 = c, c1 = 0, c2 = 0;
    const unsigned char* p1 = p + third;
    const unsigned char* p2 = p + 2 * third;
    for (size_t i = 0; i < third; i += 8) {
      uint64_t w0, w1, w2;
      std::memcpy(&w0, p + i, 8);
      std::memcpy(&w1, p1 + i, 8);
      std::memcpy(&w2, p2 + i, 8);
      c0 = __builtin_ia32_crc32di(c0, w0);
      c1 = __builtin_ia32_crc32di(c1, w1);
      c2 = __builtin_ia32_crc32di(c2, w2);
    }
    const uint32_t shift = shift_operator(third);
    c = multmodp(multmodp(static_cast<uint32_t>(c0), shift) ^ static_cast<uint32_t>(c1), shift) ^
        static_cast<uint32_t>(c2);
    p += 3 * third;
    n -= 3 * third;
  }
  uint32_t c32 = static_cast<uint32_t>(crc_stream(p, n / 8, c));
  p += n / 8 * 8;
  for (n %= 8; n > 0; --n) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t crc32c_portable(std::span<const std::byte> data, uint32_t crc) {
  return ~crc_software(reinterpret_cast<const unsigned char*>(data.data()), data.size(), ~crc);
}

uint32_t crc32c(std::span<const std::byte> data, uint32_t crc) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (kHaveSse42) return ~crc_hardware(p, data.size(), c);
#endif
  return ~crc_software(p, data.size(), c);
}

}  // namespace qgrad
