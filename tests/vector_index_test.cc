// The shared VectorIndex test suite, plus tests of the flat index's log file
// and of the inner-product kernels.
//
// Every VectorIndex implementation runs the typed suite below through a
// factory. Exact indexes must match a brute-force reference computed here;
// approximate ones (the disk graph index) must reach their factory's recall
// against the flat index, which is the ground truth. To add an index, write a
// factory like FlatFactory and add it to IndexFactories.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "index/inner_product.h"
#include "milvus_server.h"
#include "pixseek/disk_index.h"
#include "pixseek/vector_index.h"
#include "test_util.h"

namespace pixseek {
namespace {

// Whether the index holds a vector for `id`.
bool Has(const VectorIndex& index, int64_t id) { return index.Get(id).ok(); }

namespace fs = std::filesystem;
using pixseek::testing::ReadBytes;
using pixseek::testing::TempDir;
using pixseek::testing::WriteBytes;

// ---------------------------------------------------------------------------
// Factories.
//
//   kExact      results must equal the brute-force reference
//   kMinRecall  for approximate indexes: recall@k against the flat index
//   Open(dir, dimension)  opens (creating when absent) an index kept in dir
//   kMinDimension  (optional, 1 when absent) the smallest dimension the index
//                  takes; the suite's cases below it are skipped

// Through the registry, as a database opens its index: the kind's defaults.
Result<std::unique_ptr<VectorIndex>> OpenRegistered(const char* kind, const fs::path& dir,
                                                    int dimension, int threads,
                                                    const std::string& url = "") {
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* k, FindVectorIndexKind(kind));
  VectorIndexSpec spec;
  spec.kind = kind;
  spec.dir = dir;
  spec.url = url;
  spec.dimension = dimension;
  spec.threads = threads;
  PIXSEEK_ASSIGN_OR_RETURN(spec.params, MergeParams(kind, k->params, {}, {}, false));
  return OpenVectorIndex(spec);
}

struct FlatFactory {
  static constexpr bool kExact = true;
  static constexpr double kMinRecall = 1.0;
  static Result<std::unique_ptr<VectorIndex>> Open(const fs::path& dir, int dimension) {
    return OpenRegistered("flat", dir, dimension, 4);
  }
};

// The disk index as a small collection sees it: everything in the in-memory
// delta graph and the log (fewer vectors than min_base_vectors).
struct DiskFactory {
  static constexpr bool kExact = false;
  static constexpr double kMinRecall = 0.95;
  static Result<std::unique_ptr<VectorIndex>> Open(const fs::path& dir, int dimension) {
    return OpenRegistered("disk", dir, dimension, 2);
  }
};

// The disk index compacting in the background as soon as 256 vectors are in:
// searches run against the disk graph, the delta and a compaction in flight.
// fp32 storage, so Get returns the stored floats exactly.
struct CompactingDiskFactory {
  static constexpr bool kExact = false;
  static constexpr double kMinRecall = 0.9;
  static Result<std::unique_ptr<VectorIndex>> Open(const fs::path& dir, int dimension) {
    DiskIndexOptions options;
    options.num_threads = 2;
    options.storage = "fp32";
    options.min_base_vectors = 256;
    options.background_compaction = true;
    PIXSEEK_ASSIGN_OR_RETURN(auto index, OpenDiskIndex(dir / "disk", dimension, options));
    return std::unique_ptr<VectorIndex>(std::move(index));
  }
};

// The Milvus the milvus factory's indexes live in: a real one when
// PIXSEEK_TEST_MILVUS_URL is set (milvus://[USER:PASSWORD@]HOST:PORT/PREFIX;
// each index directory gets the collection PREFIX_<hash of the directory>,
// left on the server afterwards), else the Milvus test server
// (milvus_server.h, exact search over the flat index) on a temporary
// directory, started once for the whole binary.
const char* RealMilvusUrl() {
  const char* url = std::getenv("PIXSEEK_TEST_MILVUS_URL");
  return url != nullptr && *url != '\0' ? url : nullptr;
}

std::string MilvusUrlFor(const fs::path& dir) {
  char hash[32];
  std::snprintf(hash, sizeof(hash), "%016zx", std::hash<std::string>{}(dir.string()));
  if (const char* real = RealMilvusUrl()) {
    std::string url = real;
    const size_t query = url.find('?');
    const std::string tail = query == std::string::npos ? "" : url.substr(query);
    return url.substr(0, query) + "_" + hash + tail;
  }
  struct Server {
    static pixseek::testing::MilvusTestServerOptions Options(const fs::path& dir) {
      pixseek::testing::MilvusTestServerOptions options;
      options.dir = dir;
      return options;
    }
    TempDir dir;
    pixseek::testing::MilvusTestServer server{Options(dir.path() / "milvus")};
    std::string error = server.Start();
  };
  static Server server;  // stopped, and its directory removed, at exit
  EXPECT_EQ(server.error, "");
  return server.server.url(std::string("t") + hash);
}

// The milvus index through the registry: exact against the test server (its
// search is the flat index's), approximate against a real Milvus (DISKANN).
struct MilvusFactory {
  static inline const bool kExact = RealMilvusUrl() == nullptr;
  static constexpr double kMinRecall = 0.9;
  // Milvus refuses FLOAT_VECTOR fields of fewer than 2 dimensions.
  static constexpr int kMinDimension = 2;
  static Result<std::unique_ptr<VectorIndex>> Open(const fs::path& dir, int dimension) {
    return OpenRegistered("milvus", dir, dimension, 2, MilvusUrlFor(dir));
  }
};

using IndexFactories =
    ::testing::Types<FlatFactory, DiskFactory, CompactingDiskFactory, MilvusFactory>;

TEST(VectorIndexRegistryTest, KindsAndErrors) {
  ASSERT_FALSE(VectorIndexKinds().empty());
  EXPECT_STREQ(VectorIndexKinds().front().name, "disk");  // the default for new databases
  auto unknown = FindVectorIndexKind("hnsw");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("disk, flat"), std::string::npos);
  VectorIndexSpec spec;
  spec.kind = "hnsw";
  EXPECT_EQ(OpenVectorIndex(spec).status().code(), StatusCode::kInvalidArgument);
  // A parameter out of range never reaches the index.
  TempDir dir;
  spec.kind = "disk";
  spec.dir = dir.path();
  spec.dimension = 8;
  spec.params.Set("beam_width", int64_t{0}, "test");
  auto bad = OpenVectorIndex(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("beam_width"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Helpers.

template <typename Factory>
constexpr int MinDimension() {
  if constexpr (requires { Factory::kMinDimension; }) {
    return Factory::kMinDimension;
  } else {
    return 1;
  }
}

std::vector<float> RandomUnitVectors(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    float* v = out.data() + i * dim;
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) {
      v[d] = normal(rng);
      norm += double{v[d]} * v[d];
    }
    norm = std::sqrt(norm);
    if (norm == 0) {
      v[0] = 1;
      norm = 1;
    }
    for (size_t d = 0; d < dim; ++d) v[d] = static_cast<float>(v[d] / norm);
  }
  return out;
}

std::vector<int64_t> SequentialIds(size_t n, int64_t first = 0) {
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = first + static_cast<int64_t>(i);
  return ids;
}

double ExactDot(const float* a, const float* b, size_t dim) {
  double s = 0;
  for (size_t d = 0; d < dim; ++d) s += double{a[d]} * double{b[d]};
  return s;
}

struct RefHit {
  int64_t id;
  double score;
};

// Brute force in double precision: best first, ties by smaller id.
std::vector<RefHit> BruteForce(const std::map<int64_t, std::vector<float>>& stored,
                               const float* query, size_t dim, size_t k) {
  std::vector<RefHit> all;
  for (const auto& [id, v] : stored) all.push_back({id, ExactDot(query, v.data(), dim)});
  std::sort(all.begin(), all.end(), [](const RefHit& a, const RefHit& b) {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
  });
  if (all.size() > k) all.resize(k);
  return all;
}

void ExpectBestFirst(const std::vector<SearchHit>& hits) {
  for (size_t i = 1; i < hits.size(); ++i) {
    const SearchHit& a = hits[i - 1];
    const SearchHit& b = hits[i];
    EXPECT_TRUE(a.score > b.score || (a.score == b.score && a.id < b.id))
        << "rank " << i << ": (" << a.id << ", " << a.score << ") before (" << b.id << ", "
        << b.score << ")";
  }
}

// Exact search, up to float rounding: same length, the same score at every
// rank, every score belongs to its id, no id twice.
void ExpectMatchesReference(const std::vector<SearchHit>& hits, const std::vector<RefHit>& ref,
                            const std::map<int64_t, std::vector<float>>& stored,
                            const float* query, size_t dim) {
  constexpr double kTolerance = 1e-4;
  ASSERT_EQ(hits.size(), ref.size());
  ExpectBestFirst(hits);
  std::set<int64_t> seen;
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_NEAR(hits[i].score, ref[i].score, kTolerance) << "rank " << i;
    auto it = stored.find(hits[i].id);
    ASSERT_NE(it, stored.end()) << "unknown id " << hits[i].id;
    EXPECT_NEAR(hits[i].score, ExactDot(query, it->second.data(), dim), kTolerance);
    EXPECT_TRUE(seen.insert(hits[i].id).second) << "id " << hits[i].id << " twice";
  }
}

