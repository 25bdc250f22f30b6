// The disk graph file (build, search, damage) and the disk index around it
// (compaction, tombstones, reopen, concurrent compaction, kill at random
// moments). The VectorIndex contract itself is checked by the typed suite in
// vector_index_test.cc, which runs the disk index too.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "index/disk_format.h"
#include "index/disk_graph.h"
#include "pixseek/disk_index.h"
#include "subprocess.h"
#include "test_util.h"

namespace pixseek {
namespace {

// Whether the index holds a vector for `id`.
bool Has(const VectorIndex& index, int64_t id) { return index.Get(id).ok(); }

namespace fs = std::filesystem;
using pixseek::testing::ChildProcess;
using pixseek::testing::ReadBytes;
using pixseek::testing::TempDir;
using pixseek::testing::WriteBytes;

// Unit vectors like pooled CNN features: clusters in a low-dimensional
// subspace plus a little isotropic noise (as ../shared/tools/gen_vectors.py).
std::vector<float> FeatureLikeVectors(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const size_t sub = std::min<size_t>(16, dim), clusters = 40;
  std::vector<float> basis(sub * dim), centres(clusters * sub);
  for (float& x : basis) x = normal(rng);
  for (float& x : centres) x = normal(rng);
  std::vector<float> out(n * dim);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    std::vector<float> z(sub);
    for (size_t s = 0; s < sub; ++s) z[s] = centres[c * sub + s] + 0.4f * normal(rng);
    float* v = out.data() + i * dim;
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) {
      float x = 0.05f * normal(rng);
      for (size_t s = 0; s < sub; ++s) x += z[s] * basis[s * dim + d];
      v[d] = x;
      norm += double{x} * x;
    }
    for (size_t d = 0; d < dim; ++d) v[d] = static_cast<float>(v[d] / std::sqrt(norm));
  }
  return out;
}

std::vector<std::vector<int64_t>> BruteForce(const std::vector<float>& base,
                                             const std::vector<int64_t>& ids,
                                             const std::vector<float>& queries, size_t dim,
                                             size_t k, const std::set<int64_t>& skip = {}) {
  const size_t n = ids.size(), nq = queries.size() / dim;
  std::vector<std::vector<int64_t>> out(nq);
  for (size_t q = 0; q < nq; ++q) {
    std::vector<std::pair<double, int64_t>> all;
    for (size_t i = 0; i < n; ++i) {
      if (skip.count(ids[i])) continue;
      double s = 0;
      for (size_t d = 0; d < dim; ++d) s += double{queries[q * dim + d]} * base[i * dim + d];
      all.emplace_back(-s, ids[i]);
    }
    std::partial_sort(all.begin(), all.begin() + std::min(k, all.size()), all.end());
    for (size_t i = 0; i < std::min(k, all.size()); ++i) out[q].push_back(all[i].second);
  }
  return out;
}

double Recall(const std::vector<std::vector<SearchHit>>& got,
              const std::vector<std::vector<int64_t>>& want) {
  double sum = 0;
  for (size_t q = 0; q < want.size(); ++q) {
    std::set<int64_t> truth(want[q].begin(), want[q].end());
    size_t found = 0;
    for (const auto& h : got[q]) found += truth.count(h.id);
    sum += truth.empty() ? 1.0 : double(found) / double(truth.size());
  }
  return sum / double(want.size());
}

std::vector<int64_t> ScrambledIds(size_t n) {
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i * 7919 % 1000003) + 17;
  return ids;
}

// ---------------------------------------------------------------------------
// The disk graph file.

class DiskGraphTest : public ::testing::Test {
 protected:
  static constexpr size_t kN = 3000, kDim = 64, kQueries = 50, kK = 10;

  void SetUp() override {
    base_ = FeatureLikeVectors(kN, kDim, 1);
    queries_ = FeatureLikeVectors(kQueries, kDim, 2);
    ids_ = ScrambledIds(kN);
    truth_ = BruteForce(base_, ids_, queries_, kDim, kK);
  }

