// The worker loop over the local backend: determinism, resume bit for bit, checkpoints of other
// runs, NaN, metrics files. Linear models on synthetic data keep it fast; the MLP runs where
// LibTorch is built in.
#include "train/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/train/trainer_testing.h"

namespace qgrad {
namespace {

namespace fs = std::filesystem;

TEST(Trainer, SameSeedGivesTheSameRunAndAllRanksEndEqual) {
  const DataSplit data = load_data(kRegression);
  const TrainOptions o = linear_options();
  const auto a = run(4, data, o);
  const auto b = run(4, data, o);
  ASSERT_EQ(a[0].steps, 3u * (600 / 4 + 15) / 16);  // 150 rows per rank: 10 batches per epoch
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(a[r].losses, b[r].losses) << "rank " << r;
    EXPECT_EQ(a[r].params_crc, a[0].params_crc) << "rank " << r << " ends with other parameters";
    EXPECT_EQ(a[r].params_crc, b[r].params_crc);
  }
  // It learned: least squares on noise 0.1 data ends far below where it started.
  EXPECT_LT(a[0].final_eval.loss, 0.1 * a[0].losses.front());
  // Another seed is another run (the comparison above can fail).
  TrainOptions other = o;
  other.seed = 12;
  EXPECT_NE(run(4, data, other)[0].losses, a[0].losses);
}

TEST(Trainer, BytesAndRatiosAreCounted) {
  const char* wide = "synthetic:kind=classification,rows=400,test=0,dim=256,classes=4,seed=9";
  const DataSplit data = load_data(wide);
  TrainOptions o = linear_options("logistic", wide);
  o.exchange.codec = "none";
  o.exchange.error_feedback = false;
  const auto plain = run(4, data, o)[0];
  // `none` sends what the fp32 ring sends: the 0-byte NaN flags add nothing.
  EXPECT_GT(plain.bytes_sent, 0u);
  EXPECT_EQ(plain.bytes_sent, plain.raw_bytes);
  EXPECT_FALSE(plain.eval_on_test);  // test=0: evaluated on the training set
  o.exchange.codec = "sign";
  o.optimizer.name = "signum";
  o.optimizer.momentum = 0.9f;
  o.lr = 0.002;
  const auto sign = run(4, data, o)[0];
  EXPECT_EQ(sign.raw_bytes, plain.raw_bytes);
  // 1028 parameters: 1 bit each way plus headers, against 2 * 3/4 * 32 bits for the ring.
  EXPECT_LT(sign.bytes_sent * 8, plain.bytes_sent);
}

// Stop after step 17 (checkpoints every 5 steps and at the stop), then resume from step 15 as if
// the run had crashed before its step-17 checkpoint (LATEST set back to 15, a record cut short at
// the end of the metrics), and run to the end: the same parameters, losses and metrics records as
// one uninterrupted run with the same flags.
void expect_resume_is_seamless(TrainOptions o, int world, const std::string& data_spec) {
  const DataSplit data = load_data(data_spec);
  TempDir tmp;
  o.data = data_spec;
  o.checkpoint_every = 5;

  TrainOptions whole = o;
  whole.checkpoint_dir = tmp / "whole";
  whole.metrics_path = tmp / "whole.jsonl";
  const auto a = run(world, data, whole);

  TrainOptions first = o;
  first.checkpoint_dir = tmp / "split";
  first.metrics_path = tmp / "split.jsonl";
  first.max_steps = 17;
  const auto b1 = run(world, data, first);
  ASSERT_EQ(b1[0].steps, 17u);
  ASSERT_TRUE(fs::exists(first.checkpoint_dir + "/step-15"));
  { std::ofstream(first.checkpoint_dir + "/LATEST") << "15\n"; }
  { std::ofstream(first.metrics_path, std::ios::app) << "{\"step\": 18, \"lo"; }
  TrainOptions second = first;
  second.max_steps = 0;
  second.resume = true;
  const auto b2 = run(world, data, second);
  EXPECT_EQ(b2[0].resumed_from, 15u);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(b2[r].params_crc, a[r].params_crc) << "rank " << r;
    std::vector<double> joined(b1[r].losses.begin(), b1[r].losses.begin() + 15);
    joined.insert(joined.end(), b2[r].losses.begin(), b2[r].losses.end());
    EXPECT_EQ(joined, a[r].losses) << "rank " << r;
    EXPECT_EQ(b2[r].bytes_sent, a[r].bytes_sent);
  }
  EXPECT_EQ(b2[0].final_eval.accuracy, a[0].final_eval.accuracy);
  EXPECT_EQ(b2[0].final_eval.loss, a[0].final_eval.loss);

