// The run-identity table (train/run_identity.h) and the training checkpoint's formats
// (train/train_checkpoint.h): --resume refuses a change of every field that must match, naming
// it with both values; accepts more epochs and another --max-steps; the servers' run fields are
// the list they always were; a checkpoint of the first format (scalars as bit-cast integers,
// the old byte-counter names, fewer run fields) still resumes bit for bit.
#include "train/run_identity.h"

#include <gtest/gtest.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/checkpoint.h"
#include "core/error.h"
#include "tests/train/trainer_testing.h"
#include "train/train_checkpoint.h"

namespace qgrad {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBinary =
    "synthetic:kind=classification,rows=400,test=100,dim=8,classes=2,seed=2";

// The bases a field's change is tried on: what the field applies to.
enum class Base { kSgd, kAdam, kZipml };

TrainOptions base_options(Base b) {
  TrainOptions o = linear_options("logistic", kBinary);
  o.epochs = 1;
  if (b == Base::kAdam) {
    o.optimizer.name = "adam";
    o.optimizer.momentum = 0;
    o.lr = 0.01;
  }
  if (b == Base::kZipml) o.model_options.data_bits = 2;
  return o;
}

// A change of one field: which base, and how (the world size may change too).
struct Change {
  Base base = Base::kSgd;
  std::function<void(TrainOptions&, int& world)> apply;
};

// One entry per on_resume field of the table, but "rank" (tested by swapping the ranks' files)
// and "strategy" (its other value depends on what `auto` resolved to; tested below).
std::map<std::string, Change> changes() {
  using O = TrainOptions&;
  return {
      {"model", {Base::kSgd, [](O o, int&) { o.model = "svm"; }}},
      {"data", {Base::kSgd, [](O o, int&) { o.data = std::string(kBinary) + ",noise=2"; }}},
      {"hidden", {Base::kSgd, [](O o, int&) { o.model_options.hidden = {32}; }}},
      {"channels", {Base::kSgd, [](O o, int&) { o.model_options.channels = {8}; }}},
      {"data_bits", {Base::kSgd, [](O o, int&) { o.model_options.data_bits = 2; }}},
      {"double_sampling",
       {Base::kZipml, [](O o, int&) { o.model_options.double_sampling = true; }}},
      {"codec", {Base::kSgd, [](O o, int&) { o.exchange.codec = "int8"; }}},
      {"error_feedback", {Base::kSgd, [](O o, int&) { o.exchange.error_feedback = false; }}},
      {"bucket_bytes", {Base::kSgd, [](O o, int&) { o.exchange.bucket_bytes = 1 << 16; }}},
      {"warmup_steps", {Base::kSgd, [](O o, int&) { o.exchange.warmup_steps = 3; }}},
      {"min_compress_bytes", {Base::kSgd, [](O o, int&) { o.exchange.min_compress_bytes = 1024; }}},
      {"optimizer",
       {Base::kSgd,
        [](O o, int&) {
          o.optimizer.name = "adam";
          o.optimizer.momentum = 0;
        }}},
      {"momentum", {Base::kSgd, [](O o, int&) { o.optimizer.momentum = 0.5f; }}},
      {"nesterov", {Base::kSgd, [](O o, int&) { o.optimizer.nesterov = true; }}},
      {"worker_momentum", {Base::kSgd, [](O o, int&) { o.optimizer.worker_momentum = true; }}},
      {"weight_decay", {Base::kSgd, [](O o, int&) { o.optimizer.weight_decay = 1e-4f; }}},
      {"beta1", {Base::kAdam, [](O o, int&) { o.optimizer.beta1 = 0.8f; }}},
      {"beta2", {Base::kAdam, [](O o, int&) { o.optimizer.beta2 = 0.99f; }}},
      {"eps", {Base::kAdam, [](O o, int&) { o.optimizer.eps = 1e-6f; }}},
      {"lr", {Base::kSgd, [](O o, int&) { o.lr = 0.02; }}},
      {"lr_schedule", {Base::kSgd, [](O o, int&) { o.schedule = parse_lr_schedule("cosine"); }}},
      {"world", {Base::kSgd, [](O, int& world) { world = 3; }}},
      {"batch", {Base::kSgd, [](O o, int&) { o.batch = 8; }}},
      {"seed", {Base::kSgd, [](O o, int&) { o.seed = 12; }}},
      {"adversarial", {Base::kSgd, [](O o, int&) { o.adversarial = 1; }}},
  };
}

// Resumes `o` on `world` ranks and returns the error (fails the test when it resumed).
std::string refusal(const DataSplit& data, const TrainOptions& o, int world) {
  try {
    run(world, data, o);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "resumed";
  return "";
}

TEST(RunIdentity, ResumeRefusesAChangeOfEveryFieldThatMustMatch) {
  const DataSplit data = load_data(kBinary);
  TempDir tmp;
  std::map<Base, TrainOptions> bases;
  for (const Base b : {Base::kSgd, Base::kAdam, Base::kZipml}) {
    TrainOptions o = base_options(b);
    o.checkpoint_dir = tmp / ("ck" + std::to_string(static_cast<int>(b)));
    run(2, data, o);
    o.resume = true;
    bases[b] = o;
  }
  const auto table = changes();
  std::set<std::string> tried;
  for (const RunField& f : run_identity_fields()) {
    if (!f.on_resume || std::string(f.name) == "rank" || std::string(f.name) == "strategy") {
      continue;
    }
    SCOPED_TRACE(f.name);
    const auto it = table.find(f.name);
    ASSERT_NE(it, table.end()) << "no change to try for the new field '" << f.name
                               << "': add one to changes()";
    TrainOptions o = bases.at(it->second.base);
    int world = 2;
    it->second.apply(o, world);
    const std::string error = refusal(data, o, world);
    EXPECT_NE(error.find("belongs to another run"), std::string::npos) << error;
    EXPECT_NE(error.find(std::string("written with ") + f.name + " = '"), std::string::npos)
        << error;
    tried.insert(f.name);
  }
  EXPECT_EQ(tried.size(), table.size()) << "changes() names a field that is not on_resume";

  // The strategy: the other of allgather and scatter-reduce than `auto` chose.
  TrainOptions o = bases.at(Base::kSgd);
  const Checkpoint ck = Checkpoint::load(o.checkpoint_dir + "/step-13/rank-0.qgck");
  const std::string chosen = ck.text("run/strategy");
  o.exchange.strategy = parse_strategy(chosen == "allgather" ? "scatter-reduce" : "allgather");
  const std::string error = refusal(data, o, 2);
  EXPECT_NE(error.find("strategy = '" + chosen + "'"), std::string::npos) << error;

  // The rank: each rank's file holds its own error memories; swapped files are refused.
  const std::string dir = bases.at(Base::kSgd).checkpoint_dir + "/step-13/";
  fs::rename(dir + "rank-0.qgck", dir + "swap");
  fs::rename(dir + "rank-1.qgck", dir + "rank-0.qgck");
  fs::rename(dir + "swap", dir + "rank-1.qgck");
  const std::string swapped = refusal(data, bases.at(Base::kSgd), 2);
  EXPECT_NE(swapped.find("rank = '1', this run has '0'"), std::string::npos) << swapped;
}

TEST(RunIdentity, ResumeAcceptsMoreEpochsAndAnotherMaxSteps) {
  const DataSplit data = load_data(kBinary);
  TempDir tmp;
  TrainOptions o = base_options(Base::kSgd);
  o.checkpoint_dir = tmp / "ck";
  o.max_steps = 5;
  o.checkpoint_every = 5;
  EXPECT_EQ(run(2, data, o)[0].steps, 5u);
  o.resume = true;
  o.max_steps = 9;
  EXPECT_EQ(run(2, data, o)[0].resumed_from, 5u);
  o.max_steps = 0;
  o.epochs = 2;
  const auto r = run(2, data, o);
  EXPECT_EQ(r[0].resumed_from, 9u);
  EXPECT_EQ(r[0].steps, 26u);  // 200 rows per rank: 13 batches per epoch
}

// The servers keep the run fields of their first worker in their checkpoints and compare later
// workers key by key: the list must stay what it was.
TEST(RunIdentity, RunFieldsAreTheServersList) {
  TrainOptions o = linear_options("mlp", kClasses);
  o.model_options.hidden = {64, 32};
  o.exchange.warmup_steps = 7;
  o.max_steps = 100;
  const std::vector<std::pair<std::string, std::string>> expected = {{"model", "mlp"},
                                                                     {"data", kClasses},
                                                                     {"hidden", "64,32"},
                                                                     {"channels", "16,32"},
                                                                     {"data_bits", "0"},
                                                                     {"double_sampling", "0"},
                                                                     {"codec", "qsgd:bits=4"},
                                                                     {"error_feedback", "1"},
                                                                     {"bucket_bytes", "4194304"},
                                                                     {"warmup_steps", "7"},
                                                                     {"min_compress_bytes", "0"},
                                                                     {"optimizer", "sgd"},
                                                                     {"lr", "0.050000000"},
                                                                     {"lr_schedule", "constant"},
                                                                     {"world", "4"},
                                                                     {"batch", "16"},
                                                                     {"epochs", "3"},
                                                                     {"max_steps", "100"},
                                                                     {"seed", "11"},
                                                                     {"adversarial", "0"}};
  EXPECT_EQ(run_fields(o, 4), expected);
}

// Rewrites a format-2 checkpoint file in format 1, as qgrad wrote it before the format marker:
// run fields of format 1 only, "progress/raw_bytes" holding the dense bytes and
// "progress/fp32_bytes_sent" the raw ones, doubles as bit-cast integers.
void rewrite_in_format_1(const std::string& path) {
  const Checkpoint now = Checkpoint::load(path);
  ASSERT_EQ(now.integer("progress/format"), 2);
  Checkpoint old;
  const auto bits = [](double v) { return std::bit_cast<int64_t>(v); };
  for (const RunField& f : run_identity_fields()) {
    const std::string key = std::string("run/") + f.name;
    if (!f.on_resume || f.since > 1) {
      EXPECT_EQ(f.since > 1 && f.on_resume, now.has(key)) << key;
      continue;
    }
    if (f.stored == RunField::Stored::kInteger) {
      old.set_integer(key, now.integer(key));
    } else {
      old.set_text(key, now.text(key));
    }
  }
  for (const std::string& name : now.names()) {
    if (name.rfind("model/", 0) == 0 || name.rfind("state/", 0) == 0) {
      old.set_buffer(name, now.buffer(name));
    } else if (name.rfind("scalar/", 0) == 0) {
      old.set_integer(name, bits(now.real(name)));
    }
  }
  for (const char* k : {"step", "skipped", "bytes_sent", "bytes_received", "data_step"}) {
    old.set_integer(std::string("progress/") + k, now.integer(std::string("progress/") + k));
  }
  old.set_integer("progress/raw_bytes", now.integer("progress/dense_bytes"));
  old.set_integer("progress/fp32_bytes_sent", now.integer("progress/raw_bytes"));
  old.set_integer("progress/elapsed_bits", bits(now.real("progress/elapsed")));
  old.save(path);
}

TEST(RunIdentity, FirstFormatCheckpointResumesBitForBit) {
  const DataSplit data = load_data(kRegression);
  TempDir tmp;
  // Adam: a scalar (its step count) in the state; ZipML: the model's data step; EF: memories.
  TrainOptions o = linear_options();
  o.model_options.data_bits = 2;
  o.optimizer.name = "adam";
  o.optimizer.momentum = 0;
  o.lr = 0.01;
  o.checkpoint_every = 5;
  TrainOptions whole = o;
  whole.checkpoint_dir = tmp / "whole";
  whole.metrics_path = tmp / "whole.jsonl";
  const auto a = run(2, data, whole);

  TrainOptions first = o;
  first.checkpoint_dir = tmp / "split";
  first.metrics_path = tmp / "split.jsonl";
  first.max_steps = 17;  // and back to 15, as in a crash before the checkpoint of step 17
  run(2, data, first);
  { std::ofstream(first.checkpoint_dir + "/LATEST") << "15\n"; }
  for (const char* r : {"rank-0.qgck", "rank-1.qgck"}) {
    rewrite_in_format_1(first.checkpoint_dir + "/step-15/" + r);
  }
  const Checkpoint old = Checkpoint::load(first.checkpoint_dir + "/step-15/rank-0.qgck");
  ASSERT_FALSE(old.has("progress/format"));
  ASSERT_TRUE(old.has("scalar/optimizer/adam/step"));
  ASSERT_FALSE(old.has("run/warmup_steps"));

  // The fields format 1 records are checked...
  TrainOptions second = first;
  second.max_steps = 0;
  second.resume = true;
  second.seed = 12;
  try {
    run(2, data, second);
    ADD_FAILURE() << "resumed a format-1 checkpoint with another seed";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("seed = '11', this run has '12'"), std::string::npos)
        << e.what();
  }
  // ... and with the same flags it continues bit for bit.
  second.seed = o.seed;
  const auto b = run(2, data, second);
  EXPECT_EQ(b[0].resumed_from, 15u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(b[r].params_crc, a[r].params_crc) << "rank " << r;
    EXPECT_EQ(b[r].bytes_sent, a[r].bytes_sent);
    EXPECT_EQ(b[r].raw_bytes, a[r].raw_bytes);
    EXPECT_EQ(b[r].dense_bytes, a[r].dense_bytes);
    EXPECT_EQ(std::vector<double>(a[r].losses.begin() + 15, a[r].losses.end()), b[r].losses);
  }
  const auto ma = read_jsonl(whole.metrics_path);
  const auto mb = read_jsonl(first.metrics_path);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(without_timings(ma[i]), without_timings(mb[i])) << "record " << i;
  }
  // Its next checkpoints are format 2.
  EXPECT_EQ(Checkpoint::load(first.checkpoint_dir + "/step-" + std::to_string(a[0].steps) +
                             "/rank-0.qgck")
                .integer("progress/format"),
            kTrainCheckpointFormat);
}

TEST(RunIdentity, ACheckpointOfANewerFormatIsRefused) {
  const DataSplit data = load_data(kBinary);
  TempDir tmp;
  TrainOptions o = base_options(Base::kSgd);
  o.checkpoint_dir = tmp / "ck";
  run(2, data, o);
  for (const char* r : {"rank-0.qgck", "rank-1.qgck"}) {
    const std::string path = o.checkpoint_dir + "/step-13/" + r;
    Checkpoint ck = Checkpoint::load(path);
    ck.set_integer("progress/format", kTrainCheckpointFormat + 1);
    ck.save(path);
  }
  o.resume = true;
  const std::string error = refusal(data, o, 2);
  EXPECT_NE(error.find("has format 3"), std::string::npos) << error;
}

}  // namespace
}  // namespace qgrad
