// The synchronous round without a server: the aggregate's bits do not depend on the arrival
// order, the mean and the vote are core/aggregation.h's, and the quorum's accounting (missed,
// absent, quorum_steps, the reports) after the timeout.
#include "ps/sync_round.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "tests/ps/ps_parts_testing.h"

namespace qgrad::ps {
namespace {

using namespace testing_parts;
using std::chrono::milliseconds;

constexpr float kLr = 0.1f;

OptimizerOptions sgd() { return OptimizerOptions{}; }

// Worker r's push of `step`: qsgd payloads of a random gradient times lr.
DecodedPush push_of(uint32_t r, uint64_t step, const std::string& codec = "qsgd:bits=4") {
  Tensors g = random_tensors(100 * r + static_cast<uint32_t>(step) + 1);
  for (auto& t : g) {
    for (float& v : t) v *= kLr;
  }
  return decoded_push(encode(*make_codec(codec), g, r, step), kLr, step * 10 + r);
}

// Runs one step with the workers pushing in `order`; returns the parameters after it.
Tensors step_in_order(uint32_t workers, const std::vector<uint32_t>& order) {
  ServerFixture f(workers, random_tensors(999), sgd());
  SyncRound round(options(workers));
  for (size_t i = 0; i < order.size(); ++i) {
    StepContext ctx = f.context();
    const PushOutcome out =
        offer(round, push_info(order[i], 0, order[i]), push_of(order[i], 0), ctx);
    EXPECT_TRUE(out.status.ok()) << out.status.message;
    EXPECT_EQ(out.applied, i + 1 == order.size());
  }
  EXPECT_EQ(f.applied, 1u);
  return f.model.params;
}

void expect_bitwise_equal(const Tensors& a, const Tensors& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].size(), b[k].size());
    EXPECT_EQ(std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(float)), 0)
        << what << ", key " << k;
  }
}

TEST(SyncRound, TheStepsBitsDoNotDependOnTheArrivalOrder) {
  for (const uint32_t workers : {3u, 4u}) {  // a mean by division and by an exact reciprocal
    std::vector<uint32_t> order(workers);
    std::iota(order.begin(), order.end(), 0u);
    const Tensors first = step_in_order(workers, order);
    // The reference: sum in worker-id order, divide by the count, SGD's x - a.
    Tensors want = random_tensors(999);
    for (size_t k = 0; k < want.size(); ++k) {
      for (size_t j = 0; j < want[k].size(); ++j) {
        float sum = 0.0f;
        for (uint32_t r = 0; r < workers; ++r) sum += push_of(r, 0).decoded[k][j];
        want[k][j] = want[k][j] - sum / static_cast<float>(workers);
      }
    }
    expect_bitwise_equal(first, want, "the mean step");
    while (std::next_permutation(order.begin(), order.end())) {
      expect_bitwise_equal(step_in_order(workers, order), first, "another arrival order");
    }
  }
}

TEST(SyncRound, AMajorityVoteIsSOfLrTimesTheSignATieCountingAsPlusOne) {
  ServerFixture f(2, random_tensors(7), sgd());
  SyncRound round(options(2));
  DecodedPush p0 = push_of(0, 0, "sign");
  DecodedPush p1 = push_of(1, 0, "sign");
  // Element 0 of key 0: a tie (the two signs cancel).
  p0.decoded[0][0] = 1.0f;
  p1.decoded[0][0] = -1.0f;
  const Tensors before = f.model.params;
  Tensors want = before;
  for (size_t k = 0; k < want.size(); ++k) {
    for (size_t j = 0; j < want[k].size(); ++j) {
      const float sum = p0.decoded[k][j] + p1.decoded[k][j];
      want[k][j] = want[k][j] - (sum >= 0.0f ? kLr : -kLr);  // SGD: s(lr) = lr
    }
  }
  StepContext ctx = f.context();
  ASSERT_TRUE(offer(round, push_info(0, 0, 1), std::move(p0), ctx).status.ok());
  ASSERT_TRUE(offer(round, push_info(1, 0, 2), std::move(p1), ctx).status.ok());
  expect_bitwise_equal(f.model.params, want, "the vote");
  EXPECT_EQ(f.model.params[0][0], before[0][0] - kLr);
}

