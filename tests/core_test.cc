#include <gtest/gtest.h>

#include <string>

#include "core/files.h"
#include "core/hash.h"
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

TEST(ProgressTest, FormatsDurations) {
  EXPECT_EQ(FormatDuration(5), "5s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
}

}  // namespace
}  // namespace pixseek