  fs::path Build(VectorStorage storage, uint64_t build_budget = 0, DiskBuildReport* report = nullptr) {
    const fs::path path = dir_.path() / ("g-" + std::string(StorageName(storage)) + ".pxd");
    MemoryVectorSource source(base_.data(), kN, kDim);
    DiskBuildParams p;
    p.storage = storage;
    p.graph.max_degree = 32;
    p.graph.build_list = 64;
    // One thread: the same graph every run, so that a recall bound checked
    // here holds or fails for good (with two, insertion races move int8's
    // recall at L = 100 around 0.95 from run to run).
    p.graph.num_threads = 1;
    p.pq_bytes = 16;
    p.build_ram_budget = build_budget;
    Status s = BuildDiskGraph(source, ids_, path, p, report);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return path;
  }

  double SearchRecall(const DiskGraph& g, int L, DiskSearchStats* total = nullptr) {
    DiskSearchParams sp;
    sp.search_list = L;
    std::vector<std::vector<SearchHit>> got;
    std::vector<DiskSearchStats> stats;
    Status s = g.SearchBatch(queries_.data(), kQueries, kK, sp, 2, nullptr, &got, &stats);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (!s.ok()) return 0;
    for (const auto& hits : got) {
      for (size_t i = 1; i < hits.size(); ++i) EXPECT_GE(hits[i - 1].score, hits[i].score);
    }
    if (total != nullptr) {
      for (const auto& st : stats) {
        total->node_reads += st.node_reads;
        total->cache_hits += st.cache_hits;
        total->sectors_read += st.sectors_read;
      }
    }
    return Recall(got, truth_);
  }

  TempDir dir_;
  std::vector<float> base_, queries_;
  std::vector<int64_t> ids_;
  std::vector<std::vector<int64_t>> truth_;
};

TEST_F(DiskGraphTest, EveryStorageReachesRecall) {
  for (VectorStorage storage : {VectorStorage::kFloat32, VectorStorage::kFloat16, VectorStorage::kInt8}) {
    SCOPED_TRACE(std::string(StorageName(storage)));
    auto g = DiskGraph::Open(Build(storage));
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    EXPECT_EQ((*g)->size(), kN);
    EXPECT_EQ((*g)->storage(), storage);
    DiskSearchStats stats;
    // int8 re-ranks with 8-bit values, which caps its recall on this data
    // at 0.974 (reached from L = 200; fp32 and fp16 reach 1.0): at L = 100
    // the one-thread graph gives 0.968 for both float storages and 0.950
    // (exactly at 0.95, below it by rounding) for int8.
    EXPECT_GE(SearchRecall(**g, 100, &stats), storage == VectorStorage::kInt8 ? 0.94 : 0.95);
    EXPECT_GE(SearchRecall(**g, 200), storage == VectorStorage::kInt8 ? 0.97 : 0.99);
    EXPECT_GT(stats.node_reads, 0u);
    EXPECT_EQ(stats.cache_hits, 0u);  // no cache asked for
    // Exact re-ranking: a stored vector finds itself first with score ~1.
    std::vector<SearchHit> hits;
    ASSERT_TRUE((*g)->Search(base_.data() + 5 * kDim, 3, {}, nullptr, &hits).ok());
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].id, ids_[5]);
    EXPECT_NEAR(hits[0].score, 1.0, storage == VectorStorage::kInt8 ? 2e-2 : 2e-3);
  }
}

TEST_F(DiskGraphTest, NodeCacheServesReads) {
  const fs::path path = Build(VectorStorage::kFloat16);
  DiskGraphOptions o;
  o.cache_bytes = 200 * 4096;
  auto g = DiskGraph::Open(path, o);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_GT((*g)->cached_nodes(), 100u);
  DiskSearchStats stats;
  // L = 100: a two-thread build varies, and at L = 64 recall sits near 0.95.
  EXPECT_GE(SearchRecall(**g, 100, &stats), 0.95);
  EXPECT_GT(stats.cache_hits, 0u);
  auto plain = DiskGraph::Open(path);
  ASSERT_TRUE(plain.ok());
  EXPECT_GT((*g)->ram_bytes(), (*plain)->ram_bytes());
}

