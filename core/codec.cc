#include "core/codec.h"

#include <cmath>

#include "core/error.h"

namespace qgrad {

size_t Codec::encode(std::span<const float> in, const RngKey& key, std::span<std::byte> out) const {
  const size_t need = max_encoded_bytes(in.size());
  QGRAD_CHECK(out.size() >= need, spec_.str(), ": output buffer of ", out.size(),
              " bytes is smaller than max_encoded_bytes(", in.size(), ") = ", need);
  std::span<std::byte> body = out.subspan(kHeaderBytes);
  const size_t body_bytes = encode_body(in, key, body);
  write_header(out, id_, params_, in.size(), body.first(body_bytes));
  return kHeaderBytes + body_bytes;
}

std::vector<std::byte> Codec::encode(std::span<const float> in, const RngKey& key) const {
  std::vector<std::byte> out(max_encoded_bytes(in.size()));
  out.resize(encode(in, key, std::span<std::byte>(out)));
  return out;
}

void Codec::decode_add(std::span<const std::byte> payload, std::span<float> out,
                       float weight) const {
  const WireHeader h = read_header(payload);
  QGRAD_PAYLOAD_CHECK(h.codec == id_, "payload was encoded by codec id ", static_cast<int>(h.codec),
                      ", this decoder is ", spec_.str(), " (id ", static_cast<int>(id_), ")");
  QGRAD_PAYLOAD_CHECK(h.params == params_, "payload codec parameters differ from this decoder's (",
                      spec_.str(), ")");
  QGRAD_PAYLOAD_CHECK(h.elements == out.size(), "payload holds ", h.elements,
                      " elements, the output has ", out.size());
  if (const auto exact = exact_body_bytes(out.size())) {
    QGRAD_PAYLOAD_CHECK(h.body_bytes == *exact, "payload body is ", h.body_bytes, " bytes, ",
                        spec_.str(), " with ", out.size(), " elements needs ", *exact);
  } else {
    QGRAD_PAYLOAD_CHECK(h.body_bytes <= max_body_bytes(out.size()), "payload body of ",
                        h.body_bytes, " bytes exceeds the maximum for ", out.size(), " elements");
  }
  decode_body(payload.subspan(kHeaderBytes), out, weight);
}

void Codec::residual(std::span<const float> in, std::span<const std::byte> payload,
                     std::span<float> residual) const {
  QGRAD_CHECK(in.size() == residual.size(), "residual: input has ", in.size(),
              " elements, residual ", residual.size());
  std::copy(in.begin(), in.end(), residual.begin());
  decode_add(payload, residual, -1.0f);
}

void throw_if_nonfinite(std::span<const float> in, size_t offset) {
  for (size_t i = 0; i < in.size(); ++i) {
    if (!std::isfinite(in[i])) {
      throw InvalidArgument(detail::concat("gradient element ", offset + i, " is ",
                                           std::isnan(in[i]) ? "NaN" : "Inf",
                                           ": refusing to encode a non-finite gradient"));
    }
  }
}

}  // namespace qgrad
