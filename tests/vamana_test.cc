// The in-memory Vamana graph, checked against exact brute-force search.
#include "index/vamana.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "index/graph_search.h"
#include "index/inner_product.h"
#include "index/top_k.h"

namespace pixseek {
namespace {

constexpr int kDim = 64;

void Normalise(float* v, size_t dim) {
  double norm = 0;
  for (size_t j = 0; j < dim; ++j) norm += double{v[j]} * v[j];
  const float inv = static_cast<float>(1.0 / std::sqrt(norm));
  for (size_t j = 0; j < dim; ++j) v[j] *= inv;
}

// n unit vectors around `clusters` random unit centres; the same centres
// (same seed) give queries from the same distribution.
std::vector<float> Clustered(size_t n, size_t dim, size_t clusters, uint64_t centre_seed,
                             uint64_t point_seed) {
  std::mt19937_64 crng(centre_seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(clusters * dim);
  for (auto& x : centres) x = normal(crng);
  for (size_t c = 0; c < clusters; ++c) Normalise(&centres[c * dim], dim);
  std::mt19937_64 rng(point_seed);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    for (size_t j = 0; j < dim; ++j) out[i * dim + j] = centres[c * dim + j] + 0.2f * normal(rng);
    Normalise(&out[i * dim], dim);
  }
  return out;
}

// Exact top k by inner product, best first, ties by smaller id.
std::vector<SearchHit> BruteForce(const std::vector<float>& data, size_t dim, const float* q,
                                  size_t k) {
  TopK top(k);
  const size_t n = data.size() / dim;
  for (size_t i = 0; i < n; ++i) {
    const float* v[4] = {&data[i * dim], &data[i * dim], &data[i * dim], &data[i * dim]};
    float ip[4];
    InnerProduct4(q, v, dim, ip);
    top.Push(ip[0], static_cast<int64_t>(i));
  }
  return top.TakeSorted();
}

double Recall(const std::vector<SearchHit>& got, const std::vector<SearchHit>& truth) {
  std::set<int64_t> want;
  for (const auto& h : truth) want.insert(h.id);
  size_t found = 0;
  for (const auto& h : got) found += want.count(h.id);
  return truth.empty() ? 1.0 : static_cast<double>(found) / truth.size();
}

class VamanaClusteredTest : public ::testing::Test {
 protected:
  static constexpr size_t kN = 5000;
  static constexpr size_t kQueries = 200;
  static constexpr size_t kK = 10;

  static void SetUpTestSuite() {
    data_ = new std::vector<float>(Clustered(kN, kDim, 50, 7, 1));
    queries_ = new std::vector<float>(Clustered(kQueries, kDim, 50, 7, 2));
    VamanaParams params;
    params.max_degree = 32;
    params.build_list = 64;
    params.alpha = 1.2f;
    params.num_threads = 4;  // exercise the per-node locks, whatever the core count
    auto built = VamanaGraph::Build(data_->data(), kN, kDim, params);
    ASSERT_TRUE(built.ok()) << built.status().ToString();
    graph_ = new VamanaGraph(std::move(built).value());
    truth_ = new std::vector<std::vector<SearchHit>>();
    for (size_t q = 0; q < kQueries; ++q) {
      truth_->push_back(BruteForce(*data_, kDim, &(*queries_)[q * kDim], kK));
    }
  }
  static void TearDownTestSuite() {
    delete graph_;
    delete data_;
    delete queries_;
    delete truth_;
  }

