// The resumable disk graph build (src/index/build_parts.h, disk_build.cc):
// a multi-shard build under a tiny RAM budget against exact search, a build
// cancelled part-way that resumes to the same file, damaged parts that are
// detected and rebuilt, changed parameters that discard old parts, and a
// real SIGKILL of `pixseek bench ann` followed by a run that resumes.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "index/build_parts.h"
#include "index/disk_graph.h"
#include "index/vecs_io.h"
#include "subprocess.h"
#include "test_util.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using pixseek::testing::ChildProcess;
using pixseek::testing::ReadBytes;
using pixseek::testing::RunCommand;
using pixseek::testing::TempDir;
using pixseek::testing::WriteBytes;

// Unit vectors in clusters of a low-dimensional subspace, plus noise (as
// ../shared/tools/gen_vectors.py, smaller).
std::vector<float> ClusteredVectors(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const size_t sub = 8, clusters = 30;
  std::mt19937 model_rng(7);  // the same clusters for base and queries
  std::vector<float> basis(sub * dim), centres(clusters * sub);
  for (float& x : basis) x = normal(model_rng);
  for (float& x : centres) x = normal(model_rng);
  std::vector<float> out(n * dim);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    float* v = out.data() + i * dim;
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) v[d] = 0.05f * normal(rng);
    for (size_t s = 0; s < sub; ++s) {
      const float z = centres[c * sub + s] + 0.4f * normal(rng);
      for (size_t d = 0; d < dim; ++d) v[d] += z * basis[s * dim + d];
    }
    for (size_t d = 0; d < dim; ++d) norm += double{v[d]} * v[d];
    for (size_t d = 0; d < dim; ++d) v[d] = static_cast<float>(v[d] / std::sqrt(norm));
  }
  return out;
}

class DiskBuildResumeTest : public ::testing::Test {
 protected:
  // 4,000 rows of 32-d; the budget holds 2,000 rows at a time, so the build
  // runs in 5 overlapping shards.
  static constexpr size_t kN = 4000, kDim = 32, kQueries = 100, kK = 10;
  static constexpr int kR = 24;

  void SetUp() override {
    base_ = ClusteredVectors(kN, kDim, 1);
    queries_ = ClusteredVectors(kQueries, kDim, 2);
    ids_.resize(kN);
    for (size_t i = 0; i < kN; ++i) ids_[i] = static_cast<int64_t>(i) * 3 + 5;
  }

  DiskBuildParams Params() const {
    DiskBuildParams p;
    p.graph.max_degree = kR;
    p.graph.build_list = 48;
    p.graph.num_threads = 1;  // deterministic, so files can be compared
    p.pq_bytes = 8;
    p.build_ram_budget = 2000 * BuildBytesPerRow(kDim, kR);
    return p;
  }

  Status Build(const fs::path& out, const DiskBuildParams& p, DiskBuildReport* report,
               const std::atomic<bool>* cancel = nullptr, const BuildProgress& progress = nullptr) {
    MemoryVectorSource source(base_.data(), kN, kDim);
    return BuildDiskGraph(source, ids_, out, p, report, cancel, progress);
  }

  // Builds until `shards` shard graphs are done, then cancels.
  void BuildCancelledAfter(const fs::path& out, const DiskBuildParams& p, size_t shards) {
    std::atomic<bool> cancel{false};
    size_t finished = 0;
    std::string last_phase;
    size_t last_done = 0;
    BuildProgress progress = [&](const char* phase, size_t done, size_t) {
      const std::string ph = phase;
      // A shard reports at its start, as its graph's insertions go, and
      // once more with the same count when its part is written.
      if (ph.rfind("shard ", 0) == 0 && ph == last_phase && done == last_done &&
          ++finished == shards) {
        cancel = true;
      }
      last_phase = ph;
      last_done = done;
    };
    DiskBuildReport report;
    Status s = Build(out, p, &report, &cancel, progress);
    ASSERT_EQ(s.code(), StatusCode::kCancelled) << s.ToString();
    ASSERT_FALSE(fs::exists(out));
    ASSERT_TRUE(fs::exists(out.string() + ".parts/pq.part"));
    ASSERT_TRUE(fs::exists(out.string() + ".parts/partition.part"));
  }

