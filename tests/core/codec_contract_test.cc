// The contract every codec keeps (core/codec.h, docs/architecture.md), checked for every codec and
// variant: round trips decode to finite values and accumulate; bytes depend only on (input, key),
// never on the thread count; truncated, bit-flipped or mismatched payloads throw CorruptPayload and
// never crash; NaN/Inf input throws InvalidArgument naming the index; payloads name their codec;
// specs parse, reject bad text with helpful messages and print canonically.
//
// To cover a new codec or variant, add a line to kCases.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/wire.h"
#include "tests/support/codec_testing.h"

namespace qgrad {
namespace {

struct ContractCase {
  const char* spec;
  bool stochastic;  // the bytes depend on the RngKey (and must not otherwise)
};

const ContractCase kCases[] = {
    {"none", false},
    {"fp16", false},
    {"fp16:bucket=7", false},
    {"bf16", false},
    {"qsgd", true},
    {"qsgd:bits=2,bucket=128", true},
    {"qsgd:bits=8", true},
    {"qsgd:norm=l2,coding=elias,bits=2", true},
    {"sign", false},
    {"sign:scale=l1", false},
    {"zipml", true},
    {"zipml:bits=2,levels=optimal", true},
    {"int8", true},
    {"int8:map=tree", true},
    {"int8:rounding=nearest", false},
    {"terngrad", true},
    {"terngrad:clip=2.5", true},
    {"topk:ratio=0.1", false},
};

using namespace qgrad::testing;

void PrintTo(const ContractCase& c, std::ostream* os) { *os << c.spec; }

std::string case_name(const ::testing::TestParamInfo<ContractCase>& info) {
  return param_name(info.param.spec);
}

// A gradient-like vector: normal values, a few exact zeros and a few large entries.
std::vector<float> gradient(size_t n, uint32_t seed) {
  std::vector<float> v = normal_vector(n, seed);
  for (size_t i = 0; i < n; ++i) {
    v[i] *= 1e-2f;
    if (i % 17 == 5) v[i] = 0.0f;
    if (i % 101 == 50) v[i] *= 100.0f;
  }
  return v;
}

const RngKey kKey{.seed = 12345, .step = 7, .rank = 2, .tensor = 3, .bucket = 1};

// Small enough that trying every truncation stays cheap (a few hundred bytes of payload).
constexpr size_t kSmallN = 100;

class CodecContract : public ::testing::TestWithParam<ContractCase> {
 protected:
  // Built in SetUp, except for the spec-text test, which must not depend on the codec working.
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    if (test.rfind("CanonicalSpecRoundTrips", 0) != 0) codec_ = make_codec(GetParam().spec);
  }
  void TearDown() override { set_num_threads(1); }

  std::unique_ptr<Codec> codec_;
};

TEST_P(CodecContract, RoundTripIsFiniteAndDecodeAddAccumulates) {
  for (size_t n : {0, 1, 7, 513, 4099}) {
    SCOPED_TRACE(n);
    const auto v = gradient(n, static_cast<uint32_t>(n));
    const auto payload = codec_->encode(v, kKey);
    ASSERT_LE(payload.size(), codec_->max_encoded_bytes(n));
    ASSERT_GE(payload.size(), kHeaderBytes);

    const auto once = decode(*codec_, payload, n);
    for (size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(once[i])) << i;

    std::vector<float> halves(n, 0.0f);
    codec_->decode_add(payload, halves, 0.5f);
    codec_->decode_add(payload, halves, 0.5f);
    const auto shifted = decode(*codec_, payload, n, -2.0f, 3.0f);
    for (size_t i = 0; i < n; ++i) {
      const float tol = 1e-6f * std::fabs(once[i]) + 1e-30f;
      ASSERT_NEAR(halves[i], once[i], tol) << i;
      ASSERT_NEAR(shifted[i], 3.0f - 2.0f * once[i], 2 * tol + 1e-6f) << i;
    }

    // The caller's buffer: exactly max_encoded_bytes is enough, one byte less is refused.
    std::vector<std::byte> buffer(codec_->max_encoded_bytes(n));
    EXPECT_EQ(codec_->encode(v, kKey, buffer), payload.size());
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), buffer.begin()));
    std::vector<std::byte> small(buffer.size() - 1);
    EXPECT_THROW(codec_->encode(v, kKey, small), InvalidArgument);
  }
}

