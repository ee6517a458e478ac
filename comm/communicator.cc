#include "comm/communicator.h"

#include <algorithm>

#include "core/error.h"

namespace qgrad {

ChunkRange balanced_chunk(size_t n, int parts, int j) {
  QGRAD_CHECK(parts > 0 && j >= 0 && j < parts, "balanced_chunk: chunk ", j, " of ", parts);
  const size_t p = static_cast<size_t>(parts), k = static_cast<size_t>(j);
  const size_t base = n / p, extra = n % p;
  const size_t begin = k * base + std::min(k, extra);
  return {begin, begin + base + (k < extra ? 1 : 0)};
}

size_t ByteBlocks::block_bytes(int r) const {
  QGRAD_CHECK(r >= 0 && r < count(), "ByteBlocks: block ", r, " of ", count());
  return offsets[r + 1] - offsets[r];
}

std::span<const std::byte> ByteBlocks::block(int r) const {
  const size_t n = block_bytes(r);
  return {data.data() + offsets[r], n};
}

std::span<std::byte> ByteBlocks::block(int r) {
  const size_t n = block_bytes(r);
  return {data.data() + offsets[r], n};
}

void ByteBlocks::layout(std::span<const size_t> sizes) {
  offsets.resize(sizes.size() + 1);
  offsets[0] = 0;
  for (size_t i = 0; i < sizes.size(); ++i) offsets[i + 1] = offsets[i] + sizes[i];
  data.resize(offsets.back());
}

void ByteBlocks::clear() {
  data.clear();
  offsets.assign(1, 0);
}

void ByteBlocks::append(std::span<const std::byte> bytes) {
  if (offsets.empty()) offsets.push_back(0);
  data.insert(data.end(), bytes.begin(), bytes.end());
  offsets.push_back(data.size());
}

}  // namespace qgrad
