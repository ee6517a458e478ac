#include "core/codecs/topk.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"

namespace qgrad {
namespace {

// Elements per histogram task (each owns 2^16 counters, so tasks are long) and per placement
// task. Both are fixed, so every count and offset is independent of the thread count.
constexpr size_t kHistChunk = size_t{1} << 20;
constexpr size_t kChunk = size_t{1} << 16;
constexpr size_t kHighBins = size_t{1} << 16;  // |v| bits 30..15
constexpr size_t kLowBins = size_t{1} << 15;   // |v| bits 14..0

size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

// |x| as bits: for finite floats this orders like |x|; NaN and Inf are >= 0x7F800000.
uint32_t abs_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b & 0x7FFFFFFFu;
}

// The bin, scanning from the top, where the running count reaches `need`; `above` gets the count
// of the bins above it.
size_t find_bin(const std::vector<uint64_t>& total, size_t need, size_t* above) {
  size_t cum = 0;
  for (size_t b = total.size(); b-- > 0;) {
    if (cum + total[b] >= need) {
      *above = cum;
      return b;
    }
    cum += total[b];
  }
  *above = cum;
  return 0;  // unreachable while need <= sum of the bins
}

class TopKCodec final : public Codec {
 public:
  explicit TopKCodec(const CodecSpec& spec)
      : Codec(CodecId::kTopK, spec, pack_wire_params(spec)), ratio_(spec.get_float("ratio")) {}

  bool unbiased() const override { return false; }

 protected:
  size_t max_body_bytes(size_t n) const override { return 8 * topk_count(n, ratio_); }
  std::optional<size_t> exact_body_bytes(size_t n) const override {
    return 8 * topk_count(n, ratio_);
  }

  size_t encode_body(std::span<const float> in, const RngKey&,
                     std::span<std::byte> body) const override {
    const size_t n = in.size();
    QGRAD_CHECK(n <= std::numeric_limits<uint32_t>::max(), spec().str(), ": ", n,
                " elements do not fit 32-bit indices (at most 2^32 - 1)");
    const size_t k = topk_count(n, ratio_);
    if (k == 0) return 0;
    const float* x = in.data();

    // 1. Histogram of the high 16 bits of |v| (also the NaN/Inf check).
    const size_t tasks = ceil_div(n, kHistChunk);
    std::vector<uint32_t> hist(tasks * kHighBins);
    parallel_for(n, kHistChunk, [&](size_t begin, size_t end) {
      uint32_t* h = hist.data() + begin / kHistChunk * kHighBins;
      uint32_t worst = 0;
      for (size_t i = begin; i < end; ++i) {
        const uint32_t a = abs_bits(x[i]);
        worst = a > worst ? a : worst;
        ++h[a >> 15];
      }
      if (worst >= 0x7F800000u) throw_if_nonfinite(in.subspan(begin, end - begin), begin);
    });
    std::vector<uint64_t> total(kHighBins, 0);
    for (size_t t = 0; t < tasks; ++t)
      for (size_t b = 0; b < kHighBins; ++b) total[b] += hist[t * kHighBins + b];
    size_t above_high = 0;
    const size_t high = find_bin(total, k, &above_high);

    // 2. Within that bin, a histogram of the low 15 bits gives the k-th largest |v| exactly.
    std::fill(hist.begin(), hist.end(), 0);
    parallel_for(n, kHistChunk, [&](size_t begin, size_t end) {
      uint32_t* h = hist.data() + begin / kHistChunk * kHighBins;
      for (size_t i = begin; i < end; ++i) {
        const uint32_t a = abs_bits(x[i]);
        if ((a >> 15) == high) ++h[a & (kLowBins - 1)];
      }
    });
    total.assign(kLowBins, 0);
    for (size_t t = 0; t < tasks; ++t)
      for (size_t b = 0; b < kLowBins; ++b) total[b] += hist[t * kHighBins + b];
    size_t above_low = 0;
    const size_t low = find_bin(total, k - above_high, &above_low);
    const uint32_t threshold = static_cast<uint32_t>(high << 15 | low);
    // Everything above the threshold is kept, plus the first `ties` at it by index.
    size_t ties = k - above_high - above_low;

    // 3. Per-task counts, then each task's output offset and share of the ties.
    const size_t chunks = ceil_div(n, kChunk);
    std::vector<size_t> greater(chunks), equal(chunks);
    parallel_for(n, kChunk, [&](size_t begin, size_t end) {
      size_t g = 0, e = 0;
      for (size_t i = begin; i < end; ++i) {
        const uint32_t a = abs_bits(x[i]);
        g += a > threshold;
        e += a == threshold;
      }
      greater[begin / kChunk] = g;
      equal[begin / kChunk] = e;
    });
    std::vector<size_t> offset(chunks), take(chunks);
    for (size_t c = 0, at = 0; c < chunks; ++c) {
      take[c] = std::min(equal[c], ties);
      ties -= take[c];
      offset[c] = at;
      at += greater[c] + take[c];
    }

    // 4. Placement: indices in increasing order, then the values.
    std::byte* indices = body.data();
    std::byte* values = body.data() + 4 * k;
    parallel_for(n, kChunk, [&](size_t begin, size_t end) {
      size_t at = offset[begin / kChunk];
      size_t ties_left = take[begin / kChunk];
      for (size_t i = begin; i < end; ++i) {
        const uint32_t a = abs_bits(x[i]);
        const bool tie = a == threshold && ties_left > 0;
        if (a > threshold || tie) {
          ties_left -= tie;
          store_u32(indices + 4 * at, static_cast<uint32_t>(i));
          store_f32(values + 4 * at, x[i]);
          ++at;
        }
      }
    });
    return 8 * k;
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    const size_t n = out.size();
    const size_t k = topk_count(n, ratio_);
    const std::byte* indices = body.data();
    const std::byte* values = body.data() + 4 * k;
    // Every check before the first write: a rejected payload leaves `out` untouched.
    for (size_t t = 0; t < k; ++t) {
      const uint32_t i = load_u32(indices + 4 * t);
      QGRAD_PAYLOAD_CHECK(i < n, "topk payload: index ", i, " at position ", t,
                          " is out of range for ", n, " elements");
      QGRAD_PAYLOAD_CHECK(t == 0 || i > load_u32(indices + 4 * (t - 1)), "topk payload: index ", i,
                          " at position ", t, " does not increase");
      QGRAD_PAYLOAD_CHECK(std::isfinite(load_f32(values + 4 * t)), "topk payload: value at ",
                          "position ", t, " is not finite");
    }
    for (size_t t = 0; t < k; ++t)
      out[load_u32(indices + 4 * t)] += weight * load_f32(values + 4 * t);
  }

 private:
  float ratio_;
};

}  // namespace

size_t topk_count(size_t n, float ratio) {
  if (n == 0) return 0;
  const double k = std::ceil(static_cast<double>(ratio) * static_cast<double>(n));
  if (!(k >= 1.0)) return 1;
  if (k >= static_cast<double>(n)) return n;
  return static_cast<size_t>(k);
}

std::unique_ptr<Codec> make_topk_codec(const CodecSpec& spec) {
  return std::make_unique<TopKCodec>(spec);
}

}  // namespace qgrad
