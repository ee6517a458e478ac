// `qsgd`: QSGD stochastic quantization (Alistarh, Grubic, Li, Tomioka, Vojnovic, "QSGD:
// Communication-Efficient SGD via Gradient Quantization and Encoding", NeurIPS 2017,
// arXiv 1610.02132; docs/algorithms.md, "QSGD"). Spec: qsgd:bits=b,levels=s,bucket=d,norm=max|l2,
// coding=dense|elias (defaults b = 4, s = 2^(b-1) - 1, d = 512, max, dense).
//
// Maths. The input is cut into buckets of d elements (the last one may be shorter); each bucket v
// is quantized on its own with scale = max_i |v_i| (norm=max, the paper's experiments) or
// ||v||_2 (norm=l2, the paper's theory). With r_i = s |v_i| / scale, l_i = floor(r_i) and
// p_i = r_i - l_i,
//     Q(v)_i = scale * sgn(v_i) * xi_i / s,   xi_i = l_i + 1 with probability p_i, else l_i,
// sgn(0) = +1. E[Q(v)] = v, |Q(v)_i - v_i| <= scale / s, and the variance of a bucket is exactly
//     E||Q(v) - v||^2 = (scale^2 / s^2) * sum_i p_i (1 - p_i),
// which for norm=l2 is at most min(d / s^2, sqrt(d) / s) ||v||_2^2 (Lemma 3.1; d for n with
// bucketing). With norm=max the largest coordinate is sent exactly and each coordinate's variance
// is at most scale^2 / (4 s^2). A zero bucket has scale 0 and decodes to exact zeros.
//
// Arithmetic, as computed (identical on every SIMD target and thread count; no FMA):
//   scale  max: simd::absmax(bucket). l2: sqrt(simd::sum_squares(bucket)) in float when the
//          bucket's absmax lies in [2^-40, 2^40]; otherwise sqrt of a sequential double sum of
//          squares, rounded to float and capped at FLT_MAX. Either way scale >= max_i |v_i|.
//   level  pre = 1, or 2^64 when scale < 2^-100, or 2^-64 when scale > 2^100 (keeps the float
//          quotient normal); inv = float(s) / (scale * pre), moved up one ulp at a time until
//          (scale * pre) * inv >= s; r = min(s, (|v_i| * pre) * inv), so the largest element
//          gets r = s exactly and every r <= s. level = floor(r) + [u < r - floor(r)] with
//          u = uniform_from_word(philox_word(key, i)), i the element's index in the whole input.
//          (The kernel evaluates this exactly in integers from the element's 16 random bits;
//          see simd::qsgd_quantize_half.)
//   code   level | sign << (b - 1), sign = (v_i < 0). A zero level keeps v_i's sign bit; it
//          decodes to -0, which adds nothing. sgn(+-0) = +1.
//   value  unit = (scale * pre) / float(s); magnitude = scale if level == s, else
//          (level * unit) * (1 / pre); decode_add adds weight * (+-magnitude) to out.
// Element words carry 16 random bits (core/philox.h), so a coordinate rounds up with probability
// p_i to within 2^-17.
//
// Wire body, coding=dense (exactly 4 * nb + ceil(n * b / 8) bytes, nb = ceil(n / d)):
//   nb little-endian float32 scales, then the n codes at b bits each:
//   - b in {2, 4} ("sliced"): groups of G = 512 / b consecutive elements fill 16 little-endian
//     32-bit words (64 bytes); element 16 k + j of a group sits in word j at bits [b k, b (k + 1)).
//     The last n mod G elements (if any) follow in the linear layout below.
//   - other b ("linear"): element i at bits [b i, b (i + 1)) of the stream, least significant bit
//     first within each byte (b = 8 is one byte per element). The final byte is zero-padded.
//   4 bits and bucket 512 cost 4.0625 bits per element: 7.88x less than fp32.
// Wire body, coding=elias (the paper's section 3.1; variable length): one MSB-first bit stream
// (core/elias.h), bucket after bucket, each
//   32 bits: the scale's float32 bit pattern, most significant bit first;
//   omega(nnz + 1), nnz = number of nonzero levels of the bucket;
//   per nonzero, in increasing position: omega(gap), gap = position - previous position (the first
//   gap is the 1-based position), 1 sign bit (1 = negative), omega(level);
// then zero bits up to a byte. The decoder rejects (CorruptPayload) a non-finite or negative
// scale, nnz > bucket length, nonzeros in a zero-scale bucket, a gap past the bucket's end,
// level > s, a codeword longer than 64 bits, a truncated stream, and any byte or non-zero bit
// after the padding. Both codings decode to the same values for the same input and key.
//
// Errors: NaN/Inf input is InvalidArgument naming the first bad index. A corrupt body is
// CorruptPayload; dense bodies have their scales checked before out is touched, but a bad level
// or an elias stream may be found after part of out was updated.
//
// Speed: the dense paths for b = 8, and for b in {2, 4} when d is a multiple of G, quantize and
// pack in registers (core/simd/qsgd_kernels.h); other shapes go through a code buffer and a
// generic packer. coding=elias is a serial bit stream (encoded per chunk in parallel, decoded in
// one pass), for sparse payloads rather than speed.
//
// Thread-safety: the codec is immutable; encode/decode split the work into chunks of whole
// buckets (a multiple of lcm(d, 512) elements, at least 65536, independent of the thread
// count), and each chunk's codes start on a byte, so any thread split writes the same bytes.
#pragma once

#include <memory>
#include <span>

#include "core/codec.h"

namespace qgrad {

// Throws InvalidArgument when levels > 2^(bits - 1) - 1, naming the bits it needs.
std::unique_ptr<Codec> make_qsgd_codec(const CodecSpec& spec);

// The exact variance E||Q(v) - v||^2 of quantizing the bucket v with s levels (norm l2 or max),
// computed in double from the definition above: (scale^2 / s^2) * sum_i p_i (1 - p_i).
double qsgd_exact_variance(std::span<const float> v, int s, bool l2);
// The same per coordinate: out[i] = (scale / s)^2 p_i (1 - p_i); out.size() == v.size().
void qsgd_coordinate_variances(std::span<const float> v, int s, bool l2, std::span<double> out);

}  // namespace qgrad
