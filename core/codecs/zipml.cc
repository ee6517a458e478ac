#include "core/codecs/zipml.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/kernels.h"
#include "core/simd/zipml_kernels.h"

namespace qgrad {
namespace {

// Elements per chunk: whole buckets, a multiple of 8 so that packed indices of different chunks
// never share a byte; 16 KiB of input, which stays in L1 between the min/max and the rounding.
constexpr size_t kChunkTarget = size_t{1} << 12;
// Chunks per parallel task (uniform levels): a task rounds its chunks in order and prefetches the
// next one while it rounds the current one, so that the next min/max pass does not wait on memory.
constexpr size_t kChunksPerTask = 32;
// Elements per batch of random words (4 KiB of raw words on the stack) and of unpacked indices.
constexpr size_t kBlock = 2048;
constexpr float kTinyRange = 0x1p-64f;
constexpr float kRescale = 0x1p64f;
// Candidate levels of the optimal-levels DP per bucket (the paper subsamples for speed too).
constexpr size_t kMaxCandidates = 64;

// The uniform levels' step: (hi - lo) / (L - 1), raised an ulp at a time until the top level
// lo + (L - 1) step reaches hi (the decoder clamps it to hi), so that a bucket's maximum decodes
// to itself.
float uniform_step(float lo, float hi, size_t levels) {
  const float top = static_cast<float>(levels - 1);
  float step = (hi - lo) / top;
  while (lo + top * step < hi) step = std::nextafter(step, std::numeric_limits<float>::infinity());
  return step;
}

size_t chunk_elements(size_t bucket) {
  size_t buckets = std::max<size_t>(1, kChunkTarget / bucket);
  while (buckets * bucket % 8 != 0) ++buckets;
  return buckets * bucket;
}

// Reused buffers of the optimal-levels DP (one per chunk of buckets).
struct LevelScratch {
  std::vector<float> sorted, candidates;
  std::vector<uint32_t> keys, keys_tmp;
  std::vector<double> sum1, sum2;     // prefix sums of (a - min) and (a - min)^2
  std::vector<uint32_t> first, last;  // sorted points in [c_i, c_j] are [first[i], last[j])
  std::vector<double> prev, cur;
  std::vector<uint32_t> arg;  // arg[k * M + j]: the previous level's candidate
};

// s.sorted = values in ascending order (the values are finite): an LSD radix sort, linear in the
// bucket, over the bits mapped to an order-preserving unsigned key (-0 sorts before +0).
void sort_floats(std::span<const float> values, LevelScratch& s) {
  const size_t n = values.size();
  s.keys.resize(n);
  s.keys_tmp.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t b = std::bit_cast<uint32_t>(values[i]);
    s.keys[i] = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  }
  for (int shift = 0; shift < 32; shift += 8) {
    uint32_t count[257] = {};
    for (size_t i = 0; i < n; ++i) ++count[((s.keys[i] >> shift) & 0xFF) + 1];
    if (count[((s.keys[0] >> shift) & 0xFF) + 1] == n) continue;  // one value in this digit
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (size_t i = 0; i < n; ++i) s.keys_tmp[count[(s.keys[i] >> shift) & 0xFF]++] = s.keys[i];
    std::swap(s.keys, s.keys_tmp);
  }
  s.sorted.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t k = s.keys[i];
    s.sorted[i] = std::bit_cast<float>((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
  }
}

class LevelDp {
 public:
  LevelDp(LevelScratch& s, double origin) : s_(s), origin_(origin) {}

  // sum over the points a in [c_i, c_j] of (a - c_i)(c_j - a): -n c_i c_j + (c_i + c_j) S1 - S2,
  // in coordinates shifted by the minimum to keep the sums small.
  double cost(size_t i, size_t j) const {
    const size_t a = s_.first[i], b = s_.last[j];
    if (b <= a) return 0.0;
    const double ci = static_cast<double>(s_.candidates[i]) - origin_;
    const double cj = static_cast<double>(s_.candidates[j]) - origin_;
    const double s1 = s_.sum1[b] - s_.sum1[a], s2 = s_.sum2[b] - s_.sum2[a];
    const double v = (ci + cj) * s1 - s2 - static_cast<double>(b - a) * ci * cj;
    return v > 0.0 ? v : 0.0;
  }

