// Reads a file through zlib, which inflates gzip files and passes any other file through
// unchanged (gzopen's transparent mode): the IDX and LIBSVM loaders accept both `x.gz` and `x`.
// Errors are DataError naming the file. Internal to qgrad_train_data.
// Thread-safety: one thread per GzReader.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace qgrad::data_detail {

class GzReader {
 public:
  explicit GzReader(std::string path);  // throws DataError if the file cannot be opened
  ~GzReader();
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes; returns fewer only at the end of the data. A gzip stream that is cut
  // short or fails its CRC is an error, not a short read.
  size_t read(void* out, size_t n);
  // Appends exactly n bytes to `out`, growing it in steps so that a corrupt header that claims
  // huge sizes fails as "truncated" instead of allocating what it claims. Returns the bytes it
  // got (< n only when the data ends first).
  size_t append(std::vector<unsigned char>& out, size_t n);
  // True when no byte follows what has been read (also verifies a gzip trailer's CRC).
  bool at_end();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* file_ = nullptr;  // gzFile, kept opaque so callers need no zlib.h
};

// The whole (inflated) content of a file.
std::string read_whole_file(const std::string& path);

}  // namespace qgrad::data_detail
