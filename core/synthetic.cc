#include "core/synthetic.h"

#include <cmath>

#include "core/error.h"
#include "core/parallel.h"
#include "core/philox.h"

namespace qgrad {

SyntheticDistribution parse_synthetic_distribution(std::string_view name) {
  if (name == "normal") return SyntheticDistribution::kNormal;
  if (name == "lognormal") return SyntheticDistribution::kLogNormal;
  if (name == "sparse") return SyntheticDistribution::kSparse;
  if (name == "gradient") return SyntheticDistribution::kGradient;
  throw InvalidArgument(detail::concat("unknown distribution '", name,
                                       "'; valid: normal, lognormal, sparse, gradient"));
}

void fill_synthetic(std::span<float> out, SyntheticDistribution dist, uint64_t seed) {
  constexpr size_t kBlock = 4096;
  parallel_for(out.size(), kBlock, [&](size_t begin, size_t end) {
    const RngKey key{.seed = seed, .step = 0, .rank = 0, .tensor = 0, .bucket = 0};
    // Per-block scale from a separate stream (bucket 1), so it does not depend on the values.
    const RngKey block_key{.seed = seed, .step = 0, .rank = 0, .tensor = 0, .bucket = 1};
    const double block_scale =
        std::pow(10.0, -4.0 + 3.0 * uniform_from_word(philox_word(block_key, begin / kBlock)));
    for (size_t i = begin; i < end; ++i) {
      // Box-Muller from two words of element i's block (words 2i and 2i+1 of the stream).
      const double u1 = (static_cast<double>(philox_word(key, 2 * i) >> 8) + 1.0) / 16777217.0;
      const double u2 = uniform_from_word(philox_word(key, 2 * i + 1));
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      double v = z;
      switch (dist) {
        case SyntheticDistribution::kNormal:
          break;
        case SyntheticDistribution::kLogNormal:
          v = (u2 < 0.5 ? -1.0 : 1.0) * std::exp(z);
          break;
        case SyntheticDistribution::kSparse:
          v = uniform_from_word(philox_word(block_key, 0x100000000ull + i)) < 0.9 ? 0.0 : z;
          break;
        case SyntheticDistribution::kGradient:
          v = z * block_scale;
          break;
      }
      out[i] = static_cast<float>(v);
    }
  });
}

}  // namespace qgrad