  // cur[j] for j in [jlo, jhi] given that the smallest argmin lies in [olo, ohi] and grows with j.
  void solve(size_t k, size_t m, size_t jlo, size_t jhi, size_t olo, size_t ohi) {
    if (jlo > jhi) return;
    const size_t mid = jlo + (jhi - jlo) / 2;
    double best = std::numeric_limits<double>::infinity();
    size_t best_i = olo;
    const size_t top = std::min(mid - 1, ohi);
    for (size_t i = olo; i <= top; ++i) {
      const double v = s_.prev[i] + cost(i, mid);
      if (v < best) {
        best = v;
        best_i = i;
      }
    }
    s_.cur[mid] = best;
    s_.arg[k * m + mid] = static_cast<uint32_t>(best_i);
    if (mid > jlo) solve(k, m, jlo, mid - 1, olo, best_i);
    solve(k, m, mid + 1, jhi, best_i, ohi);
  }

 private:
  LevelScratch& s_;
  double origin_;
};

// Writes `num_levels` levels for the finite, non-empty `values` into out (see optimal_levels).
void compute_optimal_levels(std::span<const float> values, size_t num_levels, size_t max_candidates,
                            float* out, LevelScratch& s) {
  const size_t n = values.size();
  const size_t levels = num_levels;
  sort_floats(values, s);
  const float lo = s.sorted.front(), hi = s.sorted.back();
  s.candidates.clear();
  for (const float v : s.sorted)
    if (s.candidates.empty() || v != s.candidates.back()) s.candidates.push_back(v);
  const auto emit_candidates = [&] {
    const size_t m = s.candidates.size();
    for (size_t k = 0; k < levels; ++k) out[k] = s.candidates[std::min(k, m - 1)];
  };
  if (s.candidates.size() <= levels) return emit_candidates();
  QGRAD_CHECK(levels >= 2, "optimal_levels: ", s.candidates.size(),
              " distinct values need at least 2 levels (min and max), got ", levels);

  const size_t budget = std::max(max_candidates, levels);
  if (s.candidates.size() > budget) {
    s.candidates.clear();
    for (size_t t = 0; t < budget; ++t)
      s.candidates.push_back(s.sorted[(t * (n - 1) + (budget - 1) / 2) / (budget - 1)]);
    // The uniform codec's levels, computed exactly as it decodes them: with them among the
    // candidates the DP can never do worse than uniform levels.
    const float step = uniform_step(lo, hi, levels);
    if (std::isfinite(step)) {
      for (size_t j = 0; j < levels; ++j)
        s.candidates.push_back(std::min(lo + static_cast<float>(j) * step, hi));
    }
    std::sort(s.candidates.begin(), s.candidates.end());
    s.candidates.erase(std::unique(s.candidates.begin(), s.candidates.end()), s.candidates.end());
    if (s.candidates.size() <= levels) return emit_candidates();
  }

  const size_t m = s.candidates.size();
  const double origin = lo;
  s.sum1.assign(n + 1, 0.0);
  s.sum2.assign(n + 1, 0.0);
  for (size_t t = 0; t < n; ++t) {
    const double y = static_cast<double>(s.sorted[t]) - origin;
    s.sum1[t + 1] = s.sum1[t] + y;
    s.sum2[t + 1] = s.sum2[t] + y * y;
  }
  s.first.resize(m);
  s.last.resize(m);
  // Both lists are sorted: one merge pass finds every candidate's range of equal points.
  for (size_t c = 0, t = 0; c < m; ++c) {
    const float v = s.candidates[c];
    while (t < n && s.sorted[t] < v) ++t;
    s.first[c] = static_cast<uint32_t>(t);
    size_t e = t;
    while (e < n && s.sorted[e] == v) ++e;
    s.last[c] = static_cast<uint32_t>(e);
  }

  // Layer k places level k on candidate j; level 0 sits on candidate 0 (the minimum), level
  // `levels - 1` on candidate m - 1 (the maximum), and every level needs its own candidate.
  LevelDp dp(s, origin);
  s.prev.assign(m, std::numeric_limits<double>::infinity());
  s.prev[0] = 0.0;
  s.arg.assign(levels * m, 0);
  for (size_t k = 1; k < levels; ++k) {
    s.cur.assign(m, std::numeric_limits<double>::infinity());
    const size_t jlo = k + 1 == levels ? m - 1 : k;
    const size_t jhi = m - levels + k;
    const size_t ohi = k == 1 ? 0 : m - levels + k - 1;
    dp.solve(k, m, jlo, jhi, k - 1, ohi);
    std::swap(s.prev, s.cur);
  }
  size_t j = m - 1;
  for (size_t k = levels - 1; k > 0; --k) {
    out[k] = s.candidates[j];
    j = s.arg[k * m + j];
  }
  out[0] = s.candidates[0];
}

// Index of x among the non-decreasing levels[0, m) (levels[0] <= x <= levels[m - 1]): the level
// below or the one above, the latter with probability (x - l_j) / (l_{j+1} - l_j), in double so
// that a range beyond float's cannot overflow.
uint8_t round_to_levels(float x, const float* levels, size_t m, float u) {
  const size_t j = static_cast<size_t>(std::upper_bound(levels, levels + m, x) - levels) - 1;
  if (j + 1 >= m) return static_cast<uint8_t>(m - 1);
  const double low = levels[j];
  const double p = (static_cast<double>(x) - low) / (static_cast<double>(levels[j + 1]) - low);
  return static_cast<uint8_t>(j + (static_cast<double>(u) < p ? 1 : 0));
}

class ZipmlCodec final : public Codec {
 public:
  explicit ZipmlCodec(const CodecSpec& spec)
      : Codec(CodecId::kZipml, spec, pack_wire_params(spec)),
        bits_(static_cast<int>(spec.get_int("bits"))),
        optimal_(spec.get("levels") == "optimal"),
        bucket_(static_cast<size_t>(spec.get_int("bucket"))),
        levels_(size_t{1} << bits_),
        chunk_(chunk_elements(bucket_)) {}

