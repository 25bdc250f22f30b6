#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "core/files.h"
#include "core/hash.h"
#include "core/phase_progress.h"
#include "core/progress.h"
#include "pixseek/status.h"
#include "test_util.h"

namespace pixseek {
namespace {

TEST(StatusTest, OkAndErrors) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = Status::NotFound("image 7");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: image 7");
  EXPECT_EQ(s.WithContext("query").message(), "query: image 7");
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  PIXSEEK_ASSIGN_OR_RETURN(int h, Half(x));
  PIXSEEK_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(ResultTest, PropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  // A Result built from an OK status is an error, not an empty value.
  Result<int> bad{Status::Ok()};
  EXPECT_EQ(bad.status().code(), StatusCode::kInternal);
}

TEST(HashTest, Sha256KnownVectors) {
  std::string abc = "abc";
  EXPECT_EQ(Sha256Hex({reinterpret_cast<const uint8_t*>(abc.data()), abc.size()}),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_TRUE(ConstantTimeEquals("key1", "key1"));
  EXPECT_FALSE(ConstantTimeEquals("key1", "key2"));
  EXPECT_FALSE(ConstantTimeEquals("key1", "key10"));
}

TEST(FilesTest, AtomicWriteReplacesContent) {
  testing::TempDir tmp;
  auto file = tmp.path() / "a.json";
  ASSERT_TRUE(WriteFileAtomic(file, std::string("one")).ok());
  ASSERT_TRUE(WriteFileAtomic(file, std::string("two")).ok());
  EXPECT_EQ(*ReadTextFile(file), "two");
  EXPECT_FALSE(std::filesystem::exists(tmp.path() / "a.json.tmp"));
  EXPECT_EQ(ReadTextFile(tmp.path() / "missing").status().code(), StatusCode::kNotFound);
}

// OpenRegularNoFollow opens regular files and refuses every link on the way,
// with openat2 where the kernel has it and by the component walk it falls
// back to (both run here whatever the kernel).
class NoFollowTest : public ::testing::TestWithParam<bool> {
 protected:
  Result<UniqueFd> Open(const std::filesystem::path& dir, const std::filesystem::path& file) {
    return GetParam() ? OpenRegularNoFollow(dir, file) : OpenRegularNoFollowByWalk(dir, file);
  }
  // The whole content of what Open gives, or its error.
  Result<std::string> Read(const std::filesystem::path& dir, const std::filesystem::path& file) {
    PIXSEEK_ASSIGN_OR_RETURN(UniqueFd fd, Open(dir, file));
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadOpenFile(fd.get(), 1 << 20));
    return std::string(bytes.begin(), bytes.end());
  }
};

TEST_P(NoFollowTest, OpensRegularFilesAndRefusesLinks) {
  testing::TempDir tmp;
  const auto root = std::filesystem::canonical(tmp.path());
  std::filesystem::create_directories(root / "lib" / "sub");
  std::filesystem::create_directories(root / "elsewhere");
  ASSERT_TRUE(WriteFileAtomic(root / "lib" / "sub" / "a.txt", std::string("aaa")).ok());
  ASSERT_TRUE(WriteFileAtomic(root / "elsewhere" / "secret", std::string("secret")).ok());
  std::filesystem::create_symlink(root / "elsewhere" / "secret", root / "lib" / "sub" / "link");
  std::filesystem::create_directory_symlink(root / "lib" / "sub", root / "lib" / "dirlink");
  std::filesystem::create_directory_symlink(root / "lib", root / "trusted");
  ASSERT_EQ(::mkfifo((root / "lib" / "fifo").c_str(), 0600), 0);

  EXPECT_EQ(Read({}, root / "lib" / "sub" / "a.txt").value(), "aaa");
  EXPECT_EQ(Read(root / "lib", "sub/a.txt").value(), "aaa");
  // The folder named by the caller may be reached through a link.
  EXPECT_EQ(Read(root / "trusted", "sub/a.txt").value(), "aaa");

  const struct {
    std::filesystem::path dir, file;
    StatusCode code;
    std::string why;
  } kRefused[] = {
      {{}, root / "lib" / "sub" / "link", StatusCode::kNotFound, "symbolic link"},
      {root / "lib", "sub/link", StatusCode::kNotFound, "symbolic link"},
      {{}, root / "lib" / "dirlink" / "a.txt", StatusCode::kNotFound, "symbolic link"},
      {root / "lib", "dirlink/a.txt", StatusCode::kNotFound, "symbolic link"},
      {{}, root / "trusted" / "sub" / "a.txt", StatusCode::kNotFound, "symbolic link"},
      {{}, root / "lib" / "fifo", StatusCode::kNotFound, "not a regular file"},
      {{}, root / "lib" / "sub", StatusCode::kNotFound, "not a regular file"},
      {{}, root / "lib" / "missing", StatusCode::kNotFound, "no such file"},
      {root / "lib", "sub/../sub/a.txt", StatusCode::kInvalidArgument, ".."},
      {{}, "lib/sub/a.txt", StatusCode::kInvalidArgument, "without its folder"},
      {root / "lib", root / "lib" / "sub" / "a.txt", StatusCode::kInvalidArgument, "absolute"},
      {root / "lib", "", StatusCode::kInvalidArgument, "empty"},
  };
  for (const auto& c : kRefused) {
    SCOPED_TRACE(c.dir.string() + " | " + c.file.string());
    auto opened = Open(c.dir, c.file);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), c.code) << opened.status().ToString();
    EXPECT_NE(opened.status().message().find(c.why), std::string::npos)
        << opened.status().ToString();
    EXPECT_EQ(opened.status().message().find(root.string()), std::string::npos)
        << "names the path: " << opened.status().ToString();
  }
}