  double Recall(const fs::path& file, int L) {
    auto g = DiskGraph::Open(file);
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    if (!g.ok()) return 0;
    DiskSearchParams sp;
    sp.search_list = L;
    std::vector<std::vector<SearchHit>> got;
    Status s = (*g)->SearchBatch(queries_.data(), kQueries, kK, sp, 2, nullptr, &got);
    EXPECT_TRUE(s.ok()) << s.ToString();
    double sum = 0;
    for (size_t q = 0; q < kQueries; ++q) {
      // Exact top k by inner product (unit vectors: the same order as L2).
      std::vector<std::pair<double, int64_t>> all;
      for (size_t i = 0; i < kN; ++i) {
        double ip = 0;
        for (size_t d = 0; d < kDim; ++d)
          ip += double{queries_[q * kDim + d]} * base_[i * kDim + d];
        all.emplace_back(-ip, ids_[i]);
      }
      std::partial_sort(all.begin(), all.begin() + kK, all.end());
      std::set<int64_t> truth;
      for (size_t i = 0; i < kK; ++i) truth.insert(all[i].second);
      size_t found = 0;
      for (const SearchHit& h : got[q]) found += truth.count(h.id);
      sum += double(found) / kK;
    }
    return sum / kQueries;
  }

  TempDir dir_;
  std::vector<float> base_, queries_;
  std::vector<int64_t> ids_;
};

TEST_F(DiskBuildResumeTest, MultiShardBuildReachesRecallAgainstExact) {
  const fs::path out = dir_.path() / "g.pxd";
  DiskBuildReport report;
  std::vector<std::string> phases;
  BuildProgress progress = [&](const char* phase, size_t done, size_t total) {
    EXPECT_LE(done, total) << phase;
    if (phases.empty() || phases.back() != phase) phases.push_back(phase);
  };
  ASSERT_TRUE(Build(out, Params(), &report, nullptr, progress).ok());
  EXPECT_EQ(report.shards, 5);
  EXPECT_LE(report.max_rows_in_ram, 2000u);
  EXPECT_TRUE(report.resumed.empty());
  EXPECT_FALSE(fs::exists(out.string() + ".parts")) << "the work directory outlived the build";
  // Phases in order: pq-train, pq-encode, partition, shard 1/5 .. 5/5, merge.
  ASSERT_GE(phases.size(), 9u);
  EXPECT_EQ(phases[0], "pq-train");
  EXPECT_EQ(phases[1], "pq-encode");
  EXPECT_EQ(phases[2], "partition");
  EXPECT_EQ(phases[3], "shard 1/5 graph");
  EXPECT_EQ(phases.back(), "merge");
  // L = 64 over 4,000 rows in 5 shards of about 1,800.
  const double recall = Recall(out, 64);
  RecordProperty("recall_at_10_L64", std::to_string(recall));
  EXPECT_GE(recall, 0.95);
}

