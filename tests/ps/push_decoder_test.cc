// The push decoder without a server: what decodes, and the exact refusals (the texts a worker
// sees in its INVALID_ARGUMENT).
#include "ps/push_decoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "tests/ps/ps_parts_testing.h"

namespace qgrad::ps {
namespace {

using namespace testing_parts;

CallStatus decode(const std::vector<KeyPayloadView>& payloads, DecodedPush& out) {
  return decode_push(2, 7, payloads, shape(), out);
}

void expect_invalid(const CallStatus& s, const std::string& message) {
  EXPECT_EQ(s.code, CallCode::kInvalidArgument) << s.message;
  EXPECT_EQ(s.message, message);
}

TEST(PushDecoder, DecodesEveryKeyAsTheCodecDoes) {
  const auto qsgd = make_codec("qsgd");
  const auto payloads = encode(*qsgd, random_tensors(1), 0, 0);
  DecodedPush out;
  ASSERT_TRUE(decode(views(payloads), out).ok());
  ASSERT_EQ(out.decoded.size(), 2u);
  for (size_t k = 0; k < payloads.size(); ++k) {
    std::vector<float> want(shape()[k].size, 0.0f);
    qsgd->decode_add(payloads[k], want, 1.0f);
    EXPECT_EQ(out.decoded[k], want) << "key " << k;
    EXPECT_EQ(out.aggregation[k], Aggregation::kMean);
  }
  // Keys may come in any order.
  auto reversed = views(payloads);
  std::swap(reversed[0], reversed[1]);
  DecodedPush again;
  ASSERT_TRUE(decode(reversed, again).ok());
  EXPECT_EQ(again.decoded, out.decoded);

  const auto sign = make_codec("sign");
  DecodedPush voted;
  ASSERT_TRUE(decode(views(encode(*sign, random_tensors(2), 0, 0)), voted).ok());
  EXPECT_EQ(voted.aggregation[0], Aggregation::kMajorityVote);
}

TEST(PushDecoder, KeysMissingTwiceOrUnknownAreRefusedNamingThem) {
  const auto none = make_codec("none");
  const auto payloads = encode(*none, random_tensors(3), 0, 0);
  DecodedPush out;
  auto missing = views(payloads);
  missing.pop_back();
  expect_invalid(decode(missing, out),
                 "push of worker 2 step 7 carries 1 keys, the server holds 2 (a push must carry "
                 "every key)");
  auto twice = views(payloads);
  twice[1] = twice[0];
  expect_invalid(decode(twice, out), "key 0 appears twice in one push");
  auto unknown = views(payloads);
  unknown[1].key = 5;
  expect_invalid(decode(unknown, out), "key 5 does not exist (2 keys)");
}

TEST(PushDecoder, AWrongElementCountIsRefusedNamingTheKey) {
  const auto qsgd = make_codec("qsgd");
  auto payloads = encode(*qsgd, random_tensors(4), 0, 0);
  payloads[1] = qsgd->encode(std::vector<float>(6, 0.5f), RngKey{});
  DecodedPush out;
  expect_invalid(decode(views(payloads), out),
                 "key 1 ('b'): the payload holds 6 elements, the key has 5");
}

// A valid `none` payload (raw fp32 body) whose element j is v: what a worker that skipped the
// encoder's own check, or an attacker, could send. The CRCs are recomputed.
std::vector<std::byte> with_element(std::vector<std::byte> payload, size_t j, float v) {
  const WireHeader h = read_header(payload);
  EXPECT_EQ(h.codec, CodecId::kNone);
  store_f32(payload.data() + kHeaderBytes + 4 * j, v);
  write_header(payload, h.codec, h.params, h.elements,
               std::span<const std::byte>(payload).subspan(kHeaderBytes));
  return payload;
}

TEST(PushDecoder, NonFiniteValuesAreRefusedNamingTheElement) {
  const auto none = make_codec("none");
  const auto payloads = encode(*none, random_tensors(5), 0, 0);
  auto nan = payloads;
  nan[0] = with_element(nan[0], 3, std::numeric_limits<float>::quiet_NaN());
  DecodedPush out;
  expect_invalid(decode(views(nan), out), "key 0 ('w'): element 3 decodes to nan");
  auto inf = payloads;
  inf[1] = with_element(inf[1], 4, -std::numeric_limits<float>::infinity());
  expect_invalid(decode(views(inf), out), "key 1 ('b'): element 4 decodes to -inf");
}

TEST(PushDecoder, DamagedPayloadsAreRefusedWithTheKeyInFront) {
  const auto qsgd = make_codec("qsgd");
  auto payloads = encode(*qsgd, random_tensors(6), 0, 0);
  payloads[1] = std::vector<std::byte>(64, std::byte{0x5a});
  DecodedPush out;
  CallStatus s = decode(views(payloads), out);
  EXPECT_EQ(s.code, CallCode::kInvalidArgument);
  EXPECT_THAT(s.message, testing::StartsWith("key 1 ('b'): "));

  payloads = encode(*qsgd, random_tensors(6), 0, 0);
  payloads[0].back() ^= std::byte{0x01};  // the body CRC no longer matches
  s = decode(views(payloads), out);
  EXPECT_EQ(s.code, CallCode::kInvalidArgument);
  EXPECT_THAT(s.message, testing::StartsWith("key 0 ('w'): "));
}

TEST(PushDecoder, TheLrMustBeFiniteAndNotNegative) {
  EXPECT_TRUE(check_push_lr(1, 2, 0.0f).ok());
  EXPECT_TRUE(check_push_lr(1, 2, 0.5f).ok());
  expect_invalid(check_push_lr(1, 2, -1.0f),
                 "push of worker 1 step 2: lr -1 is not a finite number >= 0");
  expect_invalid(check_push_lr(1, 2, std::numeric_limits<float>::infinity()),
                 "push of worker 1 step 2: lr inf is not a finite number >= 0");
}

}  // namespace
}  // namespace qgrad::ps
