#include "core/codecs/qsgd.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/codec_registry.h"
#include "core/elias.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/kernels.h"
#include "core/simd/qsgd_kernels.h"

namespace qgrad {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the dense layouts store 32-bit words in native order");

// Random words and codes live in L1-sized stack tiles. A multiple of 512, so tile boundaries are
// group- and byte-aligned in every dense layout.
constexpr size_t kTile = 4096;
// Parallel chunks are at least this many elements (rounded up to whole buckets).
constexpr size_t kChunkTarget = size_t{1} << 16;

// Scale of one bucket (see the header); throws InvalidArgument on NaN/Inf. absmax doubles as the
// non-finite check.
float bucket_scale(const float* v, size_t len, size_t offset, bool l2) {
  const float am = simd::absmax(v, len);
  if (!std::isfinite(am)) throw_if_nonfinite({v, len}, offset);
  if (!l2 || am == 0.0f) return am;
  // In this range the float sum of squares neither overflows nor loses the largest square, so
  // sqrt(sum) >= absmax (sqrt(fl(a * a)) == a).
  if (am >= 0x1p-40f && am <= 0x1p40f) return std::sqrt(simd::sum_squares(v, len));
  double ss = 0;
  for (size_t i = 0; i < len; ++i) ss += static_cast<double>(v[i]) * static_cast<double>(v[i]);
  return static_cast<float>(std::min(std::sqrt(ss), static_cast<double>(FLT_MAX)));
}

// One nonzero of the elias stream: omega(gap), the sign bit, omega(level); in one write when both
// codewords are short (the common case).
void put_nonzero(elias::BitWriter& w, uint64_t gap, uint32_t sign, uint32_t level) {
  if (gap < elias::detail::kSmall && level < elias::detail::kSmall) {
    const elias::detail::Codeword g = elias::detail::kEncode[gap],
                                  l = elias::detail::kEncode[level];
    w.put_small((((uint64_t{g.bits} << 1) | sign) << l.len) | l.bits, g.len + 1 + l.len);
  } else {
    elias::omega_put(w, gap);
    w.put_small(sign, 1);
    elias::omega_put(w, level);
  }
}

// Decoding table for a whole (gap, sign, level) triple that fits in the next 12 bits: entry
// gap | sign << 8 | level << 16 | length << 24, or 0.
constexpr int kTriplePeek = 12;
constexpr auto kTriples = [] {
  std::array<uint32_t, 1u << kTriplePeek> t{};
  for (uint32_t gap = 1; gap < 64; ++gap) {
    for (uint32_t level = 1; level < 64; ++level) {
      const auto g = elias::detail::kEncode[gap], l = elias::detail::kEncode[level];
      const int len = g.len + 1 + l.len;
      if (len > kTriplePeek) continue;
      for (uint32_t sign = 0; sign < 2; ++sign) {
        const uint32_t code = (((g.bits << 1) | sign) << l.len) | l.bits;
        const uint32_t first = code << (kTriplePeek - len), count = 1u << (kTriplePeek - len);
        for (uint32_t i = 0; i < count; ++i)
          t[first + i] = gap | sign << 8 | level << 16 | static_cast<uint32_t>(len) << 24;
      }
    }
  }
  return t;
}();

void pack_linear(const uint32_t* codes, size_t m, int bits, std::byte* dst) {
  size_t i = 0;
  for (; i + 8 <= m; i += 8) {  // 8 codes fill exactly `bits` bytes
    uint64_t acc = 0;
    for (int k = 0; k < 8; ++k) acc |= uint64_t{codes[i + k]} << (bits * k);
    for (int k = 0; k < bits; ++k) dst[k] = static_cast<std::byte>(acc >> (8 * k));
    dst += bits;
  }
  uint64_t acc = 0;
  int fill = 0;
  for (; i < m; ++i, fill += bits) acc |= uint64_t{codes[i]} << fill;
  for (int k = 0; k < (fill + 7) / 8; ++k) dst[k] = static_cast<std::byte>(acc >> (8 * k));
}

void unpack_linear(const std::byte* src, size_t m, int bits, uint32_t* codes) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  size_t i = 0;
  for (; i + 8 <= m; i += 8) {
    uint64_t acc = 0;
    for (int k = 0; k < bits; ++k) acc |= uint64_t{static_cast<uint8_t>(src[k])} << (8 * k);
    for (int k = 0; k < 8; ++k) codes[i + k] = static_cast<uint32_t>((acc >> (bits * k)) & mask);
    src += bits;
  }
  const size_t rest = m - i;
  uint64_t acc = 0;
  for (size_t k = 0; k < (rest * bits + 7) / 8; ++k)
    acc |= uint64_t{static_cast<uint8_t>(src[k])} << (8 * k);
  for (size_t k = 0; k < rest; ++k)
    codes[i + k] = static_cast<uint32_t>((acc >> (bits * k)) & mask);
}