TEST_F(DiskGraphTest, FilterSkipsNodesButKeepsThemForRouting) {
  auto g = DiskGraph::Open(Build(VectorStorage::kFloat32));
  ASSERT_TRUE(g.ok());
  std::set<int64_t> skip;
  for (size_t i = 0; i < kN; i += 2) skip.insert(ids_[i]);
  const DiskGraph& graph = **g;
  NodeFilter keep = [&](uint32_t node) { return skip.count(graph.id(node)) == 0; };
  DiskSearchParams sp;
  sp.search_list = 100;
  std::vector<std::vector<SearchHit>> got;
  ASSERT_TRUE(graph.SearchBatch(queries_.data(), kQueries, kK, sp, 1, keep, &got).ok());
  for (const auto& hits : got) {
    for (const auto& h : hits) EXPECT_EQ(skip.count(h.id), 0u);
  }
  EXPECT_GE(Recall(got, BruteForce(base_, ids_, queries_, kDim, kK, skip)), 0.9);
}

TEST_F(DiskGraphTest, ShardedBuildUnderRamBudget) {
  DiskBuildReport report;
  // Room for about 1,100 rows at a time: three shards of overlapping rows.
  const fs::path path = Build(VectorStorage::kFloat16, 1100 * BuildBytesPerRow(kDim, 32), &report);
  EXPECT_GE(report.shards, 3);
  EXPECT_LT(report.max_rows_in_ram, kN);
  auto g = DiskGraph::Open(path);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_GE(SearchRecall(**g, 64), 0.9);
}

TEST_F(DiskGraphTest, DamageIsReportedNotCrashed) {
  const fs::path path = Build(VectorStorage::kFloat16);
  const std::vector<uint8_t> good = ReadBytes(path);
  auto expect_open_fails = [&](std::vector<uint8_t> bytes, const std::string& what) {
    SCOPED_TRACE(what);
    WriteBytes(path, bytes);
    auto g = DiskGraph::Open(path);
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), StatusCode::kDataLoss) << g.status().ToString();
    EXPECT_NE(g.status().message().find(path.string()), std::string::npos);
  };
  auto flip = [&](size_t at) {
    std::vector<uint8_t> b = good;
    b[at] ^= 0x5a;
    return b;
  };
  expect_open_fails(flip(3), "magic");
  expect_open_fails(flip(40), "header field");
  expect_open_fails(std::vector<uint8_t>(good.begin(), good.end() - 4096), "truncated");
  expect_open_fails(std::vector<uint8_t>(good.begin(), good.begin() + 100), "header cut");
  expect_open_fails(flip(good.size() - 10), "last section");
  expect_open_fails(std::vector<uint8_t>(8192, 0), "zeros");

  // A damaged node block opens (blocks are checked as they are read) and the
  // search that reads it fails with DataLoss.
  WriteBytes(path, good);
  {
    std::vector<uint8_t> b = good;
    const disk::NodeLayout layout = disk::NodeLayout::Make(VectorStorage::kFloat16, kDim, 32);
    for (uint64_t block = 0; block < layout.blocks(kN); ++block) {
      b[disk::kSector + block * layout.block_bytes() + 100] ^= 0xff;  // every block
    }
    WriteBytes(path, b);
    auto g = DiskGraph::Open(path);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    std::vector<SearchHit> hits;
    Status s = (*g)->Search(queries_.data(), 5, {}, nullptr, &hits);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
    EXPECT_EQ((*g)->ReadVector(0).status().code(), StatusCode::kDataLoss);
    std::vector<std::vector<SearchHit>> many;
    EXPECT_EQ((*g)->SearchBatch(queries_.data(), kQueries, 5, {}, 2, nullptr, &many).code(),
              StatusCode::kDataLoss);
  }
  auto missing = DiskGraph::Open(dir_.path() / "nope.pxd");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(DiskGraphTest, BadInputsRejected) {
  MemoryVectorSource few(base_.data(), 100, kDim);
  std::vector<int64_t> ids(ids_.begin(), ids_.begin() + 100);
  EXPECT_EQ(BuildDiskGraph(few, ids, dir_.path() / "few.pxd", {}).code(),
            StatusCode::kInvalidArgument);
  MemoryVectorSource source(base_.data(), kN, kDim);
  EXPECT_EQ(BuildDiskGraph(source, ids, dir_.path() / "ids.pxd", {}).code(),
            StatusCode::kInvalidArgument);
  DiskBuildParams p;
  p.pq_bytes = 7;  // does not divide 64
  EXPECT_EQ(BuildDiskGraph(source, ids_, dir_.path() / "pq.pxd", p).code(),
            StatusCode::kInvalidArgument);
  std::vector<float> not_unit(base_);
  not_unit[10] = 3.0f;
  MemoryVectorSource bad(not_unit.data(), kN, kDim);
  EXPECT_EQ(BuildDiskGraph(bad, ids_, dir_.path() / "bad.pxd", {}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir_.path() / "bad.pxd"));
  EXPECT_FALSE(fs::exists(dir_.path() / "bad.pxd.tmp"));
  auto g = DiskGraph::Open(Build(VectorStorage::kFloat32));
  ASSERT_TRUE(g.ok());
  std::vector<float> q(queries_.begin(), queries_.begin() + kDim);
  q[3] = NAN;
  std::vector<SearchHit> hits;
  EXPECT_EQ((*g)->Search(q.data(), 5, {}, nullptr, &hits).code(), StatusCode::kInvalidArgument);
  std::atomic<bool> cancel{true};
  EXPECT_EQ(BuildDiskGraph(source, ids_, dir_.path() / "c.pxd", {}, nullptr, &cancel).code(),
            StatusCode::kCancelled);
  EXPECT_FALSE(fs::exists(dir_.path() / "c.pxd"));
}