double Recall(const std::vector<SearchHit>& hits, const std::vector<SearchHit>& truth) {
  if (truth.empty()) return 1.0;
  std::set<int64_t> want;
  for (const auto& h : truth) want.insert(h.id);
  size_t found = 0;
  for (const auto& h : hits) found += want.count(h.id);
  return static_cast<double>(found) / static_cast<double>(truth.size());
}

template <typename Factory>
std::unique_ptr<VectorIndex> MustOpen(const fs::path& dir, int dimension) {
  auto index = Factory::Open(dir, dimension);
  EXPECT_TRUE(index.ok()) << index.status().ToString();
  if (!index.ok()) return nullptr;
  return std::move(index).value();
}

// ---------------------------------------------------------------------------
// The shared suite.

template <typename Factory>
class VectorIndexTest : public ::testing::Test {
 protected:
  std::unique_ptr<VectorIndex> Open(int dimension) { return MustOpen<Factory>(dir_.path(), dimension); }

  // Checks searches against the reference (exact) or the recall bar.
  void CheckSearch(const VectorIndex& index, const std::map<int64_t, std::vector<float>>& stored,
                   const std::vector<float>& queries, size_t dim, size_t k) {
    const size_t nq = queries.size() / dim;
    std::vector<std::vector<SearchHit>> results;
    ASSERT_TRUE(index.Search(nq, queries.data(), k, &results).ok());
    ASSERT_EQ(results.size(), nq);
    double recall = 0;
    for (size_t q = 0; q < nq; ++q) {
      const float* query = queries.data() + q * dim;
      auto ref = BruteForce(stored, query, dim, k);
      if (Factory::kExact) {
        SCOPED_TRACE("query " + std::to_string(q) + " k " + std::to_string(k));
        ExpectMatchesReference(results[q], ref, stored, query, dim);
      } else {
        ExpectBestFirst(results[q]);
        // A hit counts when it scores at least the k-th true score: among
        // tied vectors any may be returned.
        if (ref.empty()) {
          recall += 1;
          continue;
        }
        size_t good = 0;
        for (const auto& h : results[q]) {
          auto it = stored.find(h.id);
          if (it != stored.end() && ExactDot(query, it->second.data(), dim) >= ref.back().score - 1e-5) {
            ++good;
          }
        }
        recall += static_cast<double>(good) / static_cast<double>(ref.size());
      }
    }
    if (!Factory::kExact && nq > 0) {
      EXPECT_GE(recall / nq, Factory::kMinRecall);
    }
  }

  TempDir dir_;
};

TYPED_TEST_SUITE(VectorIndexTest, IndexFactories);

TYPED_TEST(VectorIndexTest, EmptyIndex) {
  auto index = this->Open(16);
  ASSERT_NE(index, nullptr);
  EXPECT_FALSE(index->kind().empty());
  EXPECT_EQ(index->dimension(), 16);
  EXPECT_EQ(index->size(), 0u);
  EXPECT_TRUE(index->Ids().empty());
  EXPECT_FALSE(Has(*index, 0));
  EXPECT_EQ(index->Get(0).status().code(), StatusCode::kNotFound);
  auto q = RandomUnitVectors(2, 16, 1);
  std::vector<std::vector<SearchHit>> results;
  ASSERT_TRUE(index->Search(2, q.data(), 5, &results).ok());
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].empty());
  EXPECT_TRUE(results[1].empty());
  ASSERT_TRUE(index->Search(0, nullptr, 5, &results).ok());
  EXPECT_TRUE(results.empty());
}

