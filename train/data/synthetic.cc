#include "train/data/synthetic.h"

#include <charconv>
#include <cmath>

#include "core/error.h"
#include "core/parallel.h"
#include "core/philox.h"
#include "train/data/targets.h"

namespace qgrad {
namespace {

enum Stream : uint32_t { kFeatures = 0, kSolution = 1, kNoise = 2, kLabels = 3, kCenters = 4 };

constexpr uint64_t kMaxElements = uint64_t{1} << 30;

RngKey stream_key(uint64_t seed, Stream s) {
  return RngKey{.seed = seed, .step = 0, .rank = 0, .tensor = kSyntheticTensor, .bucket = s};
}

// Box-Muller on two 32-bit words; u1 in (0, 1] keeps the log finite.
double normal_from_words(uint32_t w1, uint32_t w2) {
  const double u1 = (static_cast<double>(w1) + 1.0) * 0x1p-32;
  const double u2 = static_cast<double>(w2) * 0x1p-32;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Normals k = first .. first + n - 1 of a stream.
void fill_normals(const RngKey& key, uint64_t first, size_t n, double* out,
                  std::vector<uint32_t>& words) {
  words.resize(2 * n);
  philox_fill_raw(key, 2 * first, 2 * n, words.data());
  for (size_t k = 0; k < n; ++k) out[k] = normal_from_words(words[2 * k], words[2 * k + 1]);
}

std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Rows [first, first + count) of the problem (global row numbers).
Dataset make_rows(const SyntheticOptions& o, size_t first, size_t count, const char* part,
                  const std::vector<double>& solution, const std::vector<double>& centers) {
  const bool regression = o.kind == SyntheticKind::kRegression;
  const double noise = o.resolved_noise();
  const size_t dim = o.dim;
  Dataset d;
  d.name = synthetic_spec(o) + "/" + part;
  d.rows = count;
  d.dim = dim;
  d.num_classes = regression ? 0 : o.classes;
  d.features.resize(count * dim);
  d.targets.resize(count);
  const RngKey features_key = stream_key(o.seed, kFeatures);
  const RngKey noise_key = stream_key(o.seed, kNoise);
  const RngKey labels_key = stream_key(o.seed, kLabels);
  parallel_for(count, 256, [&](size_t begin, size_t end) {
    std::vector<double> z(dim);
    std::vector<uint32_t> words;
    for (size_t r = begin; r < end; ++r) {
      const uint64_t row = first + r;
      fill_normals(features_key, row * dim, dim, z.data(), words);
      float* x = d.features.data() + r * dim;
      if (regression) {
        double dot = 0;
        for (size_t j = 0; j < dim; ++j) {
          x[j] = static_cast<float>(z[j]);
          // The target uses the stored float features, so b - <A_i, x*> is exactly the noise
          // (up to the rounding of the sum), not noise plus float-rounding of A.
          dot += static_cast<double>(x[j]) * solution[j];
        }
        double e = 0;
        fill_normals(noise_key, row, 1, &e, words);
        d.targets[r] = static_cast<float>(dot + noise * e);
      } else {
        const uint32_t w = philox_raw_word(labels_key, row);
        const size_t c = static_cast<size_t>((uint64_t{w} * o.classes) >> 32);
        const double* mu = centers.data() + c * dim;
        for (size_t j = 0; j < dim; ++j) x[j] = static_cast<float>(mu[j] + noise * z[j]);
        d.targets[r] = class_target(c, o.classes);
      }
    }
  });
  return d;
}

std::vector<double> normals(const SyntheticOptions& o, Stream s, size_t n) {
  std::vector<double> v(n);
  std::vector<uint32_t> words;
  fill_normals(stream_key(o.seed, s), 0, n, v.data(), words);
  return v;
}

// Centers of the classes (classes x dim, row-major); see the header for the layout.
std::vector<double> class_centers(const SyntheticOptions& o) {
  const size_t c_count = o.classes, dim = o.dim;
  std::vector<double> g = normals(o, kCenters, c_count * dim);
  if (c_count > dim) {
    for (double& v : g) v *= 2.0;
    return g;
  }
  // Modified Gram-Schmidt: independent Gaussian vectors become a random orthonormal set.
  for (size_t c = 0; c < c_count; ++c) {
    double* v = g.data() + c * dim;
    for (size_t p = 0; p < c; ++p) {
      const double* q = g.data() + p * dim;
      double dot = 0;
      for (size_t j = 0; j < dim; ++j) dot += v[j] * q[j];
      for (size_t j = 0; j < dim; ++j) v[j] -= dot * q[j];
    }
    double norm = 0;
    for (size_t j = 0; j < dim; ++j) norm += v[j] * v[j];
    norm = std::sqrt(norm);
    for (size_t j = 0; j < dim; ++j) v[j] /= norm;
  }
  // Centering keeps every pairwise distance (sqrt(2) for orthonormal vectors) and puts the
  // centroid at the origin, so two classes are split by a hyperplane through 0: a linear
  // classifier without a bias term can reach the Bayes error.
  const double radius = 2.0 * std::sqrt(2.0);  // pairwise distance 4
  std::vector<double> mean(dim, 0.0);
  for (size_t c = 0; c < c_count; ++c) {
    for (size_t j = 0; j < dim; ++j) mean[j] += g[c * dim + j] / static_cast<double>(c_count);
  }
  for (size_t c = 0; c < c_count; ++c) {
    for (size_t j = 0; j < dim; ++j) g[c * dim + j] = radius * (g[c * dim + j] - mean[j]);
  }
  return g;
}

}  // namespace

SyntheticKind parse_synthetic_kind(std::string_view name) {
  if (name == "regression") return SyntheticKind::kRegression;
  if (name == "classification") return SyntheticKind::kClassification;
  throw InvalidArgument(
      detail::concat("unknown synthetic kind '", name, "'; valid: regression, classification"));
}

const char* synthetic_kind_name(SyntheticKind kind) {
  return kind == SyntheticKind::kRegression ? "regression" : "classification";
}

void validate(const SyntheticOptions& o) {
  QGRAD_CHECK(o.rows >= 1, "synthetic data: rows must be >= 1, got ", o.rows);
  QGRAD_CHECK(o.dim >= 1, "synthetic data: dim must be >= 1, got ", o.dim);
  const double noise = o.resolved_noise();
  QGRAD_CHECK(std::isfinite(noise) && noise >= 0, "synthetic data: noise must be a finite value ",
              ">= 0, got ", noise);
  if (o.kind == SyntheticKind::kClassification) {
    QGRAD_CHECK(o.classes >= 2 && o.classes <= 65536,
                "synthetic classification: classes must be in 2..65536, got ", o.classes);
  }
  const uint64_t total = uint64_t{o.rows} + o.resolved_test_rows();
  QGRAD_CHECK(total <= kMaxElements / o.dim, "synthetic data: ", total, " rows x ", o.dim,
              " features is too large (at most ", kMaxElements, " values)");
}

std::string synthetic_spec(const SyntheticOptions& o) {
  std::string s = detail::concat("synthetic:kind=", synthetic_kind_name(o.kind), ",rows=", o.rows,
                                 ",test=", o.resolved_test_rows(), ",dim=", o.dim,
                                 ",noise=", format_double(o.resolved_noise()));
  if (o.kind == SyntheticKind::kClassification) s += detail::concat(",classes=", o.classes);
  s += detail::concat(",seed=", o.seed);
  return s;
}

DataSplit make_synthetic(const SyntheticOptions& o) {
  validate(o);
  std::vector<double> solution, centers;
  if (o.kind == SyntheticKind::kRegression) {
    // Rounded to float first: synthetic_solution() hands out floats, and b must be made from
    // exactly that x*.
    solution = normals(o, kSolution, o.dim);
    for (double& v : solution) v = static_cast<float>(v);
  } else {
    centers = class_centers(o);
  }
  DataSplit split;
  split.train = make_rows(o, 0, o.rows, "train", solution, centers);
  split.test = make_rows(o, o.rows, o.resolved_test_rows(), "test", solution, centers);
  return split;
}

std::vector<float> synthetic_solution(const SyntheticOptions& o) {
  QGRAD_CHECK(o.kind == SyntheticKind::kRegression,
              "synthetic_solution: only kind=regression has a true x*");
  validate(o);
  const std::vector<double> x = normals(o, kSolution, o.dim);
  return std::vector<float>(x.begin(), x.end());
}

}  // namespace qgrad
