// The asynchronous apply without a server: the staleness bound (accepted at max_staleness,
// refused at max_staleness + 1), the per-push mean, and its refusals.
#include "ps/async_apply.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "tests/ps/ps_parts_testing.h"

namespace qgrad::ps {
namespace {

using namespace testing_parts;

constexpr float kLr = 0.1f;

DecodedPush push_of(uint32_t r, uint64_t step, const std::string& codec = "qsgd:bits=4") {
  return decoded_push(
      encode(*make_codec(codec), random_tensors(50 * r + static_cast<uint32_t>(step)), r, step),
      kLr, step);
}

TestPushInfo versioned(uint32_t worker, uint64_t step, uint64_t version) {
  TestPushInfo t = push_info(worker, step, step);
  t.info.model_version = version;
  return t;
}

TEST(AsyncApply, StalenessUpToTheBoundIsAcceptedOneMoreIsRefused) {
  const StalenessCheck at_bound = check_staleness(1, 4, 7, 10, 3);
  EXPECT_TRUE(at_bound.status.ok());
  EXPECT_EQ(at_bound.staleness, 3u);
  EXPECT_FALSE(at_bound.too_stale);

  const StalenessCheck over = check_staleness(1, 4, 6, 10, 3);
  EXPECT_EQ(over.status.code, CallCode::kAborted);
  EXPECT_TRUE(over.too_stale);
  EXPECT_EQ(over.staleness, 4u);
  EXPECT_EQ(over.status.message,
            "stale push: worker 1 step 4 was computed on version 6, the server is at version 10: "
            "staleness 4 exceeds --max-staleness 3; pull the current model and continue");

  const StalenessCheck future = check_staleness(1, 4, 11, 10, 3);
  EXPECT_EQ(future.status.code, CallCode::kAborted);
  EXPECT_FALSE(future.too_stale);
  EXPECT_EQ(future.status.message,
            "worker 1's push was computed on version 11, the server is at version 10 (it "
            "restarted from an older checkpoint?): pull the current model and continue");

  EXPECT_TRUE(check_staleness(0, 0, 0, 0, 0).status.ok());
  EXPECT_TRUE(check_staleness(0, 0, 0, 1000, UINT64_MAX).status.ok());  // no bound
}

TEST(AsyncApply, EachPushIsAppliedAloneAsAOneWorkerShareOfTheMean) {
  for (const uint32_t workers : {1u, 3u, 4u}) {
    ServerFixture f(workers, random_tensors(3), OptimizerOptions{});
    AsyncApply policy(options(workers));
    DecodedPush p = push_of(0, 0);
    Tensors want = f.model.params;
    for (size_t k = 0; k < want.size(); ++k) {
      for (size_t j = 0; j < want[k].size(); ++j) {
        const float a =
            workers > 1 ? p.decoded[k][j] / static_cast<float>(workers) : p.decoded[k][j];
        want[k][j] = want[k][j] - a;  // SGD
      }
    }
    StepContext ctx = f.context();
    ASSERT_TRUE(policy.screen(versioned(0, 0, 0).info, p, shape()).ok());
    const PushOutcome out = offer(policy, versioned(0, 0, 0), std::move(p), ctx);
    ASSERT_TRUE(out.status.ok()) << out.status.message;
    EXPECT_TRUE(out.applied);
    EXPECT_EQ(f.applied, 1u);
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ(std::memcmp(f.model.params[k].data(), want[k].data(), want[k].size() * 4), 0)
          << workers << " workers, key " << k;
    }
  }
}

TEST(AsyncApply, CountsAppliedAndStalePushesAndTheirStaleness) {
  ServerOptions o = options(2);
  o.max_staleness = 1;
  ServerFixture f(2, random_tensors(4), OptimizerOptions{});
  AsyncApply policy(o);
  StepContext ctx = f.context();
  ASSERT_TRUE(offer(policy, versioned(0, 0, 0), push_of(0, 0), ctx).status.ok());  // 0
  ASSERT_TRUE(offer(policy, versioned(1, 0, 0), push_of(1, 0), ctx).status.ok());  // 1
  const PushOutcome stale = offer(policy, versioned(0, 1, 0), push_of(0, 1), ctx);
  EXPECT_EQ(stale.status.code, CallCode::kAborted);  // 2
  EXPECT_FALSE(stale.applied);
  ASSERT_TRUE(offer(policy, versioned(0, 1, 1), push_of(0, 1), ctx).status.ok());  // 1
  EXPECT_EQ(f.applied, 3u);
  ServerStats s;
  policy.add_stats(s);
  EXPECT_EQ(s.async_applied, 3u);
  EXPECT_EQ(s.stale_refused, 1u);
  EXPECT_EQ(s.staleness_max, 1u);
  EXPECT_EQ(s.staleness_sum, 2u);
  EXPECT_EQ(f.states[0].pushes, 2u);
  EXPECT_EQ(f.states[0].last_step, 1);

  // A worker's steps only grow; a restarted one continues after its last counted push.
  const PushOutcome again = offer(policy, versioned(0, 1, 3), push_of(0, 1), ctx);
  EXPECT_EQ(again.status.code, CallCode::kFailedPrecondition);
  EXPECT_EQ(again.status.message,
            "worker 0 pushed step 1 after its step 1 (asynchronous mode: a worker's steps only "
            "grow)");
  EXPECT_EQ(policy.start_step(f.states[0], f.applied), 2u);
  EXPECT_EQ(policy.start_step(WorkerState{}, f.applied), 0u);
}

TEST(AsyncApply, RefusesAVoteAPushWithoutVersionAndAnUnregisteredWorker) {
  AsyncApply policy(options(2));
  const DecodedPush vote = push_of(0, 0, "sign");
  CallStatus s = policy.screen(versioned(0, 0, 0).info, vote, shape());
  EXPECT_EQ(s.code, CallCode::kInvalidArgument);
  EXPECT_EQ(s.message,
            "key 0 ('w'): this payload's codec aggregates by majority vote, which the "
            "asynchronous mode cannot do (one push is no vote); use a mean codec such as "
            "sign:scale=l1 or qsgd");
  s = policy.screen(push_info(0, 3, 3).info, push_of(0, 3), shape());
  EXPECT_EQ(s.code, CallCode::kInvalidArgument);
  EXPECT_EQ(s.message,
            "push of worker 0 step 3 does not say which model version it was computed on "
            "(model_version), which the asynchronous mode needs (an older client?)");

  ServerFixture f(2, random_tensors(5), OptimizerOptions{});
  f.states[1].registered = false;
  StepContext ctx = f.context();
  const PushOutcome out = offer(policy, versioned(1, 0, 0), push_of(1, 0), ctx);
  EXPECT_EQ(out.status.code, CallCode::kFailedPrecondition);
  EXPECT_EQ(out.status.message, "worker 1 pushed before it registered");

  // Pulls are answered at once, whatever step they ask for.
  EXPECT_TRUE(policy.check_pull(0, 100, 3).ok());
  EXPECT_TRUE(policy.pull_ready(100, 3));
  EXPECT_TRUE(policy.asynchronous());
}

}  // namespace
}  // namespace qgrad::ps