TEST_P(CodecContract, SameBytesForSameKeyAndAnyThreadCount) {
  // Large enough to span several parallel chunks of any codec.
  const auto v = gradient(200003, 1);
  set_num_threads(1);
  const auto reference = codec_->encode(v, kKey);
  EXPECT_EQ(codec_->encode(v, kKey), reference) << "same key, different bytes";
  const auto decoded = decode(*codec_, reference, v.size(), 0.5f, 1.0f);
  for_each_thread_count([&](int threads) {
    EXPECT_EQ(codec_->encode(v, kKey), reference) << threads << " threads";
    EXPECT_EQ(decode(*codec_, reference, v.size(), 0.5f, 1.0f), decoded) << threads << " threads";
  });
}

TEST_P(CodecContract, KeyChangesBytesOnlyForStochasticCodecs) {
  const auto v = gradient(4099, 2);
  const auto reference = codec_->encode(v, kKey);
  for (RngKey other : {RngKey{.seed = 12346, .step = 7, .rank = 2, .tensor = 3, .bucket = 1},
                       RngKey{.seed = 12345, .step = 8, .rank = 2, .tensor = 3, .bucket = 1}}) {
    if (GetParam().stochastic) {
      EXPECT_NE(codec_->encode(v, other), reference) << "another key gave the same bytes";
    } else {
      EXPECT_EQ(codec_->encode(v, other), reference) << "a deterministic codec used the key";
    }
  }
}

TEST_P(CodecContract, EveryTruncationThrowsCorruptPayload) {
  const auto v = gradient(kSmallN, 3);
  const auto payload = codec_->encode(v, kKey);
  ASSERT_LE(payload.size(), 1024u) << "keep this test cheap";
  std::vector<float> out(kSmallN, 0.0f);
  for (size_t len = 0; len < payload.size(); ++len) {
    const std::span<const std::byte> cut(payload.data(), len);
    EXPECT_THROW(codec_->decode_add(cut, out, 1.0f), CorruptPayload) << len;
    EXPECT_THROW(codec_for_payload(cut), CorruptPayload) << len;
  }
  auto longer = payload;
  longer.push_back(std::byte{0});
  EXPECT_THROW(codec_->decode_add(longer, out, 1.0f), CorruptPayload);
}

TEST_P(CodecContract, FlippedBitsThrowCorruptPayload) {
  const auto v = gradient(kSmallN, 4);
  const auto payload = codec_->encode(v, kKey);
  std::vector<float> out(kSmallN, 0.0f);
  std::vector<size_t> bits;
  for (size_t bit = 0; bit < 8 * kHeaderBytes; ++bit) bits.push_back(bit);
  const size_t body_bits = 8 * (payload.size() - kHeaderBytes);
  for (size_t k = 0; k < 64 && body_bits > 0; ++k)
    bits.push_back(8 * kHeaderBytes + (k * 7919) % body_bits);
  for (size_t bit : bits) {
    auto bad = payload;
    bad[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_THROW(codec_->decode_add(bad, out, 1.0f), CorruptPayload) << "bit " << bit;
  }
}

// Another valid spec of the same codec with one parameter changed, or "" if it has none.
std::string spec_with_other_params(const CodecSpec& spec) {
  const CodecInfo& info = codec_info(spec.name());
  for (const ParamSpec& p : info.params) {
    std::vector<std::string> candidates;
    const std::string& value = spec.get(p.key);
    if (p.type == ParamType::kChoice) {
      std::string_view rest = p.choices;
      while (!rest.empty()) {
        const size_t bar = rest.find('|');
        candidates.emplace_back(rest.substr(0, bar));
        rest = bar == std::string_view::npos ? "" : rest.substr(bar + 1);
      }
    } else if (p.type == ParamType::kInt) {
      const int64_t v = spec.get_int(p.key);
      for (int64_t c : {v + 1, v - 1, v * 2})
        if (c >= p.min && c <= p.max) candidates.push_back(std::to_string(c));
    } else {
      const float v = spec.get_float(p.key);
      for (float c : {v * 0.5f, v + 0.25f, v * 2.0f})
        if (c >= p.min && c <= p.max) candidates.push_back(std::to_string(c));
    }
    for (const std::string& c : candidates) {
      if (c == value) continue;
      std::string text = spec.name();
      for (size_t i = 0; i < spec.params().size(); ++i) {
        const auto& [k, val] = spec.params()[i];
        text += (i == 0 ? ":" : ",") + k + "=" + (k == p.key ? c : val);
      }
      try {
        const auto other = make_codec(text);
        if (other->spec() != spec) return text;
      } catch (const InvalidArgument&) {
        // A cross-field check refused this combination; try the next one.
      }
    }
  }
  return "";
}

TEST_P(CodecContract, MismatchedDecoderOrShapeThrowsCorruptPayload) {
  const auto v = gradient(kSmallN, 5);
  const auto payload = codec_->encode(v, kKey);
  std::vector<float> out(kSmallN, 0.0f);

  const auto other_codec = make_codec(codec_->spec().name() == "none" ? "fp16" : "none");
  EXPECT_THROW(other_codec->decode_add(payload, out, 1.0f), CorruptPayload);

  const std::string other_params = spec_with_other_params(codec_->spec());
  if (!other_params.empty()) {
    SCOPED_TRACE(other_params);
    EXPECT_THROW(make_codec(other_params)->decode_add(payload, out, 1.0f), CorruptPayload);
  }

  for (size_t n : {kSmallN - 1, kSmallN + 1, size_t{0}}) {
    std::vector<float> wrong(n, 0.0f);
    EXPECT_THROW(codec_->decode_add(payload, wrong, 1.0f), CorruptPayload) << n;
  }
}

TEST_P(CodecContract, NonFiniteInputThrowsNamingTheIndex) {
  for (size_t n : {size_t{1}, size_t{513}}) {
    for (size_t index : {size_t{0}, n / 2, n - 1}) {
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        auto v = gradient(n, 6);
        v[index] = bad;
        try {
          codec_->encode(v, kKey);
          ADD_FAILURE() << "accepted " << bad << " at " << index << " of " << n;
        } catch (const InvalidArgument& e) {
          const std::regex number("(^|[^0-9])" + std::to_string(index) + "([^0-9]|$)");
          EXPECT_TRUE(std::regex_search(e.what(), number))
              << "message does not name index " << index << ": " << e.what();
        }
      }
    }
  }
}

