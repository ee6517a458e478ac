#include "train/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qgrad {
namespace {

TEST(MetricsWriter, WritesOneJsonObjectPerLineAndASummaryLast) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("qgrad_metrics_" + std::to_string(::getpid()) + ".jsonl");
  {
    MetricsWriter w(path.string());
    StepRecord r;
    r.step = 10;
    r.codec = "qsgd";
    r.loss = 0.5;
    r.bytes_sent = 100;
    r.raw_bytes = 800;
    w.write(r);
    r.step = 20;
    r.accuracy = 0.9;
    w.write(r);
    SummaryRecord s;
    s.codec = "qsgd";
    s.test_accuracy = 0.9;
    s.bytes_sent = 100;
    s.raw_bytes = 800;
    s.seconds = 1.5;
    w.write(s);
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  std::filesystem::remove(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["step"], 10);
  EXPECT_FALSE(lines[0].contains("accuracy"));
  EXPECT_DOUBLE_EQ(lines[1]["accuracy"].get<double>(), 0.9);
  for (const char* key :
       {"epoch", "rank", "world", "codec", "loss", "bytes_sent", "bytes_received", "raw_bytes",
        "compute_s", "encode_s", "exchange_s", "decode_s", "update_s"})
    EXPECT_TRUE(lines[0].contains(key)) << key;
  EXPECT_EQ(lines[2]["summary"], true);
  EXPECT_DOUBLE_EQ(lines[2]["compression_ratio"].get<double>(), 8.0);
  for (const char* key : {"test_accuracy", "bytes_sent", "seconds"})
    EXPECT_TRUE(lines[2].contains(key)) << key;
}

TEST(MetricsWriter, UnwritablePathIsAClearError) {
  try {
    MetricsWriter w("/nonexistent-dir/m.jsonl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/m.jsonl"), std::string::npos);
  }
}

TEST(MetricsWriter, TruncatingForAResumeKeepsEarlierStepsOnly) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("qgrad_metrics_trunc_" + std::to_string(::getpid()) + ".jsonl");
  {
    MetricsWriter w(path.string());
    StepRecord r;
    for (uint64_t step : {5, 10, 15, 20}) {
      r.step = step;
      w.write(r);
    }
    w.write(SummaryRecord{});
  }
  { std::ofstream(path, std::ios::app) << "{\"step\": 25, \"lo"; }  // cut short by a crash
  truncate_metrics_after(path.string(), 10);
  std::ifstream in(path);
  std::vector<uint64_t> steps;
  for (std::string l; std::getline(in, l);)
    steps.push_back(nlohmann::json::parse(l)["step"].get<uint64_t>());
  std::filesystem::remove(path);
  EXPECT_EQ(steps, (std::vector<uint64_t>{5, 10}));
  // A missing file stays missing.
  truncate_metrics_after(path.string(), 10);
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace qgrad
