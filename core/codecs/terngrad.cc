#include "core/codecs/terngrad.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/kernels.h"
#include "core/simd/sign_kernels.h"

namespace qgrad {
namespace {

// Code streams are assembled as machine words; the wire order is little-endian.
static_assert(std::endian::native == std::endian::little,
              "terngrad codec assumes a little-endian host");

// Elements per parallel task: a multiple of 64, so tasks never share a word of codes.
constexpr size_t kChunk = size_t{1} << 15;
// Random words drawn per philox_fill call: small enough to stay on the stack and in L1.
constexpr size_t kBlock = 1024;

size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

// See sign.cc: tasks of whole buckets and a multiple of 64 elements, or 0 for long buckets.
size_t bucket_chunk(size_t bucket) {
  if (bucket > kChunk) return 0;
  const size_t unit = bucket * (64 / std::gcd(bucket, size_t{64}));
  return unit * std::max<size_t>(1, kChunk / unit);
}

// Bit k of v moves to bit 2k (Morton spread), so two keep masks interleave into 2-bit codes.
uint64_t spread_bits(uint32_t v) {
  uint64_t x = v;
  x = (x | (x << 16)) & 0x0000FFFF0000FFFFull;
  x = (x | (x << 8)) & 0x00FF00FF00FF00FFull;
  x = (x | (x << 4)) & 0x0F0F0F0F0F0F0F0Full;
  x = (x | (x << 2)) & 0x3333333333333333ull;
  x = (x | (x << 1)) & 0x5555555555555555ull;
  return x;
}

// dst's bit stream |= src's first 64 * words bits, placed at bit `offset`.
void or_bits(uint64_t* dst, size_t offset, const uint64_t* src, size_t words) {
  const size_t q = offset / 64, sh = offset % 64;
  for (size_t k = 0; k < words; ++k) {
    dst[q + k] |= src[k] << sh;
    if (sh != 0) dst[q + k + 1] |= src[k] >> (64 - sh);
  }
}

// Canonical 16-partial sum of f(x_i) in double: a fixed association on every machine, and no
// overflow for any finite float input.
template <class F>
double partial_sum(const float* x, size_t d, F f) {
  double p[16] = {};
  size_t i = 0;
  for (; i + 16 <= d; i += 16)
    for (size_t j = 0; j < 16; ++j) p[j] += f(static_cast<double>(x[i + j]));
  for (size_t j = 0; i + j < d; ++j) p[j] += f(static_cast<double>(x[i + j]));
  for (size_t width = 8; width > 0; width /= 2)
    for (size_t j = 0; j < width; ++j) p[j] += p[j + width];
  return p[0];
}

// True if some 2-bit code in bytes [0, nbytes) is 3.
bool has_code3(const std::byte* p, size_t nbytes) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= nbytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w & (w >> 1);
  }
  for (; i < nbytes; ++i) {
    const auto b = std::to_integer<uint64_t>(p[i]);
    acc |= b & (b >> 1);
  }
  return (acc & 0x5555555555555555ull) != 0;
}

class TernGradCodec final : public Codec {
 public:
  explicit TernGradCodec(const CodecSpec& spec)
      : Codec(CodecId::kTernGrad, spec, pack_wire_params(spec)),
        bucket_(static_cast<size_t>(spec.get_int("bucket"))),
        clip_(spec.get_float("clip")) {}

  bool unbiased() const override { return clip_ == 0.0f; }

