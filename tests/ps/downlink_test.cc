// The downlink codec and the option checks, without a server: x^ follows x through the encoded
// updates (the server's error memory), who gets an update rather than fp32, and the refusals.
#include "ps/downlink.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>

#include "core/error.h"
#include "ps/server_options.h"
#include "tests/ps/ps_parts_testing.h"

namespace qgrad::ps {
namespace {

using namespace testing_parts;

void expect_invalid(const std::function<void()>& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "expected InvalidArgument: " << message;
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(Downlink, WithoutACodecPullsCarryTheModelAndTheReplicaStaysTheInitialValues) {
  Downlink none("");
  EXPECT_FALSE(none.enabled());
  const Tensors initial = random_tensors(1);
  none.reset(initial);
  EXPECT_EQ(none.replica(), initial);
  EXPECT_FALSE(none.sends_update(true, 0, 1));
}

TEST(Downlink, TheReplicaFollowsTheModelAndKeepsWhatEncodingsLeftOut) {
  Downlink down("qsgd:bits=2");
  ASSERT_TRUE(down.enabled());
  const Tensors initial = random_tensors(2);
  down.reset(initial);
  EXPECT_FALSE(down.sends_update(true, 0, 0));  // nothing encoded yet
  Tensors x = initial;
  double last_error = 0;
  for (uint64_t step = 1; step <= 40; ++step) {
    // The model moves a little each step; x^ chases it through 2-bit updates.
    const Tensors g = random_tensors(100 + static_cast<uint32_t>(step), 0.01f);
    for (size_t k = 0; k < x.size(); ++k) {
      for (size_t j = 0; j < x[k].size(); ++j) x[k][j] -= g[k][j];
    }
    const Tensors before = down.replica();
    down.encode(x, step);
    // x^ grew by exactly the decoded payload: a worker holding x^ of step - 1 gets the same bits.
    for (size_t k = 0; k < x.size(); ++k) {
      std::vector<float> worker = before[k];
      make_codec("qsgd:bits=2")->decode_add(down.update(k), worker, 1.0f);
      EXPECT_EQ(worker, down.replica()[k]) << "step " << step << " key " << k;
    }
    double error = 0;
    for (size_t k = 0; k < x.size(); ++k) {
      for (size_t j = 0; j < x[k].size(); ++j) {
        error += std::abs(double{x[k][j]} - down.replica()[k][j]);
      }
    }
    last_error = error;
    EXPECT_TRUE(down.sends_update(true, step - 1, step));
    EXPECT_FALSE(down.sends_update(false, step - 1, step));  // a worker without a model
    EXPECT_FALSE(down.sends_update(true, step - 2, step));   // one that is behind
    EXPECT_FALSE(down.sends_update(true, step - 1, step + 1));
  }
  // The error memory: what the encodings left out is sent later, so x^ stays near x, much
  // nearer than the initial values it started from.
  double moved = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    for (size_t j = 0; j < x[k].size(); ++j) moved += std::abs(double{x[k][j]} - initial[k][j]);
  }
  EXPECT_LT(last_error, 0.5 * moved);
  down.restore(initial);
  EXPECT_EQ(down.replica(), initial);
  EXPECT_FALSE(down.sends_update(true, 39, 40));  // a restored replica has no update
}

TEST(Downlink, AMajorityVoteCodecIsRefused) {
  expect_invalid([] { Downlink d("sign"); },
                 "ParameterServer: downlink codec 'sign' sends a majority vote of signs, which "
                 "does not estimate the update; use e.g. qsgd:bits=8 or sign:scale=l1");
  EXPECT_THROW(Downlink d("nonsense"), InvalidArgument);
}

TEST(ServerOptionsCheck, RefusesCombinationsThatCannotWork) {
  ServerOptions o;
  o.token = "t";
  o.workers = 3;
  check_server_options(o);
  ServerOptions bad = o;
  bad.token.clear();
  expect_invalid([&] { check_server_options(bad); },
                 "ParameterServer: the token must not be empty");
  bad = o;
  bad.quorum = 4;
  bad.timeout = std::chrono::milliseconds(10);
  expect_invalid([&] { check_server_options(bad); },
                 "ParameterServer: quorum 4 is more than the 3 workers");
  bad = o;
  bad.quorum = 2;
  expect_invalid([&] { check_server_options(bad); },
                 "ParameterServer: a quorum needs a timeout (without one every step waits for "
                 "every worker)");
  bad = o;
  bad.async = true;
  bad.downlink_codec = "qsgd";
  expect_invalid([&] { check_server_options(bad); },
                 "ParameterServer: --downlink-codec needs the synchronous mode: the server keeps "
                 "one copy of the workers' model, and asynchronous workers hold different "
                 "versions");
  bad = o;
  bad.max_staleness = 3;
  expect_invalid([&] { check_server_options(bad); },
                 "ParameterServer: --max-staleness is for the asynchronous mode (--mode async)");

  bad = o;
  bad.shape = shape();
  bad.initial = random_tensors(1);
  check_given_model(bad);
  bad.initial[1].pop_back();
  expect_invalid([&] { check_given_model(bad); },
                 "ParameterServer: initial value of key 1 ('b') has 4 elements, the shape says 5");

  EXPECT_EQ(effective_quorum(o), 3u);
  o.timeout = std::chrono::milliseconds(5);
  EXPECT_EQ(effective_quorum(o), 2u);
}

}  // namespace
}  // namespace qgrad::ps