TEST(ChoosePqBytesTest, LargestDivisorUnderTarget) {
  EXPECT_EQ(ChoosePqBytes(2048, 655), 512);
  EXPECT_EQ(ChoosePqBytes(768, 245), 192);
  EXPECT_EQ(ChoosePqBytes(1280, 409), 320);
  EXPECT_EQ(ChoosePqBytes(7, 100), 1);
  EXPECT_EQ(ChoosePqBytes(64, 1000), 32);  // at least two coordinates per sub-space
  // 10% of 100,000 x 2048 floats: 512-byte codes, as DiskANN uses.
  EXPECT_EQ(ChoosePqBytesForBudget(2048, 100000, 81920000), 512);
  // 10% of 1,000,000 x 768 floats: 192-byte codes (4 coordinates each).
  EXPECT_EQ(ChoosePqBytesForBudget(768, 1000000, 307200000), 192);
}

// ---------------------------------------------------------------------------
// The disk index: base + delta + tombstones + compaction.

DiskIndexOptions SmallIndexOptions() {
  DiskIndexOptions o;
  o.storage = "fp32";
  o.min_base_vectors = 500;
  o.max_degree = 32;
  o.build_list = 64;
  o.num_threads = 2;
  return o;
}

class DiskIndexTest : public ::testing::Test {
 protected:
  static constexpr size_t kDim = 48;
  fs::path dir() const { return dir_.path() / "index"; }
  std::unique_ptr<DiskIndex> Open(const DiskIndexOptions& o = SmallIndexOptions()) {
    auto index = OpenDiskIndex(dir(), kDim, o);
    EXPECT_TRUE(index.ok()) << index.status().ToString();
    return index.ok() ? std::move(index).value() : nullptr;
  }
  TempDir dir_;
};

