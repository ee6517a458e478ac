// Helpers for the data-loader tests: a scratch directory removed at the end of the test, and
// writers for plain and gzip'd files (the tests build their own IDX and LIBSVM bytes, so the
// loaders are checked against the format, not against a writer of the same library).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/temp_dir.h"

namespace qgrad::data_testing {

using testing_support::TempDir;

inline void write_raw(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

inline void write_gz(const std::string& path, std::string_view bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

inline std::string read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void put_be32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

// IDX bytes: magic, sizes, data.
inline std::string idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                             const std::vector<uint8_t>& data) {
  std::string out;
  put_be32(out, magic);
  for (uint32_t d : dims) put_be32(out, d);
  out.append(reinterpret_cast<const char*>(data.data()), data.size());
  return out;
}

}  // namespace qgrad::data_testing
