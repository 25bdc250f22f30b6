// The Vamana proximity graph (Subramanya et al., "DiskANN: Fast Accurate
// Billion-point Nearest Neighbor Search on a Single Node", NeurIPS 2019), built
// in memory. It is the core of the disk graph index: the disk layout stores
// each node's vector beside its fixed-size neighbour list.
//
// Distances: pixseek vectors are L2-normalised and scored by inner product.
// RobustPrune's alpha rule needs a metric, so the graph uses the squared L2
// distance of unit vectors, d(a, b) = 2 - 2 * <a, b> (clamped at 0). Build
// therefore requires (approximately) unit-length inputs and rejects others.
// Queries need not be unit length: ranking by inner product is the same
// whatever the query's norm.
#ifndef PIXSEEK_INDEX_VAMANA_H_
#define PIXSEEK_INDEX_VAMANA_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "index/inner_product.h"
#include "pixseek/status.h"
#include "pixseek/vector_index.h"

namespace pixseek {

struct VamanaParams {
  // R: the most out-neighbours a node keeps. Larger gives better recall and a
  // bigger graph (R * 4 bytes per node). In [1, 4096].
  int max_degree = 64;
  // L: the candidate list size of the greedy searches run while building.
  // Larger gives a better graph and a slower build. In [1, 2^20].
  int build_list = 100;
  // The second pass's pruning slack (>= 1): an edge p -> q is dropped when a
  // kept neighbour p* has alpha * d(p*, q) <= d(p, q). Above 1 it keeps longer
  // edges, which shortens search paths. The first pass always uses 1.
  float alpha = 1.2f;
  // Build threads; 0 = all cores. With 1 thread the build is deterministic for
  // a given seed; with more, insertion order races make it vary slightly.
  int num_threads = 0;
  // Insertion passes over the points: 2 is the paper's (alpha = 1, then
  // alpha); 1 runs only the alpha pass, which halves the build time for a
  // slightly worse graph (DiskANN's current default). 1 or 2.
  int passes = 2;
  // Seeds the random initial graph and the insertion order.
  uint32_t seed = 42;
};

// Work done by one Search call.
struct SearchStats {
  uint64_t distance_computations = 0;  // query-to-vector inner products
  uint64_t hops = 0;                   // nodes whose neighbour lists were read
};

// An immutable Vamana graph over n vectors whose ids are their row numbers
// (0 .. n-1).
//
// Thread-safety: after Build returns, every method is const and safe to call
// from any number of threads at once. Ownership: the graph owns a copy of the
// vectors and its adjacency lists; spans returned by neighbours() borrow from
// it and live as long as it does. Movable, not copyable.
class VamanaGraph {
 public:
  VamanaGraph(VamanaGraph&&) = default;
  VamanaGraph& operator=(VamanaGraph&&) = default;
  VamanaGraph(const VamanaGraph&) = delete;
  VamanaGraph& operator=(const VamanaGraph&) = delete;

  // Builds the graph over `vectors` (row-major, n * dim floats, copied):
  // entry point = the medoid (the vector closest to the centroid), a random
  // R-out-regular initial graph, then two passes over a random permutation
  // of the points (alpha = 1, then params.alpha), each inserting a point by
  // greedy search from the entry point, RobustPrune of the visited set, and
  // reverse edges (pruning neighbours whose degree would exceed R).
  // InvalidArgument for n == 0, n >= 2^32 - 1, dim < 1, bad params, or a
  // vector that is non-finite or not unit length (|‖v‖² - 1| > 1e-3).
  [[nodiscard]] static Result<VamanaGraph> Build(const float* vectors, size_t n, int dim,
                                                 const VamanaParams& params);
  // The same, taking over `vectors` (n * dim floats) instead of copying them,
  // so that a build holds one copy of the data.
  [[nodiscard]] static Result<VamanaGraph> Build(std::vector<float>&& vectors, size_t n, int dim,
                                                 const VamanaParams& params);
  // The same, calling progress(done, total) as the insertions go (total =
  // passes * n; about every kProgressStep insertions and once at the end),
  // from the build's threads, one call at a time.
  using Progress = std::function<void(size_t done, size_t total)>;
  static constexpr size_t kProgressStep = 16384;
  [[nodiscard]] static Result<VamanaGraph> Build(std::vector<float>&& vectors, size_t n, int dim,
                                                 const VamanaParams& params,
                                                 const Progress& progress);
  // The links only, for a disk build, which reads the vectors again when it
  // writes them: the graph is built on bfloat16 copies of the unit vectors
  // (n * dim values, taken over and freed on return), half the bytes of
  // float to stream through the build's inner products and one AVX-512 BF16
  // instruction for 32 products. The rounding (2^-9 relative) moves an inner
  // product by about 1e-4, far below the gaps the pruning compares: on
  // 100,000 x 2048-d the disk index's recall is unchanged. The graph has no
  // vectors: has_vectors() is false, vector() must not be called and Search
  // answers FailedPrecondition. A vector's squared norm may be off 1 by up to
  // 1e-2 (the rounding).
  [[nodiscard]] static Result<VamanaGraph> BuildLinks(std::vector<Bfloat16>&& vectors, size_t n,
                                                      int dim, const VamanaParams& params,
                                                      const Progress& progress);

  // Writes to *out the k best hits (score = inner product with `query`,
  // which has dim() floats) found by a best-first beam search from the entry
  // point with a candidate list of max(search_list, k), best first, ties by
  // smaller id. Fewer than k hits only when the graph holds fewer than k
  // nodes. When `stats` is given it is set to this call's counts.
  // InvalidArgument for a null query or out, search_list < 1 or a
  // non-finite query.
  [[nodiscard]] Status Search(const float* query, size_t k, int search_list,
                              std::vector<SearchHit>* out, SearchStats* stats = nullptr) const;

  uint32_t entry_point() const { return entry_point_; }
  // The out-neighbours of `node` (< size()), at most max_degree() of them.
  std::span<const uint32_t> neighbours(uint32_t node) const {
    return {adjacency_.data() + size_t{node} * max_degree_, degree_[node]};
  }
  int max_degree() const { return max_degree_; }
  // False for a graph from BuildLinks.
  bool has_vectors() const { return !vectors_.empty(); }
  int dimension() const { return dim_; }
  size_t size() const { return n_; }
  // The stored vector of `node` (< size()), dimension() floats.
  const float* vector(uint32_t node) const { return vectors_.data() + size_t{node} * dim_; }

 private:
  VamanaGraph() = default;
  // The entry point and the links over `data` (n * dim values of T, float or
  // Bfloat16, checked by the caller).
  template <typename T>
  void Link(const T* data, size_t n, int dim, const VamanaParams& params, const Progress& progress);

  size_t n_ = 0;
  int dim_ = 0;
  int max_degree_ = 0;
  uint32_t entry_point_ = 0;
  std::vector<float> vectors_;       // n_ * dim_
  std::vector<uint32_t> adjacency_;  // n_ * max_degree_; row i holds degree_[i]
  std::vector<uint32_t> degree_;     // n_
};

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_VAMANA_H_
