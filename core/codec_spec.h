// Codec specs: "name[:key=value[,key=value]...]", e.g. "qsgd:bits=4,bucket=512,norm=max".
// Parameters are a schema, not a string map: every codec lists its keys, their types, ranges and
// defaults; unknown keys and bad values are errors that list the valid choices. A parsed spec is
// canonical: every key of the schema, in schema order, with its value in canonical text.
// parse_codec_spec (core/codec_registry.h) reads the text with the tokenizer that every
// `name[:key=value]` spec shares (core/spec_grammar.h) and checks it against the schema.
// Thread-safe: values only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qgrad {

enum class ParamType : uint8_t {
  kInt,     // unsigned integer in [min, max]; 4 bytes on the wire
  kFloat,   // float in [min, max]; 4 bytes on the wire
  kChoice,  // one of `choices` ("l2|max"); 1 byte on the wire (its index)
};

struct ParamSpec {
  std::string_view key;
  ParamType type;
  std::string_view default_value;
  double min = 0, max = 0;        // kInt, kFloat
  std::string_view choices = "";  // kChoice: alternatives separated by '|'
  std::string_view doc = "";
};

class CodecSpec {
 public:
  CodecSpec() = default;
  CodecSpec(std::string name, std::vector<std::pair<std::string, std::string>> params)
      : name_(std::move(name)), params_(std::move(params)) {}

  const std::string& name() const { return name_; }
  const std::vector<std::pair<std::string, std::string>>& params() const { return params_; }

  // Typed access to a key of the schema (throws InvalidArgument if absent).
  const std::string& get(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  float get_float(std::string_view key) const;

  // Canonical text: "qsgd:bits=4,levels=0,bucket=512,norm=max,coding=dense"; "none" alone.
  std::string str() const;
  friend bool operator==(const CodecSpec&, const CodecSpec&) = default;

 private:
  std::string name_;
  std::vector<std::pair<std::string, std::string>> params_;
};

}  // namespace qgrad
