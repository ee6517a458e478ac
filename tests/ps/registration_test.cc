// Admission, model adoption and the comparison of later registrations, without a server: the
// refusals name the first field that differs and where the server's value came from.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>

#include "ps/auth.h"
#include "ps/model_adoption.h"
#include "ps/worker_table.h"
#include "tests/ps/ps_parts_testing.h"

namespace qgrad::ps {
namespace {

using namespace testing_parts;

std::string_view bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
}

// Worker `id`'s registration with the model `initial` (kept alive by the caller).
Registration registration(uint32_t id, const Tensors& initial) {
  Registration r;
  r.worker = id;
  r.shape = shape();
  for (const auto& t : initial) r.initial.push_back(bytes_of(t));
  r.optimizer = OptimizerOptions{};
  r.run = {{"model", "mlp"}, {"seed", "7"}};
  return r;
}

void expect_refusal(const CallStatus& s, CallCode code, const std::string& message) {
  EXPECT_EQ(s.code, code) << s.message;
  EXPECT_EQ(s.message, message);
}

TEST(Registration, TheFirstRegistrationGivesTheModelAndTheRun) {
  const Tensors initial = random_tensors(1);
  ServerModel model;
  AdoptedRun run;
  const Registration first = registration(0, initial);
  ASSERT_TRUE(adopt_registration(first, model).ok());
  adopt_run(first, run);
  EXPECT_TRUE(model.present);
  EXPECT_EQ(model.params, initial);
  EXPECT_EQ(model.initial_crc, crc_of(initial));
  EXPECT_EQ(model.source, "worker 0");
  EXPECT_EQ(run.source, "worker 0");
  EXPECT_EQ(run.fields, first.run);
  EXPECT_TRUE(compare_registration(registration(1, initial), model, run).ok());
  // A later registration does not replace the run.
  Registration later = registration(1, initial);
  later.run = {};
  adopt_run(later, run);
  EXPECT_EQ(run.fields, first.run);
}

TEST(Registration, AFirstRegistrationWithoutAModelOrWithABadOneIsRefused) {
  const Tensors initial = random_tensors(2);
  ServerModel model;
  Registration bare = registration(3, initial);
  bare.initial.clear();
  bare.optimizer.reset();
  expect_refusal(adopt_registration(bare, model), CallCode::kFailedPrecondition,
                 "the server has no model yet: worker 3's registration must carry the shape of "
                 "its keys, their initial values and the optimizer (it carries 2 keys, 0 initial "
                 "tensors, no optimizer)");
  Registration short_values = registration(3, initial);
  short_values.initial[1] = short_values.initial[1].substr(4);
  expect_refusal(adopt_registration(short_values, model), CallCode::kInvalidArgument,
                 "key 1 ('b'): the initial value has 16 bytes, the shape needs 20");
  Tensors nan = initial;
  nan[0][2] = std::numeric_limits<float>::quiet_NaN();
  expect_refusal(adopt_registration(registration(3, nan), model), CallCode::kInvalidArgument,
                 "key 0 ('w'): initial element 2 is nan");
  Registration bad_optimizer = registration(3, initial);
  bad_optimizer.optimizer->name = "rmsprop";
  const CallStatus s = adopt_registration(bad_optimizer, model);
  EXPECT_EQ(s.code, CallCode::kInvalidArgument);
  EXPECT_THAT(s.message, testing::StartsWith("worker 3's model or optimizer: "));
  EXPECT_FALSE(model.present);  // nothing of a refused registration was kept
}

TEST(Registration, ALaterRegistrationIsRefusedNamingTheFirstDifference) {
  const Tensors initial = random_tensors(3);
  ServerModel model;
  AdoptedRun run;
  const Registration first = registration(0, initial);
  ASSERT_TRUE(adopt_registration(first, model).ok());
  adopt_run(first, run);
  const std::string prefix = "worker 2 does not match this server's run: ";

  Registration seed = registration(2, initial);
  seed.run[1].second = "8";
  expect_refusal(compare_registration(seed, model, run), CallCode::kFailedPrecondition,
                 prefix +
                     "run.seed: worker 2 has '8', the server's run has '7' (adopted from "
                     "worker 0)");
  Registration missing = registration(2, initial);
  missing.run.pop_back();
  expect_refusal(compare_registration(missing, model, run), CallCode::kFailedPrecondition,
                 prefix + "run.seed: worker 2 does not send it (adopted from worker 0)");
  Registration extra = registration(2, initial);
  extra.run.emplace_back("codec", "qsgd");
  expect_refusal(compare_registration(extra, model, run), CallCode::kFailedPrecondition,
                 prefix +
                     "run.codec: worker 2 has 'qsgd', the server's run has no such field "
                     "(adopted from worker 0)");
  Registration momentum = registration(2, initial);
  momentum.optimizer->momentum = 0.5f;
  expect_refusal(compare_registration(momentum, model, run), CallCode::kFailedPrecondition,
                 prefix +
                     "optimizer.momentum: worker 2 sends 0.5, the server runs 0 (adopted "
                     "from worker 0)");
  Registration key = registration(2, initial);
  key.shape[1].name = "bias";
  expect_refusal(compare_registration(key, model, run), CallCode::kFailedPrecondition,
                 prefix +
                     "key 1: worker 2 has 'bias' (5 elements), the server holds 'b' (5 "
                     "elements) (adopted from worker 0)");
  const Tensors other = random_tensors(4);
  expect_refusal(compare_registration(registration(2, other), model, run),
                 CallCode::kFailedPrecondition,
                 prefix +
                     "initial values: worker 2's differ from the adopted ones (another "
                     "--seed or model initialisation?) (adopted from worker 0)");
  // Without initial values or optimizer a registration is compared on the rest only.
  Registration slim = registration(2, initial);
  slim.initial.clear();
  slim.optimizer.reset();
  EXPECT_TRUE(compare_registration(slim, model, run).ok());
}

TEST(Admission, TheTokenThenTheVersion) {
  expect_refusal(admit_call(std::nullopt, "tok", kProtocolVersion), CallCode::kUnauthenticated,
                 "missing 'authorization: Bearer <token>' metadata");
  expect_refusal(admit_call("Bearer tok2", "tok", kProtocolVersion), CallCode::kUnauthenticated,
                 "wrong token");
  expect_refusal(admit_call("Bearer tok", "tok", 1), CallCode::kFailedPrecondition,
                 "protocol version 1 is not supported (server speaks version 2)");
  EXPECT_TRUE(admit_call("Bearer tok", "tok", kProtocolVersion).ok());
  EXPECT_TRUE(same_secret("abc", "abc"));
  EXPECT_FALSE(same_secret("abc", "abd"));
  EXPECT_FALSE(same_secret("abc", "abcd"));
  EXPECT_FALSE(same_secret("", "a"));

  CallCounters counters;
  counters.count(true, 10, 20);
  counters.count(false, 100, 200);
  EXPECT_EQ(counters.bytes_in, 10u);
  EXPECT_EQ(counters.bytes_out, 20u);
  EXPECT_EQ(counters.rejected, 1u);
}

TEST(WorkerTable, ARetryIsTheLastCountedPushAndIdsAreBelowTheWorldSize) {
  WorkerState w;
  EXPECT_FALSE(already_counted(w, 0, 0));  // nothing counted yet
  w.last_step = 4;
  w.last_request_id = 41;
  w.pushes = 5;
  EXPECT_TRUE(already_counted(w, 4, 41));
  EXPECT_FALSE(already_counted(w, 4, 42));
  EXPECT_FALSE(already_counted(w, 5, 41));
  EXPECT_TRUE(check_worker_id(2, 3).ok());
  expect_refusal(check_worker_id(3, 3), CallCode::kInvalidArgument,
                 "worker id 3 is not below the world size 3");
  expect_refusal(unregistered(1, "pulled"), CallCode::kNotFound,
                 "worker 1 pulled before it registered with this server (restarted?): register "
                 "first");
  std::vector<std::string> lines;
  const ServerLog log = [&](const std::string& line) { lines.push_back(line); };
  come_back(w, 1, 9, log);
  EXPECT_TRUE(lines.empty());
  w.absent = true;
  come_back(w, 1, 9, log);
  EXPECT_FALSE(w.absent);
  EXPECT_THAT(lines, testing::ElementsAre("worker 1 is back (server at step 9)"));
}

}  // namespace
}  // namespace qgrad::ps