TEST(SyncRound, RefusesOldFutureRepeatedAndMismatchedPushes) {
  ServerFixture f(2, random_tensors(8), sgd());
  SyncRound round(options(2));
  StepContext ctx = f.context();
  ASSERT_TRUE(offer(round, push_info(0, 0, 1), push_of(0, 0), ctx).status.ok());

  PushOutcome out = offer(round, push_info(0, 0, 2), push_of(0, 0), ctx);
  EXPECT_EQ(out.status.code, CallCode::kAlreadyExists);
  EXPECT_EQ(out.status.message,
            "worker 0 already pushed step 0 with request id 1; this push has request id 2");

  out = offer(round, push_info(1, 1, 3), push_of(1, 1), ctx);
  EXPECT_EQ(out.status.code, CallCode::kFailedPrecondition);
  EXPECT_EQ(out.status.message,
            "worker 1 pushed step 1, the server is collecting step 0 (synchronous mode)");

  DecodedPush other_lr = push_of(1, 0);
  other_lr.lr = 0.2f;
  out = offer(round, push_info(1, 0, 4), std::move(other_lr), ctx);
  EXPECT_EQ(out.status.code, CallCode::kInvalidArgument);
  EXPECT_EQ(out.status.message,
            "worker 1 pushed step 0 with lr 0.2, worker 0 with lr 0.1 (workers must run the same "
            "lr schedule)");

  out = offer(round, push_info(1, 0, 5), push_of(1, 0, "sign"), ctx);
  EXPECT_EQ(out.status.code, CallCode::kInvalidArgument);
  EXPECT_EQ(out.status.message,
            "key 0 ('w'): this payload's codec aggregates by majority vote, another worker's by "
            "mean in the same step");

  f.states[1].registered = false;
  out = offer(round, push_info(1, 0, 6), push_of(1, 0), ctx);
  EXPECT_EQ(out.status.code, CallCode::kNotFound);
  f.states[1].registered = true;

  // Nothing of the refused pushes was kept: worker 1's good push completes the step.
  out = offer(round, push_info(1, 0, 7), push_of(1, 0), ctx);
  EXPECT_TRUE(out.status.ok());
  EXPECT_TRUE(out.applied);
  EXPECT_EQ(f.applied, 1u);
  EXPECT_EQ(f.states[0].pushes, 1u);
  EXPECT_EQ(f.states[1].pushes, 1u);
  EXPECT_EQ(f.states[1].last_request_id, 7u);

  out = offer(round, push_info(0, 0, 8), push_of(0, 0), ctx);
  EXPECT_EQ(out.status.code, CallCode::kAborted);
  EXPECT_EQ(out.status.message,
            "step 0 was applied without worker 0 after the timeout; the server is at step 1: "
            "pull the current model and continue there");
}

