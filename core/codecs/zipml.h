// `zipml:bits=b,levels=uniform|optimal,bucket=d`: ZipML stochastic rounding of every coordinate
// to one of L = 2^b levels of its bucket (Zhang, Li, Kara, Alistarh, Liu, Zhang, "ZipML: Training
// Linear Models with End-to-End Low Precision", ICML 2017, arXiv 1611.05402;
// docs/algorithms.md, "ZipML").
//
// Stochastic rounding (the paper's section 3.2): for levels l_0 <= ... <= l_{L-1} and a in [l_j,
// l_{j+1}], Q(a) = l_{j+1} with probability p = (a - l_j) / (l_{j+1} - l_j), else l_j (u < p, u the
// element's Philox uniform). E[Q(a)] = a and Var Q(a) = (a - l_j)(l_{j+1} - a)
// <= (l_{j+1} - l_j)^2 / 4. Every decoded value lies in [min, max] of its bucket.
//
// levels=uniform: l_j = lo + j * step between the bucket's lo = min and hi = max,
//   step = (hi - lo) / (L - 1). Exact float arithmetic, identical on every SIMD target:
//   encode t = min((x - lo) * prescale * inv_step, L - 1), inv_step = (L - 1) / ((hi - lo) *
//   prescale) once per bucket (prescale = 2^64 when hi - lo < 2^-64, else 1; inv_step = 0 for a
//   constant bucket), index = floor(t) + (u < t - floor(t)); decode min(lo + index * step, hi)
//   with step = (hi - lo) / (L - 1) raised by ulps until lo + (L - 1) step >= hi (see
//   uniform_levels): a constant bucket and a bucket's min and max decode exactly.
//   Var per bucket = sum_i (x_i - l_j)(l_{j+1} - x_i) <= d step^2 / 4. A bucket whose hi - lo
//   overflows float32 is an InvalidArgument (levels=optimal has no such limit).
// levels=optimal: the L levels minimising the bucket's total variance
//   sum_i (x_i - l_k)(l_{k+1} - x_i), endpoints min and max included (the paper's section 3.4),
//   found by `optimal_levels` below (max_candidates = 64: exact for buckets with at most max(64, L)
//   distinct values) and sent with the bucket. A bucket of n_b < L elements sends m_b = n_b
//   levels (its own values: zero variance). Rounding is scalar, p computed in double. A sort and
//   a DP per bucket make it far slower than uniform (about 0.1 us per element at b = 4,
//   d = 512): meant for experiments and data quantization, not for every step's gradient.
//
// Wire body (little-endian), nb = ceil(n / d) buckets:
//   uniform: nb x (lo, hi) as float32 (a zero lo or hi as +0), then the packed indices;
//   optimal: for every bucket its m_b = min(L, n_b) levels as float32 (non-decreasing), then the
//            packed indices.
//   Packed indices: element i's index occupies bits [i b, (i+1) b) of the index bytes, least
//   significant bit first; ceil(n b / 8) bytes. Size is exact: 8 nb + ceil(n b / 8) (uniform),
//   4 sum_b m_b + ceil(n b / 8) (optimal), i.e. b + 64/d resp. b + 32 L/d bits per coordinate.
// The decoder rejects (CorruptPayload) non-finite lo/hi, lo > hi or an overflowing hi - lo;
// non-finite or decreasing levels, and indices >= m_b. It checks the whole body before it adds
// anything into `out`.
//
// Randomness: element i (global index) uses philox_word(key, i). Encoding is parallel over
// chunks of whole buckets (a multiple of 8 elements, so chunks never share a byte) and gives the
// same bytes for every thread count and SIMD target. Thread-safe: the codec is immutable.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_zipml_codec(const CodecSpec& spec);

// Variance-optimal stochastic-rounding levels for `values` (ZipML's section 3.4): returns
// num_levels non-decreasing levels, the first = min(values) and the last = max(values),
// minimising stochastic_rounding_variance(values, levels). With at most num_levels distinct
// values, those values (the last repeated to fill): zero variance. Otherwise a dynamic program
// over candidate levels: dp[k][j] = min_{i<j} dp[k-1][i] + cost(c_i, c_j), where
// cost(c_i, c_j) = sum of (a - c_i)(c_j - a) over the points a in [c_i, c_j] comes in O(1) from
// prefix sums of the sorted points, all of them (in double). The cost satisfies the quadrangle
// inequality, so each layer is solved by divide and conquer over the monotone argmin.
// Candidates: every distinct value when there are at most max(max_candidates, num_levels) of
// them (the result is then exactly optimal: an optimum has its levels on data points); otherwise
// that many quantiles of the sorted values plus uniform_levels(min, max, num_levels) (when
// max - min is finite), so the result never has more variance than uniform levels. Throws
// InvalidArgument for empty or non-finite values, num_levels < 1, or num_levels == 1 with two or
// more distinct values.
std::vector<float> optimal_levels(std::span<const float> values, int num_levels,
                                  size_t max_candidates = 64);

// The levels of levels=uniform for a bucket with minimum lo and maximum hi, exactly as the
// decoder computes them: l_j = min(lo + j * step, hi) (see above). Throws InvalidArgument unless
// lo <= hi, both and hi - lo finite, and 2 <= num_levels <= 2^24.
std::vector<float> uniform_levels(float lo, float hi, int num_levels);

// The exact variance of stochastic rounding, summed over `values`:
// sum_i (x_i - l_j)(l_{j+1} - x_i) with l_j <= x_i <= l_{j+1}, in double. `levels` must be
// non-empty and non-decreasing, and every value must lie in [levels.front(), levels.back()]
// (InvalidArgument otherwise).
double stochastic_rounding_variance(std::span<const float> values, std::span<const float> levels);

}  // namespace qgrad