  bool unbiased() const override { return true; }

 protected:
  size_t max_body_bytes(size_t n) const override { return body_bytes(n); }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return body_bytes(n); }

  size_t encode_body(std::span<const float> in, const RngKey& key,
                     std::span<std::byte> body) const override {
    if (optimal_) {
      encode_optimal(in, key, body);
    } else {
      encode_uniform(in, key, body);
    }
    return body_bytes(in.size());
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    if (optimal_) {
      decode_optimal(body, out, weight);
    } else {
      decode_uniform(body, out, weight);
    }
  }

 private:
  size_t buckets(size_t n) const { return (n + bucket_ - 1) / bucket_; }
  size_t bucket_size(size_t b, size_t n) const { return std::min(bucket_, n - b * bucket_); }
  // Levels sent with bucket b (optimal): min(L, n_b).
  size_t bucket_levels(size_t b, size_t n) const { return std::min(levels_, bucket_size(b, n)); }
  // Byte offset of bucket b's levels (optimal): every bucket but the last one is full.
  size_t levels_offset(size_t b) const { return 4 * b * std::min(levels_, bucket_); }
  size_t metadata_bytes(size_t n) const {
    const size_t nb = buckets(n);
    if (nb == 0) return 0;
    return optimal_ ? levels_offset(nb - 1) + 4 * bucket_levels(nb - 1, n) : 8 * nb;
  }
  size_t packed_bytes(size_t n) const { return (n * static_cast<size_t>(bits_) + 7) / 8; }
  size_t body_bytes(size_t n) const { return metadata_bytes(n) + packed_bytes(n); }

  void encode_uniform(std::span<const float> in, const RngKey& key,
                      std::span<std::byte> body) const {
    const size_t n = in.size();
    uint8_t* packed = reinterpret_cast<uint8_t*>(body.data() + metadata_bytes(n));
    const float top = static_cast<float>(levels_ - 1);
    parallel_for(n, kChunksPerTask * chunk_, [&](size_t task_begin, size_t task_end) {
      alignas(64) uint32_t raw[kBlock / 2];
      alignas(64) uint8_t index[kBlock];
      const auto* random = reinterpret_cast<const uint16_t*>(raw);
      for (size_t begin = task_begin; begin < task_end; begin += chunk_) {
        const size_t end = std::min(begin + chunk_, task_end);
        // The next chunk of this task is prefetched while this one is rounded.
        const size_t next_end = std::min(end + chunk_, task_end);
        for (size_t off = begin; off < end; off += bucket_) {
          const size_t len = std::min(bucket_, n - off);
          float lo, hi;
          if (!simd::zipml_range(in.data() + off, len, &lo, &hi))
            throw_if_nonfinite(in.subspan(off, len), off);
          QGRAD_CHECK(std::isfinite(hi - lo), "zipml: bucket ", off / bucket_, " spans [", lo, ", ",
                      hi, "], wider than float32 can hold; use levels=optimal or rescale");
          store_f32(body.data() + 8 * (off / bucket_), lo);
          store_f32(body.data() + 8 * (off / bucket_) + 4, hi);
        }
        for (size_t block = begin; block < end; block += kBlock) {
          const size_t block_end = std::min(block + kBlock, end);
          philox_fill_raw(key, block / 2, (block_end - block + 1) / 2, raw);
          for (size_t off = block; off < block_end;) {
            const size_t b = off / bucket_;
            const size_t seg_end = std::min(block_end, (b + 1) * bucket_);
            const float lo = load_f32(body.data() + 8 * b);
            const float range = load_f32(body.data() + 8 * b + 4) - lo;
            const float prescale = range < kTinyRange ? kRescale : 1.0f;
            const float inv_step = range > 0.0f ? top / (range * prescale) : 0.0f;
            const size_t ahead = off + chunk_;
            const float* prefetch =
                ahead + (seg_end - off) <= next_end ? in.data() + ahead : nullptr;
            simd::zipml_uniform_encode(in.data() + off, random + (off - block), seg_end - off, lo,
                                       prescale, inv_step, top, prefetch, index + (off - block));
            off = seg_end;
          }
          simd::zipml_pack(index, block_end - block, bits_, packed + block * bits_ / 8);
        }
      }
    });
  }

