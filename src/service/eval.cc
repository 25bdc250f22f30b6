#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "pixseek/services.h"

namespace pixseek {
namespace {

struct Labelled {
  int64_t id;
  std::string label;
};

// Stored images under root with a label (first folder level below root).
Result<std::vector<Labelled>> LabelledImages(MetadataStore& store,
                                             const std::filesystem::path& root) {
  std::vector<Labelled> out;
  ListOptions list;
  list.limit = 1000;
  while (true) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> page, store.List(list));
    if (page.empty()) break;
    for (const auto& r : page) {
      auto rel = std::filesystem::path(r.path).lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") continue;
      if (std::distance(rel.begin(), rel.end()) < 2) continue;  // no folder, no label
      out.push_back({r.id, rel.begin()->string()});
    }
    list.after_id = page.back().id;
  }
  return out;
}

void Accumulate(EvalMetrics& sum, const EvalMetrics& one) {
  sum.map += one.map;
  sum.p_at_1 += one.p_at_1;
  sum.p_at_10 += one.p_at_10;
  sum.r_at_10 += one.r_at_10;
  sum.queries += one.queries;
}

EvalMetrics Mean(EvalMetrics sum, double n) {
  if (n > 0) {
    sum.map /= n;
    sum.p_at_1 /= n;
    sum.p_at_10 /= n;
    sum.r_at_10 /= n;
  }
  return sum;
}

}  // namespace

Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root_arg) {
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  auto root = std::filesystem::weakly_canonical(std::filesystem::absolute(root_arg), ec);
  if (ec) return Status::NotFound("cannot resolve " + root_arg.string());
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<Labelled> items, LabelledImages(db.store(), root));
  if (items.size() < 2) {
    return Status::FailedPrecondition(
        "fewer than two stored images lie in labelled folders under " + root.string() +
        " (build the database from that folder first)");
  }
  std::unordered_map<int64_t, size_t> position;  // id -> index in items
  std::unordered_map<std::string, size_t> label_count;
  for (size_t i = 0; i < items.size(); ++i) {
    position[items[i].id] = i;
    ++label_count[items[i].label];
  }

  const size_t dim = static_cast<size_t>(db.dimension());
  const size_t k_all = db.index().size();  // full ranking; other images are filtered out
  constexpr size_t kChunk = 64;
  EvalReport report;
  report.images = items.size();
  std::map<std::string, EvalMetrics> sums;
  std::vector<float> queries;
  std::vector<std::vector<SearchHit>> results;
  for (size_t begin = 0; begin < items.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, items.size() - begin);
    queries.resize(n * dim);
    for (size_t q = 0; q < n; ++q) {
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, db.index().Get(items[begin + q].id));
      std::copy(v.begin(), v.end(), queries.begin() + q * dim);
    }
    PIXSEEK_RETURN_IF_ERROR(db.index().Search(n, queries.data(), k_all, &results));
    for (size_t q = 0; q < n; ++q) {
      const Labelled& query = items[begin + q];
      const size_t relevant_total = label_count[query.label] - 1;
      EvalMetrics m;
      m.queries = 1;
      if (relevant_total > 0) {
        size_t rank = 0, relevant_seen = 0, relevant_in_10 = 0;
        double ap = 0;
        for (const SearchHit& hit : results[q]) {
          if (hit.id == query.id) continue;  // leave one out
          auto it = position.find(hit.id);
          if (it == position.end()) continue;  // not part of the evaluated set
          ++rank;
          if (items[it->second].label == query.label) {
            ++relevant_seen;
            ap += static_cast<double>(relevant_seen) / static_cast<double>(rank);
            if (rank <= 10) ++relevant_in_10;
            if (rank == 1) m.p_at_1 = 1;
          }
          if (relevant_seen == relevant_total && rank >= 10) break;
        }
        m.map = ap / static_cast<double>(relevant_total);
        m.p_at_10 = static_cast<double>(relevant_in_10) / 10.0;
        m.r_at_10 = static_cast<double>(relevant_in_10) / static_cast<double>(relevant_total);
      }
      Accumulate(sums[query.label], m);
      Accumulate(report.overall, m);
    }
  }
  report.overall = Mean(report.overall, static_cast<double>(items.size()));
  report.overall.queries = items.size();
  EvalMetrics macro_sum;
  for (auto& [label, sum] : sums) {
    const auto queries_of_label = sum.queries;
    report.per_label[label] = Mean(sum, static_cast<double>(queries_of_label));
    report.per_label[label].queries = queries_of_label;
    Accumulate(macro_sum, report.per_label[label]);
  }
  report.macro = Mean(macro_sum, static_cast<double>(sums.size()));
  report.macro.queries = items.size();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace pixseek
