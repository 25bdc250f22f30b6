// EvalReportJson: the one JSON form of an evaluation, for `pixseek eval
// --json` and GET /api/v1/evaluations/{id}. Keys are documented in
// docs/quality.md.
#include <nlohmann/json.hpp>

#include "pixseek/services.h"

namespace pixseek {
namespace {

using nlohmann::json;

// [[recall, precision], ...] for every `step`-th point of the 101-point curve.
json PrCurveJson(const std::vector<double>& curve, size_t step) {
  json points = json::array();
  const double last = static_cast<double>(curve.size() - 1);
  for (size_t i = 0; i < curve.size(); i += step) {
    points.push_back({static_cast<double>(i) / last, curve[i]});
  }
  return points;
}

json MetricsJson(const EvalMetrics& m) {
  return json{{"map", m.map},
              {"map_at_100", m.map_at_100},
              {"p_at_1", m.p_at_1},
              {"p_at_10", m.p_at_10},
              {"p_at_100", m.p_at_100},
              {"r_at_1", m.r_at_1},
              {"r_at_10", m.r_at_10},
              {"r_at_100", m.r_at_100},
              {"ndcg_at_10", m.ndcg_at_10},
              {"ndcg_at_100", m.ndcg_at_100},
              {"queries", m.queries},
              {"pr_curve", PrCurveJson(m.pr_curve, 1)},
              {"pr_curve_11", PrCurveJson(m.pr_curve, (m.pr_curve.size() - 1) / 10)}};
}

json ExampleJson(const EvalExample& e) {
  json top = json::array();
  for (const EvalExample::Hit& hit : e.top) {
    top.push_back({{"id", hit.id}, {"path", hit.path}, {"relevant", hit.relevant}});
  }
  json j = {{"label", e.label},
            {"query_path", e.query_path},
            {"average_precision", e.average_precision},
            {"top", std::move(top)}};
  if (e.query_id >= 0) j["query_id"] = e.query_id;
  return j;
}

}  // namespace

std::string EvalReportJson(const EvalReport& report) {
  json labels = json::object();
  for (const auto& [label, m] : report.per_label) labels[label] = MetricsJson(m);
  json examples = json::array();
  for (const EvalExample& e : report.examples) examples.push_back(ExampleJson(e));
  return json{{"overall", MetricsJson(report.overall)},
              {"macro", MetricsJson(report.macro)},
              {"per_label", std::move(labels)},
              {"images", report.images},
              {"split", std::string(ToString(report.split))},
              {"rerank", std::string(ToString(report.rerank))},
              {"protocol", report.protocol},
              {"failed_queries", report.failed_queries},
              {"model", report.model},
              {"seconds", report.seconds},
              {"index_k", report.index_k},
              {"index_queries", report.index_queries},
              {"index_recall_at_k", report.index_recall_at_k},
              {"index_map_at_k", report.index_map_at_k},
              {"index_exact_map_at_k", report.index_exact_map_at_k},
              {"examples", std::move(examples)}}
      .dump();
}

}  // namespace pixseek
