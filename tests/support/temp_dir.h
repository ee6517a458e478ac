// TempDir: a fresh, empty folder for one test, removed with everything in it when the object
// goes. Its name holds the prefix, the test's suite and name, the process id and a counter, so
// that tests running in parallel (CTest -j, one process per case) and several TempDirs in one
// test never share a folder.
// Thread-safety: construct and use from one thread; the counter is atomic.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace qgrad::testing_support {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "qgrad") {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name(prefix);
    if (info != nullptr) {
      name.append("_").append(info->test_suite_name()).append("_").append(info->name());
    }
    name.append("_").append(std::to_string(::getpid()));
    name.append("_").append(std::to_string(counter++));
    path_ = (std::filesystem::temp_directory_path() / name).string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;  // a destructor must not throw; a leftover folder is harmless
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside the folder.
  std::string file(std::string_view name) const {
    return (std::filesystem::path(path_) / name).string();
  }
  std::string operator/(std::string_view name) const { return file(name); }

 private:
  std::string path_;
};

}  // namespace qgrad::testing_support
