#include "core/codec_spec.h"

#include <charconv>

#include "core/error.h"

namespace qgrad {

const std::string& CodecSpec::get(std::string_view key) const {
  for (const auto& [k, v] : params_)
    if (k == key) return v;
  throw InvalidArgument(detail::concat("codec '", name_, "' has no parameter '", key, "'"));
}

int64_t CodecSpec::get_int(std::string_view key) const {
  const std::string& v = get(key);
  int64_t out = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  QGRAD_CHECK(ec == std::errc() && end == v.data() + v.size(), "codec '", name_, "': ", key, "='",
              v, "' is not an integer");
  return out;
}

float CodecSpec::get_float(std::string_view key) const {
  const std::string& v = get(key);
  float out = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  QGRAD_CHECK(ec == std::errc() && end == v.data() + v.size(), "codec '", name_, "': ", key, "='",
              v, "' is not a number");
  return out;
}

std::string CodecSpec::str() const {
  std::string s = name_;
  for (size_t i = 0; i < params_.size(); ++i) {
    s += i == 0 ? ':' : ',';
    s += params_[i].first + "=" + params_[i].second;
  }
  return s;
}

}  // namespace qgrad
