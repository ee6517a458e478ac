#include "train/data/libsvm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/train/data_files.h"
#include "train/data/data_error.h"
#include "train/data/targets.h"

namespace qgrad {
namespace {

using data_testing::TempDir;
using ::testing::HasSubstr;

constexpr const char* kHeartScale = "/usr/share/doc/liblinear-tools/examples/heart_scale";

size_t count(const std::vector<float>& v, float x) {
  return static_cast<size_t>(std::count(v.begin(), v.end(), x));
}

// Expects a DataError whose message contains every part.
void expect_error(const std::string& text, const std::vector<std::string>& parts,
                  LibsvmOptions options = {}) {
  try {
    (void)parse_libsvm_text(text, "mem.txt", options);
    ADD_FAILURE() << "no error for:\n" << text;
  } catch (const DataError& e) {
    for (const std::string& p : parts) EXPECT_THAT(e.what(), HasSubstr(p)) << text;
  }
}

TEST(Libsvm, HeartScaleFacts) {
  const DataSplit s = load_libsvm(kHeartScale);
  const Dataset& d = s.train;
  EXPECT_EQ(d.name, "libsvm:heart_scale");
  EXPECT_EQ(d.rows, 270u);
  EXPECT_EQ(d.dim, 13u);
  EXPECT_EQ(d.num_classes, 2u);
  EXPECT_EQ(count(d.targets, 1.0f), 120u);
  EXPECT_EQ(count(d.targets, -1.0f), 150u);
  EXPECT_EQ(d.channels + d.height + d.width, 0u);
  // First line: "+1 1:0.708333 2:1 3:1 4:-0.320755 ... 10:-0.225806 12:1 13:-1" (11 missing).
  EXPECT_EQ(d.targets[0], 1.0f);
  const auto r0 = d.row(0);
  EXPECT_EQ(r0[0], 0.708333f);
  EXPECT_EQ(r0[3], -0.320755f);
  EXPECT_EQ(r0[9], -0.225806f);
  EXPECT_EQ(r0[10], 0.0f);
  EXPECT_EQ(r0[12], -1.0f);
  EXPECT_EQ(d.targets[1], -1.0f);
  // No test file: an empty test split that still knows the shape.
  EXPECT_EQ(s.test.rows, 0u);
  EXPECT_TRUE(s.test.features.empty());
  EXPECT_EQ(s.test.dim, 13u);
}

TEST(Libsvm, TestFileSharesDimAndLabelMapping) {
  TempDir dir;
  const std::string train = dir.file("train.txt"), test = dir.file("test.txt");
  data_testing::write_raw(train, "1 1:1 2:2\n0 2:3\n");
  data_testing::write_raw(test, "0 5:7\n");  // a larger index and only one class
  const DataSplit s = load_libsvm(train, test);
  EXPECT_EQ(s.train.dim, 5u);
  EXPECT_EQ(s.test.dim, 5u);
  EXPECT_EQ(s.train.targets, (std::vector<float>{1, -1}));
  EXPECT_EQ(s.test.targets, std::vector<float>{-1});  // 0 -> -1 from the train file's {0, 1}
  EXPECT_EQ(s.test.features, (std::vector<float>{0, 0, 0, 0, 7}));
  EXPECT_EQ(s.test.name, "libsvm:test.txt");
  // A test label the train file lacks names the test file and line.
  data_testing::write_raw(test, "# header\n1 1:1\n3 1:1\n");
  try {
    (void)load_libsvm(train, test);
    ADD_FAILURE() << "unknown test label accepted";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(test + ":3:"));
    EXPECT_THAT(e.what(), HasSubstr("label 3"));
  }
}

TEST(Libsvm, GzipFileReads) {
  TempDir dir;
  data_testing::write_gz(dir.file("a.gz"), "-1 2:0.5\n+1 1:0.25\n");
  const Dataset d = load_libsvm(dir.file("a.gz")).train;
  EXPECT_EQ(d.rows, 2u);
  EXPECT_EQ(d.features, (std::vector<float>{0, 0.5f, 0.25f, 0}));
}

TEST(Libsvm, CommentsBlankLinesCrlfPlusSignsAndEmptyRows) {
  const std::string text =
      "# a comment line\n"
      "\n"
      "   \t \n"
      "+1 1:+0.5 3:-2e-1   # trailing comment\r\n"
      "-1\r\n"  // no features: an all-zero row
      "+1\t2:1.5e1\t\n"
      "-1 3:4";  // no final newline
  const Dataset d = parse_libsvm_text(text, "mem.txt");
  ASSERT_EQ(d.rows, 4u);
  EXPECT_EQ(d.dim, 3u);
  EXPECT_EQ(d.features, (std::vector<float>{0.5f, 0, -0.2f, 0, 0, 0, 0, 15.0f, 0, 0, 0, 4.0f}));
  EXPECT_EQ(d.targets, (std::vector<float>{1, -1, 1, -1}));
}

TEST(Libsvm, GivenDimPadsAndCapsIndices) {
  LibsvmOptions o;
  o.dim = 6;
  const Dataset d = parse_libsvm_text("1 2:1\n-1 1:1\n", "mem.txt", o);
  EXPECT_EQ(d.dim, 6u);
  EXPECT_EQ(d.features.size(), 12u);
  expect_error("1 2:1\n-1 7:1\n", {"mem.txt:2:", "index 7 exceeds dim=6"}, o);
}

TEST(Libsvm, BinaryMappings) {
  // {0, 1} -> {-1, +1}
  EXPECT_EQ(parse_libsvm_text("0 1:1\n1 1:2\n", "m").targets, (std::vector<float>{-1, 1}));
  // any two values: lower -> -1, higher -> +1 (e.g. breast-cancer's 2 / 4)
  const Dataset two = parse_libsvm_text("4 1:1\n2 1:2\n4 1:3\n", "m");
  EXPECT_EQ(two.num_classes, 2u);
  EXPECT_EQ(two.targets, (std::vector<float>{1, -1, 1}));
  // a single class in {-1, +1} stays as it is
  EXPECT_EQ(parse_libsvm_text("+1 1:1\n", "m").targets, std::vector<float>{1});
  // forced binary on three values is an error naming them
  LibsvmOptions o;
  o.labels = LabelMode::kBinary;
  expect_error("1 1:1\n2 1:1\n3 1:1\n", {"mem.txt", "binary", "found 3: 1, 2, 3"}, o);
}

TEST(Libsvm, MultiClassMapsSortedLabelsToIds) {
  const Dataset d = parse_libsvm_text("7 1:1\n2 1:1\n4 1:1\n7 1:1\n", "m");
  EXPECT_EQ(d.num_classes, 3u);
  EXPECT_EQ(d.targets, (std::vector<float>{2, 0, 1, 2}));
  for (size_t r = 0; r < d.rows; ++r)
    EXPECT_EQ(class_index(d, r), static_cast<size_t>(d.targets[r]));
  // Two classes asked as multiclass: still -1 / +1 (num_classes == 2 always means -1 / +1).
  LibsvmOptions o;
  o.labels = LabelMode::kMultiClass;
  const Dataset two = parse_libsvm_text("3 1:1\n5 1:1\n", "m", o);
  EXPECT_EQ(two.num_classes, 2u);
  EXPECT_EQ(two.targets, (std::vector<float>{-1, 1}));
  EXPECT_EQ(class_index(two, 0), 0u);
  EXPECT_EQ(class_index(two, 1), 1u);
  expect_error("3 1:1\n3 1:2\n", {"mem.txt", "at least two"}, o);
}

TEST(Libsvm, RegressionTargetsAreKept) {
  const Dataset d = parse_libsvm_text("0.5 1:1\n-2.25 1:1\n3 1:1\n", "m");
  EXPECT_EQ(d.num_classes, 0u);
  EXPECT_EQ(d.targets, (std::vector<float>{0.5f, -2.25f, 3.0f}));
  LibsvmOptions o;
  o.labels = LabelMode::kRegression;
  const Dataset ints = parse_libsvm_text("1 1:1\n0 1:1\n7 1:1\n", "m", o);
  EXPECT_EQ(ints.num_classes, 0u);
  EXPECT_EQ(ints.targets, (std::vector<float>{1, 0, 7}));
}

TEST(Libsvm, MalformedLinesNameFileAndLine) {
  const std::string ok = "# comment\n1 1:1\n\n";  // the bad line is line 4
  expect_error(ok + "1 3:0.5 2:0.1\n", {"mem.txt:4:", "index 2 follows index 3", "increasing"});
  expect_error(ok + "1 2:1 2:3\n", {"mem.txt:4:", "index 2 follows index 2"});
  expect_error(ok + "1 0:1\n", {"mem.txt:4:", "feature index '0'", "1-based"});
  expect_error(ok + "1 -3:1\n", {"mem.txt:4:", "feature index '-3'"});
  expect_error(ok + "1 x:1\n", {"mem.txt:4:", "feature index 'x'"});
  expect_error(ok + "1 99999999999999999999:1\n", {"mem.txt:4:", "feature index"});
  expect_error(ok + "abc 1:2\n", {"mem.txt:4:", "label 'abc'"});
  expect_error(ok + "nan 1:2\n", {"mem.txt:4:", "label 'nan'", "finite"});
  expect_error(ok + "1 1:abc\n", {"mem.txt:4:", "value 'abc' of feature 1"});
  expect_error(ok + "1 1:\n", {"mem.txt:4:", "value '' of feature 1"});
  expect_error(ok + "1 1:inf\n", {"mem.txt:4:", "value 'inf'"});
  expect_error(ok + "1 1:1e40\n", {"mem.txt:4:", "value '1e40'", "float range"});
  expect_error(ok + "1 1:0.5x\n", {"mem.txt:4:", "value '0.5x'"});
  expect_error(ok + "1 5\n", {"mem.txt:4:", "token '5' is not index:value"});
  expect_error(ok + "1:0.5 2:1\n", {"mem.txt:4:", "label is missing"});
  expect_error(ok + "1 qid:3 1:0.5\n", {"mem.txt:4:", "qid"});
  expect_error(ok + "++1 1:1\n", {"mem.txt:4:", "label '++1'"});
}

TEST(Libsvm, EmptyOrMissingFilesAreErrors) {
  expect_error("# only a comment\n\n", {"mem.txt", "no examples"});
  TempDir dir;
  try {
    (void)load_libsvm(dir.file("missing.txt"));
    ADD_FAILURE();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(dir.file("missing.txt")));
    EXPECT_THAT(e.what(), HasSubstr("cannot open"));
  }
}

TEST(Libsvm, LabelModeNames) {
  for (LabelMode m :
       {LabelMode::kAuto, LabelMode::kBinary, LabelMode::kMultiClass, LabelMode::kRegression}) {
    EXPECT_EQ(parse_label_mode(label_mode_name(m)), m);
  }
  try {
    (void)parse_label_mode("ordinal");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("auto, binary, multiclass, regression"));
  }
}

}  // namespace
}  // namespace qgrad
