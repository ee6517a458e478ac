#include "train/data/data_spec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <vector>

#include "core/error.h"
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

// Splits "k=v,k=v" into fields; the first field may be a bare value (returned with key "").
std::vector<Field> split_fields(std::string_view body, std::string_view source,
                                const std::vector<std::string_view>& keys, bool bare_first) {
  std::vector<Field> out;
  std::set<std::string_view> seen;
  size_t pos = 0;
  bool first = true;
  while (pos <= body.size()) {
    size_t comma = body.find(',', pos);
    if (comma == std::string_view::npos) comma = body.size();
    const std::string_view item = body.substr(pos, comma - pos);
    pos = comma + 1;
    const size_t eq = item.find('=');
    const bool keyed = eq != std::string_view::npos && is_key(keys, item.substr(0, eq));
    if (first && bare_first && !keyed) {
      QGRAD_CHECK(!item.empty(), "data spec '", source, ":...': the path is empty");
      out.push_back({"", item});
    } else {
      QGRAD_CHECK(eq != std::string_view::npos, "data spec for ", source,
                  ": expected key=value, got '", item, "'; valid keys: ", join(keys));
      const std::string_view key = item.substr(0, eq);
      QGRAD_CHECK(is_key(keys, key), "data spec for ", source, ": unknown key '", key,
                  "'; valid keys: ", join(keys));
      QGRAD_CHECK(!seen.count(key), "data spec for ", source, ": key '", key, "' given twice");
      QGRAD_CHECK(eq + 1 < item.size(), "data spec for ", source, ": key '", key,
                  "' has an empty value");
      seen.insert(key);
      out.push_back({key, item.substr(eq + 1)});
    }
    first = false;
    if (comma == body.size()) break;
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
  const size_t colon = text.find(':');
  const std::string_view source = text.substr(0, colon);
  const std::string_view body =
      colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
  DataSpec spec;
  if (source == "fashion-mnist") {
    spec.source = DataSource::kFashionMnist;
    spec.dir = kFashionMnistDir;
    if (colon != std::string_view::npos) {
      for (const Field& f : split_fields(body, source, kFashionKeys, false)) spec.dir = f.value;
    }
    return spec;
  }
  if (source == "libsvm") {
    spec.source = DataSource::kLibsvm;
    QGRAD_CHECK(colon != std::string_view::npos && !body.empty(),
                "data spec 'libsvm' needs a file: libsvm:PATH[,test=PATH][,labels=",
                "auto|binary|multiclass|regression][,dim=D]");
    for (const Field& f : split_fields(body, source, kLibsvmKeys, true)) {
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
    if (colon != std::string_view::npos && !body.empty()) {
      for (const Field& f : split_fields(body, source, kSyntheticKeys, false)) {
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
