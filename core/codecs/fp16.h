// `fp16` and `bf16`: 16-bit floats, the usual "half precision gradients" baseline (e.g. the fp16
// compression hook of PyTorch DDP and Horovod's fp16 compressor). Deterministic, biased
// (round-to-nearest), aggregation by mean.
//
// fp16:bucket=B. Plain IEEE binary16 overflows above 65504 (a gradient of 1e6 would turn into
// Inf and then NaN downstream) and loses precision below 2^-14. So each bucket of B elements gets
// a power-of-two scale 2^e chosen from its absmax a:
//     e = floor(log2 a) - 14,   so that a * 2^-e lies in [2^14, 2^15),
// and stores h_i = RNE_f16(x_i * 2^-e) (round to nearest, ties to even; multiplying by a power
// of two is exact, so this is a single rounding). Decoding is h_i * 2^e. Every element is then
// within half an fp16 ulp: |x_i - dec_i| <= 2^-11 * 2^floor(log2 |x_i|) <= 2^-11 |x_i| as long as
// x_i * 2^-e stays a normal half, i.e. |x_i| >= 2^-28 a; smaller elements of the bucket become
// fp16 subnormals with an absolute error <= 2^(e-25) <= 2^-39 a (unclamped buckets).
// The bucket maximum itself (after rounding) lies in [2^14, 2^15], nowhere near fp16's Inf.
//
// Exponent range: e is stored as int8 and clamped to [-126, 113], so that 2^e and 2^-e are both
// normal float32 numbers. 113 is the largest exponent any finite float needs (a < 2^128); at
// e = 113 a half that rounds up to 2^15 would decode to 2^128 = Inf, so in that bucket the
// magnitude saturates at the largest half below 2^15 (32752, still within 2^-11 relative).
// Buckets with a < 2^-112 ("tiny" buckets, |x| < 1.9e-34) are clamped to e = -126: their values
// x * 2^126 stay below 2^14 and lose precision gradually (fp16 subnormals from |x| < 2^-140, zero
// from |x| <= 2^-151). An all-zero bucket has e = 0 and decodes to exact zeros.
//
// Body layout, exactly nb + 2n bytes for n elements, nb = ceil(n / B) (0 bytes for n = 0):
//     nb x int8     e of bucket 0, 1, ..., nb-1
//     n  x uint16   h_0 ... h_{n-1}, little-endian binary16 (sign, 5-bit exponent, 10-bit mantissa)
// That is 16 + 8/B bits per element (16.002 for B = 4096). The decoder accepts only what the
// encoder can produce: e in [-126, 113]; a bucket whose halves are all (+-)0 must have e = 0; any
// other bucket has max |h| <= 2^15 (<= 32752 at e = 113) and, unless e = -126, max |h| >= 2^14.
//
// bf16. h_i = the top 16 bits of x_i rounded to nearest even, except that a finite value that
// would round up to Inf saturates at the largest finite bf16 (0x7F7F = 3.3895e38). Relative error
// <= 2^-8 for normal values (8 significant bits). Body: exactly 2n bytes, little-endian uint16,
// 16 bits per element; the decoder rejects Inf/NaN patterns.
//
// Variance: neither codec is random; the error is deterministic rounding error, bounded above.
// Encode and decode are split over chunks of whole buckets with parallel_for; the bytes do not
// depend on the thread count or SIMD target. Thread-safe: the codec objects are immutable.
#pragma once

#include <memory>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_fp16_codec(const CodecSpec& spec);
std::unique_ptr<Codec> make_bf16_codec(const CodecSpec& spec);

// The fp16 codec's exponent for a bucket whose absmax is `absmax` (finite, >= 0): 0 for 0, else
// floor(log2 absmax) - 14 clamped to [kFp16MinExponent, kFp16MaxExponent]. Exposed for tests.
inline constexpr int kFp16MinExponent = -126;
inline constexpr int kFp16MaxExponent = 113;
int fp16_bucket_exponent(float absmax);

}  // namespace qgrad