class QsgdCodec final : public Codec {
 public:
  explicit QsgdCodec(const CodecSpec& spec)
      : Codec(CodecId::kQsgd, spec, pack_wire_params(spec)),
        bits_(static_cast<int>(spec.get_int("bits"))),
        bucket_(static_cast<size_t>(spec.get_int("bucket"))),
        l2_(spec.get("norm") == "l2"),
        elias_(spec.get("coding") == "elias"),
        level_mask_((1u << (bits_ - 1)) - 1) {
    const int64_t levels = spec.get_int("levels");
    if (levels > static_cast<int64_t>(level_mask_)) {
      int need = 2;
      while (((int64_t{1} << (need - 1)) - 1) < levels) ++need;
      throw InvalidArgument(detail::concat("qsgd: levels=", levels, " needs bits >= ", need,
                                           " (levels <= 2^(bits-1)-1 = ", level_mask_,
                                           " with bits=", bits_, ")"));
    }
    s_ = levels > 0 ? static_cast<uint32_t>(levels) : level_mask_;
    sliced_ = bits_ == 2 || bits_ == 4;
    group_ = static_cast<size_t>(512 / bits_);
    fast_ = bits_ == 8 || (sliced_ && bucket_ % group_ == 0);
    // Whole buckets, and a multiple of 512 so every chunk's codes start on a group and a byte.
    const size_t align = std::lcm(bucket_, size_t{512});
    chunk_ = align * std::max<size_t>(1, (kChunkTarget + align - 1) / align);
  }

  bool unbiased() const override { return true; }

 protected:
  size_t max_body_bytes(size_t n) const override {
    if (!elias_) return dense_bytes(n);
    // Per bucket of len elements: 32 + |omega(len + 1)| + len * (3 + |omega(s)|) bits. A nonzero
    // costs |omega(gap)| + 1 + |omega(level)| with |omega(level)| <= |omega(s)| (omega lengths
    // are monotone) and |omega(g)| <= 2g - 1, and the gaps of a bucket sum to at most len.
    const auto bucket_bits = [&](size_t len) -> uint64_t {
      return 32 + static_cast<uint64_t>(elias::omega_length(len + 1)) +
             len * static_cast<uint64_t>(3 + elias::omega_length(s_));
    };
    const size_t full = n / bucket_, tail = n % bucket_;
    const uint64_t bits = full * bucket_bits(bucket_) + (tail > 0 ? bucket_bits(tail) : 0);
    return static_cast<size_t>((bits + 7) / 8);
  }

  std::optional<size_t> exact_body_bytes(size_t n) const override {
    if (elias_) return std::nullopt;
    return dense_bytes(n);
  }

