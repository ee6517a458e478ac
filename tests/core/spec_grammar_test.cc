// The spec tokenizer (core/spec_grammar.h): how it splits, what it keeps for the specs to judge,
// and the strict reading.
#include "core/spec_grammar.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace qgrad {
namespace {

std::vector<std::string> texts(const SpecTokens& t) {
  std::vector<std::string> out;
  for (const SpecField& f : t.fields) out.emplace_back(f.text);
  return out;
}

std::string strict_error(std::string_view text, char separator = ':') {
  try {
    (void)check_spec(text, "--thing", separator);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no error";
}

TEST(SpecGrammar, NameAlone) {
  const SpecTokens t = tokenize_spec("qsgd");
  EXPECT_EQ(t.head, "qsgd");
  EXPECT_FALSE(t.has_body);
  EXPECT_TRUE(t.fields.empty());
}

TEST(SpecGrammar, KeysInOrder) {
  const SpecTokens t = tokenize_spec("qsgd:bits=4,bucket=512,norm=max");
  EXPECT_EQ(t.head, "qsgd");
  EXPECT_TRUE(t.has_body);
  EXPECT_EQ(t.body, "bits=4,bucket=512,norm=max");
  ASSERT_EQ(t.fields.size(), 3u);
  EXPECT_EQ(t.fields[0].key, "bits");
  EXPECT_EQ(t.fields[0].value, "4");
  EXPECT_EQ(t.fields[2].key, "norm");
  EXPECT_EQ(t.fields[2].value, "max");
  for (const SpecField& f : t.fields) {
    EXPECT_TRUE(f.has_value);
    EXPECT_FALSE(f.repeated);
  }
  ASSERT_NE(t.find("bucket"), nullptr);
  EXPECT_EQ(t.find("bucket")->value, "512");
  EXPECT_EQ(t.find("levels"), nullptr);
}

TEST(SpecGrammar, ValuesKeepLaterSeparators) {
  // Only the first ':' ends the name and only the first '=' ends a key.
  const SpecTokens t = tokenize_spec("fashion-mnist:dir=/a:b=c");
  EXPECT_EQ(t.head, "fashion-mnist");
  ASSERT_EQ(t.fields.size(), 1u);
  EXPECT_EQ(t.fields[0].key, "dir");
  EXPECT_EQ(t.fields[0].value, "/a:b=c");
}

TEST(SpecGrammar, APositionalFieldIsAFieldWithoutEquals) {
  const SpecTokens t = tokenize_spec("libsvm:/data/a.txt,test=/data/b.txt");
  ASSERT_EQ(t.fields.size(), 2u);
  EXPECT_FALSE(t.fields[0].has_value);
  EXPECT_EQ(t.fields[0].key, "/data/a.txt");  // the whole text
  EXPECT_EQ(t.fields[0].value, "");
  EXPECT_EQ(t.fields[1].key, "test");
}

TEST(SpecGrammar, TheLinkSpecEndsItsHeadAtAComma) {
  const SpecTokens t = tokenize_spec("100mbit,latency=50,burst=64KiB", ',');
  EXPECT_EQ(t.head, "100mbit");
  EXPECT_EQ(texts(t), (std::vector<std::string>{"latency=50", "burst=64KiB"}));
}

TEST(SpecGrammar, EmptyFieldsAreKept) {
  EXPECT_EQ(texts(tokenize_spec("a:")), (std::vector<std::string>{""}));
  EXPECT_EQ(texts(tokenize_spec("a:x=1,")), (std::vector<std::string>{"x=1", ""}));
  EXPECT_EQ(texts(tokenize_spec("a:,x=1")), (std::vector<std::string>{"", "x=1"}));
  EXPECT_EQ(texts(tokenize_spec("a:x=1,,y=2")), (std::vector<std::string>{"x=1", "", "y=2"}));
  EXPECT_EQ(tokenize_spec(":x=1").head, "");
  EXPECT_EQ(tokenize_spec("").head, "");
}

TEST(SpecGrammar, MarksRepeatedKeys) {
  const SpecTokens t = tokenize_spec("a:x=1,y=2,x=3,x");
  ASSERT_EQ(t.fields.size(), 4u);
  EXPECT_FALSE(t.fields[0].repeated);
  EXPECT_FALSE(t.fields[1].repeated);
  EXPECT_TRUE(t.fields[2].repeated);
  EXPECT_TRUE(t.fields[3].repeated);   // an earlier keyed field had x
  EXPECT_EQ(t.find("x")->value, "1");  // the first one
  // A field without '=' does not make a later one repeated.
  EXPECT_FALSE(tokenize_spec("a:x,x=1").fields[1].repeated);
}

TEST(SpecGrammar, TheStrictReadingQuotesTheText) {
  EXPECT_EQ(check_spec("a:x=1,y=2", "--thing").fields.size(), 2u);
  EXPECT_EQ(strict_error("a:x=1,x=2"), "--thing: spec 'a:x=1,x=2' gives key 'x' twice");
  EXPECT_EQ(strict_error("a:=1"), "--thing: spec 'a:=1': '=1' has an empty key");
  EXPECT_EQ(strict_error("a:x"), "--thing: spec 'a:x': 'x' is not key=value");
  EXPECT_EQ(strict_error(":x=1"), "--thing: spec ':x=1' has no name before ':'");
  EXPECT_THAT(strict_error("a:x=1,"), ::testing::HasSubstr("spec 'a:x=1,' has an empty field"));
  EXPECT_THAT(strict_error("a:"), ::testing::HasSubstr("spec 'a:' has an empty field"));
  EXPECT_EQ(strict_error("1gbit,latency=5,latency=6", ','),
            "--thing: spec '1gbit,latency=5,latency=6' gives key 'latency' twice");
}

}  // namespace
}  // namespace qgrad
