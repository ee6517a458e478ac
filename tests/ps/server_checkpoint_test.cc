// Server checkpoints without a server: a written checkpoint resumes to the state it was written
// from, optimizer scalars are stored as exact reals, and a checkpoint of an earlier server (the
// scalars as hex-float text) resumes to the same state as the real form.
#include "ps/server_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "tests/ps/ps_parts_testing.h"
#include "tests/support/temp_dir.h"

namespace qgrad::ps {
namespace {

using namespace testing_parts;

using testing_support::TempDir;

OptimizerOptions adam() {
  OptimizerOptions o;
  o.name = "adam";
  o.weight_decay = 0.01f;
  return o;
}

// A server state worth saving: Adam after three steps (moments and a step count), a replica
// apart from the parameters, run fields.
struct Saved {
  ServerModel model;
  Downlink downlink{""};
  AdoptedRun run;
  uint64_t applied = 3;
  Tensors initial = random_tensors(21);

  Saved() {
    adopt_model(model, shape(), initial, adam(), "worker 0");
    downlink.reset(model.params);
    for (uint32_t step = 0; step < applied; ++step) {
      model.optimizer->begin_update();
      const Tensors a = random_tensors(22 + step, 0.1f);
      for (size_t k = 0; k < a.size(); ++k)
        model.optimizer->update(k, model.params[k], a[k], 0.01f);
    }
    run.adopted = true;
    run.fields = {{"model", "mlp"}, {"seed", "7"}};
    run.source = "worker 0";
  }
};

// What servers before the exact real kind wrote: the same entries, the scalars as "%a" text.
Checkpoint legacy_checkpoint(const Saved& s, uint32_t workers) {
  Checkpoint c;
  c.set_integer("ps/format", 1);
  c.set_integer("ps/applied_steps", static_cast<int64_t>(s.applied));
  c.set_integer("ps/workers", workers);
  c.set_integer("ps/keys", static_cast<int64_t>(s.model.shape.size()));
  c.set_integer("ps/initial_crc", s.model.initial_crc);
  for (size_t k = 0; k < s.model.shape.size(); ++k) {
    c.set_text("ps/key/" + std::to_string(k) + "/name", s.model.shape[k].name);
    c.set_buffer("ps/key/" + std::to_string(k) + "/values", s.model.params[k]);
    c.set_buffer("ps/key/" + std::to_string(k) + "/replica", s.downlink.replica()[k]);
  }
  const OptimizerOptions& o = s.model.optimizer_options;
  c.set_text("ps/optimizer/name", o.name);
  c.set_integer("ps/optimizer/nesterov", o.nesterov);
  c.set_integer("ps/optimizer/worker_momentum", o.worker_momentum);
  const float floats[] = {o.momentum, o.weight_decay, o.beta1, o.beta2, o.eps};
  c.set_buffer("ps/optimizer/floats", floats);
  const StateDict state = s.model.optimizer->export_state();
  for (const auto& [name, values] : state.buffers) c.set_buffer("ps/state/" + name, values);
  for (const auto& [name, value] : state.scalars) {
    char text[64];
    std::snprintf(text, sizeof text, "%a", value);
    c.set_text("ps/scalar/" + name, text);
  }
  c.set_integer("ps/run/fields", static_cast<int64_t>(s.run.fields.size()));
  for (size_t i = 0; i < s.run.fields.size(); ++i) {
    c.set_text("ps/run/" + std::to_string(i) + "/key", s.run.fields[i].first);
    c.set_text("ps/run/" + std::to_string(i) + "/value", s.run.fields[i].second);
  }
  return c;
}

struct Resumed {
  ServerModel model;
  Downlink downlink{""};
  AdoptedRun run;
  uint64_t applied = 0;
};

Resumed resume(const std::string& path, uint32_t workers) {
  Resumed r;
  r.applied = resume_server(path, workers, r.model, r.downlink, r.run);
  return r;
}

bool same_bits(const Tensors& a, const Tensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].size() != b[k].size() ||
        std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

void expect_state_of(const Resumed& r, const Saved& s, const std::string& path) {
  EXPECT_EQ(r.applied, s.applied);
  EXPECT_TRUE(same_bits(r.model.params, s.model.params));
  EXPECT_TRUE(same_bits(r.downlink.replica(), s.downlink.replica()));
  EXPECT_EQ(r.model.initial_crc, crc_of(s.initial));
  EXPECT_EQ(r.model.optimizer_options.name, "adam");
  EXPECT_EQ(r.model.optimizer_options.weight_decay, 0.01f);
  EXPECT_EQ(r.model.source, "the checkpoint " + path);
  const StateDict want = s.model.optimizer->export_state();
  const StateDict got = r.model.optimizer->export_state();
  EXPECT_EQ(got.buffers, want.buffers);
  EXPECT_EQ(got.scalars, want.scalars);
  EXPECT_TRUE(r.run.adopted);
  EXPECT_EQ(r.run.fields, s.run.fields);
  EXPECT_EQ(r.run.source, "the checkpoint " + path);
}

TEST(ServerCheckpoint, ResumesTheStateItWasWrittenFromWithExactScalars) {
  TempDir dir;
  const std::string path = prepare_checkpoint_dir(dir.path());
  EXPECT_EQ(path, dir.path() + "/ps-server.qgck");
  const Saved s;
  ASSERT_TRUE(save_server_checkpoint(path, s.applied, 2, s.model, s.downlink, s.run, {}));
  // The scalars are reals now, not text.
  const Checkpoint c = Checkpoint::load(path);
  EXPECT_EQ(c.real("ps/scalar/adam/step"), 3.0);
  EXPECT_THROW(c.text("ps/scalar/adam/step"), InvalidArgument);
  expect_state_of(resume(path, 2), s, path);
}

TEST(ServerCheckpoint, AnEarlierServersTextScalarsResumeToTheSameState) {
  TempDir old_dir, new_dir;
  const std::string old_path = prepare_checkpoint_dir(old_dir.path());
  const std::string new_path = prepare_checkpoint_dir(new_dir.path());
  const Saved s;
  legacy_checkpoint(s, 2).save(old_path);
  server_checkpoint(s.applied, 2, s.model, s.downlink, s.run).save(new_path);
  Resumed from_text = resume(old_path, 2);
  Resumed from_real = resume(new_path, 2);
  expect_state_of(from_text, s, old_path);
  expect_state_of(from_real, s, new_path);
  // And they go on alike: one more step on each gives the same bits.
  const Tensors a = random_tensors(40, 0.1f);
  for (Resumed* r : {&from_text, &from_real}) {
    r->model.optimizer->begin_update();
    for (size_t k = 0; k < a.size(); ++k)
      r->model.optimizer->update(k, r->model.params[k], a[k], 0.01f);
  }
  EXPECT_TRUE(same_bits(from_text.model.params, from_real.model.params));
}

TEST(ServerCheckpoint, AHexFloatScalarReadsBackToTheSameBits) {
  // A scalar that decimal text would round: 0.1 in "%a" is exact.
  Checkpoint c = legacy_checkpoint(Saved{}, 1);
  c.set_text("ps/scalar/sgd/anything", "0x1.999999999999ap-4");
  const ServerCheckpointState state = read_server_checkpoint(c, 1);
  EXPECT_EQ(state.state.scalars.at("sgd/anything"), 0.1);
  Checkpoint real = legacy_checkpoint(Saved{}, 1);
  real.set_real("ps/scalar/sgd/other", 0.1);
  EXPECT_EQ(read_server_checkpoint(real, 1).state.scalars.at("sgd/other"), 0.1);
}

TEST(ServerCheckpoint, AnotherWorkerCountOrADamagedFileIsAnErrorNamingTheFile) {
  TempDir dir;
  const std::string path = prepare_checkpoint_dir(dir.path());
  const Saved s;
  ASSERT_TRUE(save_server_checkpoint(path, s.applied, 2, s.model, s.downlink, s.run, {}));
  try {
    resume(path, 3);
    ADD_FAILURE() << "resumed with another worker count";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()),
              "ParameterServer: cannot resume from the checkpoint '" + path +
                  "': it was written by a server with 2 workers, this one runs with 3 (move it "
                  "away to start a new run)");
  }
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  try {
    resume(path, 2);
    ADD_FAILURE() << "resumed from a truncated file";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("cannot resume from the checkpoint '" + path + "'"));
  }
}

TEST(ServerCheckpoint, AFailedWriteIsLoggedAndReportedNotThrown) {
  const Saved s;
  std::vector<std::string> lines;
  const ServerLog log = [&](const std::string& line) { lines.push_back(line); };
  EXPECT_FALSE(save_server_checkpoint("/nonexistent-dir/ps-server.qgck", s.applied, 1, s.model,
                                      s.downlink, s.run, log));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], testing::StartsWith("checkpoint at step 3 failed: "));
}

}  // namespace
}  // namespace qgrad::ps