  static std::vector<float>* data_;
  static std::vector<float>* queries_;
  static VamanaGraph* graph_;
  static std::vector<std::vector<SearchHit>>* truth_;
};

std::vector<float>* VamanaClusteredTest::data_ = nullptr;
std::vector<float>* VamanaClusteredTest::queries_ = nullptr;
VamanaGraph* VamanaClusteredTest::graph_ = nullptr;
std::vector<std::vector<SearchHit>>* VamanaClusteredTest::truth_ = nullptr;

TEST_F(VamanaClusteredTest, RecallGrowsWithSearchList) {
  double previous_recall = 0;
  double previous_work = 0;
  double recall_at_10 = 0;
  double recall_at_50 = 0;
  double recall_at_100 = 0;
  for (int list : {10, 20, 50, 100}) {
    double recall = 0;
    double work = 0;
    for (size_t q = 0; q < kQueries; ++q) {
      std::vector<SearchHit> hits;
      SearchStats stats;
      ASSERT_TRUE(graph_->Search(&(*queries_)[q * kDim], kK, list, &hits, &stats).ok());
      ASSERT_EQ(hits.size(), kK);
      for (size_t i = 1; i < hits.size(); ++i) ASSERT_TRUE(BetterHit(hits[i - 1], hits[i]));
      EXPECT_GT(stats.hops, 0u);
      EXPECT_LE(stats.distance_computations, kN);
      recall += Recall(hits, (*truth_)[q]);
      work += stats.distance_computations;
    }
    recall /= kQueries;
    work /= kQueries;
    std::printf("search_list=%d recall@10=%.4f mean_distance_computations=%.1f\n", list, recall,
                work);
    EXPECT_GE(recall, previous_recall - 0.005) << "search_list " << list;
    EXPECT_GT(work, previous_work);
    previous_recall = recall;
    previous_work = work;
    if (list == 10) recall_at_10 = recall;
    if (list == 50) recall_at_50 = recall;
    if (list == 100) recall_at_100 = recall;
  }
  EXPECT_GE(recall_at_50, 0.95);
  EXPECT_GT(recall_at_100, recall_at_10);
  // Far fewer than a full scan.
  EXPECT_LT(previous_work, kN / 2.0);
}

TEST_F(VamanaClusteredTest, ScoresAreExactInnerProducts) {
  std::vector<SearchHit> hits;
  ASSERT_TRUE(graph_->Search(&(*queries_)[0], kK, 100, &hits).ok());
  for (const auto& h : hits) {
    EXPECT_NEAR(h.score, InnerProduct(&(*queries_)[0], &(*data_)[h.id * kDim], kDim), 1e-5);
  }
}

TEST_F(VamanaClusteredTest, DegreesAreBoundedAndListsClean) {
  EXPECT_EQ(graph_->size(), kN);
  EXPECT_EQ(graph_->max_degree(), 32);
  size_t total = 0;
  for (uint32_t i = 0; i < kN; ++i) {
    auto nbs = graph_->neighbours(i);
    ASSERT_LE(nbs.size(), 32u) << i;
    EXPECT_GE(nbs.size(), 1u) << i;
    std::set<uint32_t> unique(nbs.begin(), nbs.end());
    EXPECT_EQ(unique.size(), nbs.size()) << "duplicate neighbour of " << i;
    EXPECT_EQ(unique.count(i), 0u) << "self loop at " << i;
    for (uint32_t nb : nbs) ASSERT_LT(nb, kN);
    total += nbs.size();
  }
  std::printf("mean degree %.2f\n", static_cast<double>(total) / kN);
}

TEST_F(VamanaClusteredTest, ConnectedFromEntryPoint) {
  std::vector<char> reached(kN, 0);
  std::queue<uint32_t> frontier;
  frontier.push(graph_->entry_point());
  reached[graph_->entry_point()] = 1;
  size_t count = 1;
  while (!frontier.empty()) {
    const uint32_t node = frontier.front();
    frontier.pop();
    for (uint32_t nb : graph_->neighbours(node)) {
      if (!reached[nb]) {
        reached[nb] = 1;
        ++count;
        frontier.push(nb);
      }
    }
  }
  EXPECT_EQ(count, kN);
}

TEST_F(VamanaClusteredTest, EntryPointIsMedoid) {
  std::vector<double> centroid(kDim, 0.0);
  for (size_t i = 0; i < kN; ++i) {
    for (int j = 0; j < kDim; ++j) centroid[j] += (*data_)[i * kDim + j];
  }
  double best = -1e30;
  size_t medoid = 0;
  for (size_t i = 0; i < kN; ++i) {
    double d2 = 0;
    for (int j = 0; j < kDim; ++j) {
      const double diff = (*data_)[i * kDim + j] - centroid[j] / kN;
      d2 += diff * diff;
    }
    if (-d2 > best) {
      best = -d2;
      medoid = i;
    }
  }
  EXPECT_EQ(graph_->entry_point(), medoid);
}

TEST_F(VamanaClusteredTest, PointFindsItselfFirst) {
  for (uint32_t i = 0; i < kN; i += 25) {
    std::vector<SearchHit> hits;
    ASSERT_TRUE(graph_->Search(&(*data_)[i * kDim], 1, 20, &hits).ok());
    ASSERT_EQ(hits.size(), 1u);
    EXPECT_EQ(hits[0].id, i);
    EXPECT_NEAR(hits[0].score, 1.0f, 1e-4);
  }
}

TEST_F(VamanaClusteredTest, ConcurrentSearchesMatchSequential) {
  std::vector<std::vector<SearchHit>> sequential(kQueries);
  for (size_t q = 0; q < kQueries; ++q) {
    ASSERT_TRUE(graph_->Search(&(*queries_)[q * kDim], kK, 40, &sequential[q]).ok());
  }
  constexpr int kThreads = 4;
  std::vector<std::vector<std::vector<SearchHit>>> parallel(
      kThreads, std::vector<std::vector<SearchHit>>(kQueries));
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread walks the queries in a different order (a rotation,
      // reversed for odd threads).
      for (size_t i = 0; i < kQueries; ++i) {
        const size_t r = (i + 37 * t) % kQueries;
        const size_t q = t % 2 ? kQueries - 1 - r : r;
        if (!graph_->Search(&(*queries_)[q * kDim], kK, 40, &parallel[t][q]).ok()) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0);
    for (size_t q = 0; q < kQueries; ++q) {
      ASSERT_EQ(parallel[t][q].size(), sequential[q].size());
      for (size_t i = 0; i < sequential[q].size(); ++i) {
        EXPECT_EQ(parallel[t][q][i].id, sequential[q][i].id);
        EXPECT_EQ(parallel[t][q][i].score, sequential[q][i].score);
      }
    }
  }
}

TEST(VamanaTest, DeterministicWithOneThreadAndSeed) {
  const size_t n = 1000;
  const auto data = Clustered(n, kDim, 20, 3, 4);
  VamanaParams params;
  params.max_degree = 16;
  params.build_list = 32;
  params.num_threads = 1;
  params.seed = 99;
  auto a = VamanaGraph::Build(data.data(), n, kDim, params);
  auto b = VamanaGraph::Build(data.data(), n, kDim, params);
  params.seed = 100;
  auto c = VamanaGraph::Build(data.data(), n, kDim, params);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->entry_point(), b->entry_point());
  bool differs_from_other_seed = false;
  for (uint32_t i = 0; i < n; ++i) {
    auto na = a->neighbours(i);
    auto nb = b->neighbours(i);
    auto nc = c->neighbours(i);
    ASSERT_EQ(std::vector<uint32_t>(na.begin(), na.end()),
              std::vector<uint32_t>(nb.begin(), nb.end()))
        << "node " << i;
    if (!std::equal(na.begin(), na.end(), nc.begin(), nc.end())) differs_from_other_seed = true;
  }
  // The seed matters (else the test above could not fail).
  EXPECT_TRUE(differs_from_other_seed);
}

// The build reports its insertions as it goes (a shard of a large disk
// build takes long enough that a user wants more than its start and end),
// and reporting changes nothing in the graph.
TEST(VamanaTest, ReportsProgressOverBothPassesWithoutChangingTheGraph) {
  const size_t n = 2 * VamanaGraph::kProgressStep + 100;
  const auto data = Clustered(n, kDim, 20, 3, 4);
  VamanaParams params;
  params.max_degree = 8;
  params.build_list = 16;
  params.num_threads = 2;
  std::vector<std::pair<size_t, size_t>> calls;
  auto with = VamanaGraph::Build(std::vector<float>(data), n, kDim, params,
                                 [&](size_t done, size_t total) { calls.push_back({done, total}); });
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  // Two passes of n insertions: steps of kProgressStep and each pass's end,
  // rising (two threads may reach a step out of order: the later one is
  // then not reported).
  ASSERT_GE(calls.size(), 4u);
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, 2 * n);
    const size_t within = calls[i].first > n ? calls[i].first - n : calls[i].first;
    EXPECT_TRUE(within % VamanaGraph::kProgressStep == 0 || within == n) << calls[i].first;
    if (i > 0) {
      EXPECT_GT(calls[i].first, calls[i - 1].first);
    }
  }
  EXPECT_NE(std::find(calls.begin(), calls.end(), std::make_pair(n, 2 * n)), calls.end());
  EXPECT_EQ(calls.back(), std::make_pair(2 * n, 2 * n));

  params.num_threads = 1;
  auto a = VamanaGraph::Build(std::vector<float>(data), n, kDim, params, [](size_t, size_t) {});
  auto b = VamanaGraph::Build(data.data(), n, kDim, params);
  ASSERT_TRUE(a.ok() && b.ok());
  for (uint32_t i = 0; i < n; ++i) {
    auto na = a->neighbours(i);
    auto nb = b->neighbours(i);
    ASSERT_TRUE(std::equal(na.begin(), na.end(), nb.begin(), nb.end())) << "node " << i;
  }
}