  void decode_uniform(std::span<const std::byte> body, std::span<float> out, float weight) const {
    const size_t n = out.size();
    const uint8_t* packed = reinterpret_cast<const uint8_t*>(body.data() + metadata_bytes(n));
    parallel_for(buckets(n), chunk_ / bucket_, [&](size_t first, size_t last) {
      for (size_t b = first; b < last; ++b) {
        const float lo = load_f32(body.data() + 8 * b), hi = load_f32(body.data() + 8 * b + 4);
        QGRAD_PAYLOAD_CHECK(
            std::isfinite(lo) && std::isfinite(hi) && lo <= hi && std::isfinite(hi - lo),
            "zipml payload: bucket ", b, " has range [", lo, ", ", hi,
            "], expected finite lo <= hi");
      }
    });
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      alignas(64) uint8_t index[kBlock];
      for (size_t block = begin; block < end; block += kBlock) {
        const size_t block_end = std::min(block + kBlock, end);
        simd::zipml_unpack(packed + block * bits_ / 8, block_end - block, bits_, index);
        for (size_t off = block; off < block_end;) {
          const size_t b = off / bucket_;
          const size_t seg_end = std::min(block_end, (b + 1) * bucket_);
          const float lo = load_f32(body.data() + 8 * b), hi = load_f32(body.data() + 8 * b + 4);
          simd::zipml_uniform_decode(index + (off - block), seg_end - off, lo,
                                     uniform_step(lo, hi, levels_), hi, weight, out.data() + off);
          off = seg_end;
        }
      }
    });
  }

  void encode_optimal(std::span<const float> in, const RngKey& key,
                      std::span<std::byte> body) const {
    const size_t n = in.size();
    uint8_t* packed = reinterpret_cast<uint8_t*>(body.data() + metadata_bytes(n));
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      LevelScratch scratch;
      std::vector<uint8_t> index(end - begin);
      std::vector<uint32_t> words(std::min(bucket_, end - begin));
      float levels[256];
      for (size_t off = begin; off < end; off += bucket_) {
        const size_t b = off / bucket_, len = std::min(bucket_, n - off);
        const std::span<const float> x = in.subspan(off, len);
        if (simd::find_nonfinite(x.data(), len) != len) throw_if_nonfinite(x, off);
        const size_t m = bucket_levels(b, n);
        compute_optimal_levels(x, m, kMaxCandidates, levels, scratch);
        for (size_t k = 0; k < m; ++k) store_f32(body.data() + levels_offset(b) + 4 * k, levels[k]);
        philox_fill(key, off, len, words.data());
        for (size_t i = 0; i < len; ++i)
          index[off - begin + i] = round_to_levels(x[i], levels, m, uniform_from_word(words[i]));
      }
      simd::zipml_pack(index.data(), end - begin, bits_, packed + begin * bits_ / 8);
    });
  }

  // Reads bucket b's levels into `levels`, checking that they are finite and non-decreasing.
  void load_levels(std::span<const std::byte> body, size_t b, size_t m, float* levels) const {
    for (size_t k = 0; k < m; ++k) {
      levels[k] = load_f32(body.data() + levels_offset(b) + 4 * k);
      QGRAD_PAYLOAD_CHECK(std::isfinite(levels[k]) && (k == 0 || levels[k] >= levels[k - 1]),
                          "zipml payload: bucket ", b, " level ", k, " is ", levels[k],
                          ", expected finite non-decreasing levels");
    }
  }

  void decode_optimal(std::span<const std::byte> body, std::span<float> out, float weight) const {
    const size_t n = out.size();
    const uint8_t* packed = reinterpret_cast<const uint8_t*>(body.data() + metadata_bytes(n));
    // Everything is checked before anything is added: levels, and indices where a bucket sends
    // fewer than 2^bits levels.
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      float levels[256];
      std::vector<uint8_t> index;
      for (size_t off = begin; off < end; off += bucket_) {
        const size_t b = off / bucket_, len = std::min(bucket_, n - off);
        const size_t m = bucket_levels(b, n);
        load_levels(body, b, m, levels);
        if (m == levels_) continue;
        if (index.empty()) {
          index.resize(end - begin);
          simd::zipml_unpack(packed + begin * bits_ / 8, end - begin, bits_, index.data());
        }
        const uint8_t* idx = index.data() + (off - begin);
        QGRAD_PAYLOAD_CHECK(*std::max_element(idx, idx + len) < m, "zipml payload: bucket ", b,
                            " has a level index >= its ", m, " levels");
      }
    });
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      float levels[256];
      std::vector<uint8_t> index(end - begin);
      simd::zipml_unpack(packed + begin * bits_ / 8, end - begin, bits_, index.data());
      for (size_t off = begin; off < end; off += bucket_) {
        const size_t b = off / bucket_, len = std::min(bucket_, n - off);
        const size_t m = bucket_levels(b, n);
        for (size_t k = 0; k < m; ++k)
          levels[k] = weight * load_f32(body.data() + levels_offset(b) + 4 * k);
        const uint8_t* idx = index.data() + (off - begin);
        float* o = out.data() + off;
        for (size_t i = 0; i < len; ++i) o[i] += levels[idx[i]];
      }
    });
  }

  int bits_;
  bool optimal_;
  size_t bucket_;
  size_t levels_;
  size_t chunk_;
};

}  // namespace