TEST_P(CodecContract, PayloadNamesItsCodec) {
  const auto v = gradient(kSmallN, 7);
  const auto payload = codec_->encode(v, kKey);
  const auto reader = codec_for_payload(payload);
  EXPECT_EQ(reader->spec(), codec_->spec());
  EXPECT_EQ(reader->spec().str(), codec_->spec().str());
  EXPECT_EQ(reader->id(), codec_->id());
  std::vector<float> a(kSmallN, 0.0f), b(kSmallN, 0.0f);
  codec_->decode_add(payload, a, 1.0f);
  reader->decode_add(payload, b, 1.0f);
  EXPECT_EQ(a, b);
}

// Spec text needs no codec construction: these pass whatever state the codecs are in.
TEST_P(CodecContract, CanonicalSpecRoundTrips) {
  const CodecSpec spec = parse_codec_spec(GetParam().spec);
  EXPECT_EQ(parse_codec_spec(spec.str()), spec);
  EXPECT_EQ(parse_codec_spec(spec.str()).str(), spec.str());
  // Every schema key is spelled out, in schema order.
  const CodecInfo& info = codec_info(spec.name());
  ASSERT_EQ(spec.params().size(), info.params.size());
  for (size_t i = 0; i < info.params.size(); ++i)
    EXPECT_EQ(spec.params()[i].first, info.params[i].key);
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, CodecContract, ::testing::ValuesIn(kCases), case_name);

// Explicit encoder/decoder pairs that must not understand each other's payloads.
struct MismatchCase {
  const char* encoder;
  const char* decoder;
};

void PrintTo(const MismatchCase& c, std::ostream* os) { *os << c.encoder << " -> " << c.decoder; }

class CodecMismatch : public ::testing::TestWithParam<MismatchCase> {};

TEST_P(CodecMismatch, DecoderRejectsPayload) {
  const auto encoder = make_codec(GetParam().encoder);
  const auto decoder = make_codec(GetParam().decoder);
  const auto payload = encoder->encode(gradient(kSmallN, 8), kKey);
  std::vector<float> out(kSmallN, 0.0f);
  EXPECT_THROW(decoder->decode_add(payload, out, 1.0f), CorruptPayload);
  EXPECT_EQ(out, std::vector<float>(kSmallN, 0.0f)) << "output changed before the throw";
}

INSTANTIATE_TEST_SUITE_P(
    Pairs, CodecMismatch,
    ::testing::Values(
        MismatchCase{"qsgd:bits=4", "qsgd:bits=2"}, MismatchCase{"qsgd", "qsgd:coding=elias"},
        MismatchCase{"qsgd", "qsgd:norm=l2"}, MismatchCase{"fp16", "fp16:bucket=512"},
        MismatchCase{"fp16", "bf16"}, MismatchCase{"bf16", "none"},
        MismatchCase{"sign", "sign:scale=l1"}, MismatchCase{"zipml", "zipml:levels=optimal"},
        MismatchCase{"int8", "int8:map=tree"}, MismatchCase{"int8", "int8:rounding=nearest"},
        MismatchCase{"terngrad", "terngrad:clip=2.5"},
        MismatchCase{"topk:ratio=0.1", "topk:ratio=0.2"}),
    [](const ::testing::TestParamInfo<MismatchCase>& info) {
      return param_name(std::string(info.param.encoder) + "_to_" + info.param.decoder);
    });

