// Tests for bench_ann/ann_bench.h: the ANN benchmark harness with every
// built-in candidate on a small clustered data set, its input checks, the
// candidate registry, and the `pixseek bench ann` command.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_ann/ann_bench.h"
#include "index/vecs_io.h"
#include "subprocess.h"
#include "test_util.h"

namespace pixseek {
namespace {

using nlohmann::json;
using testing::TempDir;

constexpr size_t kDim = 32;

// n unit vectors around 20 fixed random unit centres; `seed` picks the points.
FloatMatrix Clustered(size_t n, uint64_t seed) {
  constexpr size_t kClusters = 20;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto normalise = [](float* v) {
    double norm = 0;
    for (size_t j = 0; j < kDim; ++j) norm += double{v[j]} * v[j];
    for (size_t j = 0; j < kDim; ++j) v[j] = static_cast<float>(v[j] / std::sqrt(norm));
  };
  std::mt19937_64 centre_rng(7);
  std::vector<float> centres(kClusters * kDim);
  for (auto& x : centres) x = normal(centre_rng);
  for (size_t c = 0; c < kClusters; ++c) normalise(&centres[c * kDim]);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, kClusters - 1);
  FloatMatrix m;
  m.rows = n;
  m.cols = kDim;
  m.data.resize(n * kDim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    for (size_t j = 0; j < kDim; ++j)
      m.data[i * kDim + j] = centres[c * kDim + j] + 0.2f * normal(rng);
    normalise(&m.data[i * kDim]);
  }
  return m;
}

class AnnBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = dir_.path() / "base.fbin";
    queries_ = dir_.path() / "query.fbin";
    ASSERT_TRUE(WriteFbin(base_, Clustered(2000, 1)).ok());
    ASSERT_TRUE(WriteFbin(queries_, Clustered(50, 2)).ok());
  }

  AnnBenchOptions Options() const {
    AnnBenchOptions o;
    o.base = base_;
    o.queries = queries_;
    o.k = 10;
    o.L = {10, 50};
    o.threads = 2;
    o.workdir = dir_.path() / "work";
    return o;
  }

  // Runs the bench and parses its rows.
  std::vector<json> Run(const AnnBenchOptions& options) {
    std::ostringstream out;
    Status s = RunAnnBench(options, out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<json> rows;
    std::istringstream lines(out.str());
    for (std::string line; std::getline(lines, line);) rows.push_back(json::parse(line));
    return rows;
  }

  TempDir dir_;
  std::filesystem::path base_, queries_;
};

const std::vector<std::string> kRequiredKeys = {"index",
                                                "params",
                                                "L",
                                                "threads",
                                                "qps",
                                                "mean_latency_us",
                                                "p99_latency_us",
                                                "mean_node_reads",
                                                "mean_sectors_read",
                                                "recall_at_10",
                                                "ram_bytes",
                                                "disk_bytes",
                                                "build_s",
                                                "storage"};

