#include "core/codecs/int8.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/int8_kernels.h"
#include "core/simd/kernels.h"

namespace qgrad {
namespace {

constexpr int kMagnitudes = 128;  // m_0 = 0 .. m_127 = 1
constexpr int8_t kInvalidCode = -128;
// Elements per chunk (whole buckets, rounded to an even count so that a chunk starts on a Philox
// raw word): 16 KiB of input, which stays in L1 between the absmax and the rounding.
constexpr size_t kChunkTarget = size_t{1} << 12;
// Chunks per parallel task: a task rounds its chunks in order and prefetches the next one while
// it rounds the current one, so that the absmax pass of the next does not wait on memory.
constexpr size_t kChunksPerTask = 32;
// Elements per batch of random words: 4 KiB of raw words on the stack.
constexpr size_t kBlock = 2048;
constexpr float kTinyScale = 0x1p-64f;
constexpr float kRescale = 0x1p64f;

struct TreeTables {
  alignas(64) float magnitude[kMagnitudes + 1];
  alignas(64) float inverse_gap[kMagnitudes];
  alignas(64) int32_t start[simd::kInt8Keys];
  alignas(64) float value[256];  // by code byte; 0x80 is never read (rejected first)
  simd::Int8MagnitudeTables view() const { return {magnitude, inverse_gap, start}; }
};

TreeTables build_tree_tables() {
  TreeTables t{};
  static constexpr double kDecade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  int at = 1;
  t.magnitude[0] = 0.0f;
  // i = 0 (the single midpoint 5.5e-7) is the pair dropped to make room for -1.0.
  for (int i = 1; i <= 6; ++i) {
    const int count = 1 << i;
    for (int k = 0; k < count; ++k)
      t.magnitude[at++] = static_cast<float>(kDecade[i] * (0.1 + (k + 0.5) * 0.9 / count));
  }
  t.magnitude[at++] = 1.0f;  // at == 128
  std::sort(t.magnitude + 1, t.magnitude + kMagnitudes);
  t.magnitude[kMagnitudes] = std::numeric_limits<float>::infinity();
  for (int j = 0; j + 1 < kMagnitudes; ++j)
    t.inverse_gap[j] = 1.0f / (t.magnitude[j + 1] - t.magnitude[j]);
  t.inverse_gap[kMagnitudes - 1] = 0.0f;
  for (int32_t key = 0; key < simd::kInt8Keys; ++key) {
    const float first = std::bit_cast<float>(static_cast<uint32_t>(key + simd::kInt8KeyBase)
                                             << simd::kInt8KeyShift);
    int j = 0;
    while (j + 1 < kMagnitudes && t.magnitude[j + 1] <= first) ++j;
    t.start[key] = j;
  }
  for (int b = 0; b < 256; ++b) {
    const int k = static_cast<int8_t>(b);
    t.value[b] = k == kInvalidCode ? 0.0f : (k < 0 ? -t.magnitude[-k] : t.magnitude[k]);
  }
  return t;
}

const TreeTables& tree_tables() {
  static const TreeTables tables = build_tree_tables();
  return tables;
}

class Int8Codec final : public Codec {
 public:
  explicit Int8Codec(const CodecSpec& spec)
      : Codec(CodecId::kInt8, spec, pack_wire_params(spec)),
        tree_(spec.get("map") == "tree"),
        stochastic_(spec.get("rounding") == "stochastic"),
        bucket_(static_cast<size_t>(spec.get_int("bucket"))) {
    size_t buckets = std::max<size_t>(1, kChunkTarget / bucket_);
    if (buckets * bucket_ % 2 != 0) ++buckets;
    chunk_ = buckets * bucket_;
  }

  bool unbiased() const override { return stochastic_; }

 protected:
  size_t max_body_bytes(size_t n) const override { return body_bytes(n); }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return body_bytes(n); }

