#include "train/data/data_spec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/spec_grammar.h"
#include "train/data/idx.h"

namespace qgrad {
namespace {

constexpr std::string_view kSources = "fashion-mnist, libsvm, synthetic";
const std::vector<std::string_view> kFashionKeys = {"dir"};
const std::vector<std::string_view> kLibsvmKeys = {"path", "test", "labels", "dim"};
const std::vector<std::string_view> kSyntheticKeys = {"kind", "noise",   "rows", "test",
                                                      "dim",  "classes", "seed"};

std::string join(const std::vector<std::string_view>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += detail::concat(i ? ", " : "", v[i]);
  return s;
}

bool is_key(const std::vector<std::string_view>& keys, std::string_view k) {
  return std::find(keys.begin(), keys.end(), k) != keys.end();
}

struct Field {
  std::string_view key, value;
};

// The fields of `spec` (its body split by tokenize_spec); the first may be a bare value
// (returned with key "") when `bare_first` and it is not key=value with a known key.
std::vector<Field> split_fields(const SpecTokens& spec, std::string_view source,
                                const std::vector<std::string_view>& keys, bool bare_first) {
  std::vector<Field> out;
  for (size_t i = 0; i < spec.fields.size(); ++i) {
    const SpecField& f = spec.fields[i];
    const bool keyed = f.has_value && is_key(keys, f.key);
    if (i == 0 && bare_first && !keyed) {
      QGRAD_CHECK(!f.text.empty(), "data spec '", source, ":...': the path is empty");
      out.push_back({"", f.text});
      continue;
    }
    QGRAD_CHECK(f.has_value, "data spec for ", source, ": expected key=value, got '", f.text,
                "'; valid keys: ", join(keys));
    QGRAD_CHECK(is_key(keys, f.key), "data spec for ", source, ": unknown key '", f.key,
                "'; valid keys: ", join(keys));
    QGRAD_CHECK(!f.repeated, "data spec for ", source, ": key '", f.key, "' given twice");
    QGRAD_CHECK(!f.value.empty(), "data spec for ", source, ": key '", f.key,
                "' has an empty value");
    out.push_back({f.key, f.value});
  }
  return out;
}

uint64_t parse_uint(std::string_view source, const Field& f, uint64_t min) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(f.value.data(), f.value.data() + f.value.size(), v);
  QGRAD_CHECK(ec == std::errc() && end == f.value.data() + f.value.size() && v >= min,
              "data spec for ", source, ": ", f.key, "='", f.value, "' is not an integer >= ", min);
  return v;
}

double parse_nonneg(std::string_view source, const Field& f) {
  double v = 0;
  const auto [end, ec] = std::from_chars(f.value.data(), f.value.data() + f.value.size(), v);
  QGRAD_CHECK(
      ec == std::errc() && end == f.value.data() + f.value.size() && std::isfinite(v) && v >= 0,
      "data spec for ", source, ": ", f.key, "='", f.value, "' is not a finite number >= 0");
  return v;
}

}  // namespace