TEST_F(AnnBenchTest, EveryCandidateGivesRowsWithSensibleRecall) {
  AnnBenchOptions options = Options();
  options.ram_budget = 1 << 20;  // room for 16-byte PQ codes and a node cache
  std::vector<json> rows = Run(options);
  // pixseek's disk index at two L values, exact once, then two L values for
  // each of the three peers.
  ASSERT_EQ(rows.size(), 9u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(rows[i]["index"], "disk");
    EXPECT_GT(rows[i]["disk_bytes"].get<uint64_t>(), 0u);
    EXPECT_GT(rows[i]["mean_node_reads"].get<double>(), 0);
    EXPECT_LE(rows[i]["ram_bytes"].get<uint64_t>(), options.ram_budget);
  }
  EXPECT_GE(rows[1]["recall_at_10"].get<double>(), 0.9) << rows[1];
  rows.erase(rows.begin(), rows.begin() + 2);
  std::map<std::string, std::map<int, double>> recall;  // index -> L -> recall
  for (const json& row : rows) {
    for (const auto& key : kRequiredKeys) EXPECT_TRUE(row.contains(key)) << key << " in " << row;
    EXPECT_GT(row["qps"].get<double>(), 0) << row;
    EXPECT_GT(row["mean_latency_us"].get<double>(), 0) << row;
    EXPECT_GE(row["p99_latency_us"].get<double>(), row["mean_latency_us"].get<double>() * 0.5);
    EXPECT_GT(row["ram_bytes"].get<uint64_t>(), 0u) << row;
    EXPECT_EQ(row["disk_bytes"].get<uint64_t>(), 0u) << row;
    EXPECT_EQ(row["threads"], 2);
    EXPECT_EQ(row["n"], 2000);
    EXPECT_EQ(row["nq"], 50);
    const std::string index = row["index"];
    const int L = row["L"].is_null() ? 0 : row["L"].get<int>();
    recall[index][L] = row["recall_at_10"].get<double>();
  }
  ASSERT_EQ(recall.count("exact"), 1u);
  EXPECT_EQ(recall["exact"][0], 1.0);
  EXPECT_GE(recall["hnswlib"][50], 0.9);
  EXPECT_GE(recall["faiss-hnsw"][50], 0.9);
  // Only sanity for the quantized index: 32 one-dimensional sub-spaces
  // reproduce inner products closely.
  EXPECT_GE(recall["faiss-ivfpq"][50], 0.5);
  EXPECT_EQ(rows[0]["index"], "exact");
  EXPECT_TRUE(rows[0]["L"].is_null());
  EXPECT_EQ(rows[1]["params"], json({{"M", 32}, {"efConstruction", 200}}));
}

TEST_F(AnnBenchTest, GroundTruthFileIsUsedAndChecked) {
  // A ground truth whose every row is 0..9: exact's recall then drops.
  GroundTruth gt;
  gt.rows = 50;
  gt.k = 10;
  for (size_t q = 0; q < 50; ++q) {
    for (int j = 0; j < 10; ++j) {
      gt.ids.push_back(j);
      gt.distances.push_back(0);
    }
  }
  const auto gt_path = dir_.path() / "gt.ibin";
  ASSERT_TRUE(WriteIbin(gt_path, gt).ok());
  AnnBenchOptions options = Options();
  options.peers = {};
  options.gt = gt_path;
  std::vector<json> rows = Run(options);
  // Only the exact row matters here; "disk" runs too when registered.
  std::erase_if(rows, [](const json& r) { return r["index"] != "exact"; });
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_LT(rows[0]["recall_at_10"].get<double>(), 0.5);

  // With --limit-base the file is ignored (its ids refer to the full set).
  options.limit_base = 500;
  std::vector<json> limited = Run(options);
  std::erase_if(limited, [](const json& r) { return r["index"] != "exact"; });
  ASSERT_EQ(limited.size(), 1u);
  EXPECT_EQ(limited[0]["recall_at_10"].get<double>(), 1.0);
  EXPECT_EQ(limited[0]["n"], 500);

  // Too few neighbours per query for k.
  options.limit_base = 0;
  options.k = 20;
  std::ostringstream out;
  Status s = RunAnnBench(options, out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
}

TEST_F(AnnBenchTest, MissingBaseIsNotFound) {
  AnnBenchOptions options = Options();
  options.base = dir_.path() / "absent.fbin";
  std::ostringstream out;
  Status s = RunAnnBench(options, out);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("absent.fbin"), std::string::npos) << s.message();
  EXPECT_TRUE(out.str().empty());
}

TEST_F(AnnBenchTest, DimensionMismatchIsInvalidArgument) {
  FloatMatrix other = Clustered(5, 3);
  other.cols = 16;
  other.rows = 10;
  ASSERT_TRUE(WriteFbin(queries_, other).ok());
  std::ostringstream out;
  Status s = RunAnnBench(Options(), out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("dimension"), std::string::npos) << s.message();
}

