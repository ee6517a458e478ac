#include "train/data/idx.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "tests/train/data_files.h"
#include "train/data/data_error.h"

namespace qgrad {
namespace {

using data_testing::idx_bytes;
using data_testing::TempDir;
using data_testing::write_gz;
using data_testing::write_raw;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint32_t kImages = 0x803, kLabels = 0x801;

// 3 images of 2 x 3 pixels, with 0 and 255 among them, and their labels.
std::vector<uint8_t> small_pixels() {
  return {0, 1, 2, 3, 4, 255, 10, 20, 30, 40, 50, 60, 127, 128, 200, 254, 255, 0};
}
const std::vector<uint8_t> kSmallLabels = {3, 0, 9};

// Runs fn, expects a DataError whose message matches every substring.
template <class Fn>
std::string expect_data_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const DataError& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_THAT(msg, HasSubstr(p));
    return msg;
  }
  ADD_FAILURE() << "expected a DataError";
  return {};
}

TEST(Idx, GzipRoundTripGivesScaledPixelsShapeAndLabels) {
  TempDir dir;
  write_gz(dir.file("img.gz"), idx_bytes(kImages, {3, 2, 3}, small_pixels()));
  write_gz(dir.file("lab.gz"), idx_bytes(kLabels, {3}, kSmallLabels));
  const Dataset d = load_idx_pair(dir.file("img.gz"), dir.file("lab.gz"), 10, "tiny");
  EXPECT_EQ(d.name, "tiny");
  EXPECT_EQ(d.rows, 3u);
  EXPECT_EQ(d.dim, 6u);
  EXPECT_EQ(d.num_classes, 10u);
  EXPECT_EQ(d.channels, 1u);
  EXPECT_EQ(d.height, 2u);
  EXPECT_EQ(d.width, 3u);
  ASSERT_EQ(d.features.size(), 18u);
  const auto px = small_pixels();
  for (size_t i = 0; i < px.size(); ++i) {
    EXPECT_EQ(d.features[i], static_cast<float>(px[i]) / 255.0f) << i;
  }
  EXPECT_EQ(d.features[0], 0.0f);
  EXPECT_EQ(d.features[5], 1.0f);
  EXPECT_EQ(d.row(1)[0], 10.0f / 255.0f);
  EXPECT_EQ(d.targets, (std::vector<float>{3, 0, 9}));
}

TEST(Idx, UncompressedFilesReadTheSame) {
  TempDir dir;
  write_raw(dir.file("img"), idx_bytes(kImages, {3, 2, 3}, small_pixels()));
  write_raw(dir.file("lab"), idx_bytes(kLabels, {3}, kSmallLabels));
  const IdxImages images = read_idx_images(dir.file("img"));
  EXPECT_EQ(images.count, 3u);
  EXPECT_EQ(images.rows, 2u);
  EXPECT_EQ(images.cols, 3u);
  EXPECT_EQ(images.pixels, small_pixels());
  EXPECT_EQ(read_idx_labels(dir.file("lab")), kSmallLabels);
}

TEST(Idx, EmptySetLoads) {
  TempDir dir;
  write_gz(dir.file("img.gz"), idx_bytes(kImages, {0, 28, 28}, {}));
  write_gz(dir.file("lab.gz"), idx_bytes(kLabels, {0}, {}));
  const Dataset d = load_idx_pair(dir.file("img.gz"), dir.file("lab.gz"), 10, "empty");
  EXPECT_EQ(d.rows, 0u);
  EXPECT_EQ(d.dim, 784u);
}

TEST(Idx, BadMagicNamesFileAndBothValues) {
  TempDir dir;
  const std::string img = dir.file("img.gz"), lab = dir.file("lab.gz");
  // A labels file given as images and vice versa.
  write_gz(img, idx_bytes(kLabels, {3}, kSmallLabels));
  write_gz(lab, idx_bytes(kImages, {3, 2, 3}, small_pixels()));
  expect_data_error([&] { read_idx_images(img); },
                    {img, "bad magic 0x00000801", "expected 0x00000803"});
  expect_data_error([&] { read_idx_labels(lab); },
                    {lab, "bad magic 0x00000803", "expected 0x00000801"});
  // A float IDX file (type 0x0D).
  write_gz(img, idx_bytes(0x0D03, {1, 1, 1}, {0, 0, 0, 0}));
  expect_data_error([&] { read_idx_images(img); }, {img, "bad magic 0x00000D03"});
}

TEST(Idx, TruncatedHeader) {
  TempDir dir;
  const std::string img = dir.file("img.gz");
  write_gz(img, idx_bytes(kImages, {3, 2, 3}, {}).substr(0, 10));
  expect_data_error([&] { read_idx_images(img); },
                    {img, "truncated", "10 bytes", "16-byte header"});
  const std::string lab = dir.file("lab.gz");
  write_gz(lab, "");
  expect_data_error([&] { read_idx_labels(lab); }, {lab, "truncated", "0 bytes", "8-byte header"});
}