TEST_F(DiskBuildResumeTest, CancelledBuildResumesToTheSameFile) {
  const fs::path reference = dir_.path() / "reference.pxd";
  DiskBuildReport ref_report;
  ASSERT_TRUE(Build(reference, Params(), &ref_report).ok());

  const fs::path out = dir_.path() / "resumed.pxd";
  BuildCancelledAfter(out, Params(), 2);
  DiskBuildReport report;
  std::vector<std::string> phases;
  BuildProgress progress = [&](const char* phase, size_t, size_t) {
    if (phases.empty() || phases.back() != phase) phases.push_back(phase);
  };
  Status s = Build(out, Params(), &report, nullptr, progress);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(report.reused_pq);
  EXPECT_TRUE(report.reused_partition);
  EXPECT_EQ(report.reused_shards, 2);
  EXPECT_NE(report.resumed.find("PQ codes, the partition and 2 of 5 shard graphs are already done"),
            std::string::npos)
      << report.resumed;
  // Only the rest was built: shards 3 to 5, then the merge.
  ASSERT_FALSE(phases.empty());
  EXPECT_EQ(phases.front(), "shard 3/5 graph");
  EXPECT_EQ(phases.back(), "merge");
  EXPECT_EQ(ReadBytes(out), ReadBytes(reference)) << "a resumed build differs from a whole one";
  EXPECT_FALSE(fs::exists(out.string() + ".parts"));
}

TEST_F(DiskBuildResumeTest, DamagedPartsAreDetectedAndRebuilt) {
  const fs::path reference = dir_.path() / "reference.pxd";
  ASSERT_TRUE(Build(reference, Params(), nullptr).ok());
  const fs::path out = dir_.path() / "g.pxd";
  const fs::path parts = out.string() + ".parts";
  BuildCancelledAfter(out, Params(), 3);
  // A flipped byte in the middle of a shard graph and of the PQ codes.
  for (const fs::path& part : {parts / "shard-0001.part", parts / "pq.part"}) {
    std::vector<uint8_t> bytes = ReadBytes(part);
    bytes[bytes.size() / 2] ^= 0x10;
    WriteBytes(part, bytes);
  }
  DiskBuildReport report;
  Status s = Build(out, Params(), &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.damaged_parts, (std::vector<std::string>{"pq.part", "shard-0001.part"}));
  EXPECT_FALSE(report.reused_pq);
  EXPECT_EQ(report.reused_shards, 2);
  EXPECT_EQ(ReadBytes(out), ReadBytes(reference));
}

TEST_F(DiskBuildResumeTest, DamagedPartitionRebuildsTheShardsBuiltFromIt) {
  const fs::path out = dir_.path() / "g.pxd";
  const fs::path parts = out.string() + ".parts";
  BuildCancelledAfter(out, Params(), 2);
  const fs::path partition = parts / "partition.part";
  std::vector<uint8_t> bytes = ReadBytes(partition);
  bytes.resize(bytes.size() - 3);  // truncated
  WriteBytes(partition, bytes);
  DiskBuildReport report;
  ASSERT_TRUE(Build(out, Params(), &report).ok());
  EXPECT_EQ(report.damaged_parts, std::vector<std::string>{"partition.part"});
  EXPECT_TRUE(report.reused_pq);
  EXPECT_EQ(report.reused_shards, 0);
  EXPECT_GE(Recall(out, 64), 0.95);
}

