#include "train/metrics.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>

#include "core/checkpoint.h"
#include "core/error.h"

namespace qgrad {

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_)
    throw Error(detail::concat("cannot open metrics file ", path, ": ", std::strerror(errno)));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

namespace {

nlohmann::json& with_times(nlohmann::json& j, const StepTimes& t) {
  j["compute_s"] = t.compute_s;
  j["encode_s"] = t.encode_s;
  j["exchange_s"] = t.exchange_s;
  j["decode_s"] = t.decode_s;
  j["update_s"] = t.update_s;
  j["wait_s"] = t.wait_s;
  return j;
}

}  // namespace

void MetricsWriter::line(const std::string& json) {
  if (std::fprintf(file_, "%s\n", json.c_str()) < 0 || std::fflush(file_) != 0)
    throw Error(detail::concat("cannot write metrics file ", path_, ": ", std::strerror(errno)));
}

void MetricsWriter::write(const StepRecord& r) {
  nlohmann::json j = {{"step", r.step},
                      {"epoch", r.epoch},
                      {"rank", r.rank},
                      {"world", r.world},
                      {"codec", r.codec},
                      {"lr", r.lr},
                      {"loss", r.loss},
                      {"bytes_sent", r.bytes_sent},
                      {"bytes_received", r.bytes_received},
                      {"raw_bytes", r.raw_bytes},
                      {"seconds", r.seconds},
                      {"samples_per_second", r.samples_per_second},
                      {"skipped_steps", r.skipped_steps}};
  with_times(j, r.times);
  if (r.accuracy) j["accuracy"] = *r.accuracy;
  if (r.test_loss) j["test_loss"] = *r.test_loss;
  line(j.dump());
}

void MetricsWriter::write(const SummaryRecord& r) {
  nlohmann::json j = {
      {"summary", true},
      {"model", r.model},
      {"data", r.data},
      {"codec", r.codec},
      {"strategy", r.strategy},
      {"optimizer", r.optimizer},
      {"error_feedback", r.error_feedback},
      {"adversarial", r.adversarial},
      {"seed", r.seed},
      {"world", r.world},
      {"steps", r.steps},
      {"epochs", r.epochs},
      {"skipped_steps", r.skipped_steps},
      {"eval_on", r.eval_on},
      {"test_accuracy", r.test_accuracy},
      {"test_loss", r.test_loss},
      {"final_loss", r.final_loss},
      {"bytes_sent", r.bytes_sent},
      {"bytes_received", r.bytes_received},
      {"raw_bytes", r.raw_bytes},
      {"compression_ratio",
       r.bytes_sent ? static_cast<double>(r.raw_bytes) / static_cast<double>(r.bytes_sent) : 0.0},
      {"seconds", r.seconds},
      {"step_seconds", r.step_seconds}};
  if (!r.link.empty()) j["link"] = r.link;
  line(with_times(j, r.times).dump());
}

void truncate_metrics_after(const std::string& path, uint64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: a line cut short by a crash
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || j.contains("summary")) continue;
    if (j.contains("step") && j["step"].is_number_unsigned() && j["step"].get<uint64_t>() > step) {
      continue;
    }
    kept += line;
    kept += '\n';
  }
  if (in.bad()) throw Error(detail::concat("cannot read metrics file ", path));
  write_file_atomically(path, std::as_bytes(std::span<const char>(kept.data(), kept.size())));
}

}  // namespace qgrad
