// Training end to end through parameter servers on loopback: real gRPC servers (in this process)
// and worker threads running the worker loop (train/trainer.h) with a PsExchange. Linear models
// on synthetic data keep it quick.
#include "train/ps_training.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "comm/local/local_communicator.h"
#include "ps/server.h"
#include "train/data/data_spec.h"

namespace qgrad {
namespace {

constexpr char kToken[] = "loopback-token";
constexpr const char* kClasses =
    "synthetic:kind=classification,rows=800,test=200,dim=16,classes=4,seed=5";

TrainOptions options(const std::string& codec = "qsgd:bits=4,bucket=16") {
  TrainOptions o;
  o.model = "logistic";
  o.data = kClasses;
  o.lr = 0.05;
  o.batch = 16;
  o.epochs = 2;
  o.seed = 11;
  o.log_every = 4;
  o.optimizer.name = "sgd";
  o.optimizer.momentum = 0.9f;
  o.exchange.codec = codec;
  o.exchange.error_feedback = true;
  // Small keys, so that each server holds several (the model has 68 parameters).
  o.exchange.bucket_bytes = 64;
  return o;
}

struct Cluster {
  std::vector<std::unique_ptr<ps::ParameterServer>> servers;
  std::vector<std::string> addresses;
};

Cluster start_servers(int count, uint32_t workers,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
  Cluster c;
  for (int s = 0; s < count; ++s) {
    ps::ServerOptions so;
    so.token = kToken;
    so.workers = workers;  // no shape: the model is adopted from the first registration
    so.timeout = timeout;
    c.servers.push_back(std::make_unique<ps::ParameterServer>(so));
    c.addresses.push_back(c.servers.back()->address());
  }
  return c;
}

// Runs `workers` worker threads against fresh servers; returns every worker's result.
std::vector<PsTrainResult> run_ps(int servers, uint32_t workers, const TrainOptions& o,
                                  uint64_t resend_every = 0, Cluster* keep = nullptr) {
  Cluster local = start_servers(servers, workers);
  Cluster& cluster = keep != nullptr ? *keep : local;
  if (keep != nullptr) *keep = std::move(local);
  const DataSplit data = load_data(o.data);
  std::vector<PsTrainResult> results(workers);
  std::vector<std::string> errors(workers);
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      try {
        PsTrainOptions p;
        p.servers = cluster.addresses;
        p.token = kToken;
        p.worker_id = w;
        p.workers = workers;
        p.timeout = std::chrono::seconds(30);
        p.resend_every = resend_every;
        results[w] = train_with_ps(p, data, o);
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (uint32_t w = 0; w < workers; ++w) EXPECT_EQ(errors[w], "") << "worker " << w;
  return results;
}

TEST(PsTraining, FourWorkersOneServerTrainAndAgreeBitForBit) {
  const TrainOptions o = options();
  Cluster cluster;
  const auto a = run_ps(1, 4, o, 0, &cluster);
  ASSERT_EQ(a.size(), 4u);
  const uint64_t steps = a[0].train.steps;
  EXPECT_EQ(steps, 2u * 13);  // 800 rows / 4 workers / batch 16, rounded up, 2 epochs
  for (const PsTrainResult& r : a) {
    EXPECT_EQ(r.train.steps, steps);
    EXPECT_EQ(r.train.params_crc, a[0].train.params_crc) << "workers ended apart";
    // Every worker evaluates the whole test split with the same parameters.
    EXPECT_EQ(r.train.final_eval.rows, 200u);
    EXPECT_EQ(r.train.final_eval.accuracy, a[0].train.final_eval.accuracy);
    EXPECT_GT(r.train.bytes_sent, 0u);
    EXPECT_GT(r.train.bytes_received, 0u);
  }
  EXPECT_GT(a[0].train.final_eval.accuracy, 0.6);  // 4 classes: chance is 0.25
  // The server applied every step once per worker; the same seed again gives the same bits.
  const ps::ServerStats s = cluster.servers[0]->stats();
  EXPECT_EQ(s.applied_steps, steps);
  EXPECT_THAT(s.pushes, testing::Each(steps));
  const auto b = run_ps(1, 4, o);
  EXPECT_EQ(b[0].train.params_crc, a[0].train.params_crc);
  EXPECT_EQ(b[0].train.losses, a[0].train.losses);
}

TEST(PsTraining, TwoServersCountEveryPushOnceAlsoWhenResent) {
  const TrainOptions o = options();
  Cluster cluster;
  const auto r = run_ps(2, 4, o, /*resend_every=*/3, &cluster);
  const uint64_t steps = r[0].train.steps;
  ASSERT_GT(steps, 0u);
  EXPECT_GT(r[0].keys, 2u);  // sharded: several keys over the two servers
  for (size_t s = 0; s < 2; ++s) {
    const ps::ServerStats st = cluster.servers[s]->stats();
    EXPECT_EQ(st.applied_steps, steps) << "server " << s;
    EXPECT_EQ(st.rejected, 0u);
    for (uint32_t w = 0; w < 4; ++w) {
      const ps::PsCounters& c = r[w].counters;
      // Nothing lost, nothing twice: each step's push counted once, every resend a duplicate.
      EXPECT_EQ(st.pushes[w], c.pushes[s]) << "server " << s << " worker " << w;
      EXPECT_EQ(st.pushes[w], steps);
      EXPECT_EQ(c.resends[s], steps / 3);
      EXPECT_EQ(st.duplicates[w], c.resends[s]);
      EXPECT_EQ(c.duplicates[s], c.resends[s]);
    }
  }
  for (const PsTrainResult& w : r) EXPECT_EQ(w.train.params_crc, r[0].train.params_crc);
  // Resending changed nothing: the same run without resends ends with the same bits. (One
  // server would not: the keys, hence qsgd's buckets and random streams, are cut differently.)
  const auto plain = run_ps(2, 4, o);
  EXPECT_EQ(plain[0].train.params_crc, r[0].train.params_crc);
}

// Asynchronous servers (ServerOptions::async): `workers` worker threads against one fresh
// server; push_delay[w] slows worker w. Fills `server` with the server's stats at the end.
std::vector<PsTrainResult> run_async(uint32_t workers, const TrainOptions& o,
                                     uint64_t max_staleness, ps::ServerStats& server,
                                     uint64_t resend_every = 0,
                                     std::vector<std::chrono::milliseconds> push_delay = {}) {
  ps::ServerOptions so;
  so.token = kToken;
  so.workers = workers;
  so.async = true;
  so.max_staleness = max_staleness;
  ps::ParameterServer ps_server(so);
  const DataSplit data = load_data(o.data);
  std::vector<PsTrainResult> results(workers);
  std::vector<std::string> errors(workers);
  std::vector<std::thread> threads;
  push_delay.resize(workers, std::chrono::milliseconds(0));
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      try {
        PsTrainOptions p;
        p.servers = {ps_server.address()};
        p.token = kToken;
        p.worker_id = w;
        p.workers = workers;
        p.timeout = std::chrono::seconds(30);
        p.resend_every = resend_every;
        p.push_delay = push_delay[w];
        results[w] = train_with_ps(p, data, o);
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (uint32_t w = 0; w < workers; ++w) EXPECT_EQ(errors[w], "") << "worker " << w;
  server = ps_server.stats();
  return results;
}

// Async with a loose bound: every push applied once (also the resent ones, answered as
// duplicates), W pushes make one mean step, and the model lands near the synchronous one.
TEST(PsTraining, AsyncFourWorkersCountEveryPushOnceAndLandNearSync) {
  const TrainOptions o = options();
  const auto sync = run_ps(1, 4, o);
  ps::ServerStats st;
  const auto r = run_async(4, o, /*max_staleness=*/1000, st, /*resend_every=*/3);
  const uint64_t steps = r[0].train.steps;
  EXPECT_EQ(steps, sync[0].train.steps);  // each worker still runs its own 2 epochs
  EXPECT_EQ(st.rejected, 0u);
  EXPECT_EQ(st.stale_refused, 0u);
  uint64_t sent = 0;
  for (uint32_t w = 0; w < 4; ++w) {
    const ps::PsCounters& c = r[w].counters;
    EXPECT_EQ(r[w].train.steps, steps);
    EXPECT_EQ(st.pushes[w], c.pushes[0]) << "worker " << w;
    EXPECT_EQ(st.pushes[w], steps);
    EXPECT_EQ(c.resends[0], steps / 3);
    EXPECT_EQ(st.duplicates[w], c.resends[0]);
    EXPECT_EQ(c.duplicates[0], c.resends[0]);
    sent += c.pushes[0];
  }
  // One version per applied push: the server's count is the workers' count.
  EXPECT_EQ(st.async_applied, sent);
  EXPECT_EQ(st.applied_steps, sent);
  EXPECT_LE(st.staleness_max, 1000u);
  EXPECT_LE(st.staleness_sum, st.staleness_max * st.async_applied);
  // Measured on this model (seed 11, 2 epochs): sync 0.930, async 0.920; the
  // tolerance leaves room for the arrival order, which async mode does not fix.
  const double acc_sync = sync[0].train.final_eval.accuracy;
  std::printf("async K=1000: accuracy %.3f (worker 0), sync %.3f; staleness max %llu mean %.2f\n",
              r[0].train.final_eval.accuracy, acc_sync,
              static_cast<unsigned long long>(st.staleness_max),
              static_cast<double>(st.staleness_sum) / static_cast<double>(st.async_applied));
  for (const PsTrainResult& w : r) {
    EXPECT_NEAR(w.train.final_eval.accuracy, acc_sync, 0.05);
  }
}

// K = 0 with a deliberately slow worker: its pushes, computed on a model the others moved on
// from, are refused with ABORTED; it pulls, goes on and still gets pushes applied.
TEST(PsTraining, AsyncStalePushesOfASlowWorkerAreRefusedAndItRecovers) {
  TrainOptions o = options();
  o.epochs = 1;
  ps::ServerStats st;
  const auto r = run_async(4, o, /*max_staleness=*/0, st, 0,
                           {std::chrono::milliseconds(2), std::chrono::milliseconds(2),
                            std::chrono::milliseconds(2), std::chrono::milliseconds(40)});
  const uint64_t steps = r[0].train.steps;
  ASSERT_GT(steps, 0u);
  uint64_t counted = 0;
  for (uint32_t w = 0; w < 4; ++w) {
    EXPECT_EQ(r[w].train.steps, steps) << "worker " << w << " did not finish";
    EXPECT_EQ(st.pushes[w], r[w].counters.pushes[0]) << "worker " << w;
    counted += st.pushes[w];
  }
  std::printf(
      "async K=0: %llu applied, %llu refused as stale (slow worker: %llu of %llu "
      "applied); accuracy %.3f\n",
      static_cast<unsigned long long>(counted), static_cast<unsigned long long>(st.stale_refused),
      static_cast<unsigned long long>(st.pushes[3]), static_cast<unsigned long long>(steps),
      r[3].train.final_eval.accuracy);
  EXPECT_GT(st.stale_refused, 0u);
  EXPECT_EQ(st.staleness_max, 0u);  // K = 0: only pushes on the current version are applied
  EXPECT_EQ(st.async_applied, counted);
  EXPECT_EQ(counted + st.stale_refused, 4 * steps);  // every push applied or refused, once
  EXPECT_LT(st.pushes[3], steps);  // the slow worker was refused at least once ...
  EXPECT_GT(st.pushes[3], 0u);     // ... and recovered: later pushes were applied
}

// The sum of the majority vote is exact whatever its order, so Signum with `sign` must give the
// bits of the collective path (threads, majority strategy).
TEST(PsTraining, SignumMajorityVoteMatchesTheCollectivePath) {
  TrainOptions o = options("sign");
  o.optimizer.name = "signum";
  o.optimizer.momentum = 0.9f;
  o.exchange.error_feedback = false;
  o.lr = 0.01;
  const auto ps = run_ps(2, 4, o);
  std::vector<uint32_t> crc(4);
  const DataSplit data = load_data(o.data);
  run_local(4, [&](Communicator& comm) { crc[comm.rank()] = train(comm, data, o).params_crc; });
  EXPECT_EQ(ps[0].train.params_crc, crc[0]);
  EXPECT_GT(ps[0].train.final_eval.accuracy, 0.6);
}

// One worker with codec none: a = c exactly on both paths, so SGD with momentum gives the bits
// of the collective path with one rank.
TEST(PsTraining, OneWorkerMatchesOneRank) {
  TrainOptions o = options("none");
  o.exchange.error_feedback = false;
  const auto ps = run_ps(2, 1, o);
  const DataSplit data = load_data(o.data);
  uint32_t crc = 0;
  run_local(1, [&](Communicator& comm) { crc = train(comm, data, o).params_crc; });
  EXPECT_EQ(ps[0].train.params_crc, crc);
}

TEST(PsTraining, AnotherRunIsRefusedNamingTheField) {
  Cluster cluster = start_servers(1, 2);
  const DataSplit data = load_data(kClasses);
  // Worker 0 registers and waits in its first pull for worker 1, which never comes: it gives up
  // after its deadline.
  std::thread first([&] {
    PsTrainOptions p{cluster.addresses, kToken, 0, 2, std::chrono::milliseconds(1500)};
    EXPECT_THROW(train_with_ps(p, data, options()), CommError);
  });
  // Wait until worker 0's registration gave the server its model.
  for (int i = 0; i < 200 && !cluster.servers[0]->stats().has_model; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  TrainOptions other = options();
  other.seed = 12;
  PsTrainOptions p{cluster.addresses, kToken, 1, 2, std::chrono::seconds(5)};
  // (The loop's set-up reports failures as InvalidArgument with the RpcError's message.)
  try {
    train_with_ps(p, data, other);
    ADD_FAILURE() << "a worker with another seed was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("FAILED_PRECONDITION"));
    EXPECT_THAT(e.what(), testing::HasSubstr("run.seed: worker 1 has '12', the server's run "
                                             "has '11'"));
  }
  TrainOptions momentum = options();
  momentum.optimizer.momentum = 0.5f;
  try {
    train_with_ps(p, data, momentum);
    ADD_FAILURE() << "a worker with another momentum was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("optimizer.momentum: worker 1 sends 0.5"));
  }
  PsTrainOptions bad = p;
  bad.token = "wrong";
  try {
    train_with_ps(bad, data, options());
    ADD_FAILURE() << "a wrong token was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("UNAUTHENTICATED"));
  }
  first.join();
}

// Fault tolerance: a worker that falls silent is left behind after the server's
// timeout, the others finish; the same worker restarted rejoins at the server's step and ends
// with the others' parameters.
TEST(PsTraining, AWorkerThatStopsIsLeftBehindAndARestartedOneRejoins) {
  TrainOptions o = options();
  o.epochs = 20;  // long enough that the restarted worker finds the others still training
  Cluster cluster = start_servers(1, 3, std::chrono::milliseconds(200));
  const DataSplit data = load_data(o.data);
  std::vector<PsTrainResult> results(3);
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  const auto run = [&](uint32_t w, uint64_t stop_after) {
    PsTrainOptions p{cluster.addresses, kToken, w, 3, std::chrono::seconds(30)};
    p.stop_after = stop_after;
    return train_with_ps(p, data, o);
  };
  for (uint32_t w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      try {
        results[w] = run(w, 0);
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  }
  std::string stopped;
  try {
    run(2, 5);  // falls silent after 5 steps, as if killed
  } catch (const CommError& e) {
    stopped = e.what();
  }
  EXPECT_THAT(stopped, testing::HasSubstr("stopped at step 5"));
  // The others go on after the timeout: wait until they are past worker 2's last step.
  for (int i = 0; i < 500 && cluster.servers[0]->stats().applied_steps < 8; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const ps::ServerStats before = cluster.servers[0]->stats();
  EXPECT_GE(before.applied_steps, 8u);
  EXPECT_GE(before.quorum_steps, 1u);
  // Restarted: registers again, starts at the server's step with its model, runs to the end.
  try {
    results[2] = run(2, 0);
  } catch (const std::exception& e) {
    errors[2] = e.what();
  }
  for (std::thread& t : threads) t.join();
  for (uint32_t w = 0; w < 3; ++w) EXPECT_EQ(errors[w], "") << "worker " << w;
  const uint64_t end = results[0].train.steps;
  EXPECT_EQ(results[1].train.steps, end);
  EXPECT_EQ(results[2].train.steps, end);
  EXPECT_GE(results[2].train.resumed_from, before.applied_steps);  // joined, not from 0
  EXPECT_LT(results[2].train.resumed_from, end) << "the others had finished already";
  // All three end with the server's parameters.
  EXPECT_EQ(results[2].train.params_crc, results[0].train.params_crc);
  EXPECT_EQ(results[1].train.params_crc, results[0].train.params_crc);
  EXPECT_GT(results[0].train.final_eval.accuracy, 0.6);
  // Every applied step was pushed by each worker or applied without it: nothing lost, nothing
  // counted twice, and worker 2 missed at least the steps while it was away.
  const ps::ServerStats s = cluster.servers[0]->stats();
  EXPECT_EQ(s.applied_steps, end);
  for (uint32_t w = 0; w < 3; ++w) {
    EXPECT_EQ(s.pushes[w] + s.missed[w], end) << "worker " << w;
  }
  EXPECT_EQ(s.missed[0], 0u);
  EXPECT_GE(s.missed[2], results[2].train.resumed_from - 5);
}

// The server killed in the middle of training and restarted from its checkpoint on the same
// port: the workers retry, register again, go back to the checkpoint's step and finish.
TEST(PsTraining, ServerRestartedFromItsCheckpointResumesTraining) {
  TrainOptions o = options();
  o.epochs = 8;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("qgrad_ps_restart_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ps::ServerOptions so;
  so.token = kToken;
  so.workers = 2;
  so.checkpoint_dir = dir.string();
  so.checkpoint_every = 10;
  auto server = std::make_unique<ps::ParameterServer>(so);
  const std::string address = server->address();
  so.listen = address;  // the restarted one listens where the workers know it
  const DataSplit data = load_data(o.data);
  std::vector<PsTrainResult> results(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      try {
        PsTrainOptions p{{address}, kToken, w, 2, std::chrono::seconds(20)};
        results[w] = train_with_ps(p, data, o);
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  }
  for (int i = 0; i < 1000 && server->stats().applied_steps < 25; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Stopped first, then read: the workers go on pushing until the server stops, so steps applied
  // (and checkpoints written) after an earlier read would put the resumed step past it.
  server->shutdown();  // gone: the workers see UNAVAILABLE
  const uint64_t killed_at = server->stats().applied_steps;
  EXPECT_GE(server->stats().checkpoint_step, 20u);
  server.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  server = std::make_unique<ps::ParameterServer>(so);
  const uint64_t resumed = server->stats().resumed_from;
  EXPECT_GE(resumed, 20u);
  EXPECT_LE(resumed, killed_at);
  for (std::thread& t : threads) t.join();
  for (uint32_t w = 0; w < 2; ++w) EXPECT_EQ(errors[w], "") << "worker " << w;
  const uint64_t end = results[0].train.steps;
  EXPECT_EQ(end, 8u * 25);  // 800 rows / 2 workers / batch 16, 8 epochs
  EXPECT_EQ(results[1].train.steps, end);
  EXPECT_EQ(results[1].train.params_crc, results[0].train.params_crc);
  EXPECT_GT(results[0].train.final_eval.accuracy, 0.6);
  const ps::ServerStats s = server->stats();
  EXPECT_EQ(s.applied_steps, end);
  // The new server counted exactly the steps from the checkpoint on, once per worker.
  EXPECT_THAT(s.pushes, testing::Each(end - resumed));
  server.reset();
  std::filesystem::remove_all(dir);
}

// The downlink codec: pulls carry the server's encoded updates (qsgd 8 bits) instead of fp32
// values; every worker still ends with the same bits (x^ += D(payload) on the same bits), the
// accuracy holds, and the pulls shrink.
TEST(PsTraining, DownlinkCodecShrinksPullsAndKeepsWorkersEqual) {
  TrainOptions o = options();
  o.exchange.bucket_bytes = 4096;  // the whole model in one key per server
  const DataSplit data = load_data(o.data);
  const auto run = [&](const std::string& downlink, std::vector<PsTrainResult>& results) {
    ps::ServerOptions so;
    so.token = kToken;
    so.workers = 3;
    so.downlink_codec = downlink;
    ps::ParameterServer server(so);
    std::vector<std::string> errors(3);
    std::vector<std::thread> threads;
    for (uint32_t w = 0; w < 3; ++w) {
      threads.emplace_back([&, w] {
        try {
          PsTrainOptions p{{server.address()}, kToken, w, 3, std::chrono::seconds(30)};
          results[w] = train_with_ps(p, data, o);
        } catch (const std::exception& e) {
          errors[w] = e.what();
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (uint32_t w = 0; w < 3; ++w) EXPECT_EQ(errors[w], "") << "worker " << w;
  };
  std::vector<PsTrainResult> fp32(3), coded(3);
  run("", fp32);
  run("qsgd:bits=8,bucket=64", coded);
  for (uint32_t w = 0; w < 3; ++w) {
    EXPECT_EQ(coded[w].train.params_crc, coded[0].train.params_crc) << "worker " << w;
  }
  EXPECT_NE(coded[0].train.params_crc, fp32[0].train.params_crc);  // it did change the pulls
  EXPECT_GT(coded[0].train.final_eval.accuracy, 0.6);
  EXPECT_NEAR(coded[0].train.final_eval.accuracy, fp32[0].train.final_eval.accuracy, 0.05);
  // 68 fp32 values against 68 bytes + headers: at least 1.5x fewer bytes pulled.
  EXPECT_LT(1.5 * static_cast<double>(coded[0].train.bytes_received),
            static_cast<double>(fp32[0].train.bytes_received));
  // A majority-vote codec is refused: its signs do not estimate the update.
  ps::ServerOptions bad;
  bad.token = kToken;
  bad.downlink_codec = "sign";
  EXPECT_THROW(ps::ParameterServer{bad}, InvalidArgument);
}

TEST(PsTraining, KeysAreBalancedByBytes) {
  const std::vector<ParamShape> mlp = {
      {"fc1.weight", 200704}, {"fc1.bias", 256}, {"fc2.weight", 2560}, {"fc2.bias", 10}};
  for (size_t servers : {1, 2, 3, 5}) {
    const auto keys = ps::plan_keys(mlp, servers, 1 << 20);
    std::vector<size_t> per_server(servers, 0);
    std::vector<size_t> per_param(mlp.size(), 0);
    for (const ps::PsKey& k : keys) {
      per_server[k.server] += k.size;
      size_t covered = 0;
      for (const ps::KeySlice& s : k.slices) {
        per_param[s.param] += s.size;
        EXPECT_EQ(s.key_offset, covered);
        covered += s.size;
      }
      EXPECT_EQ(covered, k.size);
    }
    const auto [lo, hi] = std::minmax_element(per_server.begin(), per_server.end());
    EXPECT_LE(*hi - *lo, 1u) << servers << " servers";
    for (size_t i = 0; i < mlp.size(); ++i) EXPECT_EQ(per_param[i], mlp[i].size);
  }
  // Reverse order: the first key starts with the last parameter.
  EXPECT_EQ(ps::plan_keys(mlp, 2, 1 << 20)[0].name.rfind("fc2.bias[0:10]", 0), 0u);
  // Keys no larger than asked.
  for (const ps::PsKey& k : ps::plan_keys(mlp, 2, 50000)) EXPECT_LE(k.size, 50000u);
  EXPECT_THROW(ps::plan_keys(std::vector<ParamShape>{{"w", 1}}, 2, 10), InvalidArgument);
}

}  // namespace
}  // namespace qgrad
