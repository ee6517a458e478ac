#include "train/data/gz_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>

#include "train/data/data_error.h"

namespace qgrad::data_detail {
namespace {

gzFile as_gz(void* f) { return static_cast<gzFile>(f); }

}  // namespace

GzReader::GzReader(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  // gzopen would "open" a directory and fail only on the first read, with a vaguer message.
  if (std::filesystem::is_directory(path_, ec)) {
    throw DataError(detail::concat("cannot read '", path_, "': it is a directory"));
  }
  errno = 0;
  file_ = gzopen(path_.c_str(), "rb");
  if (file_ == nullptr) {
    const int err = errno;
    throw DataError(detail::concat("cannot open '", path_,
                                   "': ", err != 0 ? std::strerror(err) : "out of memory"));
  }
  gzbuffer(as_gz(file_), 1 << 18);  // fewer, larger reads: the 26 MB training images inflate faster
}

GzReader::~GzReader() {
  if (file_ != nullptr) gzclose(as_gz(file_));
}

size_t GzReader::read(void* out, size_t n) {
  auto* dst = static_cast<unsigned char*>(out);
  size_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30));
    const int r = gzread(as_gz(file_), dst + got, chunk);
    if (r < 0) {
      int errnum = 0;
      const char* msg = gzerror(as_gz(file_), &errnum);
      throw DataError(detail::concat("cannot read '", path_,
                                     "': ", errnum == Z_ERRNO ? std::strerror(errno) : msg,
                                     " (corrupt or truncated gzip data)"));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  // zlib reports a gzip stream cut short as a short read plus Z_BUF_ERROR, not as r < 0.
  if (got < n) {
    int errnum = 0;
    const char* msg = gzerror(as_gz(file_), &errnum);
    if (errnum != Z_OK) {
      throw DataError(
          detail::concat("cannot read '", path_, "': ", msg, " (corrupt or truncated gzip data)"));
    }
  }
  return got;
}

size_t GzReader::append(std::vector<unsigned char>& out, size_t n) {
  constexpr size_t kStep = size_t{64} << 20;
  const size_t start = out.size();
  size_t got = 0;
  while (got < n) {
    const size_t want = std::min(n - got, kStep);
    out.resize(start + got + want);
    const size_t r = read(out.data() + start + got, want);
    got += r;
    if (r < want) break;
  }
  out.resize(start + got);
  return got;
}

bool GzReader::at_end() {
  unsigned char probe = 0;
  return read(&probe, 1) == 0;
}

std::string read_whole_file(const std::string& path) {
  GzReader reader(path);
  std::string text;
  constexpr size_t kChunk = size_t{1} << 20;
  size_t size = 0;
  for (;;) {
    text.resize(size + kChunk);
    const size_t r = reader.read(text.data() + size, kChunk);
    size += r;
    if (r < kChunk) break;
  }
  text.resize(size);
  return text;
}

}  // namespace qgrad::data_detail