std::unique_ptr<Codec> make_zipml_codec(const CodecSpec& spec) {
  return std::make_unique<ZipmlCodec>(spec);
}

std::vector<float> optimal_levels(std::span<const float> values, int num_levels,
                                  size_t max_candidates) {
  QGRAD_CHECK(!values.empty(), "optimal_levels: no values");
  QGRAD_CHECK(num_levels >= 1 && num_levels <= (1 << 24), "optimal_levels: num_levels ", num_levels,
              " is not in [1, 2^24]");
  if (simd::find_nonfinite(values.data(), values.size()) != values.size())
    throw_if_nonfinite(values);
  std::vector<float> levels(static_cast<size_t>(num_levels));
  LevelScratch scratch;
  compute_optimal_levels(values, levels.size(), max_candidates, levels.data(), scratch);
  return levels;
}

std::vector<float> uniform_levels(float lo, float hi, int num_levels) {
  QGRAD_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi && std::isfinite(hi - lo),
              "uniform_levels: need finite lo <= hi with a finite hi - lo, got [", lo, ", ", hi,
              "]");
  QGRAD_CHECK(num_levels >= 2 && num_levels <= (1 << 24), "uniform_levels: num_levels ", num_levels,
              " is not in [2, 2^24]");
  const size_t count = static_cast<size_t>(num_levels);
  const float step = uniform_step(lo, hi, count);
  std::vector<float> levels(count);
  for (size_t j = 0; j < count; ++j) levels[j] = std::min(lo + static_cast<float>(j) * step, hi);
  return levels;
}

double stochastic_rounding_variance(std::span<const float> values, std::span<const float> levels) {
  QGRAD_CHECK(!levels.empty(), "stochastic_rounding_variance: no levels");
  for (size_t k = 1; k < levels.size(); ++k)
    QGRAD_CHECK(levels[k] >= levels[k - 1], "stochastic_rounding_variance: level ", k, " (",
                levels[k], ") is below level ", k - 1, " (", levels[k - 1], ")");
  double total = 0.0;
  for (size_t i = 0; i < values.size(); ++i) {
    const float x = values[i];
    QGRAD_CHECK(x >= levels.front() && x <= levels.back(), "stochastic_rounding_variance: value ",
                i, " (", x, ") lies outside the levels [", levels.front(), ", ", levels.back(),
                "]");
    const size_t j =
        static_cast<size_t>(std::upper_bound(levels.begin(), levels.end(), x) - levels.begin()) - 1;
    if (j + 1 < levels.size())
      total += (static_cast<double>(x) - levels[j]) * (static_cast<double>(levels[j + 1]) - x);
  }
  return total;
}

}  // namespace qgrad
