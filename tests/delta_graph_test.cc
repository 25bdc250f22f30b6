// The disk index's in-memory graph of fresh inserts: exact while small (so
// reopening a small database replays its log without building a graph), a
// graph once past its limit, and both agree with a brute-force scan.
#include "index/delta_graph.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace pixseek {
namespace {

constexpr int kDim = 24;

std::vector<float> RandomUnitVectors(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss;
  std::vector<float> v(n * kDim);
  for (size_t i = 0; i < n; ++i) {
    float norm = 0;
    for (int j = 0; j < kDim; ++j) norm += (v[i * kDim + j] = gauss(rng)) * v[i * kDim + j];
    for (int j = 0; j < kDim; ++j) v[i * kDim + j] /= std::sqrt(norm);
  }
  return v;
}

// The k best node numbers by brute force, ties by node.
std::vector<int64_t> Truth(const std::vector<float>& base, const float* q, size_t k) {
  const size_t n = base.size() / kDim;
  std::vector<std::pair<float, int64_t>> scored;
  for (size_t i = 0; i < n; ++i) {
    float ip = 0;
    for (int j = 0; j < kDim; ++j) ip += q[j] * base[i * kDim + j];
    scored.push_back({-ip, static_cast<int64_t>(i)});
  }
  std::sort(scored.begin(), scored.end());
  std::vector<int64_t> ids;
  for (size_t i = 0; i < k; ++i) ids.push_back(scored[i].second);
  return ids;
}

double Recall(const DeltaGraph& g, const std::vector<float>& base,
              const std::vector<float>& queries, size_t k) {
  size_t found = 0, total = 0;
  std::vector<SearchHit> hits;
  for (size_t q = 0; q < queries.size() / kDim; ++q) {
    const float* query = queries.data() + q * kDim;
    g.Search(query, k, 64, &hits);
    const auto truth = Truth(base, query, k);
    for (const SearchHit& h : hits) found += std::count(truth.begin(), truth.end(), h.id);
    total += k;
  }
  return static_cast<double>(found) / static_cast<double>(total);
}

TEST(DeltaGraphTest, ExactBelowTheLimitThenAGraph) {
  VamanaParams params;
  params.max_degree = 16;
  params.build_list = 40;
  const size_t limit = 200;
  DeltaGraph g(kDim, params, limit);
  const auto base = RandomUnitVectors(500, 1);
  const auto queries = RandomUnitVectors(40, 2);
  for (size_t i = 0; i < limit; ++i) g.Insert(base.data() + i * kDim);
  EXPECT_FALSE(g.linked());
  const std::vector<float> first(base.begin(), base.begin() + limit * kDim);
  EXPECT_DOUBLE_EQ(Recall(g, first, queries, 10), 1.0) << "a scan is exact";

  g.Insert(base.data() + limit * kDim);  // past the limit: every node is linked
  EXPECT_TRUE(g.linked());
  for (size_t i = limit + 1; i < 500; ++i) g.Insert(base.data() + i * kDim);
  EXPECT_EQ(g.size(), 500u);
  EXPECT_GE(Recall(g, base, queries, 10), 0.95);
}

TEST(DeltaGraphTest, AGraphFromTheFirstInsert) {
  VamanaParams params;
  params.max_degree = 16;
  params.build_list = 40;
  DeltaGraph g(kDim, params, /*exact_limit=*/0);
  const auto base = RandomUnitVectors(400, 3);
  const auto queries = RandomUnitVectors(40, 4);
  for (size_t i = 0; i < 400; ++i) g.Insert(base.data() + i * kDim);
  EXPECT_TRUE(g.linked());
  EXPECT_GE(Recall(g, base, queries, 10), 0.95);
}

TEST(DeltaGraphTest, ExactSearchOrdersTiesByNode) {
  VamanaParams params;
  DeltaGraph g(kDim, params);
  std::vector<float> v(kDim, 0.0f);
  v[0] = 1.0f;
  for (int i = 0; i < 5; ++i) g.Insert(v.data());
  std::vector<SearchHit> hits;
  g.Search(v.data(), 3, 0, &hits);
  ASSERT_EQ(hits.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(hits[i].id, i);
  g.Search(v.data(), 0, 0, &hits);
  EXPECT_TRUE(hits.empty());
}

}  // namespace
}  // namespace pixseek
