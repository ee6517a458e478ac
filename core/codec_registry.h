// The one place that knows codec names, ids and parameter schemas: an explicit table in
// codec_registry.cc (no static-init self-registration). Thread-safe: read-only tables.
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "core/codec.h"
#include "core/codec_spec.h"
#include "core/wire.h"

namespace qgrad {

struct CodecInfo {
  CodecId id;
  std::string_view name;
  std::string_view summary;
  std::span<const ParamSpec> params;
  std::unique_ptr<Codec> (*make)(const CodecSpec& spec);
};

std::span<const CodecInfo> builtin_codecs();
// Throws InvalidArgument listing the valid codecs when the name or id is unknown.
const CodecInfo& codec_info(std::string_view name);
const CodecInfo& codec_info(CodecId id);

// Parses "name[:key=value,...]" into a canonical spec (defaults filled in, values checked).
// Errors name the bad part and list the valid codecs, keys or values.
CodecSpec parse_codec_spec(std::string_view text);
std::unique_ptr<Codec> make_codec(std::string_view spec_text);
std::unique_ptr<Codec> make_codec(const CodecSpec& spec);
// The codec that wrote `payload`, rebuilt from its header (checked: a bad header throws
// CorruptPayload). Lets `qgrad-codec decode` read any payload without being told the spec.
std::unique_ptr<Codec> codec_for_payload(std::span<const std::byte> payload);

// A canonical spec's parameters as header bytes, in schema order: kInt as u32, kFloat as f32,
// kChoice as one byte (the index). unpack throws CorruptPayload on values outside the schema.
WireParams pack_wire_params(const CodecSpec& spec);
CodecSpec unpack_wire_params(CodecId id, const WireParams& params);

// A one-line-per-codec description of every codec and key, for --help and error messages.
std::string describe_codecs();

}  // namespace qgrad