// The same inputs planned into another number of shards (a pixseek that
// sized a row's build memory differently, as before the graph linked on
// bfloat16): the partition and its shards are cut again, the codes kept.
TEST_F(DiskBuildResumeTest, PartitionOfAnotherShardCountIsCutAgain) {
  const fs::path reference = dir_.path() / "reference.pxd";
  ASSERT_TRUE(Build(reference, Params(), nullptr).ok());
  const fs::path out = dir_.path() / "g.pxd";
  const fs::path parts = out.string() + ".parts";
  BuildCancelledAfter(out, Params(), 2);
  // What the older planner left: a valid partition part of this build cut
  // into 7 shards, and shard parts past this plan's 5.
  const std::vector<uint8_t> manifest_bytes = ReadBytes(parts / "build.json");
  const std::string manifest(manifest_bytes.begin(), manifest_bytes.end());
  const size_t at = manifest.find("\"fingerprint\": \"");
  ASSERT_NE(at, std::string::npos) << manifest;
  const uint64_t fingerprint = std::stoull(manifest.substr(at + 16, 16), nullptr, 16);
  {
    auto w = build_parts::PartWriter::Create(parts / "partition.part",
                                             build_parts::PartKind::kPartition, fingerprint);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    const uint32_t header[4] = {7, static_cast<uint32_t>(kDim), 0, 0};
    ASSERT_TRUE((*w)->Append(header, sizeof header).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  fs::copy_file(parts / "shard-0000.part", parts / "shard-0006.part");
  DiskBuildReport report;
  Status s = Build(out, Params(), &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_NE(report.replanned.find("cut into 7 shards and this build plans 5"), std::string::npos)
      << report.replanned;
  EXPECT_TRUE(report.damaged_parts.empty());
  EXPECT_TRUE(report.reused_pq);
  EXPECT_FALSE(report.reused_partition);
  EXPECT_EQ(report.reused_shards, 0);
  EXPECT_EQ(ReadBytes(out), ReadBytes(reference)) << "a re-planned build differs from a whole one";
  EXPECT_FALSE(fs::exists(parts));
}

TEST_F(DiskBuildResumeTest, ChangedParameterOrInputDiscardsOldParts) {
  const fs::path out = dir_.path() / "g.pxd";
  BuildCancelledAfter(out, Params(), 2);
  DiskBuildParams changed = Params();
  changed.graph.build_list = 40;
  DiskBuildReport report;
  ASSERT_TRUE(Build(out, changed, &report).ok());
  EXPECT_NE(report.discarded.find("build_list"), std::string::npos) << report.discarded;
  EXPECT_FALSE(report.reused_pq);
  EXPECT_EQ(report.reused_shards, 0);
  EXPECT_TRUE(report.resumed.empty());

  // Other vectors (one row changed where the fingerprint samples it) too.
  fs::remove(out);
  BuildCancelledAfter(out, Params(), 1);
  base_[0] = -base_[0];
  base_[1] = -base_[1];
  DiskBuildReport after;
  ASSERT_TRUE(Build(out, Params(), &after).ok());
  EXPECT_NE(after.discarded.find("source_sample_xxh3"), std::string::npos) << after.discarded;
  EXPECT_EQ(after.reused_shards, 0);
}

TEST(BuildPartsTest, PartsAreCheckedInFull) {
  TempDir dir;
  const fs::path path = dir.path() / "x.part";
  {
    auto w = build_parts::PartWriter::Create(path, build_parts::PartKind::kShardGraph, 77);
    ASSERT_TRUE(w.ok());
    std::vector<uint32_t> payload(10000);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint32_t>(i * 31);
    ASSERT_TRUE((*w)->Append(payload.data(), payload.size() * 4).ok());
    // Not committed: nothing is left behind.
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  {
    auto w = build_parts::PartWriter::Create(path, build_parts::PartKind::kShardGraph, 77);
    ASSERT_TRUE(w.ok());
    for (uint32_t i = 0; i < 300000; ++i) ASSERT_TRUE((*w)->AppendValue(i).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  auto r = build_parts::PartReader::Open(path, build_parts::PartKind::kShardGraph, 77);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->payload_bytes(), 1200000u);
  for (uint32_t i = 0; i < 300000; i += 7919) {
    uint32_t v = 0;
    ASSERT_TRUE((*r)->ReadAt(uint64_t{i} * 4, &v, 4).ok());
    EXPECT_EQ(v, i);
  }
  uint32_t v = 0;
  EXPECT_EQ((*r)->ReadAt(1200000, &v, 4).code(), StatusCode::kDataLoss);
  r->reset();

  const std::vector<uint8_t> good = ReadBytes(path);
  auto expect_damaged = [&](std::vector<uint8_t> bytes, build_parts::PartKind kind,
                            uint64_t fingerprint, const std::string& what) {
    SCOPED_TRACE(what);
    WriteBytes(path, bytes);
    auto bad = build_parts::PartReader::Open(path, kind, fingerprint);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().ToString();
    EXPECT_NE(bad.status().message().find(path.string()), std::string::npos);
  };
  for (size_t at : {size_t{2}, size_t{30}, good.size() / 2, good.size() - 12, good.size() - 1}) {
    std::vector<uint8_t> b = good;
    b[at] ^= 0x01;
    expect_damaged(b, build_parts::PartKind::kShardGraph, 77, "flip at " + std::to_string(at));
  }
  expect_damaged({good.begin(), good.end() - 5}, build_parts::PartKind::kShardGraph, 77, "cut");
  expect_damaged({good.begin(), good.begin() + 20}, build_parts::PartKind::kShardGraph, 77, "stub");
  expect_damaged(good, build_parts::PartKind::kPq, 77, "another kind");
  expect_damaged(good, build_parts::PartKind::kShardGraph, 78, "another build");
  fs::remove(path);
  EXPECT_EQ(build_parts::PartReader::Open(path, build_parts::PartKind::kPq, 77).status().code(),
            StatusCode::kNotFound);
}

// A real SIGKILL of `pixseek bench ann` while it builds shard graphs; the
// next run resumes from the parts it left and finishes with good recall.
TEST(DiskBuildKillTest, KilledBenchBuildResumes) {
  TempDir dir;
  constexpr size_t kN = 20000, kDim = 32;
  FloatMatrix base{kN, kDim, ClusteredVectors(kN, kDim, 11)};
  FloatMatrix queries{100, kDim, ClusteredVectors(100, kDim, 12)};
  ASSERT_TRUE(WriteFbin(dir.path() / "base.fbin", base).ok());
  ASSERT_TRUE(WriteFbin(dir.path() / "query.fbin", queries).ok());
  // Shards of at most 3,000 rows: about 15 of them.
  const std::string budget = std::to_string(3000 * BuildBytesPerRow(kDim, 32));
  const std::vector<std::string> argv = {PIXSEEK_BINARY,
                                         "bench",
                                         "ann",
                                         "--base",
                                         (dir.path() / "base.fbin").string(),
                                         "--queries",
                                         (dir.path() / "query.fbin").string(),
                                         "--k",
                                         "10",
                                         "--L",
                                         "64",
                                         "--threads",
                                         "1",
                                         "--peers",
                                         "exact",
                                         "--workdir",
                                         (dir.path() / "work").string(),
                                         "--disk-R",
                                         "32",
                                         "--disk-build-L",
                                         "48",
                                         "--disk-pq-bytes",
                                         "8",
                                         "--build-ram-budget",
                                         budget};
  const fs::path parts = dir.path() / "work" / "disk" / "disk-20000-fp16.pxd.parts";
  {
    ChildProcess child(argv);
    const std::string line = child.WaitForLine("shard 3/", 120000);
    ASSERT_FALSE(line.empty()) << "no shard progress; stderr:\n" << child.stderr_text();
    EXPECT_NE(line.find("ETA"), std::string::npos) << line;
    EXPECT_EQ(child.Stop(SIGKILL), -SIGKILL);
  }
  ASSERT_TRUE(fs::exists(parts / "shard-0000.part"));
  ASSERT_FALSE(fs::exists(dir.path() / "work" / "disk" / "disk-20000-fp16.pxd"));
  const auto rerun = RunCommand(argv);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
  EXPECT_NE(rerun.err.find("resuming the disk index build"), std::string::npos) << rerun.err;
  EXPECT_NE(rerun.err.find("PQ codes, the partition and"), std::string::npos) << rerun.err;
  EXPECT_FALSE(fs::exists(parts));
  // The disk row: recall@10 at L = 64.
  const size_t at = rerun.out.find("\"index\":\"disk\"");
  ASSERT_NE(at, std::string::npos) << rerun.out;
  const size_t key = rerun.out.find("\"recall_at_10\":", at);
  ASSERT_NE(key, std::string::npos) << rerun.out;
  EXPECT_GE(std::stod(rerun.out.substr(key + 15)), 0.9) << rerun.out;
}

}  // namespace
}  // namespace pixseek
