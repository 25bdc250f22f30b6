// Building blocks shared by the Vamana graphs (the immutable VamanaGraph and
// the mutable DeltaGraph of fresh inserts): the visited set, the candidate
// list order, greedy best-first search and RobustPrune. Internal to the index
// module.
#ifndef PIXSEEK_INDEX_GRAPH_SEARCH_H_
#define PIXSEEK_INDEX_GRAPH_SEARCH_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "index/inner_product.h"
#include "index/vamana.h"

namespace pixseek::graph {

constexpr uint32_t kNoNode = std::numeric_limits<uint32_t>::max();

// The inner products of the element types the graphs hold: float, or
// bfloat16 for a disk build's graph (VamanaGraph::BuildLinks).
inline void Score4(const float* q, const float* const v[4], size_t dim, float out[4]) {
  InnerProduct4(q, v, dim, out);
}
inline void Score4(const Bfloat16* q, const Bfloat16* const v[4], size_t dim, float out[4]) {
  InnerProduct4Bf16(q, v, dim, out);
}
inline float Score(const float* a, const float* b, size_t dim) { return InnerProduct(a, b, dim); }
inline float Score(const Bfloat16* a, const Bfloat16* b, size_t dim) {
  return InnerProductBf16(a, b, dim);
}

// Asks for the first cache lines of a row before it is scored: a graph build
// reads its rows at random from gigabytes, and waits for memory more than it
// computes. The hardware prefetcher follows the rest of the row once its
// first lines arrive; asking for all of them was slower (the requests fill
// the line-fill buffers). On a shard of the 10M x 768-d build: 2,020
// insertions/s without, 2,229-2,357 with four lines, 1,869 with whole rows.
template <typename T>
inline void PrefetchRow(const T* row, size_t dim) {
  constexpr size_t kLines = 4;
  const char* bytes = reinterpret_cast<const char*>(row);
  const size_t end = std::min(dim * sizeof(T), kLines * 64);
  for (size_t b = 0; b < end; b += 64) __builtin_prefetch(bytes + b);
}

// Squared L2 distance of two unit vectors from their inner product.
inline float UnitDistance(float ip) { return std::max(0.0f, 2.0f - 2.0f * ip); }

// A set of node ids with open addressing; sized for one search, so it costs
// O(visited) rather than O(n) per query.
//
// Thread-safety: not thread-safe; one per search.
class NodeSet {
 public:
  NodeSet() : slots_(size_t{1} << kInitialBits, kNoNode), shift_(64 - kInitialBits) {}

  // Inserts `id`; false when it was already there.
  bool Insert(uint32_t id) {
    if ((count_ + 1) * 2 > slots_.size()) Grow();
    return InsertNoGrow(id);
  }

  void Clear() {
    std::fill(slots_.begin(), slots_.end(), kNoNode);
    count_ = 0;
  }

 private:
  static constexpr int kInitialBits = 10;

  // Fibonacci hashing: the top bits of the product are the well-mixed ones.
  size_t Slot(uint32_t id) const {
    return static_cast<size_t>((uint64_t{id} * 0x9E3779B97F4A7C15ull) >> shift_);
  }

  bool InsertNoGrow(uint32_t id) {
    const size_t mask = slots_.size() - 1;
    for (size_t i = Slot(id);; i = (i + 1) & mask) {
      if (slots_[i] == id) return false;
      if (slots_[i] == kNoNode) {
        slots_[i] = id;
        ++count_;
        return true;
      }
    }
  }

  void Grow() {
    std::vector<uint32_t> old(slots_.size() * 2, kNoNode);
    old.swap(slots_);
    --shift_;
    count_ = 0;
    for (uint32_t id : old) {
      if (id != kNoNode) InsertNoGrow(id);
    }
  }