TYPED_TEST(VectorIndexTest, MatchesBruteForce) {
  struct Case {
    size_t n;
    size_t dim;
  };
  // Dimensions around the SIMD widths (8 floats, 16 per unrolled step, 32)
  // and n around the groups of four the scan works in.
  const Case cases[] = {{1, 1},    {37, 1},   {5, 3},     {100, 7},   {64, 8},   {301, 17},
                        {50, 31},  {130, 33}, {200, 100}, {999, 64},  {150, 1000}, {3, 1000},
                        {77, 129}, {10, 5}};
  uint32_t seed = 100;
  for (const Case& c : cases) {
    SCOPED_TRACE("n " + std::to_string(c.n) + " dim " + std::to_string(c.dim));
    if (c.dim < static_cast<size_t>(MinDimension<TypeParam>())) continue;  // the index refuses it
    TempDir dir;
    auto index = MustOpen<TypeParam>(dir.path(), static_cast<int>(c.dim));
    ASSERT_NE(index, nullptr);
    auto data = RandomUnitVectors(c.n, c.dim, ++seed);
    // Ids not in slot order, so ties and merges cannot lean on insertion order.
    std::vector<int64_t> ids(c.n);
    for (size_t i = 0; i < c.n; ++i) ids[i] = static_cast<int64_t>((i * 7919) % 100003) - 500;
    ASSERT_TRUE(index->Add(c.n, ids.data(), data.data()).ok());
    std::map<int64_t, std::vector<float>> stored;
    for (size_t i = 0; i < c.n; ++i) {
      stored[ids[i]] = std::vector<float>(data.begin() + i * c.dim, data.begin() + (i + 1) * c.dim);
    }
    EXPECT_EQ(index->size(), c.n);
    auto queries = RandomUnitVectors(8, c.dim, ++seed);
    for (size_t k : {size_t{1}, size_t{10}, c.n + 3}) {
      this->CheckSearch(*index, stored, queries, c.dim, k);
    }
  }
}

// What callers once downcast for goes through the interface: a per-query
// search list, compaction and the index's figures.
TYPED_TEST(VectorIndexTest, SearchParamsCompactAndStats) {
  const size_t n = 300, dim = 32;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto data = RandomUnitVectors(n, dim, 21);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  std::vector<std::vector<SearchHit>> wide, narrow;
  SearchParams large;
  large.search_list = 200;
  SearchParams small;
  small.search_list = 10;
  ASSERT_TRUE(index->Search(1, data.data(), 10, large, &wide).ok());
  ASSERT_TRUE(index->Search(1, data.data(), 10, small, &narrow).ok());
  ASSERT_EQ(wide[0].size(), 10u);
  ASSERT_EQ(narrow[0].size(), 10u);
  EXPECT_EQ(wide[0][0].id, 0);
  EXPECT_EQ(narrow[0][0].id, 0);
  ASSERT_TRUE(index->Compact().ok());
  ASSERT_TRUE(index->CompactIfNeeded().ok());
  EXPECT_EQ(index->size(), n);
  ASSERT_TRUE(index->Search(1, data.data(), 10, large, &wide).ok());
  EXPECT_EQ(wide[0][0].id, 0);
  for (const IndexStat& stat : index->Stats()) EXPECT_FALSE(stat.name.empty());
}

TYPED_TEST(VectorIndexTest, SelfQueryFindsItselfFirst) {
  const size_t n = 500, dim = 64;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto data = RandomUnitVectors(n, dim, 7);
  auto ids = SequentialIds(n, 1000);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  std::vector<std::vector<SearchHit>> results;
  ASSERT_TRUE(index->Search(n, data.data(), 3, &results).ok());
  for (size_t i = 0; i < n; ++i) {
    ASSERT_FALSE(results[i].empty());
    EXPECT_EQ(results[i][0].id, ids[i]);
    EXPECT_NEAR(results[i][0].score, 1.0f, 1e-5);
  }
}

TYPED_TEST(VectorIndexTest, TiesBrokenBySmallerId) {
  const size_t dim = 24;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto v = RandomUnitVectors(1, dim, 11);
  auto others = RandomUnitVectors(60, dim, 12);
  // The same vector under four ids, added in scrambled order and spread over
  // the slots between unrelated vectors.
  std::vector<int64_t> dup_ids = {42, 7, 19, 3};
  int64_t next_other = 100;
  for (size_t i = 0; i < dup_ids.size(); ++i) {
    auto other_ids = SequentialIds(15, next_other);
    next_other += 15;
    ASSERT_TRUE(index->Add(15, other_ids.data(), others.data() + i * 15 * dim).ok());
    ASSERT_TRUE(index->Add(1, &dup_ids[i], v.data()).ok());
  }
  std::vector<std::vector<SearchHit>> results;
  ASSERT_TRUE(index->Search(1, v.data(), 3, &results).ok());
  ASSERT_EQ(results[0].size(), 3u);
  EXPECT_EQ(results[0][0].id, 3);
  EXPECT_EQ(results[0][1].id, 7);
  EXPECT_EQ(results[0][2].id, 19);
  EXPECT_EQ(results[0][0].score, results[0][2].score);

  // One dimension: every vector is +1 or -1, so nearly everything ties.
  if (MinDimension<TypeParam>() > 1) {
    GTEST_SKIP() << "the one-dimensional half: this index takes at least "
                 << MinDimension<TypeParam>() << " dimensions";
  }
  TempDir dir;
  auto line = MustOpen<TypeParam>(dir.path(), 1);
  ASSERT_NE(line, nullptr);
  std::vector<int64_t> ids = {9, 4, 8, 1, 6, 3};
  std::vector<float> values = {1, -1, 1, 1, -1, 1};
  ASSERT_TRUE(line->Add(ids.size(), ids.data(), values.data()).ok());
  float up = 1;
  ASSERT_TRUE(line->Search(1, &up, 10, &results).ok());
  std::vector<int64_t> got;
  for (const auto& h : results[0]) got.push_back(h.id);
  EXPECT_EQ(got, (std::vector<int64_t>{1, 3, 8, 9, 4, 6}));
}

