#include "core/codec_registry.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <string>

#include "core/codecs/fp16.h"
#include "core/codecs/int8.h"
#include "core/codecs/none.h"
#include "core/codecs/qsgd.h"
#include "core/codecs/sign.h"
#include "core/codecs/terngrad.h"
#include "core/codecs/topk.h"
#include "core/codecs/zipml.h"
#include "core/error.h"
#include "core/spec_grammar.h"

namespace qgrad {
namespace {

constexpr double kMaxBucket = 1u << 30;

constexpr ParamSpec kFp16Params[] = {
    {"bucket", ParamType::kInt, "4096", 1, kMaxBucket, "",
     "elements per power-of-two scale (keeps large gradients finite, small ones normal)"},
};
constexpr ParamSpec kQsgdParams[] = {
    {"bits", ParamType::kInt, "4", 2, 8, "", "bits per coordinate: a sign and a level"},
    {"levels", ParamType::kInt, "0", 0, 127, "",
     "s, the number of nonzero levels; 0 = 2^(bits-1)-1"},
    {"bucket", ParamType::kInt, "512", 1, kMaxBucket, "", "elements per scale"},
    {"norm", ParamType::kChoice, "max", 0, 0, "max|l2", "scale of a bucket"},
    {"coding", ParamType::kChoice, "dense", 0, 0, "dense|elias",
     "dense bit-packing or the paper's sparse Elias-omega stream"},
};
constexpr ParamSpec kSignParams[] = {
    {"scale", ParamType::kChoice, "none", 0, 0, "none|l1",
     "none: signs, majority vote; l1: ||v||_1/d per bucket (EF-signSGD), mean"},
    {"bucket", ParamType::kInt, "4096", 1, kMaxBucket, "", "elements per l1 scale"},
};
constexpr ParamSpec kZipmlParams[] = {
    {"bits", ParamType::kInt, "4", 1, 8, "", "bits per coordinate: 2^bits levels"},
    {"levels", ParamType::kChoice, "uniform", 0, 0, "uniform|optimal",
     "uniform between min and max, or variance-optimal levels from the data (sent per bucket)"},
    {"bucket", ParamType::kInt, "512", 2, kMaxBucket, "", "elements per set of levels"},
};
constexpr ParamSpec kInt8Params[] = {
    {"map", ParamType::kChoice, "linear", 0, 0, "linear|tree",
     "linear: k/127; tree: Dettmers' dynamic tree map"},
    {"rounding", ParamType::kChoice, "stochastic", 0, 0, "stochastic|nearest", ""},
    {"bucket", ParamType::kInt, "512", 1, kMaxBucket, "", "elements per absmax scale"},
};
constexpr ParamSpec kTernGradParams[] = {
    {"bucket", ParamType::kInt, "512", 1, kMaxBucket, "", "elements per scale"},
    {"clip", ParamType::kFloat, "0", 0, 1000, "",
     "clip to c standard deviations before ternarizing (paper: 2.5); 0 = off"},
};
constexpr ParamSpec kTopKParams[] = {
    {"ratio", ParamType::kFloat, "0.01", 1e-9, 1, "", "fraction of coordinates sent"},
};

const CodecInfo kCodecs[] = {
    {CodecId::kNone, "none", "fp32, uncompressed", {}, make_none_codec},
    {CodecId::kFp16, "fp16", "IEEE half with a power-of-two scale per bucket", kFp16Params,
     make_fp16_codec},
    {CodecId::kBf16, "bf16", "bfloat16, round to nearest even, saturating", {}, make_bf16_codec},
    {CodecId::kQsgd, "qsgd", "QSGD stochastic quantization (Alistarh et al. 2017)", kQsgdParams,
     make_qsgd_codec},
    {CodecId::kSign, "sign", "signSGD / EF-signSGD: one bit per coordinate", kSignParams,
     make_sign_codec},
    {CodecId::kZipml, "zipml", "ZipML stochastic rounding to b-bit levels (Zhang et al. 2017)",
     kZipmlParams, make_zipml_codec},
    {CodecId::kInt8, "int8", "8-bit linear or dynamic-tree map (Dettmers 2015)", kInt8Params,
     make_int8_codec},
    {CodecId::kTernGrad, "terngrad", "TernGrad: {-1,0,1} x scale (Wen et al. 2017)",
     kTernGradParams, make_terngrad_codec},
    {CodecId::kTopK, "topk", "top-k by magnitude: index + value", kTopKParams, make_topk_codec},
};

std::string valid_names() {
  std::string s;
  for (const auto& c : kCodecs) s.append(s.empty() ? "" : ", ").append(c.name);
  return s;
}

std::string valid_keys(const CodecInfo& info) {
  if (info.params.empty()) return "(none: '" + std::string(info.name) + "' takes no parameters)";
  std::string s;
  for (const auto& p : info.params) s.append(s.empty() ? "" : ", ").append(p.key);
  return s;
}

std::string describe_param(const ParamSpec& p) {
  switch (p.type) {
    case ParamType::kInt:
      return detail::concat("integer in [", static_cast<int64_t>(p.min), ", ",
                            static_cast<int64_t>(p.max), "]");
    case ParamType::kFloat:
      return detail::concat("number in [", p.min, ", ", p.max, "]");
    case ParamType::kChoice:
      return detail::concat("one of ", p.choices);
  }
  return "";
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

// Checks `value` against the schema and returns its canonical text.
std::string canonical_value(const CodecInfo& info, const ParamSpec& p, std::string_view value) {
  const auto bad = [&]() {
    return InvalidArgument(detail::concat("codec '", info.name, "': bad value '", value, "' for '",
                                          p.key, "': expected ", describe_param(p)));
  };
  switch (p.type) {
    case ParamType::kInt: {
      int64_t v = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size() || v < p.min || v > p.max)
        throw bad();
      return std::to_string(v);
    }
    case ParamType::kFloat: {
      float v = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size() || !std::isfinite(v) ||
          v < p.min || v > p.max)
        throw bad();
      char buf[32];
      const auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest round trip
      return std::string(buf, res.ptr);
    }
    case ParamType::kChoice:
      for (std::string_view c : split(p.choices, '|'))
        if (c == value) return std::string(c);
      throw bad();
  }
  throw bad();
}

}  // namespace