TEST_F(DiskIndexTest, CompactionMovesChangesIntoTheBase) {
  const size_t n = 2000;
  auto data = FeatureLikeVectors(n + 300, kDim, 5);
  auto ids = ScrambledIds(n + 300);
  auto queries = FeatureLikeVectors(40, kDim, 6);
  auto index = Open();
  ASSERT_NE(index, nullptr);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  EXPECT_EQ(index->stats().base_vectors, 0u);
  EXPECT_EQ(index->stats().delta_vectors, n);
  ASSERT_TRUE(index->Compact().ok());
  DiskIndexStats st = index->stats();
  EXPECT_EQ(st.base_vectors, n);
  EXPECT_EQ(st.delta_vectors, 0u);
  EXPECT_EQ(st.generation, 1u);
  EXPECT_TRUE(fs::exists(dir() / "base-1.pxd"));
  EXPECT_FALSE(fs::exists(dir() / "wal-0.log"));
  EXPECT_EQ(index->size(), n);

  // Tombstones: removed ids vanish from results at once.
  std::vector<int64_t> removed(ids.begin(), ids.begin() + 200);
  ASSERT_TRUE(index->Remove(removed).ok());
  EXPECT_EQ(index->stats().base_deleted, 200u);
  // New vectors go to the delta and are searched with the base.
  ASSERT_TRUE(index->Add(300, ids.data() + n, data.data() + n * kDim).ok());
  std::set<int64_t> gone(removed.begin(), removed.end());
  std::vector<float> all(data);
  auto truth = BruteForce(all, ids, queries, kDim, 10, gone);
  std::vector<std::vector<SearchHit>> got;
  ASSERT_TRUE(index->Search(40, queries.data(), 10, &got).ok());
  for (const auto& hits : got) {
    for (const auto& h : hits) EXPECT_EQ(gone.count(h.id), 0u) << h.id;
  }
  EXPECT_GE(Recall(got, truth), 0.95);
  // A stored vector is found from the delta and from the base.
  ASSERT_TRUE(index->Search(1, data.data() + (n + 7) * kDim, 1, &got).ok());
  EXPECT_EQ(got[0][0].id, ids[n + 7]);
  ASSERT_TRUE(index->Search(1, data.data() + 500 * kDim, 1, &got).ok());
  EXPECT_EQ(got[0][0].id, ids[500]);
  auto v = index->Get(ids[500]);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::vector<float>(data.begin() + 500 * kDim, data.begin() + 501 * kDim), *v);

  // Reopen: base + log replay give the same content.
  index.reset();
  index = Open();
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->size(), n + 300 - 200);
  EXPECT_EQ(index->stats().base_deleted, 200u);
  EXPECT_EQ(index->stats().delta_vectors, 300u);
  ASSERT_TRUE(index->Search(40, queries.data(), 10, &got).ok());
  EXPECT_GE(Recall(got, truth), 0.95);

  // A second compaction drops the tombstones and absorbs the delta.
  ASSERT_TRUE(index->Compact().ok());
  st = index->stats();
  EXPECT_EQ(st.base_vectors, n + 100);
  EXPECT_EQ(st.base_deleted, 0u);
  EXPECT_EQ(st.delta_vectors, 0u);
  EXPECT_FALSE(fs::exists(dir() / "base-1.pxd"));
  ASSERT_TRUE(index->Search(40, queries.data(), 10, &got).ok());
  EXPECT_GE(Recall(got, truth), 0.95);
  EXPECT_FALSE(Has(*index, removed[0]));
  EXPECT_EQ(index->Get(removed[0]).status().code(), StatusCode::kNotFound);

  // Read-only open beside the writer sees the same.
  DiskIndexOptions ro = SmallIndexOptions();
  ro.read_only = true;
  auto reader = OpenDiskIndex(dir(), kDim, ro);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ((*reader)->size(), index->size());
  EXPECT_EQ((*reader)->Add(1, ids.data(), data.data()).code(), StatusCode::kFailedPrecondition);
  // A second writer is refused.
  EXPECT_EQ(OpenDiskIndex(dir(), kDim, SmallIndexOptions()).status().code(),
            StatusCode::kUnavailable);
}