 protected:
  size_t scale_count(size_t n) const { return ceil_div(n, bucket_); }
  size_t body_bytes(size_t n) const { return 4 * scale_count(n) + ceil_div(n, 4); }
  size_t max_body_bytes(size_t n) const override { return body_bytes(n); }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return body_bytes(n); }

  size_t encode_body(std::span<const float> in, const RngKey& key,
                     std::span<std::byte> body) const override {
    const size_t n = in.size();
    const size_t nb = scale_count(n);
    std::byte* scales = body.data();
    std::byte* codes = body.data() + 4 * nb;
    const auto scale_buckets = [&](size_t first, size_t last) {
      for (size_t j = first; j < last; ++j) {
        const size_t start = j * bucket_;
        store_f32(scales + 4 * j,
                  bucket_scale(in.data() + start, std::min(bucket_, n - start), start));
      }
    };
    const auto encode = [&](size_t begin, size_t end) {
      encode_codes(in.data(), begin, end, key, scales, codes);
    };
    if (const size_t chunk = bucket_chunk(bucket_); chunk != 0) {
      parallel_for(n, chunk, [&](size_t begin, size_t end) {
        scale_buckets(begin / bucket_, ceil_div(end, bucket_));
        encode(begin, end);
      });
    } else {
      parallel_for(nb, 1, scale_buckets);
      parallel_for(n, kChunk, encode);
    }
    return body_bytes(n);
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    const size_t n = out.size();
    const size_t nb = scale_count(n);
    const std::byte* codes = body.data() + 4 * nb;
    // Every check before the first write: a rejected payload leaves `out` untouched.
    for (size_t j = 0; j < nb; ++j) {
      const float s = load_f32(body.data() + 4 * j);
      QGRAD_PAYLOAD_CHECK(std::isfinite(s) && s >= 0.0f, "terngrad payload: bucket ", j,
                          " has scale ", s, ", expected a finite value >= 0");
    }
    QGRAD_PAYLOAD_CHECK(!has_code3(codes, ceil_div(n, 4)),
                        "terngrad payload: a 2-bit code is 3 (valid codes: 0, 1 = +, 2 = -)");
    if (n % 4 != 0) {
      const auto last = std::to_integer<unsigned>(codes[n / 4]);
      QGRAD_PAYLOAD_CHECK((last >> (2 * (n % 4))) == 0,
                          "terngrad payload: codes past the last element are not zero");
    }
    parallel_for(n, kChunk, [&](size_t begin, size_t end) {
      for (size_t j = begin / bucket_; j * bucket_ < end; ++j) {
        const size_t lo = std::max(begin, j * bucket_);
        const size_t hi = std::min(end, (j + 1) * bucket_);
        const float ws = weight * load_f32(body.data() + 4 * j);
        simd::add_ternary(codes, lo, hi - lo, ws, -ws, out.data() + lo);
      }
    });
  }

 private:
  float bucket_scale(const float* x, size_t d, size_t offset) const {
    const float m = simd::absmax(x, d);
    if (!std::isfinite(m)) throw_if_nonfinite({x, d}, offset);
    if (clip_ == 0.0f || m == 0.0f) return m;
    const double mean = partial_sum(x, d, [](double v) { return v; }) / static_cast<double>(d);
    const double var = partial_sum(x, d, [mean](double v) { return (v - mean) * (v - mean); }) /
                       static_cast<double>(d);
    const double s = static_cast<double>(clip_) * std::sqrt(var);
    return s < static_cast<double>(m) ? static_cast<float>(s) : m;
  }

  // Codes of elements [begin, end), begin a multiple of 64, into codes[begin / 4, ...). The
  // scales of the buckets involved are already in the body. Built in a per-thread word buffer,
  // since buckets need not start on a byte, then copied out whole bytes at a time.
  void encode_codes(const float* in, size_t begin, size_t end, const RngKey& key,
                    const std::byte* scales, std::byte* codes) const {
    thread_local std::vector<uint64_t> stream;
    stream.assign(2 * ceil_div(end - begin, 64) + 4, 0);
    uint32_t words[kBlock];
    uint64_t pos[kBlock / 64], neg[kBlock / 64], code[2 * kBlock / 64];
    for (size_t j = begin / bucket_; j * bucket_ < end; ++j) {
      const size_t lo = std::max(begin, j * bucket_);
      const size_t hi = std::min(end, (j + 1) * bucket_);
      const float s = load_f32(scales + 4 * j);
      if (s == 0.0f) continue;  // all codes 0
      for (size_t p = lo; p < hi; p += kBlock) {
        const size_t len = std::min(kBlock, hi - p);
        philox_fill(key, p, len, words);
        simd::ternary_masks(in + p, len, words, s, pos, neg);
        const size_t w64 = ceil_div(len, 64);
        for (size_t k = 0; k < w64; ++k) {
          code[2 * k] = spread_bits(static_cast<uint32_t>(pos[k])) |
                        spread_bits(static_cast<uint32_t>(neg[k])) << 1;
          code[2 * k + 1] = spread_bits(static_cast<uint32_t>(pos[k] >> 32)) |
                            spread_bits(static_cast<uint32_t>(neg[k] >> 32)) << 1;
        }
        or_bits(stream.data(), 2 * (p - begin), code, 2 * w64);
      }
    }
    std::memcpy(codes + begin / 4, stream.data(), ceil_div(end - begin, 4));
  }

  size_t bucket_;
  float clip_;
};

}  // namespace

std::unique_ptr<Codec> make_terngrad_codec(const CodecSpec& spec) {
  return std::make_unique<TernGradCodec>(spec);
}

}  // namespace qgrad
