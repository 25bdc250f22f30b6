// Tests for index/vecs_io.h: round trips and damaged-file handling of the
// big-ann .fbin / .ibin formats.
#include "index/vecs_io.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "test_util.h"

namespace pixseek {
namespace {

using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

FloatMatrix MakeMatrix(size_t rows, size_t cols) {
  FloatMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(rows * cols);
  for (size_t i = 0; i < m.data.size(); ++i) m.data[i] = static_cast<float>(i) * 0.25f - 3.0f;
  return m;
}

std::vector<uint8_t> Header(int32_t a, int32_t b) {
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &a, 4);
  std::memcpy(out.data() + 4, &b, 4);
  return out;
}

TEST(VecsIoTest, FbinRoundTripAndLayout) {
  TempDir dir;
  const auto path = dir.path() / "base.fbin";
  const FloatMatrix m = MakeMatrix(37, 5);
  ASSERT_TRUE(WriteFbin(path, m).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "base.fbin.tmp"));
  const std::vector<uint8_t> bytes = ReadBytes(path);
  ASSERT_EQ(bytes.size(), 8 + 37 * 5 * 4u);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8), Header(37, 5));
  float first;
  std::memcpy(&first, bytes.data() + 8, 4);
  EXPECT_EQ(first, m.data[0]);

  auto r = ReadFbin(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->rows, 37u);
  EXPECT_EQ(r->cols, 5u);
  EXPECT_EQ(r->data, m.data);
}

TEST(VecsIoTest, FbinPrefixRead) {
  TempDir dir;
  const auto path = dir.path() / "base.fbin";
  const FloatMatrix m = MakeMatrix(100, 4);
  ASSERT_TRUE(WriteFbin(path, m).ok());
  auto r = ReadFbin(path, 10);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->rows, 10u);
  EXPECT_EQ(r->cols, 4u);
  EXPECT_EQ(r->data, std::vector<float>(m.data.begin(), m.data.begin() + 40));
  // max_rows above n reads everything.
  auto all = ReadFbin(path, 1000);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->rows, 100u);
  // A file cut right after the prefix (the big-ann slicing habit) still
  // serves that prefix, but not more.
  std::vector<uint8_t> bytes = ReadBytes(path);
  bytes.resize(8 + 10 * 4 * 4);
  WriteBytes(path, bytes);
  auto cut = ReadFbin(path, 10);
  ASSERT_TRUE(cut.ok()) << cut.status().ToString();
  EXPECT_EQ(cut->data, std::vector<float>(m.data.begin(), m.data.begin() + 40));
  auto more = ReadFbin(path, 11);
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(ReadFbin(path).status().code(), StatusCode::kDataLoss);
}

TEST(VecsIoTest, FbinTruncatedIsDataLoss) {
  TempDir dir;
  const auto path = dir.path() / "base.fbin";
  ASSERT_TRUE(WriteFbin(path, MakeMatrix(20, 3)).ok());
  std::vector<uint8_t> bytes = ReadBytes(path);
  for (size_t size : {size_t{0}, size_t{4}, size_t{7}, bytes.size() - 1, bytes.size() - 12}) {
    WriteBytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + size));
    auto r = ReadFbin(path);
    ASSERT_FALSE(r.ok()) << size;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << size;
  }
  // The message names both sizes.
  WriteBytes(path, std::vector<uint8_t>(bytes.begin(), bytes.end() - 4));
  const std::string msg = ReadFbin(path).status().message();
  EXPECT_NE(msg.find(std::to_string(bytes.size() - 4)), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(bytes.size())), std::string::npos) << msg;
}

