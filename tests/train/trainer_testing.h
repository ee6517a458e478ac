// Helpers of the worker-loop tests (trainer_test.cc, run_identity_test.cc): a scratch folder per
// test, the ranks of one run as threads, metrics files read back, and small linear runs.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/ranks.h"
#include "tests/support/temp_dir.h"
#include "train/data/data_spec.h"
#include "train/trainer.h"

namespace qgrad {

using testing_support::TempDir;

inline constexpr const char* kRegression =
    "synthetic:kind=regression,rows=600,test=100,dim=12,seed=3";
inline constexpr const char* kClasses =
    "synthetic:kind=classification,rows=800,test=200,dim=16,classes=4,seed=5";

inline TrainOptions linear_options(const std::string& model = "linear",
                                   const std::string& data = kRegression) {
  TrainOptions o;
  o.model = model;
  o.data = data;
  o.lr = 0.05;
  o.batch = 16;
  o.epochs = 3;
  o.seed = 11;
  o.log_every = 4;
  o.optimizer.name = "sgd";
  o.optimizer.momentum = 0.9f;
  o.exchange.codec = "qsgd:bits=4";
  o.exchange.error_feedback = true;
  return o;
}

// Runs `world` ranks; returns every rank's result.
inline std::vector<TrainResult> run(int world, const DataSplit& data, const TrainOptions& o) {
  std::vector<TrainResult> results(static_cast<size_t>(world));
  run_ranks(world, [&](Communicator& comm) {
    results[static_cast<size_t>(comm.rank())] = train(comm, data, o);
  });
  return results;
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// A record without its wall-clock fields (those differ between runs by nature).
inline nlohmann::json without_timings(nlohmann::json j) {
  for (const char* k : {"seconds", "samples_per_second", "compute_s", "encode_s", "exchange_s",
                        "decode_s", "update_s", "wait_s", "step_seconds"}) {
    j.erase(k);
  }
  return j;
}

}  // namespace qgrad
