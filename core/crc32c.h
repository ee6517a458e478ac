// CRC-32C (Castagnoli) of the wire payloads: detects every single-bit flip and every burst up to
// 32 bits. Uses the SSE4.2 instruction where the CPU has it, a table otherwise; both give the
// same value. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace qgrad {

uint32_t crc32c(std::span<const std::byte> data, uint32_t crc = 0);
// The table-driven path alone (what CPUs without SSE4.2 run); tests compare the two.
uint32_t crc32c_portable(std::span<const std::byte> data, uint32_t crc = 0);

}  // namespace qgrad
