// Helpers shared by the tests: temporary directories and the location of the
// shared models and data sets.
#ifndef PIXSEEK_TESTS_TEST_UTIL_H_
#define PIXSEEK_TESTS_TEST_UTIL_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace pixseek::testing {

// A fresh directory under $TMPDIR, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// $PIXSEEK_SHARED if set, else <source>/../shared, when it exists.
std::optional<std::filesystem::path> SharedDir();

// The MobileNetV2 ONNX file from ../shared/models, when present.
std::optional<std::filesystem::path> SharedMobilenet();

// The Python that has Debian's torch and onnx: $PIXSEEK_PYTHON, else
// /usr/bin/python3 (a python3 earlier on PATH, e.g. pyenv's, usually lacks
// them).
std::string Python();

// Calls `done` every `interval` until it returns true, for at most `timeout`;
// returns whether it did. Tests wait for what another thread or process does
// with this rather than sleeping a guessed time: as fast as the machine
// allows, and as patient as `timeout` on a slow one.
template <typename Predicate>
bool WaitFor(Predicate&& done, std::chrono::milliseconds timeout,
             std::chrono::milliseconds interval = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
  return true;
}

std::vector<uint8_t> ReadBytes(const std::filesystem::path& path);
void WriteBytes(const std::filesystem::path& path, const std::vector<uint8_t>& bytes);

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_TEST_UTIL_H_