TEST(Idx, ShortDataNamesDeclaredAndActualSizes) {
  TempDir dir;
  const std::string img = dir.file("img.gz"), lab = dir.file("lab.gz");
  auto px = small_pixels();
  px.resize(15);
  write_gz(img, idx_bytes(kImages, {3, 2, 3}, px));
  expect_data_error([&] { read_idx_images(img); },
                    {img, "truncated", "3 images of 2 x 3", "18 bytes", "ends after 15"});
  write_gz(lab, idx_bytes(kLabels, {4}, kSmallLabels));
  expect_data_error([&] { read_idx_labels(lab); }, {lab, "truncated", "4 labels", "ends after 3"});
}

TEST(Idx, HugeDeclaredCountFailsAsTruncatedWithoutAllocatingIt) {
  TempDir dir;
  const std::string img = dir.file("img.gz");
  // 4e9 images of 28 x 28 would be 3 TB; the reader must stop at the real data.
  write_gz(img, idx_bytes(kImages, {0xFFFFFFFFu, 28, 28}, std::vector<uint8_t>(784 * 2, 7)));
  expect_data_error([&] { read_idx_images(img); },
                    {img, "truncated", "4294967295 images", "ends after 1568"});
}

TEST(Idx, ExtraDataMeansWrongCounts) {
  TempDir dir;
  const std::string img = dir.file("img.gz"), lab = dir.file("lab.gz");
  write_gz(img, idx_bytes(kImages, {2, 2, 3}, small_pixels()));
  expect_data_error([&] { read_idx_images(img); }, {img, "data after", "2 images of 2 x 3"});
  write_gz(lab, idx_bytes(kLabels, {2}, kSmallLabels));
  expect_data_error([&] { read_idx_labels(lab); }, {lab, "data after", "2 labels"});
}

TEST(Idx, ZeroSizedImagesAreRejected) {
  TempDir dir;
  const std::string img = dir.file("img.gz");
  write_gz(img, idx_bytes(kImages, {3, 0, 3}, {}));
  expect_data_error([&] { read_idx_images(img); }, {img, "0 x 3", "1..65536"});
}

TEST(Idx, LabelOutOfRangeNamesIndexAndValue) {
  TempDir dir;
  write_gz(dir.file("img.gz"), idx_bytes(kImages, {3, 2, 3}, small_pixels()));
  write_gz(dir.file("lab.gz"), idx_bytes(kLabels, {3}, {3, 10, 1}));
  expect_data_error([&] { load_idx_pair(dir.file("img.gz"), dir.file("lab.gz"), 10, "x"); },
                    {dir.file("lab.gz"), "label 10 at index 1", "out of range 0..9"});
}

TEST(Idx, ImageLabelCountMismatchNamesBothFiles) {
  TempDir dir;
  write_gz(dir.file("img.gz"), idx_bytes(kImages, {3, 2, 3}, small_pixels()));
  write_gz(dir.file("lab.gz"), idx_bytes(kLabels, {2}, {1, 2}));
  expect_data_error([&] { load_idx_pair(dir.file("img.gz"), dir.file("lab.gz"), 10, "x"); },
                    {dir.file("img.gz"), "3 images", dir.file("lab.gz"), "2 labels"});
}

TEST(Idx, CutGzipStreamIsAnError) {
  TempDir dir;
  const std::string good = dir.file("good.gz"), cut = dir.file("cut.gz");
  std::vector<uint8_t> px(3 * 28 * 28);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 7 + i / 13);
  write_gz(good, idx_bytes(kImages, {3, 28, 28}, px));
  const std::string bytes = data_testing::read_raw(good);
  ASSERT_GT(bytes.size(), 40u);
  // Cut inside the deflate data, and separately cut only the 8-byte trailer (CRC + size): both
  // must fail, the second although every data byte can be inflated.
  for (size_t keep : {bytes.size() / 2, bytes.size() - 8}) {
    write_raw(cut, bytes.substr(0, keep));
    expect_data_error([&] { read_idx_images(cut); }, {cut, "gzip"});
  }
}

TEST(Idx, FlippedGzipByteIsAnError) {
  TempDir dir;
  const std::string good = dir.file("good.gz"), bad = dir.file("bad.gz");
  std::vector<uint8_t> px(5 * 28 * 28);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * i) >> 3);
  write_gz(good, idx_bytes(kImages, {5, 28, 28}, px));
  std::string bytes = data_testing::read_raw(good);
  // Flip a bit in several places of the deflate data and in the CRC: each must be caught by
  // inflate or by the gzip CRC, never give wrong pixels.
  for (size_t at : {size_t{20}, bytes.size() / 2, bytes.size() - 12, bytes.size() - 6}) {
    std::string b = bytes;
    b[at] = static_cast<char>(b[at] ^ 0x10);
    write_raw(bad, b);
    try {
      (void)read_idx_images(bad);
      ADD_FAILURE() << "flip at " << at << " was not detected";
    } catch (const DataError& e) {
      EXPECT_THAT(e.what(), HasSubstr(bad)) << "flip at " << at;
    }
  }
}

