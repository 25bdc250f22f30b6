// The mutable in-memory Vamana graph that holds the disk index's fresh
// inserts (FreshDiskANN's "RW-TempIndex"): each insert is one greedy search,
// a RobustPrune and its reverse edges, so a new vector is searchable at once
// without rebuilding the disk graph. Compaction later merges it into a new
// disk graph and drops it.
#ifndef PIXSEEK_INDEX_DELTA_GRAPH_H_
#define PIXSEEK_INDEX_DELTA_GRAPH_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "index/vamana.h"
#include "pixseek/vector_index.h"

namespace pixseek {

// Nodes are numbered 0, 1, ... in insertion order and never removed (the
// owner filters deleted ones out of results and drops them at compaction).
//
// A small graph is not a graph: up to `exact_limit` nodes, inserts only store
// the vector and searches scan every node (exact, and as fast as a graph
// search at that size). The first insert past the limit links all nodes, and
// from then on each insert is linked as it comes. Reopening a database
// replays its log through Insert, so this keeps reopening a small collection
// (no disk graph yet) cheap: linking 469 8,192-d SIFT-VLAD vectors took 34 s.
//
// Thread-safety: const methods may run concurrently with each other; Insert
// must not run concurrently with anything (the owning index holds its writer
// lock). Owns copies of its vectors.
class DeltaGraph {
 public:
  // Nodes searched exactly before the graph is built (see above).
  static constexpr size_t kDefaultExactLimit = 2048;

  // `params` gives R, the build list L and alpha; threads and seed are unused.
  DeltaGraph(int dim, const VamanaParams& params, size_t exact_limit = kDefaultExactLimit);

  // Adds `vector` (dim floats, unit length: the caller validates) and links
  // it into the graph. Returns its node number.
  uint32_t Insert(const float* vector);

  // The k best nodes for `query` (hit.id = node number), best first, found by
  // a beam search with a list of max(search_list, k), or by scanning every
  // node while the graph is not built (ties: smaller node first).
  void Search(const float* query, size_t k, int search_list, std::vector<SearchHit>* out) const;

  size_t size() const { return degree_.size(); }
  // Whether inserts are linked into a graph (size() passed exact_limit).
  bool linked() const { return linked_; }
  int dimension() const { return dim_; }
  const float* vector(uint32_t node) const { return vectors_.data() + size_t{node} * dim_; }
  // Bytes held: vectors plus adjacency.
  uint64_t memory_bytes() const {
    return vectors_.capacity() * sizeof(float) + adjacency_.capacity() * sizeof(uint32_t) +
           degree_.capacity() * sizeof(uint32_t);
  }

 private:
  std::span<const uint32_t> neighbours(uint32_t node) const {
    return {adjacency_.data() + size_t{node} * max_degree_, degree_[node]};
  }
  void SetNeighbours(uint32_t node, const std::vector<uint32_t>& list);
  // Links node p (stored, not yet linked) into the graph of nodes [0, p).
  void Link(uint32_t p);
  void SearchExact(const float* query, size_t k, std::vector<SearchHit>* out) const;

  int dim_;
  VamanaParams params_;
  size_t max_degree_;
  size_t exact_limit_;
  bool linked_ = false;
  std::vector<float> vectors_;       // size() * dim_
  std::vector<uint32_t> adjacency_;  // size() * max_degree_
  std::vector<uint32_t> degree_;     // size()
};

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_DELTA_GRAPH_H_
