#include "ps/push_decoder.h"

#include <cmath>
#include <memory>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/wire.h"

namespace qgrad::ps {

CallStatus check_push_lr(uint32_t worker, uint64_t step, float lr) {
  if (std::isfinite(lr) && lr >= 0.0f) return call_ok();
  return invalid(detail::concat("push of worker ", worker, " step ", step, ": lr ", lr,
                                " is not a finite number >= 0"));
}

CallStatus decode_push(uint32_t worker, uint64_t step, std::span<const KeyPayloadView> payloads,
                       std::span<const ParamShape> shape, DecodedPush& out) {
  const size_t keys = shape.size();
  if (payloads.size() != keys) {
    return invalid(detail::concat("push of worker ", worker, " step ", step, " carries ",
                                  payloads.size(), " keys, the server holds ", keys,
                                  " (a push must carry every key)"));
  }
  out.decoded.assign(keys, {});
  out.aggregation.assign(keys, Aggregation::kMean);
  std::vector<bool> seen(keys, false);
  for (const KeyPayloadView& kp : payloads) {
    const uint32_t k = kp.key;
    if (k >= keys) return invalid(detail::concat("key ", k, " does not exist (", keys, " keys)"));
    if (seen[k]) return invalid(detail::concat("key ", k, " appears twice in one push"));
    seen[k] = true;
    const ParamShape& key = shape[k];
    try {
      const std::unique_ptr<Codec> codec = codec_for_payload(kp.payload);
      const WireHeader h = read_header(kp.payload);
      if (h.elements != key.size) {
        return invalid(detail::concat("key ", k, " ('", key.name, "'): the payload holds ",
                                      h.elements, " elements, the key has ", key.size));
      }
      std::vector<float> values(key.size, 0.0f);
      codec->decode_add(kp.payload, values, 1.0f);
      for (size_t j = 0; j < values.size(); ++j) {
        if (!std::isfinite(values[j])) {
          return invalid(detail::concat("key ", k, " ('", key.name, "'): element ", j,
                                        " decodes to ", values[j]));
        }
      }
      out.decoded[k] = std::move(values);
      out.aggregation[k] = codec->aggregation();
    } catch (const Error& e) {
      return invalid(detail::concat("key ", k, " ('", key.name, "'): ", e.what()));
    }
  }
  return call_ok();
}

}  // namespace qgrad::ps
