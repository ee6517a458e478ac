#include "core/codecs/sign.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/kernels.h"
#include "core/simd/sign_kernels.h"

namespace qgrad {
namespace {

// Bit streams are handled as machine words; the wire order is little-endian.
static_assert(std::endian::native == std::endian::little,
              "sign codec assumes a little-endian host");

// Elements per parallel task: a multiple of 64, so tasks never share a byte (or word) of bits.
constexpr size_t kChunk = size_t{1} << 16;

size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

// Tasks of whole buckets, a multiple of 64 elements and about kChunk long, so that a bucket's
// scale and its bits are computed while the bucket is in cache; 0 when one bucket is longer
// than kChunk (then scales and bits are two passes).
size_t bucket_chunk(size_t bucket) {
  if (bucket > kChunk) return 0;
  const size_t unit = bucket * (64 / std::gcd(bucket, size_t{64}));
  return unit * std::max<size_t>(1, kChunk / unit);
}

float l1_scale(const float* x, size_t d, size_t offset) {
  const float sum = simd::sum_abs(x, d);
  if (std::isfinite(sum))
    return static_cast<float>(static_cast<double>(sum) / static_cast<double>(d));
  throw_if_nonfinite({x, d}, offset);
  // Finite input whose float sum overflowed: the mean of |x| is still finite. A fixed
  // sequential double sum keeps it deterministic.
  double acc = 0;
  for (size_t i = 0; i < d; ++i) acc += std::fabs(static_cast<double>(x[i]));
  return static_cast<float>(acc / static_cast<double>(d));
}

void check_padding(const std::byte* bits, size_t n) {
  if (n % 8 == 0) return;
  const auto last = std::to_integer<unsigned>(bits[n / 8]);
  QGRAD_PAYLOAD_CHECK((last >> (n % 8)) == 0, "sign payload: unused bits of the last byte are ",
                      "not zero (byte ", n / 8, " = ", last, ")");
}

class SignCodec final : public Codec {
 public:
  explicit SignCodec(const CodecSpec& spec)
      : Codec(CodecId::kSign, spec, pack_wire_params(spec)),
        l1_(spec.get("scale") == "l1"),
        bucket_(static_cast<size_t>(spec.get_int("bucket"))) {}

  bool unbiased() const override { return false; }
  Aggregation aggregation() const override {
    return l1_ ? Aggregation::kMean : Aggregation::kMajorityVote;
  }

 protected:
  size_t scale_count(size_t n) const { return l1_ ? ceil_div(n, bucket_) : 0; }
  size_t body_bytes(size_t n) const { return 4 * scale_count(n) + ceil_div(n, 8); }
  size_t max_body_bytes(size_t n) const override { return body_bytes(n); }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return body_bytes(n); }

  size_t encode_body(std::span<const float> in, const RngKey&,
                     std::span<std::byte> body) const override {
    const size_t n = in.size();
    const size_t nb = scale_count(n);
    std::byte* scales = body.data();
    std::byte* bits = body.data() + 4 * nb;
    const auto pack = [&](size_t begin, size_t end) {
      if (!simd::pack_signs(in.data() + begin, end - begin, bits + begin / 8))
        throw_if_nonfinite(in.subspan(begin, end - begin), begin);
    };
    const auto scale_buckets = [&](size_t first, size_t last) {
      for (size_t j = first; j < last; ++j) {
        const size_t start = j * bucket_;
        const size_t d = std::min(bucket_, n - start);
        store_f32(scales + 4 * j, l1_scale(in.data() + start, d, start));
      }
    };
    if (!l1_) {
      parallel_for(n, kChunk, pack);
    } else if (const size_t chunk = bucket_chunk(bucket_); chunk != 0) {
      parallel_for(n, chunk, [&](size_t begin, size_t end) {
        scale_buckets(begin / bucket_, ceil_div(end, bucket_));
        pack(begin, end);
      });
    } else {
      parallel_for(nb, 1, scale_buckets);
      parallel_for(n, kChunk, pack);
    }
    return body_bytes(n);
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    const size_t n = out.size();
    const size_t nb = scale_count(n);
    const std::byte* bits = body.data() + 4 * nb;
    // Every check before the first write: a rejected payload leaves `out` untouched.
    check_padding(bits, n);
    for (size_t j = 0; j < nb; ++j) {
      const float s = load_f32(body.data() + 4 * j);
      QGRAD_PAYLOAD_CHECK(std::isfinite(s) && s >= 0.0f, "sign payload: bucket ", j, " has scale ",
                          s, ", expected a finite value >= 0");
    }
    parallel_for(n, kChunk, [&](size_t begin, size_t end) {
      if (!l1_) {
        simd::expand_signs(bits, begin, end - begin, weight, -weight, out.data() + begin, true);
        return;
      }
      for (size_t j = begin / bucket_; j * bucket_ < end; ++j) {
        const size_t lo = std::max(begin, j * bucket_);
        const size_t hi = std::min(end, (j + 1) * bucket_);
        const float ws = weight * load_f32(body.data() + 4 * j);
        simd::expand_signs(bits, lo, hi - lo, ws, -ws, out.data() + lo, true);
      }
    });
  }

