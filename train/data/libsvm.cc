#include "train/data/libsvm.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "train/data/data_error.h"
#include "train/data/gz_reader.h"
#include "train/data/targets.h"

namespace qgrad {
namespace {

// A dense copy larger than this (4 GiB of floats) is almost surely a wrong dim or a huge sparse
// set that needs a sparse model; refuse it with a message rather than a bad_alloc.
constexpr uint64_t kMaxDenseElements = uint64_t{1} << 30;
constexpr uint64_t kMaxIndex = uint64_t{1} << 31;

// One file in CSR form, before the dim and the label mapping are known.
struct SparseFile {
  std::string source;
  std::vector<double> labels;
  std::vector<size_t> lines;    // 1-based line of each row, for error messages
  std::vector<size_t> starts;   // row r's entries are [starts[r], starts[r + 1])
  std::vector<uint32_t> index;  // 1-based
  std::vector<float> value;
  uint64_t max_index = 0;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// from_chars rejects a leading '+', which LIBSVM files use for labels ("+1").
bool parse_double(std::string_view s, double& out) {
  if (s.size() > 1 && s[0] == '+' && s[1] != '-' && s[1] != '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool parse_index(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

[[noreturn]] void fail(const std::string& source, size_t line, const std::string& what) {
  throw DataError(detail::concat(source, ":", line, ": ", what));
}

SparseFile parse_sparse(std::string_view text, const std::string& source, size_t dim) {
  SparseFile f;
  f.source = source;
  f.starts.push_back(0);
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    size_t i = 0;
    auto next_token = [&]() -> std::string_view {
      while (i < line.size() && is_space(line[i])) ++i;
      const size_t b = i;
      while (i < line.size() && !is_space(line[i])) ++i;
      return line.substr(b, i - b);
    };
    const std::string_view label_tok = next_token();
    if (label_tok.empty()) continue;  // blank or comment-only line
    if (label_tok.find(':') != std::string_view::npos) {
      fail(source, line_no, "the line starts with an index:value pair; the label is missing");
    }
    double label = 0;
    if (!parse_double(label_tok, label) || !std::isfinite(label)) {
      fail(source, line_no,
           detail::concat("label '", label_tok, "' is not a finite number (expected `label ",
                          "index:value ...`)"));
    }
    uint64_t prev = 0;
    for (std::string_view tok = next_token(); !tok.empty(); tok = next_token()) {
      const size_t colon = tok.find(':');
      if (colon == std::string_view::npos) {
        fail(source, line_no, detail::concat("token '", tok, "' is not index:value"));
      }
      const std::string_view idx_s = tok.substr(0, colon);
      const std::string_view val_s = tok.substr(colon + 1);
      if (idx_s == "qid") {
        fail(source, line_no, "qid: (ranking data) is not supported");
      }
      uint64_t idx = 0;
      if (!parse_index(idx_s, idx) || idx == 0 || idx > kMaxIndex) {
        fail(source, line_no,
             detail::concat("feature index '", idx_s, "' in '", tok, "' is not an integer in 1..",
                            kMaxIndex, " (indices are 1-based)"));
      }
      if (idx <= prev) {
        fail(source, line_no,
             detail::concat("feature index ", idx, " follows index ", prev,
                            "; indices must be strictly increasing"));
      }
      if (dim != 0 && idx > dim) {
        fail(source, line_no, detail::concat("feature index ", idx, " exceeds dim=", dim));
      }
      double v = 0;
      if (!parse_double(val_s, v) || !std::isfinite(static_cast<float>(v))) {
        fail(source, line_no,
             detail::concat("value '", val_s, "' of feature ", idx,
                            " is not a finite number in float range"));
      }
      prev = idx;
      f.index.push_back(static_cast<uint32_t>(idx));
      f.value.push_back(static_cast<float>(v));
    }
    f.max_index = std::max(f.max_index, prev);
    f.labels.push_back(label);
    f.lines.push_back(line_no);
    f.starts.push_back(f.index.size());
  }
  return f;
}

// How the train file's labels become targets; applied unchanged to the test file.
struct LabelMap {
  LabelMode mode = LabelMode::kRegression;  // kBinary, kMultiClass or kRegression
  std::vector<double> keys;                 // label values in increasing order
  std::vector<float> targets;               // target of keys[k]
  size_t num_classes = 0;
};

bool within(const std::vector<double>& distinct, double a, double b) {
  return std::all_of(distinct.begin(), distinct.end(), [&](double v) { return v == a || v == b; });
}

std::string list_values(const std::vector<double>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 8; ++i) s += detail::concat(i ? ", " : "", v[i]);
  if (v.size() > 8) s += detail::concat(", ... (", v.size(), " values)");
  return s;
}

LabelMap make_label_map(const SparseFile& train, LabelMode mode) {
  std::vector<double> distinct = train.labels;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  const bool pm1 = within(distinct, -1.0, 1.0);
  const bool zero_one = within(distinct, 0.0, 1.0);
  if (mode == LabelMode::kAuto) {
    const bool integral =
        std::all_of(distinct.begin(), distinct.end(), [](double v) { return v == std::floor(v); });
    if (pm1 || zero_one || distinct.size() == 2) {
      mode = LabelMode::kBinary;
    } else {
      mode = integral ? LabelMode::kMultiClass : LabelMode::kRegression;
    }
  }
  LabelMap map;
  map.mode = mode;
  if (mode == LabelMode::kRegression) return map;
  if (mode == LabelMode::kBinary || distinct.size() == 2) {
    map.num_classes = 2;
    if (pm1) {
      map.keys = {-1.0, 1.0};
    } else if (zero_one) {
      map.keys = {0.0, 1.0};
    } else if (distinct.size() == 2) {
      map.keys = distinct;
    } else {
      throw DataError(detail::concat("'", train.source,
                                     "': binary labels must lie in {-1, +1} or {0, 1} or take two ",
                                     "values; found ", distinct.size(), ": ", list_values(distinct),
                                     " (use labels=multiclass or labels=regression)"));
    }
    map.targets = {-1.0f, 1.0f};
    return map;
  }
  if (distinct.size() < 2) {
    throw DataError(detail::concat("'", train.source, "': multi-class labels need at least two ",
                                   "distinct values; found ", list_values(distinct)));
  }
  map.keys = distinct;
  map.num_classes = distinct.size();
  for (size_t k = 0; k < distinct.size(); ++k)
    map.targets.push_back(class_target(k, map.num_classes));
  return map;
}

Dataset densify(const SparseFile& f, size_t dim, const LabelMap& map) {
  const uint64_t rows = f.labels.size();
  if (dim != 0 && rows > kMaxDenseElements / dim) {
    throw DataError(detail::concat("'", f.source, "': ", rows, " rows x ", dim,
                                   " features is too large to hold as dense fp32 rows"));
  }
  Dataset d;
  d.name = "libsvm:" + std::filesystem::path(f.source).filename().string();
  d.rows = rows;
  d.dim = dim;
  d.num_classes = map.num_classes;
  d.features.assign(rows * dim, 0.0f);
  d.targets.resize(rows);
  for (size_t r = 0; r < rows; ++r) {
    float* row = d.features.data() + r * dim;
    for (size_t e = f.starts[r]; e < f.starts[r + 1]; ++e) row[f.index[e] - 1] = f.value[e];
    const double label = f.labels[r];
    if (map.mode == LabelMode::kRegression) {
      d.targets[r] = static_cast<float>(label);
      continue;
    }
    const auto it = std::lower_bound(map.keys.begin(), map.keys.end(), label);
    if (it == map.keys.end() || *it != label) {
      fail(f.source, f.lines[r],
           detail::concat("label ", label, " is not one of the training labels (",
                          list_values(map.keys), ")"));
    }
    d.targets[r] = map.targets[static_cast<size_t>(it - map.keys.begin())];
  }
  return d;
}

}  // namespace

LabelMode parse_label_mode(std::string_view name) {
  if (name == "auto") return LabelMode::kAuto;
  if (name == "binary") return LabelMode::kBinary;
  if (name == "multiclass") return LabelMode::kMultiClass;
  if (name == "regression") return LabelMode::kRegression;
  throw InvalidArgument(detail::concat("unknown label mode '", name,
                                       "'; valid: auto, binary, multiclass, regression"));
}

const char* label_mode_name(LabelMode mode) {
  switch (mode) {
    case LabelMode::kAuto:
      return "auto";
    case LabelMode::kBinary:
      return "binary";
    case LabelMode::kMultiClass:
      return "multiclass";
    case LabelMode::kRegression:
      return "regression";
  }
  return "?";
}

DataSplit load_libsvm(const std::string& train_path, const std::string& test_path,
                      const LibsvmOptions& options) {
  const SparseFile train =
      parse_sparse(data_detail::read_whole_file(train_path), train_path, options.dim);
  if (train.labels.empty()) {
    throw DataError(detail::concat("LIBSVM file '", train_path, "' has no examples"));
  }
  SparseFile test;
  if (!test_path.empty()) {
    test = parse_sparse(data_detail::read_whole_file(test_path), test_path, options.dim);
  }
  const size_t dim = options.dim != 0
                         ? options.dim
                         : static_cast<size_t>(std::max(train.max_index, test.max_index));
  const LabelMap map = make_label_map(train, options.labels);
  DataSplit split;
  split.train = densify(train, dim, map);
  if (!test_path.empty()) {
    split.test = densify(test, dim, map);
  } else {
    split.test.dim = dim;
    split.test.num_classes = map.num_classes;
  }
  return split;
}

Dataset parse_libsvm_text(std::string_view text, const std::string& source,
                          const LibsvmOptions& options) {
  const SparseFile f = parse_sparse(text, source, options.dim);
  if (f.labels.empty())
    throw DataError(detail::concat("LIBSVM data '", source, "' has no examples"));
  const size_t dim = options.dim != 0 ? options.dim : static_cast<size_t>(f.max_index);
  return densify(f, dim, make_label_map(f, options.labels));
}

}  // namespace qgrad