// A disk build's graph: links built on bfloat16 copies, searched (as the
// disk index does) with the float vectors. It must find what the float-built
// graph finds.
TEST(VamanaTest, LinksBuiltOnBfloat16SearchAsWellAsFloat) {
  constexpr size_t kN = 5000, kQueries = 200, kK = 10;
  const std::vector<float> data = Clustered(kN, kDim, 50, 7, 1);
  const std::vector<float> queries = Clustered(kQueries, kDim, 50, 7, 2);
  VamanaParams params;
  params.max_degree = 32;
  params.build_list = 64;
  params.num_threads = 2;
  auto full = VamanaGraph::Build(data.data(), kN, kDim, params);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  std::vector<Bfloat16> half(data.size());
  ToBfloat16(data.data(), data.size(), half.data());
  auto links = VamanaGraph::BuildLinks(std::move(half), kN, kDim, params, nullptr);
  ASSERT_TRUE(links.ok()) << links.status().ToString();
  EXPECT_TRUE(full->has_vectors());
  EXPECT_FALSE(links->has_vectors());
  std::vector<SearchHit> hits;
  EXPECT_EQ(links->Search(queries.data(), kK, 20, &hits).code(), StatusCode::kFailedPrecondition);
  for (uint32_t i = 0; i < kN; ++i) {
    ASSERT_LE(links->neighbours(i).size(), 32u);
    ASSERT_GT(links->neighbours(i).size(), 0u);
  }
  for (int list : {16, 32, 64}) {
    double recall_full = 0, recall_links = 0;
    graph::NodeSet seen;
    std::vector<graph::Candidate> found;
    for (size_t q = 0; q < kQueries; ++q) {
      const float* query = &queries[q * kDim];
      const std::vector<SearchHit> truth = BruteForce(data, kDim, query, kK);
      ASSERT_TRUE(full->Search(query, kK, list, &hits).ok());
      recall_full += Recall(hits, truth);
      SearchStats stats;
      graph::GreedySearch(
          query, links->entry_point(), static_cast<size_t>(list), data.data(), kDim,
          [&](uint32_t node, std::vector<uint32_t>*) { return links->neighbours(node); }, &seen,
          &found, nullptr, &stats);
      hits.clear();
      for (size_t i = 0; i < kK && i < found.size(); ++i) hits.push_back({found[i].id, found[i].ip});
      recall_links += Recall(hits, truth);
    }
    recall_full /= kQueries;
    recall_links /= kQueries;
    std::printf("list %d: recall@10 float-built %.4f, bfloat16-built %.4f\n", list, recall_full,
                recall_links);
    EXPECT_GE(recall_links, recall_full - 0.01) << "list " << list;
  }
}

