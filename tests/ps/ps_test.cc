// The parameter server over loopback: synchronous and asynchronous steps, idempotent pushes,
// authentication, refusals of bad requests and options. Servers and clients in one process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/codec_registry.h"
#include "ps/client.h"
#include "ps/server.h"
#include "tests/ps/ps_testing.h"

namespace qgrad::ps {
namespace {

using Tensors = std::vector<std::vector<float>>;

constexpr char kToken[] = "s3cret-token";
constexpr float kLr = 0.1f;

const std::vector<ParamShape>& model() {
  static const std::vector<ParamShape> shape = {{"w", 37}, {"b", 5}};
  return shape;
}

Tensors random_tensors(uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensors t;
  for (const ParamShape& p : model()) {
    std::vector<float> v(p.size);
    for (float& x : v) x = dist(gen);
    t.push_back(std::move(v));
  }
  return t;
}

ServerOptions server_options(uint32_t workers) {
  ServerOptions o;
  o.token = kToken;
  o.workers = workers;
  o.shape = model();
  o.initial = random_tensors(1000);
  o.optimizer.name = "sgd";
  return o;
}

// What a worker pushes for the gradient g: s(lr) * g encoded (SGD: s = lr), key k with tensor k.
std::vector<std::vector<std::byte>> encode(const Codec& codec, const Tensors& g, uint32_t rank,
                                           uint64_t step) {
  std::vector<std::vector<std::byte>> out;
  for (size_t k = 0; k < g.size(); ++k) {
    std::vector<float> c(g[k].size());
    for (size_t j = 0; j < c.size(); ++j) c[j] = kLr * g[k][j];
    const RngKey key{.seed = 7, .step = step, .rank = rank, .tensor = static_cast<uint32_t>(k)};
    out.push_back(codec.encode(c, key));
  }
  return out;
}

// Runs `steps` synchronous steps of `workers` workers, each on its own thread with its own
// client, pushing the payloads make_push(rank, step) gives; returns every worker's last pull.
std::vector<PullResult> run_workers(
    ParameterServer& server, uint32_t workers, uint64_t steps,
    const std::function<std::vector<std::vector<std::byte>>(uint32_t, uint64_t)>& make_push) {
  std::vector<PullResult> pulled(workers);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(workers);
  for (uint32_t r = 0; r < workers; ++r) {
    threads.emplace_back([&, r] {
      try {
        PsClient client(server.address(), kToken, r);
        uint64_t step = client.register_worker(workers, model());
        for (; step < steps; ++step) {
          const auto payloads = make_push(r, step);
          const PushResult p = client.push(step, /*request_id=*/step * 100 + r, payloads, kLr);
          EXPECT_FALSE(p.duplicate);
          pulled[r] = client.pull(step + 1);
        }
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (uint32_t r = 0; r < workers; ++r) EXPECT_EQ(errors[r], "") << "worker " << r;
  return pulled;
}

// The reference: x -= aggregate of the decoded payloads, summed in worker order.
void sgd_reference_step(Tensors& x, const std::vector<Tensors>& decoded, bool majority) {
  for (size_t k = 0; k < x.size(); ++k) {
    for (size_t j = 0; j < x[k].size(); ++j) {
      float sum = 0.0f;
      for (const Tensors& d : decoded) sum += d[k][j];
      const float a =
          majority ? (sum >= 0.0f ? kLr : -kLr) : sum / static_cast<float>(decoded.size());
      x[k][j] = x[k][j] - a;
    }
  }
}

Tensors decode(const std::vector<std::vector<std::byte>>& payloads) {
  Tensors out;
  for (const auto& p : payloads) {
    const auto codec = codec_for_payload(p);
    std::vector<float> v(read_header(p).elements, 0.0f);
    codec->decode_add(p, v, 1.0f);
    out.push_back(std::move(v));
  }
  return out;
}

void check_sync_training(const std::string& codec_spec, bool majority) {
  constexpr uint32_t kWorkers = 3;
  constexpr uint64_t kSteps = 3;
  const auto codec = make_codec(codec_spec);
  auto gradient = [](uint32_t r, uint64_t step) {
    return random_tensors(static_cast<uint32_t>(r * 31 + step));
  };
  auto make_push = [&](uint32_t r, uint64_t step) {
    return encode(*codec, gradient(r, step), r, step);
  };
  ParameterServer server(server_options(kWorkers));
  const std::vector<PullResult> pulled = run_workers(server, kWorkers, kSteps, make_push);

  Tensors x = server_options(kWorkers).initial;
  for (uint64_t step = 0; step < kSteps; ++step) {
    std::vector<Tensors> decoded;
    for (uint32_t r = 0; r < kWorkers; ++r) decoded.push_back(decode(make_push(r, step)));
    sgd_reference_step(x, decoded, majority);
  }
  for (uint32_t r = 0; r < kWorkers; ++r) {
    EXPECT_EQ(pulled[r].applied_steps, kSteps);
    ASSERT_EQ(pulled[r].params.size(), x.size());
    for (size_t k = 0; k < x.size(); ++k) {
      EXPECT_EQ(pulled[r].params[k], x[k]) << "worker " << r << " key " << k;
    }
  }
  const ServerStats s = server.stats();
  EXPECT_EQ(s.applied_steps, kSteps);
  EXPECT_THAT(s.pushes, testing::ElementsAre(kSteps, kSteps, kSteps));
  EXPECT_THAT(s.duplicates, testing::ElementsAre(0, 0, 0));
  EXPECT_GT(s.bytes_in, 0u);
  EXPECT_GT(s.bytes_out, 0u);
}

TEST(ParameterServer, SyncNoneIsTheMeanGradientSgdStep) {
  check_sync_training("none", false);
  // With codec none the decoded payload is lr * g exactly, so the reference above is
  // x - (lr g0 + lr g1 + lr g2) / 3 computed directly from the gradients; check one step of it.
  ParameterServer server(server_options(3));
  const auto none = make_codec("none");
  const std::vector<PullResult> pulled = run_workers(server, 3, 1, [&](uint32_t r, uint64_t s) {
    return encode(*none, random_tensors(r + 50), r, s);
  });
  Tensors x = server_options(3).initial;
  for (size_t k = 0; k < x.size(); ++k) {
    for (size_t j = 0; j < x[k].size(); ++j) {
      float sum = 0.0f;
      for (uint32_t r = 0; r < 3; ++r) sum += kLr * random_tensors(r + 50)[k][j];
      x[k][j] -= sum / 3.0f;
    }
  }
  for (size_t k = 0; k < x.size(); ++k) EXPECT_EQ(pulled[0].params[k], x[k]);
}

TEST(ParameterServer, SyncQsgdAppliesTheMeanOfTheDecodedPayloads) {
  check_sync_training("qsgd", false);
}

TEST(ParameterServer, SyncSignIsAMajorityVote) { check_sync_training("sign", true); }

TEST(ParameterServer, DuplicatePushIsCountedOnce) {
  ParameterServer server(server_options(2));
  const auto none = make_codec("none");
  PsClient w0(server.address(), kToken, 0);
  PsClient w1(server.address(), kToken, 1);
  w0.register_worker(2, model());
  w1.register_worker(2, model());
  const auto p0 = encode(*none, random_tensors(1), 0, 0);
  const auto p1 = encode(*none, random_tensors(2), 1, 0);

  EXPECT_FALSE(w0.push(0, 42, p0, kLr).duplicate);
  const PushResult again = w0.push(0, 42, p0, kLr);  // a retry before the step is complete
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.applied_steps, 0u);
  // Another request id for the same step is a second, different push: refused.
  expect_rpc_error([&] { w0.push(0, 43, p0, kLr); }, grpc::StatusCode::ALREADY_EXISTS,
                   "request id");

  EXPECT_EQ(w1.push(0, 9, p1, kLr).applied_steps, 1u);
  const PushResult late = w0.push(0, 42, p0, kLr);  // a retry after the step was applied
  EXPECT_TRUE(late.duplicate);
  EXPECT_EQ(late.applied_steps, 1u);

  const ServerStats s = server.stats();
  EXPECT_EQ(s.applied_steps, 1u);
  EXPECT_THAT(s.pushes, testing::ElementsAre(1, 1));
  EXPECT_THAT(s.duplicates, testing::ElementsAre(2, 0));
  Tensors x = server_options(2).initial;
  sgd_reference_step(x, {decode(p0), decode(p1)}, false);
  EXPECT_EQ(server.parameters(), x);
  EXPECT_EQ(w0.pull(1).params, x);
  // The client's view of the same counters.
  const ServerStats remote = w1.status();
  EXPECT_EQ(remote.pushes, s.pushes);
  EXPECT_EQ(remote.duplicates, s.duplicates);
}

TEST(ParameterServer, ConcurrentRetriesOfOnePushAreCountedOnce) {
  // The server decodes outside its lock, so retries racing each other must be caught when they
  // commit, not only when they arrive.
  ParameterServer server(server_options(2));
  const auto none = make_codec("none");
  const auto p0 = encode(*none, random_tensors(1), 0, 0);
  PsClient w0(server.address(), kToken, 0);
  w0.register_worker(2, model());
  constexpr int kRetries = 8;
  std::vector<int> duplicate(kRetries, -1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRetries; ++i) {
    threads.emplace_back([&, i] { duplicate[i] = w0.push(0, 42, p0, kLr).duplicate ? 1 : 0; });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(std::count(duplicate.begin(), duplicate.end(), 0), 1);
  EXPECT_EQ(std::count(duplicate.begin(), duplicate.end(), 1), kRetries - 1);
  const ServerStats s = server.stats();
  EXPECT_EQ(s.pushes[0], 1u);
  EXPECT_EQ(s.duplicates[0], static_cast<uint64_t>(kRetries - 1));
  EXPECT_EQ(s.applied_steps, 0u);
}

TEST(ParameterServer, WrongOrMissingTokenIsUnauthenticated) {
  ParameterServer server(server_options(1));
  PsClient bad(server.address(), "not-the-token", 0);
  expect_rpc_error([&] { bad.register_worker(1, model()); }, grpc::StatusCode::UNAUTHENTICATED,
                   "wrong token");
  expect_rpc_error([&] { bad.status(); }, grpc::StatusCode::UNAUTHENTICATED, "Status");
  PsClient none(server.address(), "", 0);
  expect_rpc_error([&] { none.heartbeat(); }, grpc::StatusCode::UNAUTHENTICATED, "authorization");
  // A prefix of the token is as wrong as any other string.
  PsClient prefix(server.address(), std::string(kToken).substr(0, 4), 0);
  expect_rpc_error([&] { prefix.heartbeat(); }, grpc::StatusCode::UNAUTHENTICATED, "wrong token");

  PsClient good(server.address(), kToken, 0);
  EXPECT_EQ(good.register_worker(1, model()), 0u);
  const auto none_codec = make_codec("none");
  good.push(0, 1, encode(*none_codec, random_tensors(3), 0, 0), kLr);
  EXPECT_EQ(good.pull(1).applied_steps, 1u);
  EXPECT_EQ(good.heartbeat(), 1u);
  EXPECT_EQ(server.stats().rejected, 4u);
}

TEST(ParameterServer, BadPayloadsAreInvalidArgumentAndTheServerGoesOn) {
  ParameterServer server(server_options(1));
  PsClient client(server.address(), kToken, 0);
  client.register_worker(1, model());
  const auto qsgd = make_codec("qsgd");
  const auto good = encode(*qsgd, random_tensors(4), 0, 0);

  auto garbage = good;
  garbage[1] = std::vector<std::byte>(64, std::byte{0x5a});
  expect_rpc_error([&] { client.push(0, 1, garbage, kLr); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "key 1 ('b')");

  auto flipped = good;
  flipped[0].back() ^= std::byte{0x01};  // the body CRC no longer matches
  expect_rpc_error([&] { client.push(0, 2, flipped, kLr); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "key 0 ('w')");

  // A valid payload, but for a tensor of another shape.
  auto other_shape = good;
  other_shape[1] = qsgd->encode(std::vector<float>(6, 0.5f), RngKey{});
  expect_rpc_error([&] { client.push(0, 3, other_shape, kLr); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "the payload holds 6 elements, the key has 5");

  auto missing = good;
  missing.pop_back();
  expect_rpc_error([&] { client.push(0, 4, missing, kLr); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "every key");

  // Nothing of the refused pushes was kept: the good one completes step 0 on its own.
  const PushResult p = client.push(0, 5, good, kLr);
  EXPECT_FALSE(p.duplicate);
  EXPECT_EQ(p.applied_steps, 1u);
  Tensors x = server_options(1).initial;
  sgd_reference_step(x, {decode(good)}, false);
  EXPECT_EQ(client.pull(1).params, x);
  EXPECT_EQ(server.stats().pushes[0], 1u);
}

TEST(ParameterServer, WrongShapeOrWorldSizeAtRegister) {
  ParameterServer server(server_options(2));
  PsClient client(server.address(), kToken, 0);
  expect_rpc_error([&] { client.register_worker(3, model()); },
                   grpc::StatusCode::FAILED_PRECONDITION, "expects 3 workers");
  auto shape = model();
  shape[0].size += 1;
  expect_rpc_error([&] { client.register_worker(2, shape); }, grpc::StatusCode::FAILED_PRECONDITION,
                   "key 0: worker 0 has 'w' (38 elements)");
  PsClient stranger(server.address(), kToken, 5);
  expect_rpc_error([&] { stranger.register_worker(2, model()); },
                   grpc::StatusCode::INVALID_ARGUMENT, "worker id 5");
  // Pushing before registering is refused as well, with the code that makes a worker register
  // again (what a restarted server answers to its first call).
  const auto none = make_codec("none");
  expect_rpc_error([&] { client.push(0, 1, encode(*none, random_tensors(1), 0, 0), kLr); },
                   grpc::StatusCode::NOT_FOUND, "before it registered with this server");
}

TEST(ParameterServer, AdoptsTheModelFromTheFirstRegistration) {
  ServerOptions o;
  o.token = kToken;
  o.workers = 2;  // no shape: a server like qgrad-ps
  ParameterServer server(o);
  EXPECT_FALSE(server.stats().has_model);
  PsClient w0(server.address(), kToken, 0);
  PsClient w1(server.address(), kToken, 1);
  // A registration without a model cannot give the server one.
  expect_rpc_error([&] { w0.register_worker(2, model()); }, grpc::StatusCode::FAILED_PRECONDITION,
                   "no model yet");
  RegisterModel m;
  m.initial = random_tensors(1000);
  m.optimizer = OptimizerOptions{};
  m.optimizer->momentum = 0.9f;
  m.run = {{"model", "mlp"}, {"seed", "1"}};
  RegisterModel bad = m;
  bad.initial[1].pop_back();
  expect_rpc_error([&] { w0.register_worker(2, model(), bad); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "key 1 ('b'): the initial value has 16");
  const RegisterResult first = w0.register_worker(2, model(), m);
  EXPECT_TRUE(first.adopted);
  EXPECT_EQ(first.step, 0u);
  EXPECT_EQ(server.parameters(), m.initial);
  EXPECT_EQ(server.stats().parameters, 42u);

  RegisterModel other = m;
  other.run[1].second = "2";
  expect_rpc_error([&] { w1.register_worker(2, model(), other); },
                   grpc::StatusCode::FAILED_PRECONDITION,
                   "run.seed: worker 1 has '2', the server's run has '1' (adopted from worker 0)");
  other = m;
  other.run.emplace_back("codec", "sign");
  expect_rpc_error([&] { w1.register_worker(2, model(), other); },
                   grpc::StatusCode::FAILED_PRECONDITION, "run.codec");
  other = m;
  other.optimizer->name = "adam";
  other.optimizer->momentum = 0.0f;
  expect_rpc_error([&] { w1.register_worker(2, model(), other); },
                   grpc::StatusCode::FAILED_PRECONDITION, "optimizer.name: worker 1 sends 'adam'");
  other = m;
  other.initial[0][3] += 1.0f;
  expect_rpc_error([&] { w1.register_worker(2, model(), other); },
                   grpc::StatusCode::FAILED_PRECONDITION, "initial values");
  EXPECT_FALSE(w1.register_worker(2, model(), m).adopted);

  // Both push one step; the server's momentum SGD (adopted, mu = 0.9) applies the mean.
  const auto none = make_codec("none");
  const auto p0 = encode(*none, random_tensors(1), 0, 0);
  const auto p1 = encode(*none, random_tensors(2), 1, 0);
  w0.push(0, 1, p0, kLr);
  // Pushes of one step must carry the same lr.
  expect_rpc_error([&] { w1.push(0, 1, p1, 2 * kLr); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "same lr schedule");
  EXPECT_EQ(w1.push(0, 2, p1, kLr).applied_steps, 1u);
  Tensors x = m.initial;
  sgd_reference_step(x, {decode(p0), decode(p1)}, false);  // first step: m = a, x -= m
  EXPECT_EQ(w0.pull(1).params, x);
}

TEST(ParameterServer, OversizeMessageIsResourceExhausted) {
  ServerOptions o = server_options(1);
  o.max_message_bytes = 4096;
  ParameterServer server(o);
  PsClient client(server.address(), kToken, 0);
  client.register_worker(1, model());
  const auto none = make_codec("none");
  auto big = encode(*none, random_tensors(5), 0, 0);
  big[0].resize(64 * 1024);
  expect_rpc_error([&] { client.push(0, 1, big, kLr); }, grpc::StatusCode::RESOURCE_EXHAUSTED,
                   "Push");
  // The same connection keeps working for messages within the bound.
  EXPECT_EQ(client.push(0, 2, encode(*none, random_tensors(5), 0, 0), kLr).applied_steps, 1u);
  EXPECT_EQ(client.pull(1).applied_steps, 1u);
}

TEST(ParameterServer, RejectsBadOptions) {
  ServerOptions o = server_options(1);
  o.token = "";
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
  o = server_options(1);
  o.optimizer.momentum = 1.5f;
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
  o = server_options(1);
  o.initial.pop_back();
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
}

// Async, K = 0: each push is applied on arrival as 1/W of a mean step, a pull answers at once,
// a push computed on an older version is ABORTED naming the staleness and the bound, and the
// worker that pulls again gets its next push applied.
TEST(ParameterServer, AsyncAppliesEachPushAndRefusesStaleOnes) {
  ServerOptions o = server_options(2);
  o.async = true;
  o.max_staleness = 0;
  ParameterServer server(o);
  const auto none = make_codec("none");
  PsClient w0(server.address(), kToken, 0);
  PsClient w1(server.address(), kToken, 1);
  EXPECT_TRUE(w0.register_worker(2, model(), RegisterModel{}).async);
  const auto p0 = encode(*none, random_tensors(1), 0, 0);
  const auto p1 = encode(*none, random_tensors(2), 1, 0);

  EXPECT_EQ(w0.push(0, 1, p0, kLr, /*model_version=*/0).applied_steps, 1u);
  // A worker's step counts its own pushes: one joining after others pushed starts at 0.
  EXPECT_EQ(w1.register_worker(2, model(), RegisterModel{}).step, 0u);
  EXPECT_TRUE(w0.push(0, 1, p0, kLr, 0).duplicate);  // a retry: counted once
  expect_rpc_error([&] { w1.push(0, 1, p1, kLr, 0); }, grpc::StatusCode::ABORTED,
                   "staleness 1 exceeds --max-staleness 0");
  // No waiting for the other worker, whatever step is asked.
  EXPECT_EQ(w1.pull(7).applied_steps, 1u);
  EXPECT_EQ(w1.push(1, 2, p1, kLr, 1).applied_steps, 2u);
  // Restarted, it continues after its last counted push.
  EXPECT_EQ(PsClient(server.address(), kToken, 1).register_worker(2, model(), RegisterModel{}).step,
            2u);

  Tensors x = o.initial;
  for (const Tensors& d : {decode(p0), decode(p1)}) {
    for (size_t k = 0; k < x.size(); ++k) {
      for (size_t j = 0; j < x[k].size(); ++j) x[k][j] -= d[k][j] / 2.0f;
    }
  }
  const Tensors got = server.parameters();
  for (size_t k = 0; k < x.size(); ++k) {
    EXPECT_THAT(got[k], testing::Pointwise(testing::FloatNear(1e-6f), x[k])) << "key " << k;
  }
  // A push that does not say its version, and a majority-vote codec: refused.
  expect_rpc_error([&] { w0.push(1, 3, p0, kLr); }, grpc::StatusCode::INVALID_ARGUMENT,
                   "model_version");
  const auto sign = make_codec("sign");
  expect_rpc_error([&] { w0.push(1, 3, encode(*sign, random_tensors(3), 0, 1), kLr, 2); },
                   grpc::StatusCode::INVALID_ARGUMENT, "majority vote");

  const ServerStats s = w0.status();
  EXPECT_EQ(s.applied_steps, 2u);
  EXPECT_EQ(s.async_applied, 2u);
  EXPECT_EQ(s.stale_refused, 1u);
  EXPECT_EQ(s.staleness_max, 0u);
  EXPECT_THAT(s.pushes, testing::ElementsAre(1, 1));
  EXPECT_THAT(s.duplicates, testing::ElementsAre(1, 0));
}

TEST(ParameterServer, AsyncRejectsSyncOnlyOptionsAndSyncRejectsAStalenessBound) {
  ServerOptions o = server_options(2);
  o.async = true;
  o.timeout = std::chrono::milliseconds(100);
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
  o = server_options(2);
  o.async = true;
  o.downlink_codec = "qsgd:bits=8";
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
  o = server_options(2);
  o.max_staleness = 4;  // sync mode
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
}

TEST(ParameterServer, PullDeadlineNamesTheServer) {
  ParameterServer server(server_options(2));
  ClientOptions co;
  co.pull_deadline = std::chrono::milliseconds(200);
  PsClient client(server.address(), kToken, 0, co);
  client.register_worker(2, model());
  // Step 1 needs worker 1's push, which never comes.
  expect_rpc_error([&] { client.pull(1); }, grpc::StatusCode::DEADLINE_EXCEEDED, "Pull");
}

}  // namespace
}  // namespace qgrad::ps
