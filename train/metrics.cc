#include "train/metrics.h"

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

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
                      {"loss", r.loss},
                      {"bytes_sent", r.bytes_sent},
                      {"bytes_received", r.bytes_received},
                      {"raw_bytes", r.raw_bytes},
                      {"compute_s", r.compute_s},
                      {"encode_s", r.encode_s},
                      {"exchange_s", r.exchange_s},
                      {"decode_s", r.decode_s},
                      {"update_s", r.update_s},
                      {"seconds", r.seconds},
                      {"samples_per_second", r.samples_per_second}};
  if (r.accuracy) j["accuracy"] = *r.accuracy;
  if (r.test_loss) j["test_loss"] = *r.test_loss;
  line(j.dump());
}

void MetricsWriter::write(const SummaryRecord& r) {
  const nlohmann::json j = {{"summary", true},
                            {"model", r.model},
                            {"data", r.data},
                            {"codec", r.codec},
                            {"strategy", r.strategy},
                            {"world", r.world},
                            {"steps", r.steps},
                            {"epochs", r.epochs},
                            {"test_accuracy", r.test_accuracy},
                            {"final_loss", r.final_loss},
                            {"bytes_sent", r.bytes_sent},
                            {"bytes_received", r.bytes_received},
                            {"raw_bytes", r.raw_bytes},
                            {"compression_ratio",
                             r.bytes_sent ? static_cast<double>(r.raw_bytes) / r.bytes_sent : 0.0},
                            {"seconds", r.seconds}};
  line(j.dump());
}

}  // namespace qgrad
