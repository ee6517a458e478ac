// Counter-based randomness for every stochastic codec: Philox4x32-10 (Salmon et al., SC'11,
// "Parallel random numbers: as easy as 1, 2, 3"). A counter-based generator has no state, so
// element i of a bucket gets the same random word whatever thread, SIMD width or GPU computes
// it; that is what makes encodings byte-identical across thread counts and devices.
//
// Stream layout (a contract: the CUDA kernels and tests rely on it):
//   Philox key       = mix(seed, step, rank)            (64 bits, see philox_key)
//   Philox counter   = {lo32(j), hi32(j), bucket, tensor} for block j
//   raw word r       = word (r % 4) of block r / 4
//   element i's word = (h << 16) | 0x8000, h = the (i % 2) 16-bit half of raw word i / 2
//                      (low half for even i).
// Why 16 random bits per element: a Philox4x32-10 word costs about as much as a memcpy of 4
// bytes on this class of machine, which alone would cap encoding below the speed target. With
// the 0x8000 centring, uniform_from_word(word) = (h + 0.5) / 65536, so a stochastic rounding
// "up iff u < frac" rounds up with probability round(frac * 65536) / 65536: off from frac by at
// most 2^-17 of a quantization step, 2^-16 of the rounding noise's own standard deviation.
// Thread-safe: everything here is a pure function.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define QGRAD_HD __host__ __device__
#else
#define QGRAD_HD
#endif

namespace qgrad {

// Identifies one random stream: a run (seed), a training step, the worker, the tensor (or fused
// gradient bucket) and a sub-stream inside it (e.g. the owner's re-encoding in scatter-reduce).
struct RngKey {
  uint64_t seed = 0;
  uint64_t step = 0;
  uint32_t rank = 0;
  uint32_t tensor = 0;
  uint32_t bucket = 0;
};

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

inline constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
inline constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// One Philox4x32 with `rounds` rounds (10 is the standard, crush-resistant choice).
QGRAD_HD inline PhiloxCounter philox4x32(PhiloxCounter c, PhiloxKey k, int rounds = 10) {
  for (int r = 0; r < rounds; ++r) {
    if (r > 0) {
      k[0] += kPhiloxW0;
      k[1] += kPhiloxW1;
    }
    const uint64_t p0 = uint64_t{kPhiloxM0} * c[0];
    const uint64_t p1 = uint64_t{kPhiloxM1} * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
  }
  return c;
}

// splitmix64's finalizer: a bijective avalanche mix, so nearby seeds give unrelated keys.
QGRAD_HD inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

QGRAD_HD inline PhiloxKey philox_key(const RngKey& key) {
  uint64_t h = mix64(key.seed);
  h = mix64(h ^ key.step);
  h = mix64(h ^ key.rank);
  return {static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
}

QGRAD_HD inline PhiloxCounter philox_counter(const RngKey& key, uint64_t block) {
  return {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), key.bucket, key.tensor};
}

// Raw word r of the stream `key`: 32 random bits.
QGRAD_HD inline uint32_t philox_raw_word(const RngKey& key, uint64_t r) {
  return philox4x32(philox_counter(key, r / 4), philox_key(key))[r % 4];
}

// Element i's word from its raw word (see the layout above).
QGRAD_HD inline uint32_t element_word(uint32_t raw, uint64_t index) {
  const uint32_t half = (index % 2 == 0) ? (raw & 0xFFFFu) : (raw >> 16);
  return (half << 16) | 0x8000u;
}

// The random word of element `index` of the stream `key` (scalar reference for tests).
QGRAD_HD inline uint32_t philox_word(const RngKey& key, uint64_t index) {
  return element_word(philox_raw_word(key, index / 2), index);
}

// A uniform in [0, 1) from a random word: the top 24 bits, exact in float.
QGRAD_HD inline float uniform_from_word(uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

// Writes the words of elements [first, first + n) of stream `key` to out. SIMD (runtime
// dispatch); gives exactly the words of philox_word.
void philox_fill(const RngKey& key, uint64_t first, size_t n, uint32_t* out);
// Writes raw words [first, first + n) (philox_raw_word): 32 random bits each.
void philox_fill_raw(const RngKey& key, uint64_t first, size_t n, uint32_t* out);

}  // namespace qgrad