  const auto ma = read_jsonl(whole.metrics_path);
  const auto mb = read_jsonl(first.metrics_path);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(without_timings(ma[i]), without_timings(mb[i])) << "record " << i;
  }
  EXPECT_TRUE(mb.back().value("summary", false));
}

TEST(Trainer, ResumeContinuesBitForBitWithErrorFeedbackAndMomentum) {
  expect_resume_is_seamless(linear_options(), 3, kRegression);
}

TEST(Trainer, ResumeContinuesBitForBitWithSignumMajorityVote) {
  TrainOptions o = linear_options("logistic", kClasses);
  o.optimizer.name = "signum";
  o.optimizer.momentum = 0.9f;
  o.exchange.codec = "sign";
  o.exchange.error_feedback = false;
  o.lr = 0.01;
  expect_resume_is_seamless(o, 4, kClasses);
}

TEST(Trainer, ResumeContinuesBitForBitWithZipmlDataSampling) {
  TrainOptions o = linear_options();
  o.model_options.data_bits = 2;
  o.model_options.double_sampling = true;
  o.optimizer.name = "adam";
  o.optimizer.momentum = 0;
  o.lr = 0.01;
  expect_resume_is_seamless(o, 2, kRegression);
}

TEST(Trainer, RefusesACheckpointOfAnotherRun) {
  const DataSplit data = load_data(kClasses);
  TempDir tmp;
  TrainOptions o = linear_options("logistic", kClasses);
  o.checkpoint_dir = tmp / "ck";
  o.epochs = 1;
  run(2, data, o);

  TrainOptions other = o;
  other.resume = true;
  other.epochs = 2;
  try {
    other.exchange.codec = "int8";
    run(2, data, other);
    FAIL() << "resumed from a checkpoint written with another codec";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("codec"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("another run"), std::string::npos) << e.what();
  }
  other.exchange.codec = o.exchange.codec;
  try {
    run(3, data, other);
    FAIL() << "resumed with another world size";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("world = '2'"), std::string::npos) << e.what();
  }
}

TEST(Trainer, RefusesACheckpointOfAnotherModel) {
  const char* binary = "synthetic:kind=classification,rows=400,test=100,dim=8,classes=2,seed=2";
  const DataSplit data = load_data(binary);
  TempDir tmp;
  TrainOptions o = linear_options("logistic", binary);
  o.checkpoint_dir = tmp / "ck";
  o.epochs = 1;
  run(2, data, o);
  TrainOptions other = o;
  other.model = "svm";
  other.resume = true;
  other.epochs = 2;
  try {
    run(2, data, other);
    FAIL() << "an svm resumed from a logistic regression's checkpoint";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("model = 'logistic'"), std::string::npos) << e.what();
  }
  // The same flags resume fine.
  other.model = "logistic";
  EXPECT_EQ(run(2, data, other)[0].resumed_from, run(2, data, o)[0].steps);
}

TEST(Trainer, ResumeWithoutACheckpointSaysSo) {
  const DataSplit data = load_data(kRegression);
  TempDir tmp;
  TrainOptions o = linear_options();
  o.checkpoint_dir = tmp / "empty";
  o.resume = true;
  try {
    run(2, data, o);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint"), std::string::npos) << e.what();
  }
}

TEST(Trainer, DivergenceIsAClearErrorAndLeavesCompleteMetrics) {
  const DataSplit data = load_data(kRegression);
  TempDir tmp;
  TrainOptions o = linear_options();
  o.exchange.codec = "none";
  o.exchange.error_feedback = false;
  o.lr = 50;  // least squares with lr * ||a||^2 >> 2 diverges to Inf, then NaN
  o.metrics_path = tmp / "m.jsonl";
  try {
    run(4, data, o);
    FAIL() << "a diverging run finished";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("finite"), std::string::npos) << what;
    EXPECT_NE(what.find("skip-step"), std::string::npos) << what;
  }
  for (const auto& j : read_jsonl(o.metrics_path)) EXPECT_FALSE(j.contains("summary"));

  // With --nan skip-step the run goes on and counts what it skipped.
  o.exchange.nan_policy = NanPolicy::kSkipStep;
  o.metrics_path.clear();
  const auto r = run(4, data, o);
  EXPECT_GT(r[0].skipped_steps, 0u);
}