TEST_F(AnnBenchTest, BadOptionsAreInvalidArgument) {
  std::ostringstream out;
  AnnBenchOptions options = Options();
  options.peers = {"no-such-index"};
  EXPECT_EQ(RunAnnBench(options, out).code(), StatusCode::kInvalidArgument);
  options = Options();
  options.L = {10, 0};
  EXPECT_EQ(RunAnnBench(options, out).code(), StatusCode::kInvalidArgument);
  options = Options();
  options.threads = 0;
  EXPECT_EQ(RunAnnBench(options, out).code(), StatusCode::kInvalidArgument);
  options = Options();
  options.k = 0;
  EXPECT_EQ(RunAnnBench(options, out).code(), StatusCode::kInvalidArgument);
  options = Options();
  options.rounds = 2;  // rounds need interleave
  EXPECT_EQ(RunAnnBench(options, out).code(), StatusCode::kInvalidArgument);
  options.interleave = true;
  options.rounds = 0;
  EXPECT_EQ(RunAnnBench(options, out).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(out.str().empty());
}

TEST_F(AnnBenchTest, InterleavedRoundsMeasureEveryCandidateAtEachLInTurn) {
  AnnBenchOptions options = Options();
  options.peers = {"hnswlib"};
  options.ram_budget = 1 << 20;  // room for 16-byte PQ codes, as above
  options.interleave = true;
  options.rounds = 2;
  std::vector<json> rows = Run(options);
  // Per round: L = 10 for disk, exact (once a round, no L) and hnswlib, then
  // L = 50 for disk and hnswlib.
  ASSERT_EQ(rows.size(), 10u);
  const std::vector<std::pair<std::string, int>> order = {
      {"disk", 10}, {"exact", 0}, {"hnswlib", 10}, {"disk", 50}, {"hnswlib", 50}};
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& [index, L] = order[i % order.size()];
    EXPECT_EQ(rows[i]["index"], index) << i;
    EXPECT_EQ(rows[i]["L"].is_null() ? 0 : rows[i]["L"].get<int>(), L) << i;
    EXPECT_EQ(rows[i]["round"], static_cast<int>(i / order.size())) << i;
  }
  // Built once: both rounds report the same build time and the same recall.
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(rows[i]["build_s"], rows[i + order.size()]["build_s"]) << i;
    EXPECT_EQ(rows[i]["recall_at_10"], rows[i + order.size()]["recall_at_10"]) << i;
  }
  EXPECT_GE(rows[3]["recall_at_10"].get<double>(), 0.9);
}

// A stand-in for the disk index the lead adds later: registered under
// "disk", it runs first, and its extra keys reach the rows.
class FakeDisk final : public AnnCandidate {
 public:
  std::string name() const override { return "disk"; }
  json params() const override { return {{"R", 1}}; }
  Status Build(const AnnData& data, const std::filesystem::path& workdir) override {
    n_ = data.n;
    return std::filesystem::is_directory(workdir) ? Status::Ok() : Status::Internal("no workdir");
  }
  Status SearchAll(const float*, size_t nq, size_t k, int, int threads, std::vector<int64_t>* ids,
                   std::vector<AnnQueryStats>* stats) override {
    ids->assign(nq * k, -1);
    return RunQueriesOnThreads(
        nq, threads,
        [&](size_t q, AnnQueryStats* st) {
          for (size_t j = 0; j < k; ++j) (*ids)[q * k + j] = static_cast<int64_t>(j);
          st->node_reads = 3;
          st->sectors_read = 4;
          return Status::Ok();
        },
        stats);
  }
  uint64_t ram_bytes() const override { return 100; }
  uint64_t disk_bytes() const override { return n_ * 4096; }
  json extra() const override { return {{"storage", "disk"}, {"cache_bytes", 7}}; }

 private:
  size_t n_ = 0;
};

