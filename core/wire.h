// The self-describing wire header that starts every payload (docs/architecture.md, "Wire header").
// Fixed size, little-endian, 48 bytes:
//
//   offset size field
//        0    4 magic "QGRD" (0x44524751)
//        4    1 format version (1)
//        5    1 codec id (CodecId)
//        6    2 reserved, zero
//        8   16 codec parameters (the registry's schema order; see codec_spec.h)
//       24    8 element count
//       32    8 body length in bytes (payload size - 48)
//       40    4 CRC-32C of the body
//       44    4 CRC-32C of bytes 0..43
//
// A decoder checks every field against the bytes it was given before it reads the body.
// Thread-safe: pure functions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace qgrad {

enum class CodecId : uint8_t {
  kNone = 1,
  kFp16 = 2,
  kBf16 = 3,
  kQsgd = 4,
  kSign = 5,
  kZipml = 6,
  kInt8 = 7,
  kTernGrad = 8,
  kTopK = 9,
};

inline constexpr uint32_t kWireMagic = 0x44524751u;  // "QGRD" in memory order
inline constexpr uint8_t kWireVersion = 1;
inline constexpr size_t kHeaderBytes = 48;
inline constexpr size_t kWireParamBytes = 16;

using WireParams = std::array<uint8_t, kWireParamBytes>;

struct WireHeader {
  CodecId codec = CodecId::kNone;
  WireParams params{};
  uint64_t elements = 0;
  uint64_t body_bytes = 0;
  uint32_t body_crc = 0;
};

// Writes the header for `body` (already in place after the header) into out[0, 48).
void write_header(std::span<std::byte> out, CodecId codec, const WireParams& params,
                  uint64_t elements, std::span<const std::byte> body);

// Parses and checks magic, version, reserved bytes, header CRC, that the body length matches
// the payload size, and the body CRC. Throws CorruptPayload naming the first field that failed.
WireHeader read_header(std::span<const std::byte> payload);

// Little-endian helpers for bodies and parameters (memcpy: no alignment assumptions).
void store_u32(std::byte* p, uint32_t v);
void store_u64(std::byte* p, uint64_t v);
uint32_t load_u32(const std::byte* p);
uint64_t load_u64(const std::byte* p);
void store_f32(std::byte* p, float v);
float load_f32(const std::byte* p);

}  // namespace qgrad