  size_t encode_body(std::span<const float> in, const RngKey& key,
                     std::span<std::byte> body) const override {
    const size_t n = in.size();
    if (n == 0) return 0;
    if (elias_) return encode_elias(in, key, body);
    std::byte* scales = body.data();
    std::byte* codes = body.data() + 4 * num_buckets(n);
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      if (fast_) {
        encode_fast_chunk(in.data(), n, begin, end, key, scales, codes);
      } else {
        encode_dense_chunk(in.data(), n, begin, end, key, scales, codes);
      }
    });
    return dense_bytes(n);
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    const size_t n = out.size();
    if (n == 0) return;
    if (elias_) return decode_elias(body, out, weight);
    const size_t nb = num_buckets(n);
    for (size_t b = 0; b < nb; ++b) check_scale(load_f32(body.data() + 4 * b), b);
    const std::byte* codes = body.data() + 4 * nb;
    const size_t code_bits = n * static_cast<size_t>(bits_);
    if (code_bits % 8 != 0) {
      const auto last = static_cast<uint8_t>(codes[code_bits / 8]);
      QGRAD_PAYLOAD_CHECK((last >> (code_bits % 8)) == 0,
                          "qsgd: the padding bits after the last code are not zero");
    }
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      if (fast_) {
        decode_fast_chunk(body.data(), codes, n, begin, end, weight, out.data());
      } else {
        decode_dense_chunk(body.data(), codes, n, begin, end, weight, out.data());
      }
    });
  }

 private:
  size_t num_buckets(size_t n) const { return (n + bucket_ - 1) / bucket_; }
  size_t dense_bytes(size_t n) const {
    return 4 * num_buckets(n) + (n * static_cast<size_t>(bits_) + 7) / 8;
  }

  static void check_scale(float scale, size_t bucket) {
    QGRAD_PAYLOAD_CHECK(std::isfinite(scale) && !std::signbit(scale), "qsgd: bucket ", bucket,
                        " has scale ", scale, "; scales are finite and >= 0");
  }

  simd::QsgdQuantParams quant_params(float scale) const {
    if (scale == 0.0f) return simd::QsgdQuantParams{};
    return simd::qsgd_quant_params(scale, static_cast<int>(s_), bits_);
  }

  simd::QsgdDequantParams dequant_params(float scale, float weight) const {
    return simd::qsgd_dequant_params(scale, weight, static_cast<int>(s_), bits_);
  }

  // Writes the codes of elements [first, first + m) (first a multiple of 512).
  void pack(const uint32_t* codes, size_t first, size_t m, std::byte* out) const {
    std::byte* dst = out + first * static_cast<size_t>(bits_) / 8;
    if (sliced_) {
      const size_t groups = m / group_;
      simd::qsgd_pack_sliced(codes, groups, bits_, dst);
      pack_linear(codes + groups * group_, m - groups * group_, bits_, dst + 64 * groups);
    } else {
      pack_linear(codes, m, bits_, dst);
    }
  }

  void unpack(const std::byte* in, size_t first, size_t m, uint32_t* codes) const {
    const std::byte* src = in + first * static_cast<size_t>(bits_) / 8;
    if (sliced_) {
      const size_t groups = m / group_;
      simd::qsgd_unpack_sliced(src, groups, bits_, codes);
      unpack_linear(src + 64 * groups, m - groups * group_, bits_, codes + groups * group_);
    } else {
      unpack_linear(src, m, bits_, codes);
    }
  }

  // Quantizes the whole buckets [begin, end) tile by tile into a code buffer: on_scale(bucket,
  // scale) sees each bucket's scale when it is computed, on_tile(first, m, codes) each tile's
  // codes. One Philox fill per tile (skipped for tiles of zero buckets): short buckets would
  // otherwise leave the SIMD fill too few words to vectorize.
  template <class OnScale, class OnTile>
  void quantize_tiles(const float* in, size_t n, size_t begin, size_t end, const RngKey& key,
                      OnScale&& on_scale, OnTile&& on_tile) const {
    alignas(64) uint32_t raw[kTile / 2 + 1];
    alignas(64) uint32_t codes[kTile];
    size_t bucket_end = begin;  // chunks start on a bucket
    simd::QsgdQuantParams p;
    for (size_t t = begin; t < end; t += kTile) {
      const size_t te = std::min(end, t + kTile);
      const uint16_t* halves = reinterpret_cast<const uint16_t*>(raw) + t % 2;  // element t
      bool filled = false;
      for (size_t i = t; i < te;) {
        if (i == bucket_end) {
          bucket_end = std::min(n, i + bucket_);
          const float scale = bucket_scale(in + i, bucket_end - i, i, l2_);
          on_scale(i / bucket_, scale);
          p = quant_params(scale);
        }
        const size_t se = std::min(te, bucket_end);
        if (p.scale == 0.0f) {
          std::memset(codes + (i - t), 0, 4 * (se - i));
        } else {
          if (!filled) {
            philox_fill_raw(key, t / 2, (te + 1) / 2 - t / 2, raw);
            filled = true;
          }
          simd::qsgd_quantize(in + i, halves + (i - t), se - i, p, codes + (i - t));
        }
        i = se;
      }
      on_tile(t, te - t, static_cast<const uint32_t*>(codes));
    }
  }

  // The fused path: one Philox fill per tile of whole buckets (or of a bucket's kTile pieces),
  // codes go straight from registers to the body.
  void encode_fast_chunk(const float* in, size_t n, size_t begin, size_t end, const RngKey& key,
                         std::byte* scales, std::byte* codes_out) const {
    alignas(64) uint32_t raw[kTile / 2 + 1];
    alignas(64) uint32_t codes[256];  // the stream's last partial group
    const size_t tile = bucket_ <= kTile ? kTile / bucket_ * bucket_ : kTile;
    const auto bits = static_cast<size_t>(bits_);
    size_t bucket_end = begin;
    simd::QsgdQuantParams p;
    for (size_t t = begin; t < end; t += tile) {
      const size_t te = std::min(end, t + tile);
      philox_fill_raw(key, t / 2, (te + 1) / 2 - t / 2, raw);
      const uint16_t* halves = reinterpret_cast<const uint16_t*>(raw) + t % 2;  // element t
      for (size_t i = t; i < te;) {
        if (i == bucket_end) {
          bucket_end = std::min(n, i + bucket_);
          const float scale = bucket_scale(in + i, bucket_end - i, i, l2_);
          store_f32(scales + 4 * (i / bucket_), scale);
          p = quant_params(scale);
        }
        const size_t se = std::min(te, bucket_end), m = se - i;
        std::byte* dst = codes_out + i * bits / 8;
        if (p.scale == 0.0f) {
          std::memset(dst, 0, (m * bits + 7) / 8);
        } else {
          const size_t full = bits == 8 ? m : m / group_ * group_;
          simd::qsgd_quantize_pack(in + i, halves + (i - t), full, p, bits_, dst);
          if (full < m) {
            simd::qsgd_quantize(in + i + full, halves + (i - t) + full, m - full, p, codes);
            pack_linear(codes, m - full, bits_, dst + full * bits / 8);
          }
        }
        i = se;
      }
    }
  }

  void decode_fast_chunk(const std::byte* scales, const std::byte* codes_in, size_t n, size_t begin,
                         size_t end, float weight, float* out) const {
    alignas(64) uint32_t codes[256];
    const auto bits = static_cast<size_t>(bits_);
    for (size_t b0 = begin; b0 < end; b0 += bucket_) {
      const size_t m = std::min(n, b0 + bucket_) - b0;
      const simd::QsgdDequantParams p =
          dequant_params(load_f32(scales + 4 * (b0 / bucket_)), weight);
      const std::byte* src = codes_in + b0 * bits / 8;
      const size_t full = bits == 8 ? m : m / group_ * group_;
      uint32_t top = simd::qsgd_unpack_add(src, full, p, bits_, out + b0);
      if (full < m) {
        unpack_linear(src + full * bits / 8, m - full, bits_, codes);
        top = std::max(top, simd::qsgd_dequantize_add(codes, m - full, p, out + b0 + full));
      }
      QGRAD_PAYLOAD_CHECK(top <= s_, "qsgd: level ", top, " in bucket ", b0 / bucket_,
                          " exceeds s = ", s_);
    }
  }

  void encode_dense_chunk(const float* in, size_t n, size_t begin, size_t end, const RngKey& key,
                          std::byte* scales, std::byte* codes_out) const {
    quantize_tiles(
        in, n, begin, end, key, [&](size_t b, float scale) { store_f32(scales + 4 * b, scale); },
        [&](size_t first, size_t m, const uint32_t* codes) { pack(codes, first, m, codes_out); });
  }

  void decode_dense_chunk(const std::byte* scales, const std::byte* codes_in, size_t n,
                          size_t begin, size_t end, float weight, float* out) const {
    alignas(64) uint32_t codes[kTile];
    size_t bucket_end = begin;
    simd::QsgdDequantParams p;
    for (size_t t = begin; t < end; t += kTile) {
      const size_t te = std::min(end, t + kTile);
      unpack(codes_in, t, te - t, codes);
      for (size_t i = t; i < te;) {
        if (i == bucket_end) {
          bucket_end = std::min(n, i + bucket_);
          p = dequant_params(load_f32(scales + 4 * (i / bucket_)), weight);
        }
        const size_t se = std::min(te, bucket_end);
        const uint32_t top = simd::qsgd_dequantize_add(codes + (i - t), se - i, p, out + i);
        QGRAD_PAYLOAD_CHECK(top <= s_, "qsgd: level ", top, " in bucket ", i / bucket_,
                            " exceeds s = ", s_);
        i = se;
      }
    }
  }

  size_t encode_elias(std::span<const float> in, const RngKey& key,
                      std::span<std::byte> body) const {
    const size_t n = in.size();
    std::vector<elias::BitWriter> streams((n + chunk_ - 1) / chunk_);
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      encode_elias_chunk(in.data(), n, begin, end, key, streams[begin / chunk_]);
    });
    elias::BitWriter all;
    for (const auto& s : streams) all.append(s);
    const std::vector<uint8_t> bytes = all.finish();
    QGRAD_CHECK(bytes.size() <= body.size(), "qsgd: elias stream of ", bytes.size(),
                " bytes exceeds its bound of ", body.size());
    std::memcpy(body.data(), bytes.data(), bytes.size());
    return bytes.size();
  }

  void encode_elias_chunk(const float* in, size_t n, size_t begin, size_t end, const RngKey& key,
                          elias::BitWriter& out) const {
    const size_t first_bucket = begin / bucket_;
    std::vector<float> scales;
    scales.reserve((end - begin + bucket_ - 1) / bucket_);
    elias::BitWriter nonzeros;  // the bucket's (gap, sign, level) triples: nnz comes first
    size_t nnz = 0, next = 0;   // next: bucket position after the previous nonzero
    const auto finish = [&](size_t bucket) {
      out.put(std::bit_cast<uint32_t>(scales[bucket - first_bucket]), 32);
      elias::omega_put(out, nnz + 1);
      out.append(nonzeros);
      nonzeros.clear();
      nnz = next = 0;
    };
    quantize_tiles(
        in, n, begin, end, key, [&](size_t, float scale) { scales.push_back(scale); },
        [&](size_t first, size_t m, const uint32_t* codes) {
          for (size_t i = first; i < first + m;) {
            const size_t bucket = i / bucket_, b0 = bucket * bucket_;
            if (i == b0 && i != begin) finish(bucket - 1);
            const size_t se = std::min(first + m, b0 + bucket_);
            for (size_t j = i; j < se; ++j) {
              const uint32_t code = codes[j - first], level = code & level_mask_;
              if (level == 0) continue;
              put_nonzero(nonzeros, j - b0 + 1 - next, code >> (bits_ - 1), level);
              next = j - b0 + 1;
              ++nnz;
            }
            i = se;
          }
        });
    finish((end - 1) / bucket_);
  }

  void decode_elias(std::span<const std::byte> body, std::span<float> out, float weight) const {
    elias::BitReader r(body);
    const size_t n = out.size();
    for (size_t b0 = 0; b0 < n; b0 += bucket_) {
      const size_t len = std::min(bucket_, n - b0);
      const auto scale = std::bit_cast<float>(static_cast<uint32_t>(r.get(32)));
      check_scale(scale, b0 / bucket_);
      const uint64_t nnz = elias::omega_get(r) - 1;
      QGRAD_PAYLOAD_CHECK(nnz <= len, "qsgd: bucket ", b0 / bucket_, " claims ", nnz,
                          " nonzeros in ", len, " elements");
      QGRAD_PAYLOAD_CHECK(nnz == 0 || scale > 0.0f, "qsgd: bucket ", b0 / bucket_,
                          " has scale 0 and ", nnz, " nonzeros");
      const simd::QsgdDequantParams p = dequant_params(scale, weight);
      size_t next = 0;
      for (uint64_t k = 0; k < nnz; ++k) {
        uint64_t gap, level;
        uint32_t sign;
        const uint32_t entry = kTriples[r.peek(kTriplePeek)];
        if (entry != 0 && (entry >> 24) <= r.bits_left()) {  // a short (gap, sign, level)
          r.skip_checked(entry >> 24);
          gap = entry & 0xFF;
          sign = (entry >> 8) & 1;
          level = (entry >> 16) & 0xFF;
        } else {
          gap = elias::omega_get(r);
          sign = static_cast<uint32_t>(r.get(1));
          level = elias::omega_get(r);
        }
        QGRAD_PAYLOAD_CHECK(gap <= len - next, "qsgd: bucket ", b0 / bucket_, ": a gap of ", gap,
                            " after position ", next, " leaves the bucket of ", len);
        const size_t pos = next + static_cast<size_t>(gap) - 1;
        QGRAD_PAYLOAD_CHECK(level <= s_, "qsgd: bucket ", b0 / bucket_, ": level ", level,
                            " exceeds s = ", s_);
        const uint32_t code = static_cast<uint32_t>(level) | (sign << (bits_ - 1));
        out[b0 + pos] += weight * simd::qsgd_value(code, p);
        next = pos + 1;
      }
    }
    const uint64_t used = r.position();
    QGRAD_PAYLOAD_CHECK(body.size() == (used + 7) / 8, "qsgd: ", body.size() - (used + 7) / 8,
                        " bytes follow the elias stream");
    QGRAD_PAYLOAD_CHECK(r.get(static_cast<int>(r.size_bits() - used)) == 0,
                        "qsgd: the elias stream's padding bits are not zero");
  }

  int bits_;
  size_t bucket_;
  bool l2_;
  bool elias_;
  uint32_t level_mask_;
  uint32_t s_ = 0;
  bool sliced_ = false;
  bool fast_ = false;  // fused quantize+pack: every bucket starts on a byte-aligned group
  size_t group_ = 0;
  size_t chunk_ = 0;
};

}  // namespace

