#include "comm/communicator.h"

#include <algorithm>
#include <bit>

#include "core/error.h"

namespace qgrad {

ChunkRange balanced_chunk(size_t n, int parts, int j) {
  QGRAD_CHECK(parts > 0 && j >= 0 && j < parts, "balanced_chunk: chunk ", j, " of ", parts);
  const size_t p = static_cast<size_t>(parts), k = static_cast<size_t>(j);
  const size_t base = n / p, extra = n % p;
  const size_t begin = k * base + std::min(k, extra);
  return {begin, begin + base + (k < extra ? 1 : 0)};
}

namespace {

// The range of ranks [first, first + count)'s chunks.
ChunkRange chunks_of(size_t n, int world, int first, int count) {
  return {balanced_chunk(n, world, first).begin, balanced_chunk(n, world, first + count - 1).end};
}

void halving_doubling(size_t n, int world, int rank, std::vector<AllreduceStep>& steps) {
  int group = 0;  // the first rank of the group whose chunks this rank still reduces
  for (int d = world / 2; d >= 1; d /= 2) {
    const ChunkRange lower = chunks_of(n, world, group, d);
    const ChunkRange upper = chunks_of(n, world, group + d, d);
    const bool keeps_lower = (rank & d) == 0;
    const int peer = rank ^ d;
    steps.push_back({.peer_out = peer,
                     .peer_in = peer,
                     .out = keeps_lower ? upper : lower,
                     .in = keeps_lower ? lower : upper,
                     .reduce = true});
    if (!keeps_lower) group += d;
  }
  // group == rank now: this rank holds its own chunk, summed.
  for (int d = 1; d < world; d *= 2) {
    const int mine = rank & ~(d - 1);  // first rank of the d-group whose chunks it holds
    const int peer = rank ^ d;
    const int theirs = peer & ~(d - 1);
    steps.push_back({.peer_out = peer,
                     .peer_in = peer,
                     .out = chunks_of(n, world, mine, d),
                     .in = chunks_of(n, world, theirs, d),
                     .reduce = false});
  }
}

void recursive_doubling(size_t n, int world, int rank, std::vector<AllreduceStep>& steps) {
  for (int d = world / 2; d >= 1; d /= 2) {
    const int peer = rank ^ d;
    steps.push_back(
        {.peer_out = peer, .peer_in = peer, .out = {0, n}, .in = {0, n}, .reduce = true});
  }
}

void ring(size_t n, int world, int rank, std::vector<AllreduceStep>& steps) {
  const int right = (rank + 1) % world, left = (rank + world - 1) % world;
  const long r = rank;
  for (int phase = 0; phase < 2; ++phase) {
    const bool reduce = phase == 0;
    for (long s = 0; s < world - 1; ++s) {
      steps.push_back({.peer_out = right,
                       .peer_in = left,
                       .out = ring_chunk(n, world, reduce ? r - s - 1 : r - s),
                       .in = ring_chunk(n, world, reduce ? r - s - 2 : r - s - 1),
                       .reduce = reduce});
    }
  }
}

}  // namespace

std::vector<AllreduceStep> allreduce_schedule(size_t n, int world, int rank) {
  QGRAD_CHECK(world >= 1 && rank >= 0 && rank < world, "allreduce_schedule: rank ", rank,
              " of a world of ", world);
  std::vector<AllreduceStep> steps;
  if (world == 1) return steps;
  if (std::has_single_bit(static_cast<unsigned>(world))) {
    if (n <= kAllreduceLatencyBoundFloats) {
      recursive_doubling(n, world, rank, steps);
    } else {
      halving_doubling(n, world, rank, steps);
    }
  } else {
    ring(n, world, rank, steps);
  }
  return steps;
}

AllreduceVolume allreduce_volume(size_t n, int world, int rank) {
  AllreduceVolume v;
  for (const AllreduceStep& s : allreduce_schedule(n, world, rank)) {
    v.sent += s.out.size();
    v.received += s.in.size();
  }
  return v;
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