TEST(VecsIoTest, FbinHeaderLyingIsDataLoss) {
  TempDir dir;
  const auto path = dir.path() / "base.fbin";
  std::vector<uint8_t> body(20 * 3 * 4, 0);
  auto with_header = [&](int32_t n, int32_t d) {
    std::vector<uint8_t> bytes = Header(n, d);
    bytes.insert(bytes.end(), body.begin(), body.end());
    WriteBytes(path, bytes);
    return ReadFbin(path).status();
  };
  EXPECT_TRUE(with_header(20, 3).ok());
  EXPECT_EQ(with_header(21, 3).code(), StatusCode::kDataLoss);  // claims more
  EXPECT_EQ(with_header(19, 3).code(), StatusCode::kDataLoss);  // overlong file
  EXPECT_EQ(with_header(20, 0).code(), StatusCode::kDataLoss);
  EXPECT_EQ(with_header(0, 0).code(), StatusCode::kDataLoss);
  EXPECT_EQ(with_header(-1, 3).code(), StatusCode::kDataLoss);
  EXPECT_EQ(with_header(20, -3).code(), StatusCode::kDataLoss);
  // Huge claims are rejected from the size check, before any allocation.
  EXPECT_EQ(with_header(0x7fffffff, 0x7fffffff).code(), StatusCode::kDataLoss);
  // Even a prefix read rejects a file longer than the header allows.
  std::vector<uint8_t> bytes = Header(19, 3);
  bytes.insert(bytes.end(), body.begin(), body.end());
  WriteBytes(path, bytes);
  EXPECT_EQ(ReadFbin(path, 5).status().code(), StatusCode::kDataLoss);
}

TEST(VecsIoTest, FbinEmptyMatrixAndBadWrites) {
  TempDir dir;
  const auto path = dir.path() / "empty.fbin";
  ASSERT_TRUE(WriteFbin(path, MakeMatrix(0, 8)).ok());
  auto r = ReadFbin(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->rows, 0u);
  EXPECT_EQ(r->cols, 8u);
  EXPECT_EQ(WriteFbin(path, MakeMatrix(3, 0)).code(), StatusCode::kInvalidArgument);
  FloatMatrix wrong = MakeMatrix(3, 4);
  wrong.data.pop_back();
  EXPECT_EQ(WriteFbin(path, wrong).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFbin(dir.path() / "missing.fbin").status().code(), StatusCode::kNotFound);
}

GroundTruth MakeGroundTruth(size_t rows, size_t k) {
  GroundTruth gt;
  gt.rows = rows;
  gt.k = k;
  for (size_t i = 0; i < rows * k; ++i) {
    gt.ids.push_back(static_cast<int32_t>(i * 7 % 1000));
    gt.distances.push_back(static_cast<float>(i) * 0.5f);
  }
  return gt;
}

TEST(VecsIoTest, IbinRoundTripAndLayout) {
  TempDir dir;
  const auto path = dir.path() / "gt.ibin";
  const GroundTruth gt = MakeGroundTruth(12, 10);
  ASSERT_TRUE(WriteIbin(path, gt).ok());
  const std::vector<uint8_t> bytes = ReadBytes(path);
  ASSERT_EQ(bytes.size(), 8 + 12 * 10 * 8u);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8), Header(12, 10));
  int32_t id1;
  std::memcpy(&id1, bytes.data() + 8 + 4, 4);
  EXPECT_EQ(id1, gt.ids[1]);
  float d0;
  std::memcpy(&d0, bytes.data() + 8 + 12 * 10 * 4, 4);  // distances follow all ids
  EXPECT_EQ(d0, gt.distances[0]);

  auto r = ReadIbin(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->rows, 12u);
  EXPECT_EQ(r->k, 10u);
  EXPECT_EQ(r->ids, gt.ids);
  EXPECT_EQ(r->distances, gt.distances);
}

TEST(VecsIoTest, IbinDamageIsDataLoss) {
  TempDir dir;
  const auto path = dir.path() / "gt.ibin";
  ASSERT_TRUE(WriteIbin(path, MakeGroundTruth(5, 4)).ok());
  std::vector<uint8_t> bytes = ReadBytes(path);
  // Without the distances (an ids-only file) or cut anywhere.
  for (size_t size : {size_t{3}, size_t{8 + 5 * 4 * 4}, bytes.size() - 1}) {
    WriteBytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + size));
    EXPECT_EQ(ReadIbin(path).status().code(), StatusCode::kDataLoss) << size;
  }
  for (auto [n, k] : {std::pair{6, 4}, std::pair{5, 3}, std::pair{5, 0}, std::pair{-5, 4}}) {
    std::vector<uint8_t> lying = Header(n, k);
    lying.insert(lying.end(), bytes.begin() + 8, bytes.end());
    WriteBytes(path, lying);
    EXPECT_EQ(ReadIbin(path).status().code(), StatusCode::kDataLoss) << n << " " << k;
  }
  GroundTruth wrong = MakeGroundTruth(5, 4);
  wrong.distances.pop_back();
  EXPECT_EQ(WriteIbin(path, wrong).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadIbin(dir.path() / "missing.ibin").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace pixseek