TEST(SyncRound, AQuorumAfterTheTimeoutAppliesAndMarksTheMissingAbsent) {
  ServerOptions o = options(3);
  o.timeout = milliseconds(100);
  o.quorum = 2;
  ServerFixture f(3, random_tensors(9), sgd());
  SyncRound round(o);
  EXPECT_EQ(round.quorum(), 2u);
  const SteadyTime t0 = std::chrono::steady_clock::now();
  StepContext ctx = f.context();
  EXPECT_FALSE(round.on_timer(ctx, t0));  // nothing pushed yet
  ASSERT_FALSE(offer(round, push_info(0, 0, 1, t0), push_of(0, 0), ctx).applied);
  ASSERT_FALSE(offer(round, push_info(1, 0, 2, t0), push_of(1, 0), ctx).applied);
  EXPECT_FALSE(round.on_timer(ctx, t0 + milliseconds(99)));
  EXPECT_EQ(f.applied, 0u);
  EXPECT_TRUE(round.on_timer(ctx, t0 + milliseconds(100)));
  EXPECT_EQ(f.applied, 1u);
  EXPECT_EQ(f.states[2].missed, 1u);
  EXPECT_TRUE(f.states[2].absent);
  EXPECT_EQ(f.states[0].missed, 0u);
  ServerStats stats;
  round.add_stats(stats);
  EXPECT_EQ(stats.quorum_steps, 1u);
  ASSERT_EQ(f.lines.size(), 1u);
  EXPECT_EQ(f.lines[0],
            "step 0 applied with 2 of 3 workers after 0.1 s (timeout); missing workers 2 (later "
            "steps do not wait for them until they call again)");

  // The mean was over the two that pushed.
  Tensors want = random_tensors(9);
  for (size_t k = 0; k < want.size(); ++k) {
    for (size_t j = 0; j < want[k].size(); ++j) {
      const float sum = push_of(0, 0).decoded[k][j] + push_of(1, 0).decoded[k][j];
      want[k][j] = want[k][j] - sum / 2.0f;
    }
  }
  expect_bitwise_equal(f.model.params, want, "the quorum's mean");

  // Step 1 does not wait for the absent worker: two pushes complete it, without a new report.
  const SteadyTime t1 = t0 + milliseconds(200);
  ASSERT_FALSE(offer(round, push_info(0, 1, 3, t1), push_of(0, 1), ctx).applied);
  ASSERT_TRUE(offer(round, push_info(1, 1, 4, t1), push_of(1, 1), ctx).applied);
  EXPECT_EQ(f.applied, 2u);
  EXPECT_EQ(f.states[2].missed, 2u);
  round.add_stats(stats);
  EXPECT_EQ(stats.quorum_steps, 2u);
  EXPECT_EQ(f.lines.size(), 1u);

  // Its late push of step 0 is refused; its push of the current step brings it back.
  EXPECT_EQ(offer(round, push_info(2, 0, 5, t1), push_of(2, 0), ctx).status.code,
            CallCode::kAborted);
  EXPECT_TRUE(offer(round, push_info(2, 2, 6, t1), push_of(2, 2), ctx).status.ok());
  EXPECT_FALSE(f.states[2].absent);
  ASSERT_EQ(f.lines.size(), 2u);
  EXPECT_EQ(f.lines[1], "worker 2 is back (server at step 2)");
}

TEST(SyncRound, WithoutAQuorumTheStepWaitsAndIsReportedOncePerTimeout) {
  ServerOptions o = options(3);
  o.timeout = milliseconds(100);
  o.quorum = 2;
  ServerFixture f(3, random_tensors(10), sgd());
  SyncRound round(o);
  const SteadyTime t0 = std::chrono::steady_clock::now();
  StepContext ctx = f.context();
  ASSERT_TRUE(offer(round, push_info(0, 0, 1, t0), push_of(0, 0), ctx).status.ok());
  EXPECT_FALSE(round.on_timer(ctx, t0 + milliseconds(100)));
  EXPECT_FALSE(round.on_timer(ctx, t0 + milliseconds(150)));
  EXPECT_FALSE(round.on_timer(ctx, t0 + milliseconds(200)));
  EXPECT_EQ(f.applied, 0u);
  EXPECT_THAT(f.lines,
              testing::ElementsAre("step 0 has waited 0.1 s: 1 of 3 workers pushed, "
                                   "the quorum is 2; missing workers 1, 2; still waiting",
                                   "step 0 has waited 0.2 s: 1 of 3 workers pushed, "
                                   "the quorum is 2; missing workers 1, 2; still waiting"));
  EXPECT_EQ(round.pushed(), 1u);
}

TEST(SyncRound, QuorumDefaultsAndPulls) {
  ServerOptions o = options(5);
  EXPECT_EQ(SyncRound(o).quorum(), 5u);  // no timeout: every worker
  o.timeout = milliseconds(10);
  EXPECT_EQ(SyncRound(o).quorum(), 3u);  // a majority
  o.quorum = 4;
  EXPECT_EQ(SyncRound(o).quorum(), 4u);

  const SyncRound round(options(2));
  EXPECT_TRUE(round.check_pull(1, 4, 3).ok());
  const CallStatus s = round.check_pull(1, 5, 3);
  EXPECT_EQ(s.code, CallCode::kFailedPrecondition);
  EXPECT_EQ(s.message,
            "worker 1 pulls step 5, the server is collecting step 3: that step cannot be applied "
            "before the next one");
  EXPECT_FALSE(round.pull_ready(4, 3));
  EXPECT_TRUE(round.pull_ready(3, 3));
  WorkerState w;
  w.last_step = 9;
  EXPECT_EQ(round.start_step(w, 3), 3u);
  EXPECT_FALSE(round.asynchronous());
}

}  // namespace
}  // namespace qgrad::ps