 private:
  bool l1_;
  size_t bucket_;
};

// ---- majority vote ----

struct VoteInputs {
  std::vector<const std::byte*> bits;  // each payload's body
  size_t n = 0;
  WireParams params{};
};

// Checks every payload (header, CRCs, codec, parameters, size, padding) before any voting.
VoteInputs check_vote_payloads(std::span<const std::span<const std::byte>> payloads) {
  QGRAD_CHECK(!payloads.empty(), "majority_vote: no payloads to vote on");
  VoteInputs v;
  for (size_t w = 0; w < payloads.size(); ++w) {
    const WireHeader h = read_header(payloads[w]);
    QGRAD_PAYLOAD_CHECK(h.codec == CodecId::kSign, "majority_vote: payload ", w,
                        " was written by codec id ", static_cast<int>(h.codec),
                        ", expected sign (id ", static_cast<int>(CodecId::kSign), ")");
    QGRAD_PAYLOAD_CHECK(unpack_wire_params(h.codec, h.params).get("scale") == "none",
                        "majority_vote: payload ", w, " is a scaled sign (scale=l1); the vote ",
                        "takes plain sign payloads (scale=none)");
    if (w == 0) {
      v.n = h.elements;
      v.params = h.params;
    }
    QGRAD_PAYLOAD_CHECK(h.params == v.params, "majority_vote: payload ", w,
                        " has other codec parameters than payload 0");
    QGRAD_PAYLOAD_CHECK(h.elements == v.n, "majority_vote: payload ", w, " holds ", h.elements,
                        " elements, payload 0 holds ", v.n);
    QGRAD_PAYLOAD_CHECK(h.body_bytes == ceil_div(v.n, 8), "majority_vote: payload ", w, " body is ",
                        h.body_bytes, " bytes, ", v.n, " signs need ", ceil_div(v.n, 8));
    const std::byte* bits = payloads[w].data() + kHeaderBytes;
    check_padding(bits, v.n);
    v.bits.push_back(bits);
  }
  return v;
}

// Words of 64 coordinates per vote block: the bit-sliced counters of a block stay in L1.
constexpr size_t kVoteWords = 256;

// result[k] = the vote's bits (1 = negative) of words [w0, w0 + len), len <= kVoteWords. Per
// coordinate the number of '-' votes is kept bit-sliced: plane p holds bit p of 64 counters,
// and adding a worker's word is a ripple-carry add across planes. The coordinate goes negative
// iff count >= M/2 + 1, i.e. strictly more '-' than '+' (a tie is +1).
void vote_words(const VoteInputs& v, size_t w0, size_t len, uint64_t* result) {
  const size_t m = v.bits.size();
  const size_t planes = std::bit_width(m);
  const size_t threshold = m / 2 + 1;
  const size_t nbytes = ceil_div(v.n, 8);
  const size_t first_byte = 8 * w0;
  const size_t bytes = std::min(8 * len, nbytes - first_byte);
  std::vector<uint64_t> count(planes * kVoteWords, 0);
  uint64_t carry[kVoteWords];
  for (const std::byte* bits : v.bits) {
    std::memset(carry, 0, 8 * len);
    std::memcpy(carry, bits + first_byte, bytes);
    for (size_t p = 0; p < planes; ++p) {
      uint64_t* c = count.data() + p * kVoteWords;
      for (size_t k = 0; k < len; ++k) {
        const uint64_t t = c[k] & carry[k];
        c[k] ^= carry[k];
        carry[k] = t;
      }
    }
  }
  // count >= threshold, bit-parallel, from the most significant plane down.
  for (size_t k = 0; k < len; ++k) {
    uint64_t greater = 0, equal = ~uint64_t{0};
    for (size_t p = planes; p-- > 0;) {
      const uint64_t c = count[p * kVoteWords + k];
      if ((threshold >> p) & 1) {
        equal &= c;
      } else {
        greater |= equal & c;
        equal &= ~c;
      }
    }
    result[k] = greater | equal;
  }
}

}  // namespace

std::unique_ptr<Codec> make_sign_codec(const CodecSpec& spec) {
  return std::make_unique<SignCodec>(spec);
}

void majority_vote(std::span<const std::span<const std::byte>> payloads, std::span<float> out) {
  const VoteInputs v = check_vote_payloads(payloads);
  QGRAD_PAYLOAD_CHECK(v.n == out.size(), "majority_vote: payloads hold ", v.n,
                      " elements, the output has ", out.size());
  parallel_for(v.n, 64 * kVoteWords, [&](size_t begin, size_t end) {
    uint64_t result[kVoteWords];
    vote_words(v, begin / 64, ceil_div(end - begin, 64), result);
    simd::expand_signs(reinterpret_cast<const std::byte*>(result), 0, end - begin, 1.0f, -1.0f,
                       out.data() + begin, false);
  });
}

std::vector<std::byte> majority_vote_payload(std::span<const std::span<const std::byte>> payloads) {
  const VoteInputs v = check_vote_payloads(payloads);
  const size_t body_bytes = ceil_div(v.n, 8);
  std::vector<std::byte> out(kHeaderBytes + body_bytes);
  std::byte* body = out.data() + kHeaderBytes;
  parallel_for(v.n, 64 * kVoteWords, [&](size_t begin, size_t end) {
    uint64_t result[kVoteWords];
    vote_words(v, begin / 64, ceil_div(end - begin, 64), result);
    std::memcpy(body + begin / 8, result, ceil_div(end - begin, 8));
  });
  write_header(out, CodecId::kSign, v.params, v.n, std::span<const std::byte>(body, body_bytes));
  return out;
}

}  // namespace qgrad