TYPED_TEST(VectorIndexTest, RemoveExcludesFromSearch) {
  const size_t n = 200, dim = 40;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto data = RandomUnitVectors(n, dim, 21);
  auto ids = SequentialIds(n);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());

  // Remove every fourth id, the first stored vector (its slot gets refilled)
  // and some unknown ids, which are ignored.
  std::vector<int64_t> removed = {0, 5000, -1};
  for (int64_t id = 3; id < static_cast<int64_t>(n); id += 4) removed.push_back(id);
  ASSERT_TRUE(index->Remove(removed).ok());
  ASSERT_TRUE(index->Remove(removed).ok());  // again: all unknown now
  std::map<int64_t, std::vector<float>> stored;
  for (size_t i = 0; i < n; ++i) {
    stored[ids[i]] = std::vector<float>(data.begin() + i * dim, data.begin() + (i + 1) * dim);
  }
  for (int64_t id : removed) stored.erase(id);
  EXPECT_EQ(index->size(), stored.size());
  EXPECT_FALSE(Has(*index, 0));
  EXPECT_FALSE(Has(*index, 3));
  EXPECT_TRUE(Has(*index, 4));
  EXPECT_EQ(index->Get(3).status().code(), StatusCode::kNotFound);

  // Queries equal to removed vectors must not return them.
  std::vector<float> queries(data.begin(), data.begin() + dim);
  queries.insert(queries.end(), data.begin() + 3 * dim, data.begin() + 4 * dim);
  std::vector<std::vector<SearchHit>> results;
  ASSERT_TRUE(index->Search(2, queries.data(), 5, &results).ok());
  for (const auto& hits : results) {
    for (const auto& h : hits) EXPECT_TRUE(stored.count(h.id)) << h.id;
  }
  this->CheckSearch(*index, stored, RandomUnitVectors(6, dim, 22), dim, 10);
  this->CheckSearch(*index, stored, RandomUnitVectors(2, dim, 23), dim, n);

  // Removing everything leaves an empty, usable index.
  ASSERT_TRUE(index->Remove(ids).ok());
  EXPECT_EQ(index->size(), 0u);
  ASSERT_TRUE(index->Search(1, queries.data(), 5, &results).ok());
  EXPECT_TRUE(results[0].empty());
  ASSERT_TRUE(index->Add(1, &ids[3], data.data()).ok());
  EXPECT_EQ(index->Ids(), std::vector<int64_t>{3});
}

TYPED_TEST(VectorIndexTest, GetContainsIds) {
  const size_t dim = 13;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  std::vector<int64_t> ids = {std::numeric_limits<int64_t>::max(), -7, 0, 123456789012345,
                              std::numeric_limits<int64_t>::min(), 5};
  auto data = RandomUnitVectors(ids.size(), dim, 31);
  ASSERT_TRUE(index->Add(ids.size(), ids.data(), data.data()).ok());
  auto sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(index->Ids(), sorted);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_TRUE(Has(*index, ids[i]));
    auto v = index->Get(ids[i]);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ASSERT_EQ(v->size(), dim);
    EXPECT_EQ(std::memcmp(v->data(), data.data() + i * dim, dim * sizeof(float)), 0);
  }
  EXPECT_FALSE(Has(*index, 1));
}

TYPED_TEST(VectorIndexTest, DuplicateIdsAddNothing) {
  const size_t dim = 8;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto data = RandomUnitVectors(4, dim, 41);
  std::vector<int64_t> first = {1, 2};
  ASSERT_TRUE(index->Add(2, first.data(), data.data()).ok());

  std::vector<int64_t> clash = {3, 2};  // 2 is present
  EXPECT_EQ(index->Add(2, clash.data(), data.data() + 2 * dim).code(), StatusCode::kAlreadyExists);
  std::vector<int64_t> twice = {4, 4};  // repeated inside the batch
  EXPECT_EQ(index->Add(2, twice.data(), data.data() + 2 * dim).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(index->Ids(), first);
  auto v = index->Get(2);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::memcmp(v->data(), data.data() + dim, dim * sizeof(float)), 0);

  // Nothing of the failed calls was logged either.
  index.reset();
  index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->Ids(), first);
}

TYPED_TEST(VectorIndexTest, NonFiniteValuesRejected) {
  const size_t dim = 9;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto data = RandomUnitVectors(3, dim, 51);
  std::vector<int64_t> ids = {1, 2, 3};
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    auto copy = data;
    copy[2 * dim + 8] = bad;  // the very last value of the batch
    EXPECT_EQ(index->Add(3, ids.data(), copy.data()).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(index->size(), 0u);
  }
  ASSERT_TRUE(index->Add(3, ids.data(), data.data()).ok());
  auto query = data;
  query[4] = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::vector<SearchHit>> results;
  EXPECT_EQ(index->Search(1, query.data(), 2, &results).code(), StatusCode::kInvalidArgument);
}

TYPED_TEST(VectorIndexTest, WrongDimensionRejected) {
  for (int bad : {0, -3}) {
    auto index = TypeParam::Open(this->dir_.path() / ("bad" + std::to_string(-bad)), bad);
    EXPECT_EQ(index.status().code(), StatusCode::kInvalidArgument);
  }
  {
    auto index = this->Open(16);
    ASSERT_NE(index, nullptr);
    auto data = RandomUnitVectors(2, 16, 61);
    auto ids = SequentialIds(2);
    ASSERT_TRUE(index->Add(2, ids.data(), data.data()).ok());
  }
  auto reopened = TypeParam::Open(this->dir_.path(), 32);
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kInvalidArgument);
  // The data is still there under the right dimension.
  auto index = this->Open(16);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->size(), 2u);
}

TYPED_TEST(VectorIndexTest, ConcurrentSearchesWhileAdding) {
  const size_t dim = 32, batches = 40, per_batch = 25, k = 5;
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  auto data = RandomUnitVectors(batches * per_batch, dim, 71);
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<int> searches{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&, r] {
      auto queries = RandomUnitVectors(3, dim, 80 + r);
      std::vector<std::vector<SearchHit>> results;
      while (!done.load()) {
        if (!index->Search(3, queries.data(), k, &results).ok() || results.size() != 3) {
          ++bad;
          continue;
        }
        for (const auto& hits : results) {
          if (hits.size() > k) ++bad;
          for (size_t i = 1; i < hits.size(); ++i) {
            if (hits[i - 1].score < hits[i].score) ++bad;
          }
          for (const auto& h : hits) {
            if (h.id < 0 || h.id >= static_cast<int64_t>(batches * per_batch)) ++bad;
          }
        }
        (void)Has(*index, 3);
        (void)index->size();
        ++searches;
      }
    });
  }
  for (size_t b = 0; b < batches; ++b) {
    auto ids = SequentialIds(per_batch, static_cast<int64_t>(b * per_batch));
    ASSERT_TRUE(index->Add(per_batch, ids.data(), data.data() + b * per_batch * dim).ok());
  }
  // Let the readers see the full index at least once.
  int seen = searches.load();
  while (searches.load() < seen + 8) std::this_thread::yield();
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(index->size(), batches * per_batch);
  std::vector<std::vector<SearchHit>> results;
  ASSERT_TRUE(index->Search(batches * per_batch, data.data(), 1, &results).ok());
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_EQ(results[i].size(), 1u);
    EXPECT_EQ(results[i][0].id, static_cast<int64_t>(i));
  }
}

