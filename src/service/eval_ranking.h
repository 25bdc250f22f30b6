// ExactRanker: every gallery vector scored against chunks of queries, reduced
// per query to what the metrics need (eval_metrics.h).
//
// A chunk's scores come from one BLAS sgemm (chunk x n, the memory bound).
// Then, per query and on all cores, one pass over its n scores finds (a) the
// best `top_k` places and (b) the rank of every relevant image: relevant
// scores are sorted (a class is small), and each other image is counted
// under the first relevant image it beats (a binary search), so a relevant
// image's rank is its place among the relevant ones plus the others counted
// above it. That is O(n log R) per query instead of a sort of n scores.
//
// Order: higher score first, equal scores by smaller id, as the indexes
// order them; a query's own vector (leave-one-out) takes no place.
//
// Thread-safety: Rank may be called from one thread at a time (it uses the
// BLAS's threads and its own); the gallery is borrowed and must outlive it.
#ifndef PIXSEEK_SERVICE_EVAL_RANKING_H_
#define PIXSEEK_SERVICE_EVAL_RANKING_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace pixseek {

// One query's ranking, reduced.
struct RankedQuery {
  std::vector<uint32_t> relevant_ranks;  // 1-based, ascending, every relevant image
  size_t relevant_total = 0;
  std::vector<uint32_t> top;             // gallery rows of the best places, best first
};

// What to rank for one query.
struct RankRequest {
  int64_t self = -1;    // gallery row to leave out (leave-one-out), or -1
  int32_t label = -1;   // class index of the relevant rows; -1 = none relevant
};

class ExactRanker {
 public:
  // `gallery`: n rows of `dim` floats; ids[i] and labels[i] (class index >=
  // 0) describe row i. All borrowed.
  ExactRanker(const float* gallery, size_t n, size_t dim, std::span<const int64_t> ids,
              std::span<const int32_t> labels);

  // Ranks the rows of `queries` (requests.size() rows of dim floats);
  // out->at(q) for requests[q], with the best min(top_k, n) places.
  void Rank(const float* queries, std::span<const RankRequest> requests, size_t top_k,
            int threads, std::vector<RankedQuery>* out) const;

  size_t size() const { return n_; }

 private:
  RankedQuery RankOne(const float* scores, const RankRequest& request, size_t top_k) const;

  const float* gallery_;
  size_t n_;
  size_t dim_;
  std::span<const int64_t> ids_;
  std::span<const int32_t> labels_;
  std::vector<std::vector<uint32_t>> members_;  // rows of each class
};

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_EVAL_RANKING_H_
