// Shared SIMD kernels (Highway, runtime dispatch to the best target of the CPU). Results are
// bit-identical on every target: reductions use a fixed association (16 partial sums, element i
// into partial i % 16, then a fixed pairwise tree), never the vector width's.
// Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qgrad::simd {

// Index of the first NaN or Inf in x[0, n), or n if all are finite.
size_t find_nonfinite(const float* x, size_t n);

// max |x_i| over x[0, n) (0 for n == 0). If any element is NaN or Inf the result is NaN or Inf,
// so one std::isfinite on the result checks the whole range.
float absmax(const float* x, size_t n);

// sum x_i^2 and sum |x_i| in the canonical association (see above).
float sum_squares(const float* x, size_t n);
float sum_abs(const float* x, size_t n);

// out[i] += w * x[i], x read as little-endian float32 from unaligned bytes.
void axpy_bytes(float w, const std::byte* x, float* out, size_t n);

}  // namespace qgrad::simd