TYPED_TEST(VectorIndexTest, ReopenSeesSameContent) {
  const size_t n = 300, dim = 50;
  auto data = RandomUnitVectors(n, dim, 91);
  auto ids = SequentialIds(n, 10);
  auto queries = RandomUnitVectors(5, dim, 92);
  std::vector<std::vector<SearchHit>> before, after;
  std::vector<int64_t> removed = {10, 11, 200, 309};
  {
    auto index = this->Open(dim);
    ASSERT_NE(index, nullptr);
    ASSERT_TRUE(index->Add(100, ids.data(), data.data()).ok());
    ASSERT_TRUE(index->Add(n - 100, ids.data() + 100, data.data() + 100 * dim).ok());
    ASSERT_TRUE(index->Remove(removed).ok());
    ASSERT_TRUE(index->Search(5, queries.data(), 7, &before).ok());
  }
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->size(), n - removed.size());
  std::vector<int64_t> want;
  for (int64_t id : ids) {
    if (std::find(removed.begin(), removed.end(), id) == removed.end()) want.push_back(id);
  }
  EXPECT_EQ(index->Ids(), want);
  for (size_t i = 0; i < n; ++i) {
    auto v = index->Get(ids[i]);
    if (!v.ok()) continue;
    EXPECT_EQ(std::memcmp(v->data(), data.data() + i * dim, dim * sizeof(float)), 0) << ids[i];
  }
  ASSERT_TRUE(index->Search(5, queries.data(), 7, &after).ok());
  for (size_t q = 0; q < 5; ++q) {
    ASSERT_EQ(before[q].size(), after[q].size());
    if (!TypeParam::kExact) {
      // A compaction may have moved vectors between the graphs: same
      // quality, not necessarily the same ranks.
      EXPECT_GE(Recall(after[q], before[q]), TypeParam::kMinRecall);
      continue;
    }
    for (size_t i = 0; i < before[q].size(); ++i) {
      EXPECT_EQ(before[q][i].id, after[q][i].id);
      EXPECT_EQ(before[q][i].score, after[q][i].score);
    }
  }
}

// The flat index with one thread is the ground truth: exact indexes must give
// the same ids, approximate ones their recall. For the flat factory (four
// threads) this checks the split scan and the merge of per-thread heaps.
TYPED_TEST(VectorIndexTest, AgreesWithFlatGroundTruth) {
  const size_t n = 6000, dim = 96, nq = 32, k = 10;
  auto data = RandomUnitVectors(n, dim, 101);
  // Random ids so ties and merges do not follow slot order.
  std::vector<int64_t> ids(n);
  std::mt19937_64 rng(102);
  std::set<int64_t> used;
  for (auto& id : ids) {
    do id = static_cast<int64_t>(rng() % 1000000); while (!used.insert(id).second);
  }
  TempDir truth_dir;
  FlatIndexOptions one_thread;
  one_thread.num_threads = 1;
  auto truth = OpenFlatIndex(truth_dir.path() / "truth.flat", dim, one_thread);
  ASSERT_TRUE(truth.ok()) << truth.status().ToString();
  ASSERT_TRUE((*truth)->Add(n, ids.data(), data.data()).ok());
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());

  auto queries = RandomUnitVectors(nq, dim, 103);
  // Half the queries are stored vectors, so each has an exact match.
  std::copy(data.begin(), data.begin() + (nq / 2) * dim, queries.begin());
  std::vector<std::vector<SearchHit>> want, got;
  ASSERT_TRUE((*truth)->Search(nq, queries.data(), k, &want).ok());
  ASSERT_TRUE(index->Search(nq, queries.data(), k, &got).ok());
  double recall = 0;
  for (size_t q = 0; q < nq; ++q) {
    ExpectBestFirst(got[q]);
    if (TypeParam::kExact) {
      ASSERT_EQ(got[q].size(), want[q].size());
      for (size_t i = 0; i < k; ++i) {
        EXPECT_EQ(got[q][i].id, want[q][i].id) << "query " << q << " rank " << i;
        EXPECT_NEAR(got[q][i].score, want[q][i].score, 1e-5);
      }
    }
    recall += Recall(got[q], want[q]);
  }
  EXPECT_GE(recall / nq, TypeParam::kMinRecall);
}