TEST_F(DiskIndexTest, CompactionReportsItsPhases) {
  const size_t n = 1500;
  auto data = FeatureLikeVectors(n, kDim, 11);
  auto ids = ScrambledIds(n);
  std::mutex mu;
  std::vector<std::string> phases;  // each phase once, in order
  std::map<std::string, std::pair<size_t, size_t>> last;  // phase -> (done, total)
  DiskIndexOptions options = SmallIndexOptions();
  options.compaction_progress = [&](const char* phase, size_t done, size_t total) {
    std::lock_guard<std::mutex> lock(mu);
    if (phases.empty() || phases.back() != phase) phases.push_back(phase);
    EXPECT_LE(done, total) << phase;
    last[phase] = {done, total};
  };
  auto index = Open(options);
  ASSERT_NE(index, nullptr);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  ASSERT_TRUE(index->Compact().ok());
  ASSERT_FALSE(phases.empty());
  for (const char* phase : {"pq-train", "graph", "write"}) {
    ASSERT_TRUE(last.count(phase)) << phase;
    EXPECT_EQ(last[phase].first, last[phase].second) << phase << " ends complete";
  }
  EXPECT_EQ(last["graph"].second, n);
  EXPECT_EQ(phases.back(), "write");
}

TEST_F(DiskIndexTest, SearchesAndWritesContinueDuringCompaction) {
  const size_t n = 3000;
  auto data = FeatureLikeVectors(n + 400, kDim, 8);
  auto ids = ScrambledIds(n + 400);
  auto index = Open();
  ASSERT_NE(index, nullptr);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  std::atomic<bool> done{false};
  std::atomic<int> bad{0}, searches{0}, misses{0};
  std::thread reader([&] {
    std::vector<std::vector<SearchHit>> got;
    size_t i = 0;
    while (!done.load()) {
      const size_t row = (i++ * 37) % n;
      if (!index->Search(1, data.data() + row * kDim, 5, &got).ok() || got[0].empty()) {
        ++bad;
      } else if (got[0][0].id != ids[row]) {
        ++misses;  // approximate search: rare, but allowed
      }
      ++searches;
    }
  });
  std::thread writer([&] {
    // Adds and removes while the compaction builds.
    for (size_t i = 0; i < 400; i += 20) {
      if (!index->Add(20, ids.data() + n + i, data.data() + (n + i) * kDim).ok()) ++bad;
    }
    std::vector<int64_t> gone = {ids[1], ids[2]};
    if (!index->Remove(gone).ok()) ++bad;
  });
  ASSERT_TRUE(index->Compact().ok());
  writer.join();
  done = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(searches.load(), 10);
  EXPECT_LE(misses.load(), searches.load() / 50) << misses.load() << " of " << searches.load();
  EXPECT_EQ(index->size(), n + 400 - 2);
  EXPECT_FALSE(Has(*index, ids[1]));
  std::vector<std::vector<SearchHit>> got;
  ASSERT_TRUE(index->Search(1, data.data() + 1 * kDim, 3, &got).ok());
  for (const auto& h : got[0]) EXPECT_NE(h.id, ids[1]);
  ASSERT_TRUE(index->Search(1, data.data() + (n + 399) * kDim, 1, &got).ok());
  EXPECT_EQ(got[0][0].id, ids[n + 399]);
}

TEST_F(DiskIndexTest, DamagedBaseIsDataLossAndNothingIsDeleted) {
  auto data = FeatureLikeVectors(1000, kDim, 9);
  auto ids = ScrambledIds(1000);
  {
    auto index = Open();
    ASSERT_NE(index, nullptr);
    ASSERT_TRUE(index->Add(1000, ids.data(), data.data()).ok());
    ASSERT_TRUE(index->Compact().ok());
  }
  const fs::path base = dir() / "base-1.pxd";
  auto bytes = ReadBytes(base);
  auto damaged = bytes;
  damaged[damaged.size() - 100] ^= 1;
  WriteBytes(base, damaged);
  auto index = OpenDiskIndex(dir(), kDim, SmallIndexOptions());
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(index.status().message().find("base-1.pxd"), std::string::npos);
  EXPECT_TRUE(fs::exists(base));  // kept for the user to inspect or restore
  WriteBytes(base, bytes);
  EXPECT_NE(Open(), nullptr);
  // A damaged manifest too.
  WriteBytes(dir() / "index.json", {'{', 'x'});
  EXPECT_EQ(OpenDiskIndex(dir(), kDim, SmallIndexOptions()).status().code(),
            StatusCode::kDataLoss);
}