TEST(Idx, MissingAndDirectoryPathsAreClear) {
  TempDir dir;
  expect_data_error([&] { read_idx_images(dir.file("nope.gz")); },
                    {dir.file("nope.gz"), "cannot open", "No such file"});
  expect_data_error([&] { read_idx_labels(dir.path()); }, {"is a directory"});
}

TEST(FashionMnist, MissingDirectoryNamesPackageAndScript) {
  const std::string msg = expect_data_error(
      [] { load_fashion_mnist("/nonexistent/qgrad-fashion"); },
      {"/nonexistent/qgrad-fashion/train-images-idx3-ubyte.gz", "dataset-fashion-mnist",
       "scripts/install-deps.sh", "directory does not exist"});
  EXPECT_THAT(msg, HasSubstr("fashion-mnist:dir=PATH"));
}

TEST(FashionMnist, MissingFileInDirectoryNamesThatFile) {
  TempDir dir;
  // Everything but the test labels, as tiny valid files.
  write_gz(dir.file("train-images-idx3-ubyte.gz"),
           idx_bytes(kImages, {1, 28, 28}, std::vector<uint8_t>(784)));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_bytes(kLabels, {1}, {1}));
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"),
           idx_bytes(kImages, {1, 28, 28}, std::vector<uint8_t>(784)));
  const std::string msg = expect_data_error(
      [&] { load_fashion_mnist(dir.path()); },
      {dir.file("t10k-labels-idx1-ubyte.gz"), "not found", "dataset-fashion-mnist"});
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("directory does not exist")));
  // With it present (uncompressed this time) the set loads.
  write_raw(dir.file("t10k-labels-idx1-ubyte"), idx_bytes(kLabels, {1}, {4}));
  const DataSplit s = load_fashion_mnist(dir.path());
  EXPECT_EQ(s.train.rows, 1u);
  EXPECT_EQ(s.test.targets, std::vector<float>{4});
}

TEST(FashionMnist, WrongImageSizeIsRejected) {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"),
           idx_bytes(kImages, {1, 2, 3}, std::vector<uint8_t>(6)));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_bytes(kLabels, {1}, {1}));
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"),
           idx_bytes(kImages, {1, 28, 28}, std::vector<uint8_t>(784)));
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes(kLabels, {1}, {1}));
  expect_data_error([&] { load_fashion_mnist(dir.path()); },
                    {"train-images-idx3-ubyte.gz", "2 x 3", "expected 28 x 28"});
}

// The installed data set (Debian's dataset-fashion-mnist, a dependency in install-deps.sh).
TEST(FashionMnist, RealSetHasDocumentedShapesAndBalancedClasses) {
  const auto t0 = std::chrono::steady_clock::now();
  const DataSplit s = load_fashion_mnist();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info ] loaded Fashion-MNIST (70,000 images) in %.2f s\n", seconds);
  struct Expect {
    const Dataset* d;
    size_t rows, per_class;
    const char* name;
  };
  for (const Expect& e : {Expect{&s.train, 60000, 6000, "fashion-mnist/train"},
                          Expect{&s.test, 10000, 1000, "fashion-mnist/test"}}) {
    const Dataset& d = *e.d;
    EXPECT_EQ(d.name, e.name);
    EXPECT_EQ(d.rows, e.rows);
    EXPECT_EQ(d.dim, 784u);
    EXPECT_EQ(d.num_classes, 10u);
    EXPECT_EQ(d.channels, 1u);
    EXPECT_EQ(d.height, 28u);
    EXPECT_EQ(d.width, 28u);
    ASSERT_EQ(d.features.size(), e.rows * 784);
    ASSERT_EQ(d.targets.size(), e.rows);
    std::array<size_t, 10> hist{};
    for (float t : d.targets) {
      ASSERT_EQ(t, std::floor(t));
      ASSERT_GE(t, 0.0f);
      ASSERT_LE(t, 9.0f);
      hist[static_cast<size_t>(t)]++;
    }
    for (size_t c = 0; c < 10; ++c) EXPECT_EQ(hist[c], e.per_class) << e.name << " class " << c;
    float lo = 1, hi = 0;
    double sum = 0;
    for (float v : d.features) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
    }
    EXPECT_EQ(lo, 0.0f);
    EXPECT_EQ(hi, 1.0f);
    // The published mean pixel of Fashion-MNIST's training set is 0.2860 (72.94 / 255).
    if (&d == &s.train) {
      EXPECT_NEAR(sum / static_cast<double>(d.features.size()), 0.2860, 5e-4);
    }
  }
  // The first training image is an ankle boot (class 9) in every copy of the data set.
  EXPECT_EQ(s.train.targets[0], 9.0f);
}

}  // namespace
}  // namespace qgrad
