// Helpers shared by the tests: temporary directories and the location of the
// shared models and data sets.
#ifndef PIXSEEK_TESTS_TEST_UTIL_H_
#define PIXSEEK_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
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

std::vector<uint8_t> ReadBytes(const std::filesystem::path& path);
void WriteBytes(const std::filesystem::path& path, const std::vector<uint8_t>& bytes);

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_TEST_UTIL_H_
