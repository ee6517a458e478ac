// The one tokenizer of qgrad's `name[:key=value,...]` specs: codec specs (core/codec_registry.h,
// "qsgd:bits=4,bucket=512"), learning-rate schedules (train/lr_schedule.h, "step:every=E"),
// data specs (train/data/data_spec.h, "libsvm:PATH,test=PATH") and link specs
// (comm/rate_limiter.h, "100mbit,latency=50"; there the head is a positional RATE and ',' ends
// it).
//
//   SPEC   := HEAD [ SEP BODY ]          SEP is ':' (or ',' for the link spec); HEAD may be empty
//   BODY   := FIELD { "," FIELD }        split at every ','; an empty BODY is one empty FIELD
//   FIELD  := KEY "=" VALUE | TEXT       split at the first '='; VALUE may hold '=' and ':'
//
// tokenize_spec() only splits: it never throws, keeps empty fields (a trailing comma is an
// empty last field) and marks a field whose key an earlier keyed field had. Each spec then
// applies its own vocabulary, order of checks and messages (which users and tests rely on), e.g.
// whether a first field without '=' is a positional value (libsvm's PATH).
// check_spec() is the strict reading for a spec that wants all of it: a non-empty head, every
// field KEY=VALUE with a non-empty key, no key twice, no empty field; it throws InvalidArgument
// quoting the whole text.
// Thread-safety: pure functions; the views point into the caller's text, which must outlive them.
#pragma once

#include <string_view>
#include <vector>

namespace qgrad {

struct SpecField {
  std::string_view text;   // the field as written, between commas
  std::string_view key;    // before the first '='; the whole text when there is no '='
  std::string_view value;  // after the first '='; "" when there is no '='
  bool has_value = false;  // the field has an '='
  bool repeated = false;   // an earlier field with an '=' has the same key
};

struct SpecTokens {
  std::string_view text;          // the whole spec
  std::string_view head;          // before the first separator (the name, or link's RATE)
  bool has_body = false;          // a separator was there
  std::string_view body;          // after it
  std::vector<SpecField> fields;  // BODY split at ','; empty without a separator
  // The first field with key `key` and an '=', or nullptr.
  const SpecField* find(std::string_view key) const;
};

SpecTokens tokenize_spec(std::string_view text, char separator = ':');

// Tokenizes and applies the strict reading above. `what` names the spec in the message
// ("--foo: spec 'x:a=1,a=2' gives key 'a' twice").
SpecTokens check_spec(std::string_view text, std::string_view what, char separator = ':');

}  // namespace qgrad
