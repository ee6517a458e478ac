#include "train/data/idx.h"

#include <array>
#include <cstdio>
#include <filesystem>

#include "train/data/data_error.h"
#include "train/data/gz_reader.h"

namespace qgrad {
namespace {

using data_detail::GzReader;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
// Bounds a corrupt header cannot get past; generous for any real IDX data set.
constexpr uint64_t kMaxSide = 1u << 16;

uint32_t load_be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

// Reads the magic, then `kDims` sizes. The magic is checked first: a file of the wrong kind
// is reported as such even when it is shorter than this kind's header.
template <size_t kDims>
std::array<uint32_t, kDims> read_header(GzReader& in, uint32_t magic, const char* what) {
  std::array<unsigned char, 4 + 4 * kDims> raw{};
  auto truncated = [&](size_t got) {
    return DataError(detail::concat("IDX ", what, " file '", in.path(), "' is truncated: ", got,
                                    " bytes, shorter than its ", raw.size(), "-byte header"));
  };
  const size_t got_magic = in.read(raw.data(), 4);
  if (got_magic < 4) throw truncated(got_magic);
  const uint32_t found = load_be32(raw.data());
  if (found != magic) {
    throw DataError(detail::concat("IDX ", what, " file '", in.path(), "' has bad magic ",
                                   hex32(found), " (expected ", hex32(magic), ": unsigned bytes, ",
                                   kDims, " dimension", kDims > 1 ? "s" : "", ")"));
  }
  const size_t got_dims = in.read(raw.data() + 4, 4 * kDims);
  if (got_dims < 4 * kDims) throw truncated(4 + got_dims);
  std::array<uint32_t, kDims> dims{};
  for (size_t d = 0; d < kDims; ++d) dims[d] = load_be32(raw.data() + 4 + 4 * d);
  return dims;
}

// Reads `bytes` of payload and checks that nothing follows it.
void read_payload(GzReader& in, std::vector<unsigned char>& out, uint64_t bytes, const char* what,
                  const std::string& layout) {
  const size_t got = in.append(out, static_cast<size_t>(bytes));
  if (got < bytes) {
    throw DataError(detail::concat("IDX ", what, " file '", in.path(),
                                   "' is truncated: the header declares ", layout, " (", bytes,
                                   " bytes of data) but the file ends after ", got));
  }
  if (!in.at_end()) {
    throw DataError(detail::concat("IDX ", what, " file '", in.path(), "' has data after the ",
                                   layout, " its header declares (wrong counts in the header?)"));
  }
}

std::string fashion_file(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path gz = fs::path(dir) / (name + ".gz");
  const fs::path raw = fs::path(dir) / name;
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz.string();
  if (fs::exists(raw, ec)) return raw.string();
  throw DataError(detail::concat(
      "Fashion-MNIST file '", gz.string(), "' not found",
      fs::is_directory(dir, ec) ? "" : " (the directory does not exist)",
      ": install the Debian package ", kFashionMnistPackage,
      " (scripts/install-deps.sh installs it) or point fashion-mnist:dir=PATH at a directory "
      "with the four IDX files"));
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  GzReader in(path);
  const auto dims = read_header<3>(in, kImagesMagic, "images");
  IdxImages out;
  out.count = dims[0];
  out.rows = dims[1];
  out.cols = dims[2];
  if (out.rows == 0 || out.cols == 0 || out.rows > kMaxSide || out.cols > kMaxSide) {
    throw DataError(detail::concat("IDX images file '", path, "' declares ", out.rows, " x ",
                                   out.cols, " images; each side must be in 1..", kMaxSide));
  }
  const uint64_t bytes = uint64_t{out.count} * out.rows * out.cols;
  read_payload(in, out.pixels, bytes, "images",
               detail::concat(out.count, " images of ", out.rows, " x ", out.cols));
  return out;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  GzReader in(path);
  const auto dims = read_header<1>(in, kLabelsMagic, "labels");
  std::vector<uint8_t> labels;
  read_payload(in, labels, dims[0], "labels", detail::concat(dims[0], " labels"));
  return labels;
}

Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path,
                      size_t num_classes, std::string name) {
  IdxImages images = read_idx_images(images_path);
  const std::vector<uint8_t> labels = read_idx_labels(labels_path);
  if (labels.size() != images.count) {
    throw DataError(detail::concat("IDX files disagree: '", images_path, "' has ", images.count,
                                   " images but '", labels_path, "' has ", labels.size(),
                                   " labels"));
  }
  Dataset d;
  d.name = std::move(name);
  d.rows = images.count;
  d.dim = images.rows * images.cols;
  d.num_classes = num_classes;
  d.channels = 1;
  d.height = images.rows;
  d.width = images.cols;
  d.targets.resize(d.rows);
  for (size_t i = 0; i < d.rows; ++i) {
    if (labels[i] >= num_classes) {
      throw DataError(detail::concat("IDX labels file '", labels_path, "': label ", int{labels[i]},
                                     " at index ", i, " is out of range 0..", num_classes - 1));
    }
    d.targets[i] = static_cast<float>(labels[i]);
  }
  // p / 255 exactly (a table, so no per-pixel division): 0 -> 0.0f, 255 -> 1.0f.
  std::array<float, 256> scale{};
  for (int p = 0; p < 256; ++p) scale[p] = static_cast<float>(p) / 255.0f;
  d.features.resize(images.pixels.size());
  const uint8_t* src = images.pixels.data();
  float* dst = d.features.data();
  for (size_t i = 0, n = images.pixels.size(); i < n; ++i) dst[i] = scale[src[i]];
  return d;
}

DataSplit load_fashion_mnist(const std::string& dir) {
  const std::string train_images = fashion_file(dir, "train-images-idx3-ubyte");
  const std::string train_labels = fashion_file(dir, "train-labels-idx1-ubyte");
  const std::string test_images = fashion_file(dir, "t10k-images-idx3-ubyte");
  const std::string test_labels = fashion_file(dir, "t10k-labels-idx1-ubyte");
  DataSplit split;
  split.train = load_idx_pair(train_images, train_labels, 10, "fashion-mnist/train");
  split.test = load_idx_pair(test_images, test_labels, 10, "fashion-mnist/test");
  for (const Dataset* d : {&split.train, &split.test}) {
    const bool train = d == &split.train;
    if (d->height != 28 || d->width != 28) {
      throw DataError(detail::concat("Fashion-MNIST file '", train ? train_images : test_images,
                                     "' holds ", d->height, " x ", d->width,
                                     " images; expected 28 x 28"));
    }
  }
  return split;
}

}  // namespace qgrad
