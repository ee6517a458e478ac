// Checkpoints: everything a resumed run needs to continue as if it had never stopped: the
// parameters, the optimizer state and the error memories, plus counters (step, epoch) and the
// run's identity (model, data, codec), as named fp32 buffers, integers, texts and reals (doubles,
// stored bit for bit: optimizer scalars such as Adam's step count, elapsed seconds).
//
// File format (little-endian): magic "QGCK", version, then sections of
//   name (u32 length + bytes), kind (buffer | integer | text | real), payload,
// and a CRC-32C of everything before it at the end. Written atomically: to a temporary file in
// the same directory, flushed and fsync'ed, then renamed over the target, so a crash leaves
// either the old checkpoint or the new one, never half of one.
// Thread-safety: a Checkpoint value is not shared; file functions may run concurrently on
// different paths.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace qgrad {

class Checkpoint {
 public:
  void set_buffer(const std::string& name, std::span<const float> values);
  void set_integer(const std::string& name, int64_t value);
  void set_text(const std::string& name, const std::string& value);
  void set_real(const std::string& name, double value);

  bool has(const std::string& name) const;
  // Throw InvalidArgument naming the entry when it is absent, of another kind, or (buffers) of
  // another size than `expected_size`.
  const std::vector<float>& buffer(const std::string& name) const;
  void copy_buffer(const std::string& name, std::span<float> out) const;
  int64_t integer(const std::string& name) const;
  const std::string& text(const std::string& name) const;
  double real(const std::string& name) const;
  std::vector<std::string> names() const;

  // Atomic write (see above). Throws Error naming the path and the system error.
  void save(const std::string& path) const;
  // Throws InvalidArgument for a missing file and CorruptPayload for a truncated or damaged one.
  static Checkpoint load(const std::string& path);

 private:
  std::map<std::string, std::vector<float>> buffers_;
  std::map<std::string, int64_t> integers_;
  std::map<std::string, std::string> texts_;
  std::map<std::string, double> reals_;
};

// Writes `bytes` to `path` atomically (temporary file + fsync + rename). Shared by checkpoints,
// metrics summaries and the tools.
void write_file_atomically(const std::string& path, std::span<const std::byte> bytes);

}  // namespace qgrad