TEST(Trainer, MetricsHaveTheDesignFieldsAndASummary) {
  const DataSplit data = load_data(kClasses);
  TempDir tmp;
  TrainOptions o = linear_options("logistic", kClasses);
  o.metrics_path = tmp / "m.jsonl";
  o.eval_every = 10;
  std::ostringstream progress;
  o.progress = &progress;
  const auto r = run(4, data, o);
  const auto lines = read_jsonl(o.metrics_path);
  ASSERT_GE(lines.size(), 2u);
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    for (const char* k :
         {"step", "epoch", "rank", "world", "codec", "loss", "bytes_sent", "bytes_received",
          "raw_bytes", "compute_s", "encode_s", "exchange_s", "decode_s", "update_s", "seconds"}) {
      EXPECT_TRUE(lines[i].contains(k)) << k << " missing in record " << i;
    }
    EXPECT_EQ(lines[i]["world"], 4);
    if (lines[i]["step"].get<uint64_t>() % 10 == 0) {
      EXPECT_TRUE(lines[i].contains("accuracy"));
    }
  }
  const auto& s = lines.back();
  EXPECT_TRUE(s["summary"].get<bool>());
  EXPECT_EQ(s["test_accuracy"].get<double>(), r[0].final_eval.accuracy);
  EXPECT_EQ(s["bytes_sent"].get<uint64_t>(), r[0].bytes_sent);
  EXPECT_EQ(s["steps"].get<uint64_t>(), r[0].steps);
  EXPECT_GT(s["seconds"].get<double>(), 0);
  // Four classes of well separated Gaussians: far above chance (25%).
  EXPECT_GT(r[0].final_eval.accuracy, 0.6);
  // Rank 0's progress says what it is doing.
  EXPECT_NE(progress.str().find("epoch 3/3"), std::string::npos) << progress.str();
  EXPECT_NE(progress.str().find("done:"), std::string::npos) << progress.str();

  // One file per rank with {rank}.
  o.metrics_path = tmp / "r{rank}.jsonl";
  o.progress = nullptr;
  run(2, data, o);
  EXPECT_TRUE(fs::exists(tmp / "r0.jsonl"));
  EXPECT_TRUE(fs::exists(tmp / "r1.jsonl"));
  EXPECT_EQ(read_jsonl(tmp / "r1.jsonl").front()["rank"], 1);
}

TEST(Trainer, BadOptionsAreNamed) {
  const DataSplit data = load_data(kRegression);
  TrainOptions o = linear_options();
  o.batch = 0;
  EXPECT_THROW(run(1, data, o), InvalidArgument);
  o = linear_options();
  o.adversarial = 5;
  try {
    run(4, data, o);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--adversarial"), std::string::npos);
  }
  o = linear_options();
  o.model = "transformer";
  try {
    run(2, data, o);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("valid: linear"), std::string::npos) << e.what();
  }
  o = linear_options();
  o.model = "svm";  // regression targets: the model refuses the data, on every rank
  EXPECT_THROW(run(2, data, o), InvalidArgument);
}

TEST(Trainer, OneRankWorksAndMoreRanksThanRowsIsRefused) {
  const DataSplit data = load_data("synthetic:kind=regression,rows=3,test=2,dim=4,seed=1");
  TrainOptions o = linear_options();
  o.batch = 2;
  EXPECT_EQ(run(1, data, o)[0].steps, 3u * 2u);
  EXPECT_EQ(run(3, data, o)[0].steps, 3u);
  EXPECT_THROW(run(4, data, o), InvalidArgument);
}

TEST(Trainer, MlpOnSyntheticClassesLearnsWithOverlap) {
  if (!have_torch_models()) GTEST_SKIP() << "built without LibTorch";
  const DataSplit data = load_data(kClasses);
  TrainOptions o = linear_options("mlp", kClasses);
  o.model_options.hidden = {32};
  o.lr = 0.05;
  o.exchange.bucket_bytes = 1024;  // several buckets, exchanged while backward runs
  const auto a = run(4, data, o);
  const auto b = run(4, data, o);
  EXPECT_EQ(a[0].params_crc, b[0].params_crc);
  EXPECT_EQ(a[3].params_crc, a[0].params_crc);
  EXPECT_GT(a[0].final_eval.accuracy, 0.6);
}

}  // namespace
}  // namespace qgrad