// A filter is applied inside the search: k hits of the allowed ids come back
// whenever k of them are live, whatever share of the index they are, from
// the index's long-term form (after Compact) and from what was added since.
// Allowed ids that were removed or never added are not returned.
TYPED_TEST(VectorIndexTest, FilteredSearchReturnsKOfTheAllowedIds) {
  const size_t n = 6000, extra = 300, dim = 96, nq = 16, k = 10;
  auto data = RandomUnitVectors(n + extra, dim, 301);
  const auto ids = SequentialIds(n + extra, 1);
  auto index = this->Open(dim);
  ASSERT_NE(index, nullptr);
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  ASSERT_TRUE(index->Compact().ok());
  ASSERT_TRUE(index->Add(extra, ids.data() + n, data.data() + n * dim).ok());
  std::vector<int64_t> removed;
  for (int64_t id = 7; id <= 700; id += 7) removed.push_back(id);
  removed.push_back(static_cast<int64_t>(n + 7));  // one of the additions
  ASSERT_TRUE(index->Remove(removed).ok());
  std::map<int64_t, std::vector<float>> stored;
  for (size_t i = 0; i < n + extra; ++i) {
    if (std::find(removed.begin(), removed.end(), ids[i]) == removed.end()) {
      stored[ids[i]] = std::vector<float>(data.begin() + i * dim, data.begin() + (i + 1) * dim);
    }
  }

  struct Case {
    const char* name;
    std::vector<int64_t> allowed;
  };
  std::vector<Case> cases = {{"1 in 100, removed and unknown ids", {}},
                             {"half at random", {}},
                             {"the additions only", {}},
                             {"fewer than k", {5, 14, 2000, int64_t(n + 7), int64_t(n + 100), 99999}},
                             {"all but 1 in 50 (the disk graph is walked)", {}},
                             {"none", {}}};
  std::mt19937 rng(302);
  for (int64_t id : ids) {
    if (id % 100 == 3) cases[0].allowed.push_back(id);
    if (rng() % 2 == 0) cases[1].allowed.push_back(id);
    if (id > static_cast<int64_t>(n)) cases[2].allowed.push_back(id);
    if (id % 50 != 0) cases[4].allowed.push_back(id);
  }
  cases[0].allowed.insert(cases[0].allowed.end(), removed.begin(), removed.end());
  cases[0].allowed.push_back(-5);
  cases[0].allowed.push_back(int64_t{1} << 40);

  auto queries = RandomUnitVectors(nq, dim, 303);
  // Half the queries are stored vectors (most not allowed).
  for (size_t q = 0; q < nq / 2; ++q) {
    std::copy_n(data.begin() + (q * 397) * dim, dim, queries.begin() + q * dim);
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const IdFilter filter(c.allowed);
    std::map<int64_t, std::vector<float>> allowed;
    for (const auto& [id, v] : stored) {
      if (filter.Contains(id)) allowed[id] = v;
    }
    SearchParams params;
    params.filter = &filter;
    std::vector<std::vector<SearchHit>> results;
    ASSERT_TRUE(index->Search(nq, queries.data(), k, params, &results).ok());
    ASSERT_EQ(results.size(), nq);
    double recall = 0;
    for (size_t q = 0; q < nq; ++q) {
      const float* query = queries.data() + q * dim;
      const auto ref = BruteForce(allowed, query, dim, k);
      ASSERT_EQ(results[q].size(), ref.size()) << "query " << q;
      for (const SearchHit& h : results[q]) {
        EXPECT_EQ(allowed.count(h.id), 1u) << "id " << h.id << " is not allowed";
      }
      if (TypeParam::kExact) {
        ExpectMatchesReference(results[q], ref, allowed, query, dim);
        continue;
      }
      ExpectBestFirst(results[q]);
      size_t good = 0;
      for (const SearchHit& h : results[q]) {
        auto it = allowed.find(h.id);
        if (it != allowed.end() &&
            ExactDot(query, it->second.data(), dim) >= ref.back().score - 1e-5) {
          ++good;
        }
      }
      recall += ref.empty() ? 1.0 : double(good) / double(ref.size());
    }
    if (!TypeParam::kExact) {
      EXPECT_GE(recall / nq, TypeParam::kMinRecall);
    }
  }
}

TEST(IdFilterTest, DenseSparseAndNegativeIds) {
  const IdFilter dense({5, 3, 3, 1000, 0});
  EXPECT_EQ(dense.size(), 4u);
  EXPECT_EQ(std::vector<int64_t>(dense.ids().begin(), dense.ids().end()),
            (std::vector<int64_t>{0, 3, 5, 1000}));
  for (int64_t id : std::vector<int64_t>{0, 3, 5, 1000}) EXPECT_TRUE(dense.Contains(id)) << id;
  for (int64_t id : std::vector<int64_t>{-1, 1, 4, 999, 1001, int64_t{1} << 50}) {
    EXPECT_FALSE(dense.Contains(id)) << id;
  }
  // Too sparse for a bitmap, and negative ids: answered by binary search.
  const IdFilter sparse({int64_t{1} << 45, -7, 12});
  for (int64_t id : {int64_t{1} << 45, int64_t{-7}, int64_t{12}}) EXPECT_TRUE(sparse.Contains(id));
  for (int64_t id : {int64_t{0}, int64_t{-8}, int64_t{13}, (int64_t{1} << 45) + 1}) {
    EXPECT_FALSE(sparse.Contains(id)) << id;
  }
  const IdFilter none({});
  EXPECT_TRUE(none.empty());
  EXPECT_FALSE(none.Contains(0));
}

// ---------------------------------------------------------------------------
// The flat index's log file (docs/index_format.md).

class FlatIndexLogTest : public ::testing::Test {
 protected:
  static constexpr int kDim = 6;
  static constexpr size_t kHeader = 20;
  static constexpr size_t kAddRecord3 = 13 + 3 * (8 + 4 * kDim);  // an add of 3 vectors

  fs::path file() const { return dir_.path() / "vectors.flat"; }

  Result<std::unique_ptr<VectorIndex>> Open(int dimension = kDim) {
    return OpenFlatIndex(file(), dimension);
  }

  // Five add records of three vectors each: ids 0..14.
  void WriteFiveAdds() {
    auto index = Open();
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    for (int b = 0; b < 5; ++b) {
      auto ids = SequentialIds(3, b * 3);
      ASSERT_TRUE((*index)->Add(3, ids.data(), data_.data() + b * 3 * kDim).ok());
    }
    ASSERT_EQ(fs::file_size(file()), kHeader + 5 * kAddRecord3);
  }

  void ExpectIds(VectorIndex& index, size_t n) {
    EXPECT_EQ(index.Ids(), SequentialIds(n));
    for (size_t i = 0; i < n; ++i) {
      auto v = index.Get(static_cast<int64_t>(i));
      ASSERT_TRUE(v.ok());
      EXPECT_EQ(std::memcmp(v->data(), data_.data() + i * kDim, kDim * sizeof(float)), 0);
    }
  }

  void ExpectDataLoss(const std::string& what) {
    auto bytes = ReadBytes(file());
    auto index = Open();
    ASSERT_FALSE(index.ok()) << what;
    EXPECT_EQ(index.status().code(), StatusCode::kDataLoss) << what << ": "
                                                            << index.status().ToString();
    EXPECT_NE(index.status().message().find(file().string()), std::string::npos)
        << index.status().message();
    // A failed open must not touch the file.
    EXPECT_EQ(ReadBytes(file()), bytes) << what;
  }

  TempDir dir_;
  std::vector<float> data_ = RandomUnitVectors(100, kDim, 5);
};

TEST_F(FlatIndexLogTest, NewFileHasHeader) {
  ASSERT_TRUE(Open().ok());
  auto bytes = ReadBytes(file());
  ASSERT_EQ(bytes.size(), kHeader);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "PXFLAT01");
  EXPECT_EQ(bytes[8], 1);   // version
  EXPECT_EQ(bytes[12], kDim);  // dimension, little-endian
  EXPECT_FALSE(fs::exists(dir_.path() / "vectors.flat.tmp"));
}

