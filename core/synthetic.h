// Reproducible synthetic vectors for benchmarks, demos and tests. Drawn from Philox, so the same
// seed gives the same values on every platform (std::normal_distribution does not).
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace qgrad {

enum class SyntheticDistribution {
  kNormal,     // N(0, 1)
  kLogNormal,  // sign * exp(N(0, 1)): heavy-tailed magnitudes
  kSparse,     // 90% zeros, the rest N(0, 1)
  kGradient,   // gradient-like: N(0, sigma_b^2) where each block of 4096 has its own scale
               // sigma_b = 10^U(-4, -1), as layers of a network do
};

// Parses "normal|lognormal|sparse|gradient"; throws InvalidArgument listing them.
SyntheticDistribution parse_synthetic_distribution(std::string_view name);

void fill_synthetic(std::span<float> out, SyntheticDistribution dist, uint64_t seed);

}  // namespace qgrad
