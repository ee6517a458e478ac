#include "core/codecs/none.h"

#include <cstring>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd/kernels.h"

namespace qgrad {
namespace {

class NoneCodec final : public Codec {
 public:
  explicit NoneCodec(const CodecSpec& spec) : Codec(CodecId::kNone, spec, pack_wire_params(spec)) {}
  bool unbiased() const override { return true; }

 protected:
  size_t max_body_bytes(size_t n) const override { return 4 * n; }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return 4 * n; }

  size_t encode_body(std::span<const float> in, const RngKey&,
                     std::span<std::byte> body) const override {
    parallel_for(in.size(), kChunk, [&](size_t begin, size_t end) {
      if (simd::find_nonfinite(in.data() + begin, end - begin) != end - begin)
        throw_if_nonfinite(in.subspan(begin, end - begin), begin);
      std::memcpy(body.data() + 4 * begin, in.data() + begin, 4 * (end - begin));
    });
    return 4 * in.size();
  }

  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    parallel_for(out.size(), kChunk, [&](size_t begin, size_t end) {
      simd::axpy_bytes(weight, body.data() + 4 * begin, out.data() + begin, end - begin);
    });
  }

 private:
  static constexpr size_t kChunk = size_t{1} << 16;
};

}  // namespace

std::unique_ptr<Codec> make_none_codec(const CodecSpec& spec) {
  return std::make_unique<NoneCodec>(spec);
}

}  // namespace qgrad