DataSpec parse_data_spec(std::string_view text) {
  const SpecTokens tokens = tokenize_spec(text);
  const std::string_view source = tokens.head;
  const std::string_view body = tokens.body;
  DataSpec spec;
  if (source == "fashion-mnist") {
    spec.source = DataSource::kFashionMnist;
    spec.dir = kFashionMnistDir;
    for (const Field& f : split_fields(tokens, source, kFashionKeys, false)) spec.dir = f.value;
    return spec;
  }
  if (source == "libsvm") {
    spec.source = DataSource::kLibsvm;
    QGRAD_CHECK(tokens.has_body && !body.empty(),
                "data spec 'libsvm' needs a file: libsvm:PATH[,test=PATH][,labels=",
                "auto|binary|multiclass|regression][,dim=D]");
    for (const Field& f : split_fields(tokens, source, kLibsvmKeys, true)) {
      if (f.key.empty() || f.key == "path") {
        QGRAD_CHECK(spec.path.empty(), "data spec for libsvm: the train path is given twice");
        spec.path = f.value;
      } else if (f.key == "test") {
        spec.test_path = f.value;
      } else if (f.key == "labels") {
        spec.libsvm.labels = parse_label_mode(f.value);
      } else if (f.key == "dim") {
        spec.libsvm.dim = parse_uint(source, f, 1);
      }
    }
    QGRAD_CHECK(!spec.path.empty(), "data spec for libsvm: no train file given (libsvm:PATH)");
    return spec;
  }
  if (source == "synthetic") {
    spec.source = DataSource::kSynthetic;
    bool have_kind = false, have_classes = false;
    SyntheticOptions& o = spec.synthetic;
    if (tokens.has_body && !body.empty()) {
      for (const Field& f : split_fields(tokens, source, kSyntheticKeys, false)) {
        if (f.key == "kind") {
          o.kind = parse_synthetic_kind(f.value);
          have_kind = true;
        } else if (f.key == "rows") {
          o.rows = parse_uint(source, f, 1);
        } else if (f.key == "test") {
          o.test_rows = parse_uint(source, f, 0);
        } else if (f.key == "dim") {
          o.dim = parse_uint(source, f, 1);
        } else if (f.key == "noise") {
          o.noise = parse_nonneg(source, f);
        } else if (f.key == "classes") {
          o.classes = parse_uint(source, f, 2);
          have_classes = true;
        } else if (f.key == "seed") {
          o.seed = parse_uint(source, f, 0);
        }
      }
    }
    QGRAD_CHECK(have_kind, "data spec 'synthetic' needs kind=regression|classification; keys: ",
                join(kSyntheticKeys));
    QGRAD_CHECK(!have_classes || o.kind == SyntheticKind::kClassification,
                "data spec for synthetic: classes= applies only to kind=classification");
    validate(o);
    return spec;
  }
  throw InvalidArgument(detail::concat("unknown data source '", source, "'; valid: ", kSources,
                                       "\n", describe_data_specs()));
}

std::string to_string(const DataSpec& spec) {
  switch (spec.source) {
    case DataSource::kFashionMnist:
      return "fashion-mnist:dir=" + spec.dir;
    case DataSource::kLibsvm: {
      std::string s = "libsvm:" + spec.path;
      if (!spec.test_path.empty()) s += ",test=" + spec.test_path;
      s += detail::concat(",labels=", label_mode_name(spec.libsvm.labels));
      if (spec.libsvm.dim != 0) s += detail::concat(",dim=", spec.libsvm.dim);
      return s;
    }
    case DataSource::kSynthetic:
      return synthetic_spec(spec.synthetic);
  }
  return {};
}

DataSplit load_data(const DataSpec& spec) {
  switch (spec.source) {
    case DataSource::kFashionMnist:
      return load_fashion_mnist(spec.dir);
    case DataSource::kLibsvm:
      return load_libsvm(spec.path, spec.test_path, spec.libsvm);
    case DataSource::kSynthetic:
      return make_synthetic(spec.synthetic);
  }
  throw InvalidArgument("load_data: unknown data source");
}

DataSplit load_data(std::string_view text) { return load_data(parse_data_spec(text)); }

std::string describe_data_specs() {
  return "data sources:\n"
         "  fashion-mnist[:dir=PATH]   Fashion-MNIST IDX files (default dir "
         "/usr/share/datasets/fashion-mnist, Debian package dataset-fashion-mnist)\n"
         "  libsvm:PATH[,test=PATH][,labels=auto|binary|multiclass|regression][,dim=D]\n"
         "                             LIBSVM text; no test= gives an empty test split\n"
         "  synthetic:kind=regression|classification[,rows=N][,test=N][,dim=D][,noise=S]"
         "[,classes=C][,seed=K]\n"
         "                             Philox-generated; defaults rows=1000, test=rows/5, dim=10,\n"
         "                             noise=0.1 (regression) / 1 (classification), classes=2, "
         "seed=0\n";
}

}  // namespace qgrad
