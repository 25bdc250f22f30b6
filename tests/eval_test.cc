// Evaluation's metrics on hand-made rankings (numbers worked out by hand in
// the comments) and the exact ranker against a plain sort.
#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "service/eval_metrics.h"
#include "service/eval_ranking.h"

namespace pixseek {
namespace {

// Relevant at ranks 1, 3 and 6 of 4 relevant images (one never found).
TEST(EvalMetricsTest, PrecisionRecallApAndNdcg) {
  const std::vector<uint32_t> ranks = {1, 3, 6};
  const EvalMetrics m = ScoreRanks(ranks, 4);
  EXPECT_EQ(m.queries, 1u);
  EXPECT_DOUBLE_EQ(m.p_at_1, 1.0);
  EXPECT_DOUBLE_EQ(m.p_at_10, 0.3);
  EXPECT_DOUBLE_EQ(m.p_at_100, 0.03);
  EXPECT_DOUBLE_EQ(m.r_at_1, 0.25);
  EXPECT_DOUBLE_EQ(m.r_at_10, 0.75);
  EXPECT_DOUBLE_EQ(m.r_at_100, 0.75);
  // (1/1 + 2/3 + 3/6) / 4 = 0.541666...
  EXPECT_NEAR(m.map, 0.5416666667, 1e-9);
  EXPECT_NEAR(m.map_at_100, 0.5416666667, 1e-9);
  // DCG = 1/log2(2) + 1/log2(4) + 1/log2(7); ideal = 4 hits at ranks 1-4.
  const double dcg = 1.0 + 0.5 + 1.0 / std::log2(7.0);
  const double ideal = 1.0 + 1.0 / std::log2(3.0) + 0.5 + 1.0 / std::log2(5.0);
  EXPECT_NEAR(m.ndcg_at_10, dcg / ideal, 1e-12);
  EXPECT_NEAR(m.ndcg_at_10, 0.7246263, 1e-6);
  EXPECT_NEAR(m.ndcg_at_100, 0.7246263, 1e-6);
  // Interpolated precision: 1 up to recall 0.25, 2/3 up to 0.5, 1/2 up to
  // 0.75, 0 beyond (the fourth image is never found).
  ASSERT_EQ(m.pr_curve.size(), 101u);
  EXPECT_DOUBLE_EQ(m.pr_curve[0], 1.0);
  EXPECT_DOUBLE_EQ(m.pr_curve[25], 1.0);
  EXPECT_DOUBLE_EQ(m.pr_curve[26], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.pr_curve[50], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.pr_curve[51], 0.5);
  EXPECT_DOUBLE_EQ(m.pr_curve[75], 0.5);
  EXPECT_DOUBLE_EQ(m.pr_curve[76], 0.0);
  EXPECT_DOUBLE_EQ(m.pr_curve[100], 0.0);
}

// Precision rises from 1/2 to 2/3: interpolation takes the best to the right.
TEST(EvalMetricsTest, InterpolationTakesTheBestPrecisionAtHigherRecall) {
  const std::vector<uint32_t> ranks = {2, 3};
  const EvalMetrics m = ScoreRanks(ranks, 2);
  EXPECT_DOUBLE_EQ(m.p_at_1, 0.0);
  EXPECT_DOUBLE_EQ(m.r_at_10, 1.0);
  EXPECT_NEAR(m.map, (0.5 + 2.0 / 3.0) / 2, 1e-12);
  EXPECT_NEAR(m.ndcg_at_10, (1 / std::log2(3.0) + 0.5) / (1 + 1 / std::log2(3.0)), 1e-12);
  EXPECT_NEAR(m.ndcg_at_10, 0.6934264, 1e-6);
  for (int l : {0, 30, 50, 100}) EXPECT_DOUBLE_EQ(m.pr_curve[l], 2.0 / 3.0) << l;
}

// AP@100 stops at 100 and divides by min(R, 100); AP goes on.
TEST(EvalMetricsTest, CutOffMetrics) {
  const std::vector<uint32_t> ranks = {1, 150};
  const EvalMetrics m = ScoreRanks(ranks, 2);
  EXPECT_NEAR(m.map, (1.0 + 2.0 / 150) / 2, 1e-12);  // 0.50667
  EXPECT_DOUBLE_EQ(m.map_at_100, 0.5);
  EXPECT_DOUBLE_EQ(m.p_at_100, 0.01);
  EXPECT_DOUBLE_EQ(m.r_at_100, 0.5);
  EXPECT_DOUBLE_EQ(m.ndcg_at_100, 1.0 / (1.0 + 1.0 / std::log2(3.0)));
  EXPECT_DOUBLE_EQ(m.pr_curve[50], 1.0);
  EXPECT_DOUBLE_EQ(m.pr_curve[51], 2.0 / 150);
}

TEST(EvalMetricsTest, NothingRelevantScoresZeroButCounts) {
  const EvalMetrics m = ScoreRanks({}, 0);
  EXPECT_EQ(m.queries, 1u);
  EXPECT_EQ(m.map, 0.0);
  EXPECT_EQ(m.ndcg_at_10, 0.0);
  EXPECT_EQ(m.pr_curve[0], 0.0);
}

TEST(EvalMetricsTest, MeansOverQueries) {
  EvalMetrics sum;
  AccumulateMetrics(sum, ScoreRanks(std::vector<uint32_t>{1}, 1));
  AccumulateMetrics(sum, ScoreRanks(std::vector<uint32_t>{2}, 1));
  const EvalMetrics mean = MeanMetrics(sum, 2);
  EXPECT_EQ(mean.queries, 2u);
  EXPECT_DOUBLE_EQ(mean.map, 0.75);
  EXPECT_DOUBLE_EQ(mean.p_at_1, 0.5);
  EXPECT_DOUBLE_EQ(mean.pr_curve[100], 0.75);
}

// Rows: id 10 (1,0) a; 11 (.8,.6) b; 12 (.8,.6) a; 13 (0,1) a; 14 (-1,0) b.
class ExactRankerTest : public ::testing::Test {
 protected:
  std::vector<float> gallery_ = {1, 0, .8f, .6f, .8f, .6f, 0, 1, -1, 0};
  std::vector<int64_t> ids_ = {10, 11, 12, 13, 14};
  std::vector<int32_t> labels_ = {0, 1, 0, 0, 1};
  ExactRanker ranker_{gallery_.data(), 5, 2, ids_, labels_};
};

TEST_F(ExactRankerTest, LeaveOneOutWithTiesBySmallerId) {
  // Row 0 as query: 11 and 12 tie at 0.8 (11 first), then 13, then 14.
  std::vector<RankedQuery> out;
  const RankRequest request{0, 0};
  ranker_.Rank(gallery_.data(), {&request, 1}, 10, 2, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].relevant_total, 2u);
  EXPECT_EQ(out[0].relevant_ranks, (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(out[0].top, (std::vector<uint32_t>{1, 2, 3, 4}));
}

TEST_F(ExactRankerTest, ExternalQuery) {
  // (0,1): 13 (1), 11 and 12 (.6), 10 and 14 (0); class b = 11 and 14.
  const float query[2] = {0, 1};
  const RankRequest request{-1, 1};
  std::vector<RankedQuery> out;
  ranker_.Rank(query, {&request, 1}, 3, 1, &out);
  EXPECT_EQ(out[0].relevant_ranks, (std::vector<uint32_t>{2, 5}));
  EXPECT_EQ(out[0].top, (std::vector<uint32_t>{3, 1, 2}));
}

// Against a full sort, with many ties (coarse values), one chunk or many.
TEST(ExactRankerRandomTest, AgreesWithAFullSortWhateverTheChunk) {
  const size_t n = 300, dim = 4;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> coarse(-2, 2), label(0, 4);
  std::vector<float> gallery(n * dim);
  for (float& x : gallery) x = static_cast<float>(coarse(rng));
  std::vector<int64_t> ids(n);
  std::vector<int32_t> labels(n);
  for (size_t i = 0; i < n; ++i) {
    ids[i] = static_cast<int64_t>((i * 7919) % 1000);  // distinct, not in row order
    labels[i] = label(rng);
  }
  ExactRanker ranker(gallery.data(), n, dim, ids, labels);
  std::vector<RankRequest> requests(n);
  for (size_t q = 0; q < n; ++q) requests[q] = {static_cast<int64_t>(q), labels[q]};
  std::vector<RankedQuery> all;
  ranker.Rank(gallery.data(), requests, 10, 2, &all);
  for (size_t q = 0; q < n; q += 37) {
    std::vector<RankedQuery> one;
    ranker.Rank(gallery.data() + q * dim, {&requests[q], 1}, 10, 1, &one);
    EXPECT_EQ(one[0].relevant_ranks, all[q].relevant_ranks);
    EXPECT_EQ(one[0].top, all[q].top);
    // The plain way: score, sort everything, read off the relevant places.
    std::vector<std::pair<float, size_t>> order;
    for (size_t j = 0; j < n; ++j) {
      if (j == q) continue;
      float dot = 0;
      for (size_t d = 0; d < dim; ++d) dot += gallery[q * dim + d] * gallery[j * dim + d];
      order.push_back({dot, j});
    }
    std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : ids[a.second] < ids[b.second];
    });
    std::vector<uint32_t> ranks, top;
    for (size_t r = 0; r < order.size(); ++r) {
      if (labels[order[r].second] == labels[q]) ranks.push_back(static_cast<uint32_t>(r + 1));
      if (r < 10) top.push_back(static_cast<uint32_t>(order[r].second));
    }
    EXPECT_EQ(all[q].relevant_ranks, ranks) << q;
    EXPECT_EQ(all[q].top, top) << q;
  }
}

}  // namespace
}  // namespace pixseek