  std::vector<uint32_t> slots_;
  int shift_;  // 64 - log2(slots_.size())
  size_t count_ = 0;
};

struct Candidate {
  float ip;  // inner product with the query: higher is closer
  uint32_t id;
  bool expanded;
};

// Closer first, then smaller id: the order of the search list and of hits.
inline bool Closer(const Candidate& a, const Candidate& b) {
  return a.ip > b.ip || (a.ip == b.ip && a.id < b.id);
}

// Best-first greedy search from `entry` with a candidate list of `list_size`.
// `get_neighbours(node, buffer)` returns the node's out-neighbours (copying
// them into `buffer` when they may change concurrently). On return `*list`
// holds the best list_size candidates found, closest first, and `*expanded`
// (when not null) every node whose neighbours were read.
//
// Scores use Score4 only, so a vector scores bit-identically however it is
// grouped (see inner_product.h). T is float or Bfloat16.
template <typename T, typename GetNeighbours>
void GreedySearch(const T* query, uint32_t entry, size_t list_size, const T* vectors,
                  size_t dim, GetNeighbours&& get_neighbours, NodeSet* seen,
                  std::vector<Candidate>* list, std::vector<Candidate>* expanded,
                  SearchStats* stats) {
  list->clear();
  if (expanded != nullptr) expanded->clear();
  seen->Clear();
  std::vector<uint32_t> buffer;
  std::vector<uint32_t> fresh;

  {
    const T* v[4];
    for (auto& p : v) p = vectors + size_t{entry} * dim;
    float ip[4];
    Score4(query, v, dim, ip);
    list->push_back({ip[0], entry, false});
    seen->Insert(entry);
    ++stats->distance_computations;
  }

  size_t cursor = 0;  // every candidate before it is expanded
  while (cursor < list->size()) {
    Candidate& current = (*list)[cursor];
    current.expanded = true;
    const uint32_t node = current.id;
    if (expanded != nullptr) expanded->push_back(current);
    ++stats->hops;

    fresh.clear();
    for (uint32_t nb : get_neighbours(node, &buffer)) {
      if (seen->Insert(nb)) fresh.push_back(nb);
    }
    stats->distance_computations += fresh.size();

    size_t next = list->size();  // smallest position that changed
    for (size_t i = 0; i < std::min<size_t>(4, fresh.size()); ++i) {
      PrefetchRow(vectors + size_t{fresh[i]} * dim, dim);
    }
    for (size_t i = 0; i < fresh.size(); i += 4) {
      const size_t group = std::min<size_t>(4, fresh.size() - i);
      // The next group's rows load while this one scores.
      for (size_t j = i + 4; j < std::min(i + 8, fresh.size()); ++j) {
        PrefetchRow(vectors + size_t{fresh[j]} * dim, dim);
      }
      const T* v[4];
      for (size_t j = 0; j < 4; ++j) {
        v[j] = vectors + size_t{fresh[i + std::min(j, group - 1)]} * dim;
      }
      float ip[4];
      Score4(query, v, dim, ip);
      for (size_t j = 0; j < group; ++j) {
        const Candidate c{ip[j], fresh[i + j], false};
        if (list->size() == list_size && !Closer(c, list->back())) continue;
        auto pos = std::upper_bound(list->begin(), list->end(), c, Closer);
        next = std::min(next, static_cast<size_t>(pos - list->begin()));
        list->insert(pos, c);
        if (list->size() > list_size) list->pop_back();
      }
    }
    // Continue from the closest unexpanded candidate.
    cursor = std::min(cursor + 1, next);
    while (cursor < list->size() && (*list)[cursor].expanded) ++cursor;
  }
}

// RobustPrune (Algorithm 2 of the paper): from `pool` (candidates with `ip`
// = inner product with p, any order, may hold p and duplicates) picks at most
// `max_degree` out-neighbours for p, keeping a candidate q only when no
// already-kept p* has alpha * d(p*, q) <= d(p, q). `vectors` holds row q at
// vectors + q * dim for every candidate q. Defined for T = float and
// Bfloat16.
template <typename T>
std::vector<uint32_t> RobustPrune(uint32_t p, std::vector<Candidate> pool, float alpha,
                                  size_t max_degree, const T* vectors, size_t dim);

}  // namespace pixseek::graph

#endif  // PIXSEEK_INDEX_GRAPH_SEARCH_H_