INSTANTIATE_TEST_SUITE_P(OpenAt2AndWalk, NoFollowTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "OpenAt2" : "Walk";
                         });

TEST(FilesTest, ReadOpenFileStopsAtTheLimit) {
  testing::TempDir tmp;
  ASSERT_TRUE(WriteFileAtomic(tmp.path() / "f", std::string(100, 'x')).ok());
  auto fd = OpenRegularNoFollow({}, std::filesystem::absolute(tmp.path() / "f"));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  EXPECT_EQ(OpenFileSize(fd->get()).value(), 100u);
  EXPECT_EQ(ReadOpenFile(fd->get(), 100).value().size(), 100u);
  EXPECT_EQ(ReadOpenFile(fd->get(), 99).status().code(), StatusCode::kResourceExhausted);
}

TEST(ProgressTest, FormatsDurations) {
  EXPECT_EQ(FormatDuration(5), "5s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
}

// PhaseProgress on a clock the test moves by hand.
class PhaseProgressTest : public ::testing::Test {
 protected:
  std::chrono::steady_clock::time_point now_{};
  std::ostringstream out_;
  PhaseProgress lines_{"build", &out_, std::chrono::seconds(5), [this] { return now_; }};

  void Advance(int seconds) { now_ += std::chrono::seconds(seconds); }
  // The last line printed, without its newline.
  std::string Last() const {
    std::string text = out_.str();
    if (!text.empty() && text.back() == '\n') text.pop_back();
    return text.substr(text.rfind('\n') + 1);
  }
};

TEST_F(PhaseProgressTest, PrintsPhaseChangesAndThenAtMostEveryInterval) {
  lines_.Update("pq-encode", 0, 1000);
  EXPECT_EQ(Last(), "build: pq-encode   0% (0/1000) elapsed 0s ETA ?");
  Advance(10);
  lines_.Update("pq-encode", 100, 1000);
  EXPECT_EQ(Last(), "build: pq-encode  10% (100/1000) elapsed 10s ETA ?");
  Advance(10);
  lines_.Update("pq-encode", 200, 1000);  // 100 units in 10 s since the first step
  EXPECT_EQ(Last(), "build: pq-encode  20% (200/1000) elapsed 20s ETA 1m20s");
  const std::string before = out_.str();
  Advance(1);
  lines_.Update("pq-encode", 210, 1000);  // within the interval: quiet
  EXPECT_EQ(out_.str(), before);
  lines_.Update("pq-encode", 1000, 1000);  // the end always prints
  EXPECT_EQ(Last(), "build: pq-encode 100% (1000/1000) elapsed 21s ETA 0s");
  lines_.Update("partition", 0, 5);  // a new phase prints at once
  EXPECT_EQ(Last(), "build: partition   0% (0/5) elapsed 0s ETA ?");
}

// A resumed build starts the shard graphs part-way and first loads the
// shard's rows: neither the earlier run's units nor the load count, so the
// ETA is right from the second step (it was 15 h for a 2.5 h remainder).
TEST_F(PhaseProgressTest, ResumedPhaseRateStartsAtItsFirstStep) {
  lines_.Update("shard 4/19 graph", 3000, 10000);
  Advance(60);  // the shard's rows load
  lines_.Update("shard 4/19 graph", 3100, 10000);
  EXPECT_EQ(Last(), "build: shard 4/19 graph  31% (3100/10000) elapsed 1m00s ETA ?");
  Advance(10);
  lines_.Update("shard 4/19 graph", 3200, 10000);  // 10 units/s
  EXPECT_EQ(Last(), "build: shard 4/19 graph  32% (3200/10000) elapsed 1m10s ETA 11m20s");
  // The next shard is the same phase: its load counts from here on.
  lines_.Update("shard 5/19 graph", 3200, 10000);
  Advance(30);
  lines_.Update("shard 5/19 graph", 3300, 10000);  // 200 units in 40 s: 5 units/s
  EXPECT_EQ(Last(), "build: shard 5/19 graph  33% (3300/10000) elapsed 1m40s ETA 22m20s");
}

}  // namespace
}  // namespace pixseek
