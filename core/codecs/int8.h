// `int8:map=linear|tree,rounding=stochastic|nearest,bucket=d`: one signed byte per coordinate and
// one float32 absmax per bucket of d coordinates (Dettmers, "8-Bit Approximations for Parallelism
// in Deep Learning", ICLR 2016, arXiv 1511.04561; docs/algorithms.md, "8-bit: int8").
//
// A bucket v is divided by its absmax M = max_i |v_i| and every coordinate is rounded to one of
// 255 codes k in [-127, 127] with values c(k) = sign(k) m_|k| for a magnitude table
// 0 = m_0 < m_1 < ... < m_127 = 1; decode gives M * c(k). Rounding is on the magnitude
// a = |v_i| / M: with m_j <= a < m_{j+1} and p = (a - m_j) / (m_{j+1} - m_j),
//   rounding=stochastic: |code| = j + 1 with probability p, else j (u < p, u the element's Philox
//                        uniform): unbiased, Var = M^2 (a - m_j)(m_{j+1} - a) <= M^2 gap^2 / 4;
//   rounding=nearest:    |code| = j + 1 iff p >= 1/2 (ties go away from zero): biased,
//                        |error| <= M gap / 2, and decoding then re-encoding a decoded bucket
//                        gives the same codes.
//
// Maps:
//   linear: m_k = k / 127. The map is symmetric with an exact zero on purpose: the textbook
//           linspace(-1, 1, 256) has no zero (its middle codes are +-1/255), so zero gradients and
//           sparse updates would turn into noise. Code -128 is unused. The per-bucket step is
//           s = M / 127 in float and a code decodes to k * s (with decode_add's weight w:
//           out += (w * s) * k); the encoder computes a = min(|v| * (127 / M), 127).
//   tree:   Dettmers' dynamic tree map as built by bitsandbytes create_dynamic_map(signed=True):
//           for i = 0..6 the midpoints of linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), with
//           +- copies, plus 0 and 1.0: 256 codes. We deviate in one point: that map has +1.0 but
//           not -1.0, so the most negative coordinate of a bucket (-M) is not representable and
//           stochastic rounding near -M could not be unbiased. We drop the smallest pair
//           +-5.5e-7 (i = 0) and add -1.0, which makes the map symmetric: 255 codes
//           {0, +-1, +-126 tree values}, smallest positive 3.25e-6, largest below 1 0.99296875.
//           The magnitudes are computed in double as 10^(i-6) * (0.1 + (k + 1/2) * 0.9 / 2^i) and
//           rounded once to float. The encoder computes a = min(|v| * (1 / M), 1) and
//           p = (a - m_j) * (1 / (m_{j+1} - m_j)) with the float reciprocals of int8_tree tables.
//
// Buckets whose absmax is below 2^-64 are rescaled by 2^64 (exact) before the reciprocal, so
// denormal buckets still round correctly; an all-zero bucket has M = 0 and decodes to zeros.
//
// Wire body (little-endian): nb = ceil(n / d) float32 absmax values, then n code bytes (two's
// complement int8). Size 4 nb + n bytes exactly: 8 + 32/d bits per coordinate (3.97x smaller than
// fp32 at d = 512). The decoder rejects a negative or non-finite absmax and the byte 0x80 (-128)
// with CorruptPayload; it checks each chunk of whole buckets before it adds that chunk into `out`.
//
// Randomness: element i (global index) uses philox_word(key, i). Encoding is parallel over
// chunks of whole buckets and gives the same bytes for every thread count and SIMD target.
// Thread-safe: the codec is immutable.
#pragma once

#include <array>
#include <memory>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_int8_codec(const CodecSpec& spec);

enum class Int8Map { kLinear, kTree };

// The value of every valid code for an absmax of 1, ascending: entry k + 127 is the value of code
// k in [-127, 127], exactly as the decoder computes it (linear: k * (1.0f / 127)).
std::array<float, 255> int8_code_values(Int8Map map);

}  // namespace qgrad