TEST(VamanaTest, LinksRejectNonUnitOrWronglySizedBfloat16) {
  std::vector<float> data = Clustered(100, kDim, 5, 7, 1);
  for (size_t j = 0; j < kDim; ++j) data[42 * kDim + j] *= 1.1f;  // norm^2 1.21
  std::vector<Bfloat16> half(data.size());
  ToBfloat16(data.data(), data.size(), half.data());
  auto bad = VamanaGraph::BuildLinks(std::vector<Bfloat16>(half), 100, kDim, VamanaParams{},
                                     nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("vector 42"), std::string::npos) << bad.status().ToString();
  half.pop_back();
  EXPECT_EQ(VamanaGraph::BuildLinks(std::move(half), 100, kDim, VamanaParams{}, nullptr)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(VamanaTest, SinglePoint) {
  std::vector<float> v(kDim, 0.0f);
  v[3] = 1.0f;
  auto g = VamanaGraph::Build(v.data(), 1, kDim, {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->size(), 1u);
  EXPECT_EQ(g->entry_point(), 0u);
  EXPECT_TRUE(g->neighbours(0).empty());
  std::vector<SearchHit> hits;
  ASSERT_TRUE(g->Search(v.data(), 5, 10, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].id, 0);
  EXPECT_FLOAT_EQ(hits[0].score, 1.0f);
  ASSERT_TRUE(g->Search(v.data(), 0, 10, &hits).ok());
  EXPECT_TRUE(hits.empty());
}

TEST(VamanaTest, FewerPointsThanDegreeAndKAboveN) {
  const size_t n = 12;
  auto data = Clustered(n, kDim, 3, 5, 6);
  // Rows 3 and 7 hold the same vector: a tie, broken by the smaller id.
  std::copy(&data[3 * kDim], &data[4 * kDim], &data[7 * kDim]);
  VamanaParams params;  // R = 64 > n
  auto g = VamanaGraph::Build(data.data(), n, kDim, params);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  for (uint32_t i = 0; i < n; ++i) EXPECT_LE(g->neighbours(i).size(), n - 1);
  for (uint32_t q = 0; q < n; ++q) {
    std::vector<SearchHit> hits;
    ASSERT_TRUE(g->Search(&data[q * kDim], 50, 1, &hits).ok());
    const auto truth = BruteForce(data, kDim, &data[q * kDim], 50);
    ASSERT_EQ(hits.size(), n);
    ASSERT_EQ(truth.size(), n);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(hits[i].id, truth[i].id) << "query " << q << " rank " << i;
      EXPECT_EQ(hits[i].score, truth[i].score);
    }
  }
  std::vector<SearchHit> hits;
  ASSERT_TRUE(g->Search(&data[7 * kDim], 2, 10, &hits).ok());
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0].id, 3);
  EXPECT_EQ(hits[1].id, 7);
  EXPECT_EQ(hits[0].score, hits[1].score);
}