TEST_F(FlatIndexLogTest, TornTailIsDropped) {
  WriteFiveAdds();
  fs::resize_file(file(), fs::file_size(file()) - 3);
  ::testing::internal::CaptureStderr();
  auto index = Open();
  std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_NE(err.find("torn"), std::string::npos) << err;
  ExpectIds(**index, 12);
  EXPECT_EQ(fs::file_size(file()), kHeader + 4 * kAddRecord3);
  // The log goes on from there.
  int64_t id = 12;
  ASSERT_TRUE((*index)->Add(1, &id, data_.data() + 12 * kDim).ok());
  index = Result<std::unique_ptr<VectorIndex>>(Status::Internal("closed"));
  ::testing::internal::CaptureStderr();
  auto again = Open();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ASSERT_TRUE(again.ok());
  ExpectIds(**again, 13);
}

TEST_F(FlatIndexLogTest, TornTailShapes) {
  WriteFiveAdds();
  const auto full = ReadBytes(file());
  const size_t last = kHeader + 4 * kAddRecord3;
  // The last record cut inside its 9-byte prefix, cut to nothing but its
  // magic, and complete with a damaged checksum (crashed mid-write: the tail
  // pages never reached the disk).
  for (size_t keep : {size_t{5}, size_t{4}, size_t{1}, kAddRecord3}) {
    SCOPED_TRACE("keep " + std::to_string(keep));
    auto bytes = full;
    bytes.resize(last + keep);
    if (keep == kAddRecord3) bytes[last + 40] ^= 0x10;
    WriteBytes(file(), bytes);
    ::testing::internal::CaptureStderr();
    auto index = Open();
    ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    ExpectIds(**index, 12);
  }
}

TEST_F(FlatIndexLogTest, DamageInsideIsDataLoss) {
  WriteFiveAdds();
  const auto full = ReadBytes(file());
  const size_t second = kHeader + kAddRecord3;
  struct Damage {
    const char* what;
    size_t offset;
  };
  const Damage damages[] = {
      {"vector byte of a middle record", second + 13 + 3 * 8 + 17},
      {"id byte of a middle record", second + 9 + 2},
      {"crc of a middle record", second + kAddRecord3 - 2},
      {"record magic", second + 1},
      {"op of a middle record", second + 4},
      {"count of a middle record (grows past the end)", second + 7},
      {"count of a middle record (low byte)", second + 5},
      {"header dimension (header crc)", 12},
      {"file magic", 0},
      {"version", 8},
  };
  for (const Damage& d : damages) {
    auto bytes = full;
    bytes[d.offset] ^= 0x40;
    WriteBytes(file(), bytes);
    ExpectDataLoss(d.what);
  }
}

TEST_F(FlatIndexLogTest, NotAnIndexIsDataLoss) {
  WriteBytes(file(), {'h', 'e', 'l', 'l', 'o'});
  ExpectDataLoss("short file");
  std::vector<uint8_t> garbage(4096);
  std::mt19937 rng(3);
  for (auto& b : garbage) b = static_cast<uint8_t>(rng());
  WriteBytes(file(), garbage);
  ExpectDataLoss("random bytes");
  WriteBytes(file(), {});
  ExpectDataLoss("empty file");
}

TEST_F(FlatIndexLogTest, WrongDimensionMessage) {
  ASSERT_TRUE(Open(16).ok());
  auto index = Open(32);
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(index.status().message(), "index file has dimension 16, database expects 32");
}

TEST_F(FlatIndexLogTest, SecondOpenIsUnavailable) {
  auto first = Open();
  ASSERT_TRUE(first.ok());
  auto second = Open();
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  first = Result<std::unique_ptr<VectorIndex>>(Status::Internal("closed"));
  EXPECT_TRUE(Open().ok());
}

// A reader opens beside the writer, sees what was acknowledged, skips a
// record being appended, never changes the file, and cannot write.
TEST_F(FlatIndexLogTest, ReadOnlyOpenBesideWriter) {
  FlatIndexOptions read_only;
  read_only.read_only = true;
  EXPECT_EQ(OpenFlatIndex(file(), kDim, read_only).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(file()));

  WriteFiveAdds();
  auto writer = Open();
  ASSERT_TRUE(writer.ok());
  auto reader = OpenFlatIndex(file(), kDim, read_only);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  ExpectIds(**reader, 15);
  int64_t id = 50;
  EXPECT_EQ((*reader)->Add(1, &id, data_.data()).code(), StatusCode::kFailedPrecondition);
  const int64_t stored = 3;
  EXPECT_EQ((*reader)->Remove(std::span<const int64_t>(&stored, 1)).code(),
            StatusCode::kFailedPrecondition);

  // A half-written record at the end (the writer is appending it) is skipped
  // by a reader and left in place for the writer.
  auto bytes = ReadBytes(file());
  auto partial = bytes;
  partial.insert(partial.end(), bytes.begin() + kHeader, bytes.begin() + kHeader + 10);
  writer = Result<std::unique_ptr<VectorIndex>>(Status::Internal("closed"));
  WriteBytes(file(), partial);
  ::testing::internal::CaptureStderr();
  auto late = OpenFlatIndex(file(), kDim, read_only);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ASSERT_TRUE(late.ok()) << late.status().ToString();
  ExpectIds(**late, 15);
  EXPECT_EQ(ReadBytes(file()), partial);
}

TEST_F(FlatIndexLogTest, RemovingUnknownIdsWritesNothing) {
  auto index = Open();
  ASSERT_TRUE(index.ok());
  auto ids = SequentialIds(3);
  ASSERT_TRUE((*index)->Add(3, ids.data(), data_.data()).ok());
  const auto size = fs::file_size(file());
  std::vector<int64_t> unknown = {7, 8};
  ASSERT_TRUE((*index)->Remove(unknown).ok());
  EXPECT_EQ(fs::file_size(file()), size);
  std::vector<int64_t> one = {1};
  ASSERT_TRUE((*index)->Remove(one).ok());
  EXPECT_EQ(fs::file_size(file()), size + 13 + 8);
}