  size_t encode_body(std::span<const float> in, const RngKey& key,
                     std::span<std::byte> body) const override {
    const size_t n = in.size();
    std::byte* scales = body.data();
    int8_t* codes = reinterpret_cast<int8_t*>(body.data() + 4 * buckets(n));
    const float top = tree_ ? 1.0f : 127.0f;
    parallel_for(n, kChunksPerTask * chunk_, [&](size_t task_begin, size_t task_end) {
      alignas(64) uint32_t raw[kBlock / 2];
      const auto* random = reinterpret_cast<const uint16_t*>(raw);
      for (size_t begin = task_begin; begin < task_end; begin += chunk_) {
        const size_t end = std::min(begin + chunk_, task_end);
        const size_t next_end = std::min(end + chunk_, task_end);
        for (size_t off = begin; off < end; off += bucket_) {
          const size_t len = std::min(bucket_, n - off);
          const float m = simd::absmax(in.data() + off, len);
          if (!std::isfinite(m)) throw_if_nonfinite(in.subspan(off, len), off);
          store_f32(scales + 4 * (off / bucket_), m);
        }
        for (size_t block = begin; block < end; block += kBlock) {
          const size_t block_end = std::min(block + kBlock, end);
          if (stochastic_) philox_fill_raw(key, block / 2, (block_end - block + 1) / 2, raw);
          for (size_t off = block; off < block_end;) {
            const size_t b = off / bucket_;
            const size_t seg_end = std::min(block_end, (b + 1) * bucket_);
            const float m = load_f32(scales + 4 * b);
            const float prescale = m < kTinyScale ? kRescale : 1.0f;
            const float inv = m > 0.0f ? top / (m * prescale) : 0.0f;
            const uint16_t* r = stochastic_ ? random + (off - block) : nullptr;
            // The matching part of the next chunk of this task, read by the next absmax pass.
            const size_t ahead = off + chunk_;
            const float* prefetch =
                ahead + (seg_end - off) <= next_end ? in.data() + ahead : nullptr;
            if (tree_) {
              simd::int8_encode_table(in.data() + off, r, seg_end - off, prescale, inv, stochastic_,
                                      tree_tables().view(), prefetch, codes + off);
            } else {
              simd::int8_encode_linear(in.data() + off, r, seg_end - off, prescale, inv,
                                       stochastic_, prefetch, codes + off);
            }
            off = seg_end;
          }
        }
      }
    });
    return body_bytes(n);
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    const size_t n = out.size();
    const std::byte* scales = body.data();
    const int8_t* codes = reinterpret_cast<const int8_t*>(body.data() + 4 * buckets(n));
    parallel_for(n, chunk_, [&](size_t begin, size_t end) {
      for (size_t off = begin; off < end; off += bucket_) {
        const float m = load_f32(scales + 4 * (off / bucket_));
        QGRAD_PAYLOAD_CHECK(std::isfinite(m) && m >= 0.0f, "int8 payload: bucket ", off / bucket_,
                            " has absmax ", m, ", expected a finite value >= 0");
      }
      QGRAD_PAYLOAD_CHECK(!simd::int8_contains(codes + begin, end - begin, kInvalidCode),
                          "int8 payload: invalid code -128 among elements [", begin, ", ", end,
                          ")");
      for (size_t off = begin; off < end; off += bucket_) {
        const size_t len = std::min(bucket_, n - off);
        const float m = load_f32(scales + 4 * (off / bucket_));
        if (tree_) {
          simd::int8_decode_table(codes + off, len, weight * m, tree_tables().value,
                                  out.data() + off);
        } else {
          simd::int8_decode_linear(codes + off, len, weight * (m / 127.0f), out.data() + off);
        }
      }
    });
  }

 private:
  size_t buckets(size_t n) const { return (n + bucket_ - 1) / bucket_; }
  size_t body_bytes(size_t n) const { return 4 * buckets(n) + n; }

  bool tree_;
  bool stochastic_;
  size_t bucket_;
  size_t chunk_;
};

}  // namespace

std::unique_ptr<Codec> make_int8_codec(const CodecSpec& spec) {
  return std::make_unique<Int8Codec>(spec);
}

std::array<float, 255> int8_code_values(Int8Map map) {
  std::array<float, 255> v{};
  for (int k = -127; k <= 127; ++k) {
    if (map == Int8Map::kLinear) {
      v[k + 127] = static_cast<float>(k) * (1.0f / 127.0f);
    } else {
      const float m = tree_tables().magnitude[k < 0 ? -k : k];
      v[k + 127] = k < 0 ? -m : m;
    }
  }
  return v;
}

}  // namespace qgrad