std::span<const CodecInfo> builtin_codecs() { return kCodecs; }

const CodecInfo& codec_info(std::string_view name) {
  for (const auto& c : kCodecs)
    if (c.name == name) return c;
  throw InvalidArgument(
      detail::concat("unknown codec '", name, "'; valid codecs: ", valid_names()));
}

const CodecInfo& codec_info(CodecId id) {
  for (const auto& c : kCodecs)
    if (c.id == id) return c;
  throw InvalidArgument(
      detail::concat("unknown codec id ", static_cast<int>(id), "; valid codecs: ", valid_names()));
}

CodecSpec parse_codec_spec(std::string_view text) {
  const SpecTokens spec = tokenize_spec(text);
  QGRAD_CHECK(!spec.head.empty(), "empty codec spec; valid codecs: ", valid_names());
  const CodecInfo& info = codec_info(spec.head);

  std::vector<std::pair<std::string, std::string>> given;
  for (const SpecField& f : spec.fields) {
    QGRAD_CHECK(f.has_value && !f.key.empty(), "codec '", info.name, "': expected key=value, got '",
                f.text, "'; valid keys: ", valid_keys(info));
    bool known = false;
    for (const auto& p : info.params) known |= p.key == f.key;
    QGRAD_CHECK(known, "codec '", info.name, "': unknown key '", f.key,
                "'; valid keys: ", valid_keys(info));
    QGRAD_CHECK(!f.repeated, "codec '", info.name, "': key '", f.key, "' given twice");
    given.emplace_back(std::string(f.key), std::string(f.value));
  }
  std::vector<std::pair<std::string, std::string>> params;
  for (const auto& p : info.params) {
    std::string_view value = p.default_value;
    for (const auto& g : given)
      if (g.first == p.key) value = g.second;
    params.emplace_back(std::string(p.key), canonical_value(info, p, value));
  }
  return CodecSpec(std::string(info.name), std::move(params));
}

