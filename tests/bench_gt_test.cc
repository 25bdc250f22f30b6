// `pixseek bench gt` (src/bench_ann/ground_truth.h): the streamed exact
// ground truth against a brute-force scan, against the gt.ibin that
// ../shared/tools/gen_vectors.py writes, and tools/gen_vectors_big.py
// against gen_vectors.py (byte-identical files). The Python tests need
// numpy (Debian: python3-numpy) and gen_vectors.py beside the checkout (or
// under $PIXSEEK_SHARED); they skip with a message without them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench_ann/ground_truth.h"
#include "index/vecs_io.h"
#include "subprocess.h"
#include "test_util.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using pixseek::testing::Python;
using pixseek::testing::ReadBytes;
using pixseek::testing::RunCommand;
using pixseek::testing::TempDir;

FloatMatrix RandomUnitRows(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  FloatMatrix m{n, dim, std::vector<float>(n * dim)};
  for (size_t i = 0; i < n; ++i) {
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) {
      m.data[i * dim + d] = normal(rng);
      norm += double{m.data[i * dim + d]} * m.data[i * dim + d];
    }
    for (size_t d = 0; d < dim; ++d) m.data[i * dim + d] /= static_cast<float>(std::sqrt(norm));
  }
  return m;
}

TEST(BenchGtTest, StreamedBlocksMatchABruteForceScan) {
  TempDir dir;
  const FloatMatrix base = RandomUnitRows(3000, 16, 1), queries = RandomUnitRows(40, 16, 2);
  ASSERT_TRUE(WriteFbin(dir.path() / "base.fbin", base).ok());
  ASSERT_TRUE(WriteFbin(dir.path() / "query.fbin", queries).ok());
  GroundTruthOptions o;
  o.base = dir.path() / "base.fbin";
  o.queries = dir.path() / "query.fbin";
  o.out = dir.path() / "gt.ibin";
  o.k = 25;
  o.threads = 2;
  o.block_bytes = 2 * 300 * 16 * 4;  // blocks of 300 rows: ten of them
  ASSERT_TRUE(ComputeGroundTruth(o).ok());
  auto gt = ReadIbin(o.out);
  ASSERT_TRUE(gt.ok()) << gt.status().ToString();
  ASSERT_EQ(gt->rows, 40u);
  ASSERT_EQ(gt->k, 25u);
  for (size_t q = 0; q < 40; ++q) {
    std::vector<std::pair<double, int32_t>> all;
    for (size_t i = 0; i < 3000; ++i) {
      double dist = 0;
      for (size_t d = 0; d < 16; ++d) {
        const double diff = double{queries.data[q * 16 + d]} - base.data[i * 16 + d];
        dist += diff * diff;
      }
      all.emplace_back(dist, static_cast<int32_t>(i));
    }
    std::sort(all.begin(), all.end());
    for (size_t j = 0; j < 25; ++j) {
      EXPECT_EQ(gt->ids[q * 25 + j], all[j].second) << "query " << q << " rank " << j;
      EXPECT_NEAR(gt->distances[q * 25 + j], all[j].first, 1e-4);
    }
  }
  // Bad input: a k above the base, queries of another dimension.
  o.k = 3001;
  EXPECT_EQ(ComputeGroundTruth(o).code(), StatusCode::kInvalidArgument);
  o.k = 10;
  ASSERT_TRUE(WriteFbin(dir.path() / "q8.fbin", RandomUnitRows(4, 8, 3)).ok());
  o.queries = dir.path() / "q8.fbin";
  EXPECT_EQ(ComputeGroundTruth(o).code(), StatusCode::kInvalidArgument);
  o.queries = dir.path() / "missing.fbin";
  EXPECT_EQ(ComputeGroundTruth(o).code(), StatusCode::kNotFound);
}

// gen_vectors.py and numpy, or a reason to skip.
std::optional<fs::path> GenVectorsScript(std::string* why) {
  const auto shared = pixseek::testing::SharedDir();
  if (!shared || !fs::exists(*shared / "tools" / "gen_vectors.py")) {
    *why =
        "gen_vectors.py not found: set PIXSEEK_SHARED to the folder holding tools/gen_vectors.py";
    return std::nullopt;
  }
  if (RunCommand({Python(), "-c", "import numpy"}).exit_code != 0) {
    *why = Python() + " has no numpy (Debian: apt-get install python3-numpy)";
    return std::nullopt;
  }
  return *shared / "tools" / "gen_vectors.py";
}

TEST(BenchGtTest, MatchesGenVectorsGroundTruth) {
  std::string why;
  const auto script = GenVectorsScript(&why);
  if (!script) GTEST_SKIP() << why;
  TempDir dir;
  const auto gen = RunCommand({Python(), script->string(), dir.path().string(), "--nbase", "6000",
                               "--nquery", "50", "--dim", "64", "--k", "20"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  const fs::path mine = dir.path() / "mine.ibin";
  const auto run =
      RunCommand({PIXSEEK_BINARY, "bench", "gt", "--base", (dir.path() / "base.fbin").string(),
                  "--queries", (dir.path() / "query.fbin").string(), "--k", "20", "--out",
                  mine.string(), "--threads", "2", "--block-bytes", "1048576"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("bench gt: scan 100%"), std::string::npos) << run.err;
  auto want = ReadIbin(dir.path() / "gt.ibin");
  auto got = ReadIbin(mine);
  ASSERT_TRUE(want.ok() && got.ok());
  ASSERT_EQ(got->rows, want->rows);
  ASSERT_EQ(got->k, want->k);
  // Float rounding differs between numpy's and FAISS's sums: neighbours at
  // (nearly) equal distances may swap, so compare as sets, distances closely.
  size_t same = 0;
  for (size_t q = 0; q < want->rows; ++q) {
    const std::set<int32_t> a(want->ids.begin() + q * 20, want->ids.begin() + (q + 1) * 20);
    for (size_t j = 0; j < 20; ++j) {
      same += a.count(got->ids[q * 20 + j]);
      EXPECT_NEAR(got->distances[q * 20 + j], want->distances[q * 20 + j], 1e-4);
    }
  }
  EXPECT_GE(double(same) / double(want->rows * 20), 0.999);
}

TEST(GenVectorsBigTest, WritesTheSameBytesAsGenVectors) {
  std::string why;
  const auto script = GenVectorsScript(&why);
  if (!script) GTEST_SKIP() << why;
  TempDir dir;
  const std::vector<std::string> args = {"--nbase", "4000", "--nquery", "30",
                                         "--dim",   "64",   "--k",      "10"};
  std::vector<std::string> plain = {Python(), script->string(), (dir.path() / "a").string()};
  std::vector<std::string> big = {Python(),
                                  std::string(PIXSEEK_SOURCE_DIR) + "/tools/gen_vectors_big.py",
                                  "--script", script->string(), (dir.path() / "b").string()};
  plain.insert(plain.end(), args.begin(), args.end());
  big.insert(big.end(), args.begin(), args.end());
  const auto a = RunCommand(plain);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto b = RunCommand(big);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  for (const char* file : {"base.fbin", "query.fbin", "gt.ibin"}) {
    SCOPED_TRACE(file);
    const auto x = ReadBytes(dir.path() / "a" / file);
    EXPECT_FALSE(x.empty());
    EXPECT_TRUE(x == ReadBytes(dir.path() / "b" / file));
  }
}

}  // namespace
}  // namespace pixseek