TEST_F(AnnBenchTest, RegisteredCandidateRunsFirst) {
  RegisterCandidate("disk", [](const AnnBenchOptions&) { return std::make_unique<FakeDisk>(); });
  AnnBenchOptions options = Options();
  options.peers = {};
  options.ram_budget = 1000;
  const std::vector<json> rows = Run(options);
  // A null factory result skips "disk" again for the other tests.
  RegisterCandidate(
      "disk", [](const AnnBenchOptions&) -> std::unique_ptr<AnnCandidate> { return nullptr; });
  ASSERT_EQ(rows.size(), 3u);  // disk at two L values, then exact
  EXPECT_EQ(rows[0]["index"], "disk");
  EXPECT_EQ(rows[0]["L"], 10);
  EXPECT_EQ(rows[1]["L"], 50);
  EXPECT_EQ(rows[0]["mean_node_reads"], 3.0);
  EXPECT_EQ(rows[0]["mean_sectors_read"], 4.0);
  EXPECT_EQ(rows[0]["disk_bytes"], 2000 * 4096);
  EXPECT_EQ(rows[0]["storage"], "disk");
  EXPECT_EQ(rows[0]["cache_bytes"], 7);
  EXPECT_EQ(rows[0]["within_ram_budget"], true);
  EXPECT_EQ(rows[2]["index"], "exact");
  EXPECT_EQ(rows[2]["within_ram_budget"], false);
}

TEST(RunQueriesOnThreadsTest, RunsEveryQueryOnceAndStopsAtAnError) {
  std::vector<std::atomic<int>> calls(100);
  std::vector<AnnQueryStats> stats;
  double wall_s = -1;
  ASSERT_TRUE(RunQueriesOnThreads(
                  100, 3,
                  [&](size_t i, AnnQueryStats*) {
                    ++calls[i];
                    return Status::Ok();
                  },
                  &stats, &wall_s)
                  .ok());
  for (const auto& c : calls) EXPECT_EQ(c.load(), 1);
  EXPECT_EQ(stats.size(), 100u);
  EXPECT_GE(wall_s, 0);

  Status s = RunQueriesOnThreads(
      100, 2,
      [](size_t i, AnnQueryStats*) -> Status {
        if (i == 7) throw std::runtime_error("boom");
        return Status::Ok();
      },
      &stats);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("boom"), std::string::npos) << s.message();
}

TEST_F(AnnBenchTest, CommandPrintsRows) {
  const testing::CommandResult r =
      testing::RunCommand({PIXSEEK_BINARY, "bench", "ann", "--base", base_.string(), "--queries",
                           queries_.string(), "--L", "10,20", "--threads", "2", "--peers",
                           "hnswlib", "--workdir", (dir_.path() / "cli").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::vector<json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(json::parse(line));
  // pixseek's disk index first (one row per L), then exact, then the peer.
  ASSERT_EQ(rows.size(), 5u) << r.out;
  EXPECT_EQ(rows[0]["index"], "disk");
  EXPECT_EQ(rows[1]["index"], "disk");
  EXPECT_GT(rows[0]["disk_bytes"].get<double>(), 0);
  EXPECT_GT(rows[0]["mean_sectors_read"].get<double>(), 0);
  rows.erase(rows.begin(), rows.begin() + 2);
  EXPECT_EQ(rows[0]["index"], "exact");
  EXPECT_EQ(rows[1]["index"], "hnswlib");
  EXPECT_EQ(rows[1]["L"], 10);
  EXPECT_EQ(rows[2]["L"], 20);
  EXPECT_NE(r.err.find("building hnswlib"), std::string::npos) << r.err;

  const testing::CommandResult missing =
      testing::RunCommand({PIXSEEK_BINARY, "bench", "ann", "--base",
                           (dir_.path() / "absent.fbin").string(), "--queries", queries_.string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("NOT_FOUND"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace pixseek
