#include "core/spec_grammar.h"

#include "core/error.h"

namespace qgrad {

const SpecField* SpecTokens::find(std::string_view key) const {
  for (const SpecField& f : fields) {
    if (f.has_value && f.key == key) return &f;
  }
  return nullptr;
}

SpecTokens tokenize_spec(std::string_view text, char separator) {
  SpecTokens out;
  out.text = text;
  const size_t sep = text.find(separator);
  out.head = text.substr(0, sep);
  if (sep == std::string_view::npos) return out;
  out.has_body = true;
  out.body = text.substr(sep + 1);
  size_t start = 0;
  while (true) {
    const size_t comma = out.body.find(',', start);
    SpecField f;
    f.text = out.body.substr(start, comma == std::string_view::npos ? comma : comma - start);
    const size_t eq = f.text.find('=');
    f.has_value = eq != std::string_view::npos;
    f.key = f.text.substr(0, eq);
    f.value = f.has_value ? f.text.substr(eq + 1) : std::string_view{};
    f.repeated = out.find(f.key) != nullptr;
    out.fields.push_back(f);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

SpecTokens check_spec(std::string_view text, std::string_view what, char separator) {
  SpecTokens t = tokenize_spec(text, separator);
  QGRAD_CHECK(!t.head.empty(), what, ": spec '", text, "' has no name before '", separator, "'");
  for (const SpecField& f : t.fields) {
    QGRAD_CHECK(!f.text.empty(), what, ": spec '", text, "' has an empty field (two commas, or ",
                "a comma at an end)");
    QGRAD_CHECK(f.has_value, what, ": spec '", text, "': '", f.text, "' is not key=value");
    QGRAD_CHECK(!f.key.empty(), what, ": spec '", text, "': '", f.text, "' has an empty key");
    QGRAD_CHECK(!f.repeated, what, ": spec '", text, "' gives key '", f.key, "' twice");
  }
  return t;
}

}  // namespace qgrad
