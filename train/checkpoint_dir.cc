#include "train/checkpoint_dir.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace qgrad {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kNoStep = ~uint64_t{0};

std::string step_dir_name(uint64_t step) { return "step-" + std::to_string(step); }

// The N of a "step-N" folder name, or kNoStep.
uint64_t parse_step_dir(const std::string& name) {
  if (name.rfind("step-", 0) != 0) return kNoStep;
  uint64_t step = 0;
  const char* begin = name.data() + 5;
  const char* end = name.data() + name.size();
  const auto [ptr, ec] = std::from_chars(begin, end, step);
  return (ec == std::errc() && ptr == end && begin != end) ? step : kNoStep;
}

}  // namespace

CheckpointDir::CheckpointDir(std::string dir, int rank, int world)
    : dir_(std::move(dir)), rank_(rank), world_(world) {
  QGRAD_CHECK(!dir_.empty(), "--checkpoint-dir must not be empty");
  QGRAD_CHECK(world_ >= 1 && rank_ >= 0 && rank_ < world_, "checkpoint dir: rank ", rank_,
              " of world ", world_);
}

std::string CheckpointDir::rank_file(uint64_t step) const {
  return (fs::path(dir_) / step_dir_name(step) / ("rank-" + std::to_string(rank_) + ".qgck"))
      .string();
}

void CheckpointDir::save(Communicator& comm, uint64_t step, const Checkpoint& mine) const {
  const fs::path folder = fs::path(dir_) / step_dir_name(step);
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) {
    throw Error(
        detail::concat("cannot create checkpoint folder ", folder.string(), ": ", ec.message()));
  }
  mine.save(rank_file(step));
  // Nobody names the step before everybody wrote it.
  comm.barrier();
  if (rank_ != 0) return;
  const std::string text = std::to_string(step) + "\n";
  write_file_atomically((fs::path(dir_) / "LATEST").string(),
                        std::as_bytes(std::span<const char>(text.data(), text.size())));
  // Keep this step and the one before it; older folders go (best effort).
  std::vector<uint64_t> steps;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const uint64_t s = parse_step_dir(entry.path().filename().string());
    if (s != kNoStep && s < step) steps.push_back(s);
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    fs::remove_all(fs::path(dir_) / step_dir_name(steps[i]), ec);
  }
}

std::optional<uint64_t> CheckpointDir::latest() const {
  const fs::path path = fs::path(dir_) / "LATEST";
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  uint64_t step = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), step);
  if (ec != std::errc() || ptr != text.data() + text.size() || text.empty()) {
    throw CorruptPayload(detail::concat(path.string(), " should hold a step number, it holds '",
                                        text.substr(0, 40), "'"));
  }
  return step;
}

Checkpoint CheckpointDir::load(uint64_t step) const { return Checkpoint::load(rank_file(step)); }

}  // namespace qgrad