std::unique_ptr<Codec> make_qsgd_codec(const CodecSpec& spec) {
  return std::make_unique<QsgdCodec>(spec);
}

void qsgd_coordinate_variances(std::span<const float> v, int s, bool l2, std::span<double> out) {
  QGRAD_CHECK(out.size() == v.size(), "qsgd_coordinate_variances: ", v.size(), " inputs, ",
              out.size(), " outputs");
  QGRAD_CHECK(s >= 1, "qsgd_coordinate_variances: s = ", s, ", need s >= 1");
  double scale = 0;
  for (float x : v) {
    const double a = std::fabs(static_cast<double>(x));
    scale = l2 ? scale + a * a : std::max(scale, a);
  }
  if (l2) scale = std::sqrt(scale);
  const double unit = scale / s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (scale == 0) {
      out[i] = 0;
      continue;
    }
    const double r = s * std::fabs(static_cast<double>(v[i])) / scale;
    const double p = r - std::floor(r);
    out[i] = unit * unit * p * (1 - p);
  }
}

double qsgd_exact_variance(std::span<const float> v, int s, bool l2) {
  std::vector<double> per(v.size());
  qsgd_coordinate_variances(v, s, l2, per);
  double sum = 0;
  for (double x : per) sum += x;
  return sum;
}

}  // namespace qgrad