TEST(VamanaTest, RejectsBadInput) {
  const size_t n = 20;
  auto data = Clustered(n, kDim, 2, 1, 1);
  VamanaParams params;
  auto code = [](const auto& r) { return r.status().code(); };

  auto scaled = data;
  for (int j = 0; j < kDim; ++j) scaled[5 * kDim + j] *= 1.5f;
  EXPECT_EQ(code(VamanaGraph::Build(scaled.data(), n, kDim, params)), StatusCode::kInvalidArgument);
  auto nan = data;
  nan[2 * kDim + 1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(code(VamanaGraph::Build(nan.data(), n, kDim, params)), StatusCode::kInvalidArgument);
  std::vector<float> zeros(n * kDim, 0.0f);
  EXPECT_EQ(code(VamanaGraph::Build(zeros.data(), n, kDim, params)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(VamanaGraph::Build(data.data(), 0, kDim, params)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(VamanaGraph::Build(data.data(), n, 0, params)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(VamanaGraph::Build(nullptr, n, kDim, params)), StatusCode::kInvalidArgument);
  for (int field = 0; field < 7; ++field) {
    VamanaParams bad;
    if (field == 0) bad.max_degree = 0;
    if (field == 1) bad.build_list = 0;
    if (field == 2) bad.alpha = 0.5f;
    if (field == 3) bad.num_threads = -1;
    if (field == 4) bad.max_degree = 1 << 30;
    if (field == 5) bad.build_list = std::numeric_limits<int>::max();
    if (field == 6) bad.alpha = std::numeric_limits<float>::quiet_NaN();
    EXPECT_EQ(code(VamanaGraph::Build(data.data(), n, kDim, bad)), StatusCode::kInvalidArgument)
        << "field " << field;
  }

  auto g = VamanaGraph::Build(data.data(), n, kDim, params);
  ASSERT_TRUE(g.ok());
  std::vector<SearchHit> hits;
  EXPECT_EQ(g->Search(nullptr, 5, 10, &hits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g->Search(data.data(), 5, 10, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g->Search(data.data(), 5, 0, &hits).code(), StatusCode::kInvalidArgument);
  // A huge list or k is bounded by the graph size, not allocated.
  ASSERT_TRUE(g->Search(data.data(), 1000000, std::numeric_limits<int>::max(), &hits).ok());
  EXPECT_EQ(hits.size(), n);
  std::vector<float> bad_query(data.begin(), data.begin() + kDim);
  bad_query[0] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(g->Search(bad_query.data(), 5, 10, &hits).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pixseek
