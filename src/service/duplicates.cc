#include "service/duplicates.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <nlohmann/json.hpp>

#include "core/parallel.h"
#include "pixseek/services.h"
#include "service/score_chunk.h"

namespace pixseek {
namespace {

// Union-find with path halving and union by size.
class DisjointSets {
 public:
  explicit DisjointSets(size_t n) : parent_(n), size_(n, 1) {
    std::iota(parent_.begin(), parent_.end(), 0u);
  }
  uint32_t Find(uint32_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];
      x = parent_[x];
    }
    return x;
  }
  void Union(uint32_t a, uint32_t b) {
    a = Find(a);
    b = Find(b);
    if (a == b) return;
    if (size_[a] < size_[b]) std::swap(a, b);
    parent_[b] = a;
    size_[a] += size_[b];
  }

 private:
  std::vector<uint32_t> parent_;
  std::vector<uint32_t> size_;
};

// The copy to keep comes first: the most pixels, then the largest file (the
// least recompressed), then the oldest (smallest id). The others follow by id.
void OrderGroup(std::vector<int64_t>& ids, const std::map<int64_t, ImageRecord>& records) {
  auto better = [&](int64_t a, int64_t b) {
    auto ra = records.find(a), rb = records.find(b);
    if (ra != records.end() && rb != records.end()) {
      const int64_t pa = int64_t{ra->second.width} * ra->second.height;
      const int64_t pb = int64_t{rb->second.width} * rb->second.height;
      if (pa != pb) return pa > pb;
      if (ra->second.size_bytes != rb->second.size_bytes) {
        return ra->second.size_bytes > rb->second.size_bytes;
      }
    }
    return a < b;
  };
  std::sort(ids.begin(), ids.end());
  auto keep = std::min_element(ids.begin(), ids.end(), better);
  std::rotate(ids.begin(), keep, keep + 1);
}

}  // namespace

std::vector<std::vector<uint32_t>> GroupNearDuplicates(const float* rows, size_t n, size_t dim,
                                                       float threshold, int threads,
                                                       size_t chunk) {
  if (n < 2 || dim == 0) return {};
  if (chunk == 0) {
    const size_t budget = (size_t{128} << 20) / sizeof(float);
    chunk = std::clamp<size_t>(budget / n, 1, 256);
  }
  const int workers = ThreadCount(threads);
  DisjointSets sets(n);
  std::vector<float> scores;
  std::vector<std::vector<uint32_t>> matches;
  for (size_t begin = 0; begin < n; begin += chunk) {
    const size_t nq = std::min(chunk, n - begin);
    // Each query row is compared with itself and every row after it: the
    // rows before were compared with it in an earlier chunk.
    const size_t m = n - begin;
    scores.resize(nq * m);
    ScoreChunk(rows + begin * dim, m, dim, rows + begin * dim, nq, scores.data());
    matches.assign(nq, {});
    ParallelFor(nq, workers, [&](size_t q) {
      const float* s = scores.data() + q * m;
      for (size_t j = q + 1; j < m; ++j) {
        if (s[j] >= threshold) matches[q].push_back(static_cast<uint32_t>(begin + j));
      }
    });
    for (size_t q = 0; q < nq; ++q) {
      for (uint32_t j : matches[q]) sets.Union(static_cast<uint32_t>(begin + q), j);
    }
  }
  std::map<uint32_t, std::vector<uint32_t>> by_root;  // root -> rows, ascending
  for (uint32_t i = 0; i < n; ++i) by_root[sets.Find(i)].push_back(i);
  std::vector<std::vector<uint32_t>> groups;
  for (auto& [root, members] : by_root) {
    if (members.size() > 1) groups.push_back(std::move(members));
  }
  std::sort(groups.begin(), groups.end(),
            [](const auto& a, const auto& b) { return a.front() < b.front(); });
  return groups;
}

Result<DuplicateReport> FindDuplicates(Database& db, const DuplicateOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!(options.threshold > 0.0f && options.threshold <= 1.0f)) {
    return Status::InvalidArgument("threshold must be in (0, 1]; got " +
                                   std::to_string(options.threshold));
  }
  std::vector<int64_t> ids = db.index().Ids();
  std::sort(ids.begin(), ids.end());
  const size_t dim = static_cast<size_t>(db.dimension());
  std::vector<float> matrix(ids.size() * dim);
  std::vector<int64_t> present;  // ids whose vector is there (removed meanwhile: skipped)
  present.reserve(ids.size());
  for (int64_t id : ids) {
    auto v = db.index().Get(id);
    if (!v.ok()) {
      if (v.status().code() == StatusCode::kNotFound) continue;
      return v.status();
    }
    if (v->size() != dim) {
      return Status::DataLoss("image " + std::to_string(id) + " has a " +
                              std::to_string(v->size()) + "-dimensional vector");
    }
    float* row = matrix.data() + present.size() * dim;
    double norm = 0;
    for (float x : *v) norm += double{x} * x;
    const float scale = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
    for (size_t d = 0; d < dim; ++d) row[d] = (*v)[d] * scale;
    present.push_back(id);
  }
  const auto row_groups =
      GroupNearDuplicates(matrix.data(), present.size(), dim, options.threshold, options.threads);
  matrix = {};

  DuplicateReport report;
  report.threshold = options.threshold;
  report.images = present.size();
  std::vector<std::vector<int64_t>> groups;
  groups.reserve(row_groups.size());
  for (const auto& rows : row_groups) {
    std::vector<int64_t>& group = groups.emplace_back();
    for (uint32_t r : rows) group.push_back(present[r]);
  }
  // Largest groups first, then by smallest id (each group's ids ascend here).
  std::sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) {
    return a.size() != b.size() ? a.size() > b.size() : a.front() < b.front();
  });
  report.total_groups = groups.size();
  if (options.max_groups > 0 && groups.size() > options.max_groups) {
    groups.resize(options.max_groups);
    report.truncated = true;
  }
  std::vector<int64_t> wanted;
  for (const auto& g : groups) wanted.insert(wanted.end(), g.begin(), g.end());
  std::map<int64_t, ImageRecord> records;
  if (!wanted.empty()) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> found, db.store().GetMany(wanted));
    for (ImageRecord& r : found) records.emplace(r.id, std::move(r));
  }
  for (auto& g : groups) OrderGroup(g, records);
  report.groups = std::move(groups);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::string DuplicateReportJson(const DuplicateReport& report) {
  nlohmann::json j;
  j["groups"] = report.groups;
  j["threshold"] = report.threshold;
  j["images"] = report.images;
  j["total_groups"] = report.total_groups;
  j["truncated"] = report.truncated;
  j["seconds"] = report.seconds;
  return j.dump();
}

}  // namespace pixseek
