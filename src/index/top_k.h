// A bounded best-k collection of search hits.
#ifndef PIXSEEK_INDEX_TOP_K_H_
#define PIXSEEK_INDEX_TOP_K_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "pixseek/vector_index.h"

namespace pixseek {

// Order of results: higher score first, then smaller id.
inline bool BetterHit(const SearchHit& a, const SearchHit& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Keeps the k best hits pushed so far in a heap whose front is the worst
// kept one, so a hit that cannot enter costs one comparison.
//
// Thread-safety: not thread-safe; one per thread and query. Owns its hits.
class TopK {
 public:
  explicit TopK(size_t k) : k_(k) { heap_.reserve(k); }

  void Push(float score, int64_t id) {
    if (heap_.size() < k_) {
      heap_.push_back({id, score});
      std::push_heap(heap_.begin(), heap_.end(), BetterHit);
      return;
    }
    if (k_ == 0) return;
    const SearchHit& worst = heap_.front();
    if (score < worst.score || (score == worst.score && id > worst.id)) return;
    std::pop_heap(heap_.begin(), heap_.end(), BetterHit);
    heap_.back() = {id, score};
    std::push_heap(heap_.begin(), heap_.end(), BetterHit);
  }

  // The kept hits, in no particular order.
  const std::vector<SearchHit>& hits() const { return heap_; }

  // The kept hits best first; leaves this empty.
  std::vector<SearchHit> TakeSorted() {
    std::sort_heap(heap_.begin(), heap_.end(), BetterHit);
    return std::move(heap_);
  }

 private:
  size_t k_;
  std::vector<SearchHit> heap_;
};

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_TOP_K_H_
