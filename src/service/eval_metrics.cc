#include "service/eval_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pixseek {
namespace {

// Relevant images found in the first k places.
size_t FoundWithin(std::span<const uint32_t> ranks, size_t k) {
  return static_cast<size_t>(std::upper_bound(ranks.begin(), ranks.end(), k) - ranks.begin());
}

double Ratio(size_t a, size_t b) {
  return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b);
}

// Average precision over the first k places, normalised by min(R, k): 1
// when the top k is as good as it can be.
double AveragePrecisionAt(std::span<const uint32_t> ranks, size_t total, size_t k) {
  double sum = 0;
  const size_t found = FoundWithin(ranks, k);
  for (size_t i = 0; i < found; ++i) sum += Ratio(i + 1, ranks[i]);
  return sum / static_cast<double>(std::min(total, k));
}

double NdcgAt(std::span<const uint32_t> ranks, size_t total, size_t k) {
  double dcg = 0, ideal = 0;
  const size_t found = FoundWithin(ranks, k);
  for (size_t i = 0; i < found; ++i) dcg += 1.0 / std::log2(static_cast<double>(ranks[i]) + 1);
  for (size_t i = 1; i <= std::min(total, k); ++i) ideal += 1.0 / std::log2(static_cast<double>(i) + 1);
  return dcg / ideal;
}

// Interpolated precision at recall l/100 = the best precision i/rank_i over
// the points with recall i/R >= l/100, i.e. i >= ceil(l R / 100).
void FillPrCurve(std::span<const uint32_t> ranks, size_t total, std::vector<double>& curve) {
  std::vector<double> best_from(ranks.size() + 1, 0.0);  // best_from[i]: max over j >= i
  for (size_t i = ranks.size(); i-- > 0;) {
    best_from[i] = std::max(best_from[i + 1], Ratio(i + 1, ranks[i]));
  }
  const size_t points = curve.size();
  for (size_t l = 0; l < points; ++l) {
    const size_t need = (l * total + points - 2) / (points - 1);  // ceil(l R / 100)
    const size_t i = need == 0 ? 0 : need - 1;  // 0-based index of the need-th relevant
    curve[l] = i < ranks.size() ? best_from[i] : 0.0;
  }
}

}  // namespace

EvalMetrics ScoreRanks(std::span<const uint32_t> ranks, size_t total) {
  EvalMetrics m;
  m.queries = 1;
  if (total == 0) return m;
  const size_t in_1 = FoundWithin(ranks, 1), in_10 = FoundWithin(ranks, 10),
               in_100 = FoundWithin(ranks, 100);
  m.map = AveragePrecisionAt(ranks, total, std::numeric_limits<uint32_t>::max());
  m.map_at_100 = AveragePrecisionAt(ranks, total, 100);
  m.p_at_1 = Ratio(in_1, 1);
  m.p_at_10 = Ratio(in_10, 10);
  m.p_at_100 = Ratio(in_100, 100);
  m.r_at_1 = Ratio(in_1, total);
  m.r_at_10 = Ratio(in_10, total);
  m.r_at_100 = Ratio(in_100, total);
  m.ndcg_at_10 = NdcgAt(ranks, total, 10);
  m.ndcg_at_100 = NdcgAt(ranks, total, 100);
  FillPrCurve(ranks, total, m.pr_curve);
  return m;
}

namespace {

// Applies fn(field of a, field of b) to every averaged field.
template <typename Fn>
void ForEachField(EvalMetrics& a, const EvalMetrics& b, Fn fn) {
  fn(a.map, b.map);
  fn(a.map_at_100, b.map_at_100);
  fn(a.p_at_1, b.p_at_1);
  fn(a.p_at_10, b.p_at_10);
  fn(a.p_at_100, b.p_at_100);
  fn(a.r_at_1, b.r_at_1);
  fn(a.r_at_10, b.r_at_10);
  fn(a.r_at_100, b.r_at_100);
  fn(a.ndcg_at_10, b.ndcg_at_10);
  fn(a.ndcg_at_100, b.ndcg_at_100);
  for (size_t i = 0; i < a.pr_curve.size() && i < b.pr_curve.size(); ++i) {
    fn(a.pr_curve[i], b.pr_curve[i]);
  }
}

}  // namespace

void AccumulateMetrics(EvalMetrics& sum, const EvalMetrics& one) {
  ForEachField(sum, one, [](double& s, double v) { s += v; });
  sum.queries += one.queries;
}

EvalMetrics MeanMetrics(EvalMetrics sum, double n) {
  if (n > 0) ForEachField(sum, sum, [n](double& s, double) { s /= n; });
  return sum;
}

}  // namespace pixseek
