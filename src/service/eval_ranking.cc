#include "service/eval_ranking.h"

#include <algorithm>

#include "core/parallel.h"

// The BLAS's Fortran entry point (OpenBLAS, or any BLAS the build finds);
// declared here rather than through cblas.h, which not every BLAS ships.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace pixseek {
namespace {

struct Entry {
  float score;
  int64_t id;
  uint32_t row;
};

// The ranking order: higher score first, then smaller id.
bool Before(const Entry& a, const Entry& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// scores (nq x n, row-major) = queries (nq x dim) times gallery (n x dim)
// transposed. In the BLAS's column-major terms that is gallery^T^T * queries^T.
void ScoreChunk(const float* gallery, size_t n, size_t dim, const float* queries, size_t nq,
                float* scores) {
  const int m = static_cast<int>(n), cols = static_cast<int>(nq), k = static_cast<int>(dim);
  const float one = 1, zero = 0;
  sgemm_("T", "N", &m, &cols, &k, &one, gallery, &k, queries, &k, &zero, scores, &m);
}

}  // namespace

ExactRanker::ExactRanker(const float* gallery, size_t n, size_t dim,
                         std::span<const int64_t> ids, std::span<const int32_t> labels)
    : gallery_(gallery), n_(n), dim_(dim), ids_(ids), labels_(labels) {
  for (size_t row = 0; row < n; ++row) {
    const auto label = static_cast<size_t>(labels[row]);
    if (members_.size() <= label) members_.resize(label + 1);
    members_[label].push_back(static_cast<uint32_t>(row));
  }
}

void ExactRanker::Rank(const float* queries, std::span<const RankRequest> requests,
                       size_t top_k, int threads, std::vector<RankedQuery>* out) const {
  const size_t nq = requests.size();
  out->assign(nq, {});
  if (nq == 0 || n_ == 0) return;
  std::vector<float> scores(nq * n_);
  ScoreChunk(gallery_, n_, dim_, queries, nq, scores.data());
  ParallelFor(nq, ThreadCount(threads), [&](size_t q) {
    (*out)[q] = RankOne(scores.data() + q * n_, requests[q], top_k);
  });
}

RankedQuery ExactRanker::RankOne(const float* scores, const RankRequest& request,
                                 size_t top_k) const {
  RankedQuery out;
  const int64_t self = request.self;
  std::vector<Entry> relevant;
  if (request.label >= 0 && static_cast<size_t>(request.label) < members_.size()) {
    for (uint32_t row : members_[static_cast<size_t>(request.label)]) {
      if (row != self) relevant.push_back({scores[row], ids_[row], row});
    }
  }
  std::sort(relevant.begin(), relevant.end(), Before);
  std::vector<float> relevant_scores(relevant.size());  // descending
  for (size_t i = 0; i < relevant.size(); ++i) relevant_scores[i] = relevant[i].score;
  const size_t r = relevant.size();
  // beaten_by[p]: other images with exactly p relevant images before them.
  std::vector<uint32_t> beaten_by(r + 1, 0);
  const float lowest = r > 0 ? relevant_scores.back() : 0.0f;

  std::vector<Entry> heap;  // the best top_k so far, worst on top
  heap.reserve(top_k + 1);
  for (size_t row = 0; row < n_; ++row) {
    if (static_cast<int64_t>(row) == self) continue;
    const Entry e{scores[row], ids_[row], static_cast<uint32_t>(row)};
    if (heap.size() < top_k) {
      heap.push_back(e);
      std::push_heap(heap.begin(), heap.end(), Before);
    } else if (top_k > 0 && Before(e, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), Before);
      heap.back() = e;
      std::push_heap(heap.begin(), heap.end(), Before);
    }
    if (r == 0 || labels_[row] == request.label || e.score < lowest) continue;
    size_t p = static_cast<size_t>(
        std::partition_point(relevant_scores.begin(), relevant_scores.end(),
                             [s = e.score](float v) { return v > s; }) -
        relevant_scores.begin());
    while (p < r && relevant[p].score == e.score && relevant[p].id < e.id) ++p;
    ++beaten_by[p];
  }
  std::sort_heap(heap.begin(), heap.end(), Before);
  for (const Entry& e : heap) out.top.push_back(e.row);

  out.relevant_total = r;
  out.relevant_ranks.resize(r);
  uint32_t others_before = 0;
  for (size_t i = 0; i < r; ++i) {
    others_before += beaten_by[i];
    out.relevant_ranks[i] = static_cast<uint32_t>(i + 1) + others_before;
  }
  return out;
}

}  // namespace pixseek