TEST_F(FlatIndexLogTest, CompactionKeepsContentAndShrinksFile) {
  auto opened = Open();
  ASSERT_TRUE(opened.ok());
  auto& index = *opened;
  auto ids = SequentialIds(100);
  for (int b = 0; b < 4; ++b) {
    ASSERT_TRUE(index->Add(25, ids.data() + b * 25, data_.data() + b * 25 * kDim).ok());
  }
  // 40 of 100 removed: below half, the log only grows.
  std::vector<int64_t> first(ids.begin(), ids.begin() + 40);
  const auto before = fs::file_size(file());
  ASSERT_TRUE(index->Remove(first).ok());
  EXPECT_EQ(fs::file_size(file()), before + 13 + 8 * 40);
  // 11 more, one at a time: the 51st removal of 100 logged vectors makes
  // removals the majority and the log is rewritten with the 49 live ones.
  for (int64_t id = 40; id < 50; ++id) ASSERT_TRUE(index->Remove({&id, 1}).ok());
  EXPECT_EQ(fs::file_size(file()), before + 13 + 8 * 40 + 10 * (13 + 8));
  int64_t last = 50;
  ASSERT_TRUE(index->Remove({&last, 1}).ok());
  const size_t live = 49;
  EXPECT_EQ(fs::file_size(file()), kHeader + 13 + live * (8 + 4 * kDim));
  EXPECT_FALSE(fs::exists(dir_.path() / "vectors.flat.tmp"));
  auto check = [&](VectorIndex& idx) {
    EXPECT_EQ(idx.Ids(), SequentialIds(live, 51));
    for (int64_t id = 51; id < 100; ++id) {
      auto v = idx.Get(id);
      ASSERT_TRUE(v.ok());
      EXPECT_EQ(std::memcmp(v->data(), data_.data() + id * kDim, kDim * sizeof(float)), 0);
    }
  };
  check(*index);
  // The compacted log is appended to as usual and replays to the same state.
  int64_t extra = 100;
  ASSERT_TRUE(index->Add(1, &extra, data_.data()).ok());
  ASSERT_TRUE(index->Remove({&extra, 1}).ok());
  opened = Result<std::unique_ptr<VectorIndex>>(Status::Internal("closed"));
  auto reopened = Open();
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  check(**reopened);
}

// ---------------------------------------------------------------------------
// Kernels.

TEST(InnerProductTest, DispatchedMatchesScalar) {
  std::printf("inner product kernels: %s\n", InnerProductIsa());
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> uniform(-1, 1);
  std::vector<size_t> dims;
  for (size_t d = 1; d <= 70; ++d) dims.push_back(d);
  for (size_t d : {127, 128, 129, 512, 1000, 1280}) dims.push_back(d);
  for (size_t dim : dims) {
    std::vector<float> q(dim), v(4 * dim);
    for (auto& x : q) x = uniform(rng);
    for (auto& x : v) x = uniform(rng);
    const float* group[4] = {v.data(), v.data() + dim, v.data() + 2 * dim, v.data() + 3 * dim};
    float out[4], scalar[4];
    InnerProduct4(q.data(), group, dim, out);
    InnerProduct4Scalar(q.data(), group, dim, scalar);
    for (int j = 0; j < 4; ++j) {
      double exact = ExactDot(q.data(), group[j], dim);
      double tol = 1e-5 * std::sqrt(static_cast<double>(dim)) + 1e-6;
      EXPECT_NEAR(out[j], exact, tol) << "dim " << dim;
      EXPECT_NEAR(scalar[j], exact, tol) << "dim " << dim;
      EXPECT_NEAR(InnerProduct(q.data(), group[j], dim), exact, tol) << "dim " << dim;
      EXPECT_NEAR(InnerProductScalar(q.data(), group[j], dim), exact, tol) << "dim " << dim;
    }
    // A lane's score does not depend on its neighbours (ties stay ties).
    const float* shuffled[4] = {group[2], group[2], group[0], group[3]};
    float again[4];
    InnerProduct4(q.data(), shuffled, dim, again);
    EXPECT_EQ(again[0], out[2]);
    EXPECT_EQ(again[1], out[2]);
    EXPECT_EQ(again[2], out[0]);
    EXPECT_EQ(again[3], out[3]);
  }
}

TEST(InnerProductTest, Bfloat16RoundsToNearestEven) {
  EXPECT_EQ(ToBfloat16(1.0f).bits, 0x3f80);
  EXPECT_EQ(ToBfloat16(-2.0f).bits, 0xc000);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to the even one, 1.
  EXPECT_EQ(ToBfloat16(1.0f + 0x1p-8f).bits, 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
  EXPECT_EQ(ToBfloat16(1.0f + 3 * 0x1p-8f).bits, 0x3f82);
  EXPECT_EQ(FromBfloat16(ToBfloat16(0.15625f)), 0.15625f);  // exact in 8 bits
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-10, 10);
  for (int i = 0; i < 1000; ++i) {
    const float x = uniform(rng);
    EXPECT_NEAR(FromBfloat16(ToBfloat16(x)), x, std::abs(x) * 0x1p-8f) << x;
  }
}

TEST(InnerProductTest, Bfloat16DispatchedMatchesScalar) {
  std::printf("bfloat16 inner product kernels: %s\n", InnerProductBf16Isa());
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> uniform(-1, 1);
  std::vector<size_t> dims;
  for (size_t d = 1; d <= 70; ++d) dims.push_back(d);
  for (size_t d : {127, 128, 129, 768, 1000, 2048}) dims.push_back(d);
  for (size_t dim : dims) {
    std::vector<Bfloat16> q(dim), v(4 * dim);
    for (auto& x : q) x = ToBfloat16(uniform(rng));
    for (auto& x : v) x = ToBfloat16(uniform(rng));
    const Bfloat16* group[4] = {v.data(), v.data() + dim, v.data() + 2 * dim, v.data() + 3 * dim};
    float out[4], scalar[4];
    InnerProduct4Bf16(q.data(), group, dim, out);
    InnerProduct4Bf16Scalar(q.data(), group, dim, scalar);
    for (int j = 0; j < 4; ++j) {
      // The exact inner product of the bfloat16 values, which every kernel
      // multiplies exactly (8-bit significands) and sums in float.
      double exact = 0;
      for (size_t t = 0; t < dim; ++t) {
        exact += double{FromBfloat16(q[t])} * FromBfloat16(group[j][t]);
      }
      const double tol = 1e-5 * std::sqrt(static_cast<double>(dim)) + 1e-6;
      EXPECT_NEAR(out[j], exact, tol) << "dim " << dim;
      EXPECT_NEAR(scalar[j], exact, tol) << "dim " << dim;
      EXPECT_NEAR(InnerProductBf16(q.data(), group[j], dim), exact, tol) << "dim " << dim;
      EXPECT_NEAR(InnerProductBf16Scalar(q.data(), group[j], dim), exact, tol) << "dim " << dim;
    }
    const Bfloat16* shuffled[4] = {group[3], group[1], group[1], group[0]};
    float again[4];
    InnerProduct4Bf16(q.data(), shuffled, dim, again);
    EXPECT_EQ(again[0], out[3]);
    EXPECT_EQ(again[1], out[1]);
    EXPECT_EQ(again[2], out[1]);
    EXPECT_EQ(again[3], out[0]);
  }
}

}  // namespace
}  // namespace pixseek
