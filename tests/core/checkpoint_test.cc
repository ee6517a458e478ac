#include "core/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace qgrad {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qgrad_ckpt_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static Checkpoint sample() {
    Checkpoint c;
    c.set_buffer("model/fc1.weight", std::vector<float>{1.5f, -2.0f, 3.25f});
    c.set_buffer("ef/bucket0", std::vector<float>{});
    c.set_integer("step", 1234);
    c.set_integer("negative", -7);
    c.set_text("model", "mlp");
    c.set_real("adam/step", 0.1);  // not exact in decimal: bits must survive
    return c;
  }

  static std::vector<char> read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void write(const std::string& p, const std::vector<char>& bytes) {
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripsEveryKindOfEntry) {
  sample().save(path("a.ckpt"));
  const Checkpoint c = Checkpoint::load(path("a.ckpt"));
  EXPECT_EQ(c.buffer("model/fc1.weight"), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  EXPECT_TRUE(c.buffer("ef/bucket0").empty());
  EXPECT_EQ(c.integer("step"), 1234);
  EXPECT_EQ(c.integer("negative"), -7);
  EXPECT_EQ(c.text("model"), "mlp");
  EXPECT_EQ(std::bit_cast<uint64_t>(c.real("adam/step")), std::bit_cast<uint64_t>(0.1));
  EXPECT_EQ(c.names().size(), 6u);
}

TEST_F(CheckpointTest, SaveLeavesNoTemporaryFileAndReplacesTheOldOne) {
  sample().save(path("a.ckpt"));
  Checkpoint newer;
  newer.set_integer("step", 99);
  newer.save(path("a.ckpt"));
  EXPECT_EQ(Checkpoint::load(path("a.ckpt")).integer("step"), 99);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "a.ckpt");
  }
  EXPECT_EQ(files, 1u);
}

TEST_F(CheckpointTest, EveryTruncationAndBitFlipIsDetected) {
  sample().save(path("a.ckpt"));
  const auto bytes = read(path("a.ckpt"));
  for (size_t len = 0; len < bytes.size(); ++len) {
    write(path("t.ckpt"), std::vector<char>(bytes.begin(), bytes.begin() + len));
    EXPECT_THROW(Checkpoint::load(path("t.ckpt")), CorruptPayload) << "length " << len;
  }
  for (size_t bit = 0; bit < 8 * bytes.size(); ++bit) {
    auto flipped = bytes;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
    write(path("f.ckpt"), flipped);
    EXPECT_THROW(Checkpoint::load(path("f.ckpt")), CorruptPayload) << "bit " << bit;
  }
}

TEST_F(CheckpointTest, ClearErrorsForMissingFilesEntriesAndShapes) {
  try {
    Checkpoint::load(path("missing.ckpt"));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("missing.ckpt"), std::string::npos);
  }
  sample().save(path("a.ckpt"));
  const Checkpoint c = Checkpoint::load(path("a.ckpt"));
  std::vector<float> wrong(4);
  try {
    c.copy_buffer("model/fc1.weight", wrong);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(c.integer("model"), InvalidArgument);
  EXPECT_THROW(c.text("nope"), InvalidArgument);
  write(path("junk.ckpt"), std::vector<char>(64, 'x'));
  EXPECT_THROW(Checkpoint::load(path("junk.ckpt")), CorruptPayload);
}

TEST_F(CheckpointTest, UnwritableDirectoryIsAClearError) {
  EXPECT_THROW(sample().save(path("no/such/dir/a.ckpt")), Error);
}

}  // namespace
}  // namespace qgrad