// Kills a real writer process (adding, removing and compacting in the
// background) at random moments; every change it reported must survive and
// the index must always open.
TEST_F(DiskIndexTest, KillAtRandomMomentsLosesNothingAcknowledged) {
  const std::string writer = std::string(PIXSEEK_TEST_BIN_DIR) + "/disk_index_writer";
  std::mt19937 rng(2024);
  std::map<int64_t, bool> expected;  // id -> live
  std::set<int64_t> uncertain;       // removed or not: the child died mid-step
  int kills_during_compaction = 0;
  int64_t next = 0;
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ChildProcess child({writer, dir().string(), std::to_string(next), "100000"});
    ASSERT_FALSE(child.WaitForLine("READY", 30000).empty()) << child.stderr_text();
    // The last round runs until a compaction has committed (on a loaded
    // machine none may have between the earlier rounds' kills), so that the
    // reopen below always finds a committed generation to check.
    if (round == 9) {
      ASSERT_FALSE(child.WaitForLine("GEN ", 300000).empty()) << child.stderr_text();
    }
    std::uniform_int_distribution<int> acks(100, 500);
    const int64_t target = next + acks(rng);
    ASSERT_FALSE(child.WaitForLine("ACK " + std::to_string(target), 300000).empty())
        << child.stderr_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 50));
    child.Stop(SIGKILL);
    // A scratch file or an uncommitted base means the kill hit a compaction.
    for (const auto& e : fs::directory_iterator(dir())) {
      const std::string name = e.path().filename().string();
      if (name.ends_with(".fbin") || name.ends_with(".tmp")) {
        ++kills_during_compaction;
        break;
      }
    }
    std::istringstream lines(child.stderr_text());
    std::string word;
    int64_t id;
    int64_t last = next - 1;
    while (lines >> word) {
      if (word == "ACK" && lines >> id) {
        expected[id] = true;
        last = std::max(last, id);
      } else if (word == "DEL" && lines >> id) {
        expected[id] = false;
      }
    }
    // The child removes id - 3 right after acknowledging every id divisible
    // by 7; when it died between that Remove and its "DEL" line, the id may
    // be either way.
    if (last % 7 == 0 && expected.count(last - 3) && expected[last - 3]) {
      uncertain.insert(last - 3);
    }
    next = last + 1;
    // Ids the child added but had not reported yet may be there or not; the
    // next round starts after them.
    next += 10;

    DiskIndexOptions ro = SmallIndexOptions();
    ro.read_only = true;
    auto index = OpenDiskIndex(dir(), 32, ro);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    for (const auto& [eid, live] : expected) {
      if (uncertain.count(eid) == 0) {
        ASSERT_EQ(Has(**index, eid), live) << "id " << eid;
      }
    }
  }
  // A writable open cleans up after the last kill and still has everything.
  auto index = OpenDiskIndex(dir(), 32, SmallIndexOptions());
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  for (const auto& [eid, live] : expected) {
    if (uncertain.count(eid) == 0) {
      ASSERT_EQ(Has(**index, eid), live) << eid;
    }
  }
  EXPECT_GT((*index)->stats().generation, 0u) << "no compaction ever committed";
  RecordProperty("kills_during_compaction", kills_during_compaction);
  for (const auto& e : fs::directory_iterator(dir())) {
    EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
    EXPECT_FALSE(e.path().string().ends_with(".fbin")) << e.path();
  }
}

}  // namespace
}  // namespace pixseek