std::unique_ptr<Codec> make_codec(std::string_view spec_text) {
  return make_codec(parse_codec_spec(spec_text));
}

std::unique_ptr<Codec> make_codec(const CodecSpec& spec) {
  // Re-parse so a hand-built spec gets the same checks and canonical form as text.
  return codec_info(spec.name()).make(parse_codec_spec(spec.str()));
}

WireParams pack_wire_params(const CodecSpec& spec) {
  const CodecInfo& info = codec_info(spec.name());
  WireParams out{};
  size_t at = 0;
  for (const auto& p : info.params) {
    switch (p.type) {
      case ParamType::kInt: {
        const auto v = static_cast<uint32_t>(spec.get_int(p.key));
        std::memcpy(out.data() + at, &v, 4);
        at += 4;
        break;
      }
      case ParamType::kFloat: {
        const float v = spec.get_float(p.key);
        std::memcpy(out.data() + at, &v, 4);
        at += 4;
        break;
      }
      case ParamType::kChoice: {
        const auto choices = split(p.choices, '|');
        uint8_t index = 0;
        while (index < choices.size() && choices[index] != spec.get(p.key)) ++index;
        QGRAD_CHECK(index < choices.size(), "codec '", info.name, "': bad value for ", p.key);
        out[at++] = index;
        break;
      }
    }
  }
  return out;
}

CodecSpec unpack_wire_params(CodecId id, const WireParams& params) {
  const CodecInfo* info = nullptr;
  for (const auto& c : kCodecs)
    if (c.id == id) info = &c;
  QGRAD_PAYLOAD_CHECK(info != nullptr, "payload names unknown codec id ", static_cast<int>(id),
                      "; valid codecs: ", valid_names());
  std::string text(info->name);
  size_t at = 0;
  for (size_t i = 0; i < info->params.size(); ++i) {
    const ParamSpec& p = info->params[i];
    std::string value;
    switch (p.type) {
      case ParamType::kInt: {
        uint32_t v;
        std::memcpy(&v, params.data() + at, 4);
        at += 4;
        value = std::to_string(v);
        break;
      }
      case ParamType::kFloat: {
        float v;
        std::memcpy(&v, params.data() + at, 4);
        at += 4;
        QGRAD_PAYLOAD_CHECK(std::isfinite(v), "payload header: parameter ", p.key,
                            " is not finite");
        char buf[32];
        value.assign(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
        break;
      }
      case ParamType::kChoice: {
        const auto choices = split(p.choices, '|');
        const uint8_t index = params[at++];
        QGRAD_PAYLOAD_CHECK(index < choices.size(), "payload header: parameter ", p.key,
                            " has choice index ", static_cast<int>(index), ", valid 0..",
                            choices.size() - 1);
        value = std::string(choices[index]);
        break;
      }
    }
    text += i == 0 ? ':' : ',';
    text.append(p.key).append("=").append(value);
  }
  for (; at < params.size(); ++at)
    QGRAD_PAYLOAD_CHECK(params[at] == 0, "payload header: unused parameter bytes are not zero");
  try {
    return parse_codec_spec(text);
  } catch (const InvalidArgument& e) {
    throw CorruptPayload(detail::concat("payload header parameters are invalid: ", e.what()));
  }
}

std::unique_ptr<Codec> codec_for_payload(std::span<const std::byte> payload) {
  const WireHeader h = read_header(payload);
  const CodecSpec spec = unpack_wire_params(h.codec, h.params);
  try {
    return codec_info(h.codec).make(spec);
  } catch (const InvalidArgument& e) {
    throw CorruptPayload(detail::concat("payload header parameters are invalid: ", e.what()));
  }
}

std::string describe_codecs() {
  std::string s;
  for (const auto& c : kCodecs) {
    s += detail::concat("  ", c.name, ": ", c.summary, "\n");
    for (const auto& p : c.params)
      s += detail::concat("      ", p.key, "=", describe_param(p), " (default ", p.default_value,
                          ")", p.doc.empty() ? "" : ": ", p.doc, "\n");
  }
  return s;
}

}  // namespace qgrad
