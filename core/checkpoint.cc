#include "core/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "core/crc32c.h"
#include "core/error.h"

namespace qgrad {
namespace {

constexpr char kMagic[4] = {'Q', 'G', 'C', 'K'};
constexpr uint32_t kVersion = 1;
// kReal (a double's 8 bytes, exact) came after the first files; it needs no new version, since
// files without it read as before.
enum class Kind : uint8_t { kBuffer = 1, kInteger = 2, kText = 3, kReal = 4 };

void put(std::vector<std::byte>& out, const void* p, size_t n) {
  if (n == 0) return;  // an empty buffer's data() may be null
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void put(std::vector<std::byte>& out, T v) {
  put(out, &v, sizeof v);
}
void put_string(std::vector<std::byte>& out, const std::string& s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  put(out, s.data(), s.size());
}

// Bounds-checked reader: every read names what it was reading when the file ends early.
class Reader {
 public:
  Reader(std::span<const std::byte> data, std::string path) : data_(data), path_(std::move(path)) {}
  void get(void* p, size_t n, const char* what) {
    QGRAD_PAYLOAD_CHECK(n <= data_.size() - at_, "checkpoint ", path_, " is truncated (reading ",
                        what, " at byte ", at_, ")");
    if (n > 0) std::memcpy(p, data_.data() + at_, n);  // an empty buffer's data() may be null
    at_ += n;
  }
  template <typename T>
  T get(const char* what) {
    T v;
    get(&v, sizeof v, what);
    return v;
  }
  std::string get_string(const char* what) {
    const auto n = get<uint32_t>(what);
    QGRAD_PAYLOAD_CHECK(n <= data_.size() - at_, "checkpoint ", path_, " is truncated (reading ",
                        what, ")");
    std::string s(reinterpret_cast<const char*>(data_.data() + at_), n);
    at_ += n;
    return s;
  }
  size_t remaining() const { return data_.size() - at_; }

 private:
  std::span<const std::byte> data_;
  std::string path_;
  size_t at_ = 0;
};

}  // namespace

void Checkpoint::set_buffer(const std::string& name, std::span<const float> values) {
  buffers_[name].assign(values.begin(), values.end());
}
void Checkpoint::set_integer(const std::string& name, int64_t value) { integers_[name] = value; }
void Checkpoint::set_text(const std::string& name, const std::string& value) {
  texts_[name] = value;
}
void Checkpoint::set_real(const std::string& name, double value) { reals_[name] = value; }

bool Checkpoint::has(const std::string& name) const {
  return buffers_.count(name) || integers_.count(name) || texts_.count(name) || reals_.count(name);
}

const std::vector<float>& Checkpoint::buffer(const std::string& name) const {
  const auto it = buffers_.find(name);
  QGRAD_CHECK(it != buffers_.end(), "checkpoint has no buffer '", name, "'");
  return it->second;
}

void Checkpoint::copy_buffer(const std::string& name, std::span<float> out) const {
  const auto& b = buffer(name);
  QGRAD_CHECK(b.size() == out.size(), "checkpoint buffer '", name, "' has ", b.size(),
              " values, expected ", out.size(), " (a checkpoint of another model?)");
  std::copy(b.begin(), b.end(), out.begin());
}

int64_t Checkpoint::integer(const std::string& name) const {
  const auto it = integers_.find(name);
  QGRAD_CHECK(it != integers_.end(), "checkpoint has no integer '", name, "'");
  return it->second;
}

const std::string& Checkpoint::text(const std::string& name) const {
  const auto it = texts_.find(name);
  QGRAD_CHECK(it != texts_.end(), "checkpoint has no text '", name, "'");
  return it->second;
}

double Checkpoint::real(const std::string& name) const {
  const auto it = reals_.find(name);
  QGRAD_CHECK(it != reals_.end(), "checkpoint has no real '", name, "'");
  return it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : buffers_) out.push_back(k);
  for (const auto& [k, v] : integers_) out.push_back(k);
  for (const auto& [k, v] : texts_) out.push_back(k);
  for (const auto& [k, v] : reals_) out.push_back(k);
  return out;
}

void Checkpoint::save(const std::string& path) const {
  std::vector<std::byte> out;
  put(out, kMagic, 4);
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, static_cast<uint32_t>(buffers_.size() + integers_.size() + texts_.size() +
                                           reals_.size()));
  for (const auto& [name, values] : buffers_) {
    put_string(out, name);
    put(out, Kind::kBuffer);
    put<uint64_t>(out, values.size());
    put(out, values.data(), 4 * values.size());
  }
  for (const auto& [name, value] : integers_) {
    put_string(out, name);
    put(out, Kind::kInteger);
    put<int64_t>(out, value);
  }
  for (const auto& [name, value] : texts_) {
    put_string(out, name);
    put(out, Kind::kText);
    put_string(out, value);
  }
  for (const auto& [name, value] : reals_) {
    put_string(out, name);
    put(out, Kind::kReal);
    put<double>(out, value);
  }
  put<uint32_t>(out, crc32c(out));
  write_file_atomically(path, out);
}

Checkpoint Checkpoint::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QGRAD_CHECK(in.good(), "cannot open checkpoint ", path, ": ", std::strerror(errno));
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::span<const std::byte> data(reinterpret_cast<const std::byte*>(raw.data()), raw.size());
  QGRAD_PAYLOAD_CHECK(data.size() >= 16 && std::memcmp(data.data(), kMagic, 4) == 0, path,
                      " is not a qgrad checkpoint");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data.data() + data.size() - 4, 4);
  QGRAD_PAYLOAD_CHECK(crc32c(data.first(data.size() - 4)) == stored_crc, "checkpoint ", path,
                      " is damaged (checksum mismatch)");
  Reader r(data.first(data.size() - 4), path);
  char magic[4];
  r.get(magic, 4, "magic");
  const auto version = r.get<uint32_t>("version");
  QGRAD_PAYLOAD_CHECK(version == kVersion, "checkpoint ", path, " has format version ", version,
                      ", this build reads ", kVersion);
  const auto entries = r.get<uint32_t>("entry count");
  Checkpoint c;
  for (uint32_t e = 0; e < entries; ++e) {
    const std::string name = r.get_string("entry name");
    const auto kind = r.get<Kind>("entry kind");
    switch (kind) {
      case Kind::kBuffer: {
        const auto n = r.get<uint64_t>("buffer size");
        QGRAD_PAYLOAD_CHECK(n <= r.remaining() / 4, "checkpoint ", path, " is truncated (buffer ",
                            name, ")");
        std::vector<float> values(n);
        r.get(values.data(), 4 * n, "buffer values");
        c.buffers_[name] = std::move(values);
        break;
      }
      case Kind::kInteger:
        c.integers_[name] = r.get<int64_t>("integer");
        break;
      case Kind::kText:
        c.texts_[name] = r.get_string("text");
        break;
      case Kind::kReal:
        c.reals_[name] = r.get<double>("real");
        break;
      default:
        throw CorruptPayload(detail::concat("checkpoint ", path, ": entry ", name,
                                            " has unknown kind ", static_cast<int>(kind)));
    }
  }
  QGRAD_PAYLOAD_CHECK(r.remaining() == 0, "checkpoint ", path, " has ", r.remaining(),
                      " trailing bytes");
  return c;
}

void write_file_atomically(const std::string& path, std::span<const std::byte> bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error(detail::concat("cannot write ", tmp, ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(detail::concat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::concat("cannot flush ", tmp, ": ", std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::concat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
}

}  // namespace qgrad
