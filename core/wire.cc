#include "core/wire.h"

#include <bit>
#include <cstring>

#include "core/crc32c.h"
#include "core/error.h"

namespace qgrad {

static_assert(std::endian::native == std::endian::little,
              "qgrad's wire format is little-endian; a big-endian port needs byte swaps here");

void store_u32(std::byte* p, uint32_t v) { std::memcpy(p, &v, 4); }
void store_u64(std::byte* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t load_u32(const std::byte* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t load_u64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
void store_f32(std::byte* p, float v) { std::memcpy(p, &v, 4); }
float load_f32(const std::byte* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

void write_header(std::span<std::byte> out, CodecId codec, const WireParams& params,
                  uint64_t elements, std::span<const std::byte> body) {
  QGRAD_CHECK(out.size() >= kHeaderBytes, "write_header: buffer of ", out.size(),
              " bytes is smaller than the ", kHeaderBytes, "-byte header");
  std::byte* h = out.data();
  std::memset(h, 0, kHeaderBytes);
  store_u32(h, kWireMagic);
  h[4] = std::byte{kWireVersion};
  h[5] = static_cast<std::byte>(codec);
  std::memcpy(h + 8, params.data(), kWireParamBytes);
  store_u64(h + 24, elements);
  store_u64(h + 32, body.size());
  store_u32(h + 40, crc32c(body));
  store_u32(h + 44, crc32c({h, 44}));
}

WireHeader read_header(std::span<const std::byte> payload) {
  QGRAD_PAYLOAD_CHECK(payload.size() >= kHeaderBytes, "payload of ", payload.size(),
                      " bytes is shorter than the ", kHeaderBytes, "-byte qgrad header");
  const std::byte* h = payload.data();
  QGRAD_PAYLOAD_CHECK(load_u32(h) == kWireMagic, "payload does not start with the qgrad magic");
  QGRAD_PAYLOAD_CHECK(static_cast<uint8_t>(h[4]) == kWireVersion, "payload has format version ",
                      static_cast<int>(h[4]), ", this build reads version ",
                      static_cast<int>(kWireVersion));
  const uint32_t header_crc = load_u32(h + 44);
  QGRAD_PAYLOAD_CHECK(crc32c({h, 44}) == header_crc, "payload header checksum mismatch");
  QGRAD_PAYLOAD_CHECK(h[6] == std::byte{0} && h[7] == std::byte{0},
                      "payload header has nonzero reserved bytes");
  WireHeader header;
  header.codec = static_cast<CodecId>(h[5]);
  std::memcpy(header.params.data(), h + 8, kWireParamBytes);
  header.elements = load_u64(h + 24);
  header.body_bytes = load_u64(h + 32);
  header.body_crc = load_u32(h + 40);
  QGRAD_PAYLOAD_CHECK(header.body_bytes == payload.size() - kHeaderBytes, "payload body is ",
                      payload.size() - kHeaderBytes, " bytes, header says ", header.body_bytes);
  QGRAD_PAYLOAD_CHECK(crc32c(payload.subspan(kHeaderBytes)) == header.body_crc,
                      "payload body checksum mismatch");
  return header;
}

}  // namespace qgrad
