#include "service/eval_ranking.h"

#include <algorithm>

#include "core/parallel.h"
#include "service/score_chunk.h"

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

// How many relevant images rank before a score, in O(1) on average: the
// relevant scores (sorted, descending) are spread over about 2R buckets of
// the range they span, and first[b] counts those in buckets before b. The
// bucket of a score is a monotone function of it even in floating point, so
// every relevant image in an earlier bucket scores higher; only the few in
// the same bucket are compared one by one. A binary search instead was half
// of an evaluation's time.
class RelevantBuckets {
 public:
  explicit RelevantBuckets(const std::vector<Entry>& relevant) {
    if (relevant.empty()) return;
    high_ = relevant.front().score;
    const float span = high_ - relevant.back().score;
    const size_t buckets = 2 * relevant.size() + 1;
    scale_ = span > 0 ? static_cast<float>(relevant.size() * 2) / span : 0.0f;
    first_.assign(buckets + 1, 0);
    for (const Entry& e : relevant) ++first_[Bucket(e.score) + 1];
    for (size_t b = 1; b < first_.size(); ++b) first_[b] += first_[b - 1];
  }

  // Relevant images that rank before `e` (an image not among them).
  size_t Before(const std::vector<Entry>& relevant, const Entry& e) const {
    size_t p = first_[Bucket(e.score)];
    while (p < relevant.size() && relevant[p].score > e.score) ++p;
    while (p < relevant.size() && relevant[p].score == e.score && relevant[p].id < e.id) ++p;
    return p;
  }

 private:
  // 0 for the highest relevant score (and anything above), growing as the
  // score falls; the caller skips scores below the lowest relevant one.
  size_t Bucket(float score) const {
    const float x = (high_ - score) * scale_;
    return x <= 0 ? 0 : std::min(static_cast<size_t>(x), first_.size() - 2);
  }

  float high_ = 0;
  float scale_ = 0;
  std::vector<uint32_t> first_;  // first_[b]: relevant images in buckets before b
};

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
  const size_t r = relevant.size();
  const RelevantBuckets buckets(relevant);
  // beaten_by[p]: other images with exactly p relevant images before them.
  std::vector<uint32_t> beaten_by(r + 1, 0);
  const float lowest = r > 0 ? relevant.back().score : 0.0f;

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
    ++beaten_by[buckets.Before(relevant, e)];
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
