#include "train/data/data_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "train/data/data_error.h"

namespace qgrad {
namespace {

using ::testing::HasSubstr;

constexpr const char* kHeartScale = "/usr/share/doc/liblinear-tools/examples/heart_scale";

void expect_invalid(const std::string& spec, const std::vector<std::string>& parts) {
  try {
    (void)parse_data_spec(spec);
    ADD_FAILURE() << "accepted: " << spec;
  } catch (const InvalidArgument& e) {
    for (const std::string& p : parts) EXPECT_THAT(e.what(), HasSubstr(p)) << spec;
  }
}

TEST(DataSpec, ParsesEverySource) {
  const DataSpec f = parse_data_spec("fashion-mnist");
  EXPECT_EQ(f.source, DataSource::kFashionMnist);
  EXPECT_EQ(f.dir, "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(parse_data_spec("fashion-mnist:dir=/tmp/fm").dir, "/tmp/fm");

  const DataSpec l = parse_data_spec("libsvm:/a/b.txt,test=/a/c.txt,labels=regression,dim=20");
  EXPECT_EQ(l.source, DataSource::kLibsvm);
  EXPECT_EQ(l.path, "/a/b.txt");
  EXPECT_EQ(l.test_path, "/a/c.txt");
  EXPECT_EQ(l.libsvm.labels, LabelMode::kRegression);
  EXPECT_EQ(l.libsvm.dim, 20u);
  const DataSpec l2 = parse_data_spec("libsvm:path=x.txt");
  EXPECT_EQ(l2.path, "x.txt");
  EXPECT_EQ(l2.test_path, "");
  EXPECT_EQ(l2.libsvm.labels, LabelMode::kAuto);

  const DataSpec s = parse_data_spec(
      "synthetic:kind=classification,rows=500,dim=7,noise=2.5,classes=4,seed=17,test=33");
  EXPECT_EQ(s.source, DataSource::kSynthetic);
  EXPECT_EQ(s.synthetic.kind, SyntheticKind::kClassification);
  EXPECT_EQ(s.synthetic.rows, 500u);
  EXPECT_EQ(s.synthetic.dim, 7u);
  EXPECT_EQ(s.synthetic.resolved_noise(), 2.5);
  EXPECT_EQ(s.synthetic.classes, 4u);
  EXPECT_EQ(s.synthetic.seed, 17u);
  EXPECT_EQ(s.synthetic.resolved_test_rows(), 33u);
  const DataSpec r = parse_data_spec("synthetic:kind=regression");
  EXPECT_EQ(r.synthetic.rows, 1000u);
  EXPECT_EQ(r.synthetic.resolved_noise(), 0.1);
  EXPECT_EQ(parse_data_spec("synthetic:kind=classification").synthetic.resolved_noise(), 1.0);
}

TEST(DataSpec, CanonicalFormRoundTrips) {
  for (const char* text :
       {"fashion-mnist", "fashion-mnist:dir=/x/y", "libsvm:a.txt", "libsvm:a.txt,test=b.txt,dim=4",
        "libsvm:a.txt,labels=multiclass", "synthetic:kind=regression,noise=0.123456789",
        "synthetic:kind=classification,classes=3,seed=18446744073709551615,rows=9,test=0"}) {
    const std::string canonical = to_string(parse_data_spec(text));
    EXPECT_EQ(to_string(parse_data_spec(canonical)), canonical) << text;
  }
  EXPECT_EQ(to_string(parse_data_spec("synthetic:kind=classification,rows=10,seed=3")),
            "synthetic:kind=classification,rows=10,test=2,dim=10,noise=1,classes=2,seed=3");
  EXPECT_EQ(to_string(parse_data_spec("libsvm:a.txt")), "libsvm:a.txt,labels=auto");
}

TEST(DataSpec, ErrorsListWhatIsValid) {
  expect_invalid("mnist", {"unknown data source 'mnist'", "fashion-mnist, libsvm, synthetic"});
  expect_invalid("", {"unknown data source ''"});
  expect_invalid("fashion-mnist:path=/x", {"unknown key 'path'", "valid keys: dir"});
  expect_invalid("fashion-mnist:/x", {"expected key=value", "dir"});
  expect_invalid("libsvm", {"needs a file", "libsvm:PATH"});
  expect_invalid("libsvm:", {"needs a file"});
  expect_invalid("libsvm:a.txt,tset=b", {"unknown key 'tset'", "path, test, labels, dim"});
  expect_invalid("libsvm:a.txt,labels=ordinal",
                 {"ordinal", "auto, binary, multiclass, regression"});
  expect_invalid("libsvm:a.txt,dim=0", {"dim='0'", "integer >= 1"});
  expect_invalid("libsvm:a.txt,test=b,test=c", {"'test' given twice"});
  expect_invalid("libsvm:a.txt,path=b.txt", {"given twice"});
  expect_invalid("libsvm:test=b.txt", {"no train file"});
  expect_invalid("synthetic", {"needs kind=regression|classification", "rows", "seed"});
  expect_invalid("synthetic:rows=10", {"needs kind=regression|classification"});
  expect_invalid("synthetic:kind=ranking", {"'ranking'", "regression, classification"});
  expect_invalid("synthetic:kind=regression,size=3",
                 {"unknown key 'size'", "kind, noise, rows, test, dim, classes, seed"});
  expect_invalid("synthetic:kind=regression,rows=abc", {"rows='abc'", "integer >= 1"});
  expect_invalid("synthetic:kind=regression,rows=0", {"rows='0'"});
  expect_invalid("synthetic:kind=regression,rows=-5", {"rows='-5'"});
  expect_invalid("synthetic:kind=regression,noise=-1", {"noise='-1'", ">= 0"});
  expect_invalid("synthetic:kind=regression,noise=nan", {"noise='nan'"});
  expect_invalid("synthetic:kind=regression,classes=3", {"only to kind=classification"});
  expect_invalid("synthetic:kind=classification,classes=1", {"classes='1'", "integer >= 2"});
  expect_invalid("synthetic:kind=regression,rows", {"expected key=value, got 'rows'"});
  expect_invalid("synthetic:kind=regression,rows=", {"'rows' has an empty value"});
  expect_invalid("synthetic:kind=regression,,rows=3", {"expected key=value, got ''"});
}

TEST(DataSpec, LoadsLibsvmWithAndWithoutTest) {
  const DataSplit a = load_data(std::string("libsvm:") + kHeartScale);
  EXPECT_EQ(a.train.rows, 270u);
  EXPECT_EQ(a.test.rows, 0u);
  const DataSplit b = load_data(std::string("libsvm:") + kHeartScale + ",test=" + kHeartScale);
  EXPECT_EQ(b.test.rows, 270u);
  EXPECT_EQ(b.test.targets, b.train.targets);
}

TEST(DataSpec, LoadsSyntheticAsMakeSyntheticDoes) {
  const DataSplit s = load_data("synthetic:kind=regression,rows=40,dim=3,seed=2");
  SyntheticOptions o;
  o.rows = 40;
  o.dim = 3;
  o.seed = 2;
  const DataSplit t = make_synthetic(o);
  EXPECT_EQ(s.train.features, t.train.features);
  EXPECT_EQ(s.train.targets, t.train.targets);
  EXPECT_EQ(s.test.rows, 8u);
}

TEST(DataSpec, MissingFashionMnistNamesThePackage) {
  try {
    (void)load_data("fashion-mnist:dir=/nonexistent/fm");
    ADD_FAILURE();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/fm/train-images-idx3-ubyte.gz"));
    EXPECT_THAT(e.what(), HasSubstr("dataset-fashion-mnist"));
  }
}

TEST(DataSpec, DescribeMentionsEverySource) {
  const std::string d = describe_data_specs();
  for (const char* s : {"fashion-mnist", "libsvm:PATH", "synthetic:kind=regression|classification",
                        "dataset-fashion-mnist"}) {
    EXPECT_THAT(d, HasSubstr(s));
  }
}

}  // namespace
}  // namespace qgrad