TEST(CodecContractList, CoversEveryRegisteredCodec) {
  for (const CodecInfo& info : builtin_codecs()) {
    bool covered = false;
    for (const auto& c : kCases) covered |= parse_codec_spec(c.spec).name() == info.name;
    EXPECT_TRUE(covered) << info.name << " has no case in kCases";
  }
}

// ------------------------------------------------------------------------------------------
// Spec parse errors.

std::string parse_error(const std::string& text) {
  try {
    parse_codec_spec(text);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "'" << text << "' parsed without error";
  return "";
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(CodecSpecErrors, UnknownCodecListsValidCodecs) {
  for (const char* text : {"qsgdx", "fp32", "QSGD:bits=4", "none2"}) {
    const std::string msg = parse_error(text);
    EXPECT_TRUE(contains(msg, "unknown codec")) << msg;
    for (const CodecInfo& info : builtin_codecs()) EXPECT_TRUE(contains(msg, info.name)) << msg;
  }
}

TEST(CodecSpecErrors, UnknownKeyListsValidKeys) {
  for (const CodecInfo& info : builtin_codecs()) {
    const std::string msg = parse_error(std::string(info.name) + ":nosuchkey=1");
    EXPECT_TRUE(contains(msg, "nosuchkey")) << msg;
    for (const ParamSpec& p : info.params) EXPECT_TRUE(contains(msg, p.key)) << msg;
    if (info.params.empty()) {
      EXPECT_TRUE(contains(msg, "no parameters")) << msg;
    }
  }
}

TEST(CodecSpecErrors, BadValueNamesTheExpectedRangeOrChoices) {
  for (const CodecInfo& info : builtin_codecs()) {
    for (const ParamSpec& p : info.params) {
      std::vector<std::string> bad_values = {"", "abc", "1x"};
      if (p.type == ParamType::kChoice) {
        bad_values.push_back("zzz");
      } else {
        bad_values.push_back(std::to_string(static_cast<int64_t>(p.max) + 1));
        bad_values.push_back("-1");
        if (p.type == ParamType::kInt) bad_values.push_back("1.5");
        if (p.type == ParamType::kFloat) bad_values.push_back("nan");
      }
      for (const std::string& value : bad_values) {
        const std::string text = std::string(info.name) + ":" + std::string(p.key) + "=" + value;
        SCOPED_TRACE(text);
        const std::string msg = parse_error(text);
        EXPECT_TRUE(contains(msg, p.key)) << msg;
        EXPECT_TRUE(contains(msg, "expected")) << msg;
        if (p.type == ParamType::kChoice) {
          std::string_view rest = p.choices;
          while (!rest.empty()) {
            const size_t bar = rest.find('|');
            EXPECT_TRUE(contains(msg, rest.substr(0, bar))) << msg;
            rest = bar == std::string_view::npos ? "" : rest.substr(bar + 1);
          }
        } else {
          EXPECT_TRUE(contains(msg, "[")) << "no range in: " << msg;
        }
      }
    }
  }
}

TEST(CodecSpecErrors, DuplicateKeyEmptyAndMalformed) {
  EXPECT_TRUE(contains(parse_error("fp16:bucket=4,bucket=8"), "twice"));
  EXPECT_TRUE(contains(parse_error("qsgd:bits=4,norm=l2,bits=2"), "twice"));
  for (const char* text :
       {"", ":", ":bits=4", "fp16:", "fp16:bucket", "fp16:=4", "fp16:bucket=4,", "bf16:bucket=4"}) {
    SCOPED_TRACE(text);
    const std::string msg = parse_error(text);
    EXPECT_FALSE(msg.empty());
  }
  // An empty spec still tells the user what exists.
  EXPECT_TRUE(contains(parse_error(""), "fp16"));
}

TEST(CodecSpecErrors, DefaultsAreFilledInCanonically) {
  EXPECT_EQ(parse_codec_spec("fp16").str(), "fp16:bucket=4096");
  EXPECT_EQ(parse_codec_spec("bf16").str(), "bf16");
  EXPECT_EQ(parse_codec_spec("none").str(), "none");
  EXPECT_EQ(parse_codec_spec("fp16:bucket=0010").str(), "fp16:bucket=10");
  EXPECT_EQ(parse_codec_spec("qsgd:norm=l2,bits=2"), parse_codec_spec("qsgd:bits=2,norm=l2"));
}

}  // namespace
}  // namespace qgrad
