#include "core/codecs/fp16.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/half_kernels.h"
#include "core/simd/kernels.h"

namespace qgrad {
namespace {

// Elements per parallel_for chunk (whole buckets for fp16): large enough to amortize the pool's
// hand-off, small enough that a bucket's absmax pass and conversion pass hit L1/L2.
constexpr size_t kChunkElements = size_t{1} << 16;

constexpr uint16_t kTwoPow14 = 0x7400;       // 2^14 as a half
constexpr uint16_t kTwoPow15 = 0x7800;       // 2^15 as a half
constexpr uint16_t kBelowTwoPow15 = 0x77FF;  // 32752, the largest half below 2^15
constexpr uint16_t kNoCap = 0xFFFF;

// 2^e for e in [-126, 127], built from its bits (exact, no libm).
float pow2(int e) { return std::bit_cast<float>(static_cast<uint32_t>(e + 127) << 23); }

class Fp16Codec final : public Codec {
 public:
  explicit Fp16Codec(const CodecSpec& spec)
      : Codec(CodecId::kFp16, spec, pack_wire_params(spec)),
        bucket_(static_cast<size_t>(spec.get_int("bucket"))),
        chunk_buckets_(std::max<size_t>(1, kChunkElements / bucket_)) {}
  bool unbiased() const override { return false; }

 protected:
  size_t max_body_bytes(size_t n) const override { return buckets(n) + 2 * n; }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return max_body_bytes(n); }

  size_t encode_body(std::span<const float> in, const RngKey&,
                     std::span<std::byte> body) const override {
    const size_t n = in.size();
    const size_t nb = buckets(n);
    std::byte* halves = body.data() + nb;
    parallel_for(nb, chunk_buckets_, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        const size_t begin = b * bucket_;
        const size_t len = std::min(bucket_, n - begin);
        const float a = simd::absmax(in.data() + begin, len);
        if (!std::isfinite(a)) throw_if_nonfinite(in.subspan(begin, len), begin);
        const int e = fp16_bucket_exponent(a);
        body[b] = static_cast<std::byte>(static_cast<int8_t>(e));
        // Only at the top exponent can a half that rounds up to 2^15 overflow on decode.
        simd::f32_to_f16_scaled(in.data() + begin, len, pow2(-e),
                                e == kFp16MaxExponent ? kBelowTwoPow15 : kNoCap,
                                halves + 2 * begin);
      }
    });
    return nb + 2 * n;
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    const size_t n = out.size();
    const size_t nb = buckets(n);
    const std::byte* halves = body.data() + nb;
    // Check every bucket before touching `out`, so a rejected payload leaves it unchanged.
    parallel_for(nb, chunk_buckets_, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        const size_t begin = b * bucket_;
        const size_t len = std::min(bucket_, n - begin);
        check_bucket(b, static_cast<int8_t>(body[b]),
                     simd::u16_max_magnitude(halves + 2 * begin, len));
      }
    });
    parallel_for(nb, chunk_buckets_, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        const size_t begin = b * bucket_;
        const size_t len = std::min(bucket_, n - begin);
        simd::f16_axpy(weight, pow2(static_cast<int8_t>(body[b])), halves + 2 * begin,
                       out.data() + begin, len);
      }
    });
  }

 private:
  size_t buckets(size_t n) const { return n / bucket_ + (n % bucket_ != 0); }

  // The encoder's invariants (see fp16.h); anything else was not written by it.
  static void check_bucket(size_t b, int e, uint16_t max_magnitude) {
    QGRAD_PAYLOAD_CHECK(e >= kFp16MinExponent && e <= kFp16MaxExponent, "fp16 bucket ", b,
                        ": exponent ", e, " outside [", kFp16MinExponent, ", ", kFp16MaxExponent,
                        "]");
    if (max_magnitude == 0) {
      QGRAD_PAYLOAD_CHECK(e == 0, "fp16 bucket ", b, ": all zeros but exponent ", e,
                          " (the encoder writes 0)");
      return;
    }
    const uint16_t top = e == kFp16MaxExponent ? kBelowTwoPow15 : kTwoPow15;
    QGRAD_PAYLOAD_CHECK(max_magnitude <= top, "fp16 bucket ", b, ": largest half 0x", std::hex,
                        max_magnitude, " exceeds 0x", top,
                        ", the most the encoder writes at exponent ", std::dec, e);
    QGRAD_PAYLOAD_CHECK(e == kFp16MinExponent || max_magnitude >= kTwoPow14, "fp16 bucket ", b,
                        ": largest half 0x", std::hex, max_magnitude,
                        " is below 2^14 although the exponent ", std::dec, e,
                        " is not the clamped minimum");
  }

  size_t bucket_;
  size_t chunk_buckets_;
};

class Bf16Codec final : public Codec {
 public:
  explicit Bf16Codec(const CodecSpec& spec) : Codec(CodecId::kBf16, spec, pack_wire_params(spec)) {}
  bool unbiased() const override { return false; }

 protected:
  size_t max_body_bytes(size_t n) const override { return 2 * n; }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return 2 * n; }

  size_t encode_body(std::span<const float> in, const RngKey&,
                     std::span<std::byte> body) const override {
    parallel_for(in.size(), kChunkElements, [&](size_t begin, size_t end) {
      const uint32_t max_bits =
          simd::f32_to_bf16(in.data() + begin, end - begin, body.data() + 2 * begin);
      if (max_bits >= 0x7F800000u) throw_if_nonfinite(in.subspan(begin, end - begin), begin);
    });
    return 2 * in.size();
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    parallel_for(out.size(), kChunkElements, [&](size_t begin, size_t end) {
      const uint16_t m = simd::u16_max_magnitude(body.data() + 2 * begin, end - begin);
      QGRAD_PAYLOAD_CHECK(m <= 0x7F7F, "bf16 payload holds an Inf or NaN (0x", std::hex, m,
                          ") in elements [", std::dec, begin, ", ", end,
                          "); the encoder saturates at 0x7F7F");
    });
    parallel_for(out.size(), kChunkElements, [&](size_t begin, size_t end) {
      simd::bf16_axpy(weight, body.data() + 2 * begin, out.data() + begin, end - begin);
    });
  }
};

}  // namespace

int fp16_bucket_exponent(float absmax) {
  const uint32_t bits = std::bit_cast<uint32_t>(absmax) & 0x7FFFFFFFu;
  if (bits == 0) return 0;
  // floor(log2 a) = biased exponent - 127 for normal a; subnormal a (field 0) clamps anyway.
  const int e = static_cast<int>(bits >> 23) - 127 - 14;
  return std::clamp(e, kFp16MinExponent, kFp16MaxExponent);
}

std::unique_ptr<Codec> make_fp16_codec(const CodecSpec& spec) {
  return std::make_unique<Fp16Codec>(spec);
}

std::unique_ptr<Codec> make_bf16_codec(const CodecSpec& spec) {
  return std::make_unique<Bf16Codec>(spec);
}

}  // namespace qgrad
