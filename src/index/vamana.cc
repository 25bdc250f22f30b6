#include "index/vamana.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include "index/graph_search.h"
#include "index/inner_product.h"

namespace pixseek {

namespace graph {

template <typename T>
std::vector<uint32_t> RobustPrune(uint32_t p, std::vector<Candidate> pool, float alpha,
                                  size_t max_degree, const T* vectors, size_t dim) {
  std::sort(pool.begin(), pool.end(), Closer);
  // Most duplicates are adjacent now; the rest (scored by different kernels,
  // or separated by an equal-score id) are skipped by the check in the loop.
  pool.erase(std::unique(pool.begin(), pool.end(),
                         [](const Candidate& a, const Candidate& b) { return a.id == b.id; }),
             pool.end());
  std::vector<uint32_t> out;
  out.reserve(max_degree);
  std::vector<char> removed(pool.size(), 0);
  for (size_t i = 0; i < pool.size() && out.size() < max_degree; ++i) {
    if (removed[i] || pool[i].id == p) continue;
    if (std::find(out.begin(), out.end(), pool[i].id) != out.end()) continue;
    out.push_back(pool[i].id);
    // Scores the remaining candidates against the kept one, four at a time.
    const T* kept = vectors + size_t{pool[i].id} * dim;
    size_t group[4];
    size_t count = 0;
    auto flush = [&] {
      const T* v[4];
      for (size_t g = 0; g < 4; ++g) {
        v[g] = vectors + size_t{pool[group[std::min(g, count - 1)]].id} * dim;
      }
      float ip[4];
      Score4(kept, v, dim, ip);
      for (size_t g = 0; g < count; ++g) {
        if (alpha * UnitDistance(ip[g]) <= UnitDistance(pool[group[g]].ip)) removed[group[g]] = 1;
      }
      count = 0;
    };
    for (size_t j = i + 1; j < pool.size(); ++j) {
      if (removed[j]) continue;
      group[count++] = j;
      if (count == 4) flush();
    }
    if (count > 0) flush();
  }
  return out;
}

template std::vector<uint32_t> RobustPrune<float>(uint32_t, std::vector<Candidate>, float, size_t,
                                                  const float*, size_t);
template std::vector<uint32_t> RobustPrune<Bfloat16>(uint32_t, std::vector<Candidate>, float,
                                                     size_t, const Bfloat16*, size_t);
}  // namespace graph

namespace {

using graph::Candidate;
using graph::Closer;
using graph::GreedySearch;
using graph::NodeSet;
using graph::RobustPrune;
using graph::Score;
using graph::UnitDistance;
using graph::kNoNode;

// Tolerance on the squared norm of a build vector, and of a bfloat16 copy of
// one (its rounding, 2^-9 relative per value, moves the norm by up to 2^-8).
constexpr double kUnitTolerance = 1e-3;
constexpr double kBf16UnitTolerance = 1e-2;
// While building, a node takes reverse edges until it has this many times R
// neighbours before it is pruned back to R (DiskANN's GRAPH_SLACK_FACTOR):
// pruning on every reverse edge would dominate the build time. A last pass
// prunes every node still above R.
constexpr double kSlack = 1.3;
// Sanity limits on the parameters, far above useful values, so that a typo
// is an error rather than a huge allocation.
constexpr int kMaxDegreeLimit = 4096;
constexpr int kBuildListLimit = 1 << 20;


Status ValidateParams(size_t n, int dim, const VamanaParams& params) {
  if (n == 0) return Status::InvalidArgument("vamana: no vectors to build from");
  if (n >= kNoNode) {
    return Status::InvalidArgument("vamana: too many vectors (" + std::to_string(n) + ")");
  }
  if (dim < 1) return Status::InvalidArgument("vamana: dimension must be >= 1");
  if (params.max_degree < 1 || params.max_degree > kMaxDegreeLimit) {
    return Status::InvalidArgument("vamana: max_degree must be in [1, " +
                                   std::to_string(kMaxDegreeLimit) + "]");
  }
  if (params.build_list < 1 || params.build_list > kBuildListLimit) {
    return Status::InvalidArgument("vamana: build_list must be in [1, " +
                                   std::to_string(kBuildListLimit) + "]");
  }
  if (!(params.alpha >= 1.0f) || !std::isfinite(params.alpha)) {
    return Status::InvalidArgument("vamana: alpha must be finite and >= 1");
  }
  if (params.num_threads < 0) return Status::InvalidArgument("vamana: num_threads must be >= 0");
  if (params.passes != 1 && params.passes != 2) {
    return Status::InvalidArgument("vamana: passes must be 1 or 2");
  }
  return Status::Ok();
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(Bfloat16 x) { return FromBfloat16(x); }
inline void Convert(float x, float* out) { *out = x; }
inline void Convert(float x, Bfloat16* out) { *out = ToBfloat16(x); }

// Every value finite and every vector of unit length (within `tolerance`).
template <typename T>
Status CheckUnitVectors(const T* vectors, size_t n, size_t d, double tolerance) {
  for (size_t i = 0; i < n; ++i) {
    double norm2 = 0;
    for (size_t j = 0; j < d; ++j) {
      const float x = ToFloat(vectors[i * d + j]);
      if (!std::isfinite(x)) {
        return Status::InvalidArgument("vamana: vector " + std::to_string(i) +
                                       " has a non-finite value");
      }
      norm2 += double{x} * x;
    }
    if (std::abs(norm2 - 1.0) > tolerance) {
      return Status::InvalidArgument("vamana: vector " + std::to_string(i) +
                                     " is not unit length (squared norm " + std::to_string(norm2) +
                                     ")");
    }
  }
  return Status::Ok();
}

// The medoid: for unit vectors the one closest to the centroid c is the one
// with the largest <x, c>.
template <typename T>
uint32_t Medoid(const T* data, size_t n, size_t d) {
  std::vector<double> sum(d, 0.0);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < d; ++j) sum[j] += ToFloat(data[i * d + j]);
  }
  std::vector<float> centroid(d);
  for (size_t j = 0; j < d; ++j) centroid[j] = static_cast<float>(sum[j] / n);
  std::vector<T> c(d);
  for (size_t j = 0; j < d; ++j) Convert(centroid[j], &c[j]);
  float best = -std::numeric_limits<float>::infinity();
  uint32_t medoid = 0;
  for (size_t i = 0; i < n; ++i) {
    const float ip = Score(c.data(), data + i * d, d);
    if (ip > best) {
      best = ip;
      medoid = static_cast<uint32_t>(i);
    }
  }
  return medoid;
}

// The random initial graph: each node gets min(R, n - 1) distinct random
// out-neighbours other than itself.
std::vector<std::vector<uint32_t>> RandomGraph(size_t n, size_t max_degree, size_t reserve,
                                               std::mt19937& rng) {
  std::vector<std::vector<uint32_t>> graph(n);
  const size_t degree = std::min(max_degree, n - 1);
  std::uniform_int_distribution<uint32_t> pick(0, static_cast<uint32_t>(n - 1));
  for (size_t i = 0; i < n; ++i) {
    auto& out = graph[i];
    out.reserve(reserve);
    if (degree == n - 1) {
      for (uint32_t j = 0; j < n; ++j) {
        if (j != i) out.push_back(j);
      }
      continue;
    }
    while (out.size() < degree) {
      const uint32_t j = pick(rng);
      if (j != i && std::find(out.begin(), out.end(), j) == out.end()) out.push_back(j);
    }
  }
  return graph;
}

// The insertion passes of a build over a mutable graph of neighbour lists,
// on several threads, over vectors of T (float or Bfloat16). Thread-safety:
// locks_[i] guards graph_[i]; a thread holds one lock at a time, so there is
// no deadlock.
template <typename T>
class GraphBuilder {
 public:
  GraphBuilder(const T* data, size_t n, size_t d, uint32_t entry, const VamanaParams& params,
               std::vector<std::vector<uint32_t>> graph)
      : data_(data),
        n_(n),
        d_(d),
        entry_(entry),
        max_degree_(static_cast<size_t>(params.max_degree)),
        list_size_(static_cast<size_t>(params.build_list)),
        slack_degree_(std::max(max_degree_, static_cast<size_t>(std::ceil(kSlack * max_degree_)))),
        graph_(std::move(graph)),
        locks_(std::make_unique<std::mutex[]>(n)) {
    const unsigned threads = params.num_threads > 0
                                 ? static_cast<unsigned>(params.num_threads)
                                 : std::max(1u, std::thread::hardware_concurrency());
    threads_ = static_cast<unsigned>(std::min<size_t>(threads, n));
  }

  // Inserts every node in `order` with pruning slack `alpha`; `progress`
  // (may be empty) hears of each kProgressStep insertions, counted from
  // `done_before` over `total`.
  void Pass(const std::vector<uint32_t>& order, float alpha, const VamanaGraph::Progress& progress,
            size_t done_before, size_t total) {
    std::atomic<size_t> done{0};
    std::mutex progress_mu;
    size_t reported = 0;  // GUARDED_BY(progress_mu)
    ParallelFor([&](size_t i, Scratch* s) {
      Insert(order[i], alpha, s);
      if (!progress) return;
      const size_t now = done.fetch_add(1, std::memory_order_relaxed) + 1;
      if (now % VamanaGraph::kProgressStep == 0 || now == n_) {
        std::lock_guard<std::mutex> lock(progress_mu);
        // Two threads may reach the lock out of order: never go back.
        if (now <= reported) return;
        reported = now;
        progress(done_before + now, total);
      }
    });
  }

  // Prunes the nodes the slack left above R (no other thread runs now).
  void FinalPrune(float alpha) {
    ParallelFor([&](size_t i, Scratch*) {
      if (graph_[i].size() > max_degree_) {
        graph_[i] = PruneList(static_cast<uint32_t>(i), graph_[i], alpha);
      }
    });
  }

  const std::vector<std::vector<uint32_t>>& graph() const { return graph_; }

 private:
  struct Scratch {
    NodeSet seen;
    std::vector<Candidate> list;
    std::vector<Candidate> visited;
  };

  // RobustPrune of a node's current neighbour list (the caller holds its lock).
  std::vector<uint32_t> PruneList(uint32_t j, const std::vector<uint32_t>& nbs, float alpha) {
    const T* vj = data_ + size_t{j} * d_;
    std::vector<Candidate> pool;
    pool.reserve(nbs.size());
    for (uint32_t q : nbs) pool.push_back({Score(vj, data_ + size_t{q} * d_, d_), q, false});
    return RobustPrune(j, std::move(pool), alpha, max_degree_, data_, d_);
  }

  // One insertion: a greedy search from the entry point, RobustPrune of what
  // it visited plus p's current neighbours, then the reverse edges.
  void Insert(uint32_t p, float alpha, Scratch* s) {
    // Copies a node's neighbour list under its lock: other threads may be
    // rewriting it.
    auto locked_neighbours = [this](uint32_t node,
                                    std::vector<uint32_t>* buffer) -> const std::vector<uint32_t>& {
      std::lock_guard<std::mutex> lock(locks_[node]);
      *buffer = graph_[node];
      return *buffer;
    };
    SearchStats ignored;
    GreedySearch(data_ + size_t{p} * d_, entry_, list_size_, data_, d_, locked_neighbours,
                 &s->seen, &s->list, &s->visited, &ignored);
    std::vector<Candidate> pool = std::move(s->visited);
    s->visited.clear();
    {
      std::lock_guard<std::mutex> lock(locks_[p]);
      for (uint32_t nb : graph_[p]) {
        pool.push_back({Score(data_ + size_t{p} * d_, data_ + size_t{nb} * d_, d_), nb, false});
      }
    }
    std::vector<uint32_t> out = RobustPrune(p, std::move(pool), alpha, max_degree_, data_, d_);
    {
      std::lock_guard<std::mutex> lock(locks_[p]);
      graph_[p] = out;
    }
    for (uint32_t j : out) {
      std::lock_guard<std::mutex> lock(locks_[j]);
      auto& nbs = graph_[j];
      if (std::find(nbs.begin(), nbs.end(), p) != nbs.end()) continue;
      nbs.push_back(p);
      if (nbs.size() > slack_degree_) nbs = PruneList(j, nbs, alpha);
    }
  }

  // Runs body(i, &scratch) for i in [0, n) on threads_ threads.
  template <typename Body>
  void ParallelFor(Body&& body) {
    std::atomic<size_t> next{0};
    constexpr size_t kChunk = 64;
    auto worker = [&] {
      Scratch scratch;
      for (;;) {
        const size_t begin = next.fetch_add(kChunk);
        if (begin >= n_) break;
        const size_t end = std::min(n_, begin + kChunk);
        for (size_t i = begin; i < end; ++i) body(i, &scratch);
      }
    };
    if (threads_ <= 1) {
      worker();
      return;
    }
    std::vector<std::thread> pool;
    pool.reserve(threads_);
    for (unsigned t = 0; t < threads_; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }

  const T* data_;
  const size_t n_, d_;
  const uint32_t entry_;
  const size_t max_degree_, list_size_, slack_degree_;
  unsigned threads_ = 1;
  std::vector<std::vector<uint32_t>> graph_;  // GUARDED_BY(locks_[i]) per node
  std::unique_ptr<std::mutex[]> locks_;
};

}  // namespace

Result<VamanaGraph> VamanaGraph::Build(const float* vectors, size_t n, int dim,
                                       const VamanaParams& params) {
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(n, dim, params));
  if (vectors == nullptr) return Status::InvalidArgument("vamana: null vectors");
  return Build(std::vector<float>(vectors, vectors + n * static_cast<size_t>(dim)), n, dim,
               params);
}

Result<VamanaGraph> VamanaGraph::Build(std::vector<float>&& owned, size_t n, int dim,
                                       const VamanaParams& params) {
  return Build(std::move(owned), n, dim, params, nullptr);
}

Result<VamanaGraph> VamanaGraph::Build(std::vector<float>&& owned, size_t n, int dim,
                                       const VamanaParams& params, const Progress& progress) {
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(n, dim, params));
  const size_t d = static_cast<size_t>(dim);
  if (owned.size() != n * d) {
    return Status::InvalidArgument("vamana: expected " + std::to_string(n * d) + " floats, got " +
                                   std::to_string(owned.size()));
  }
  PIXSEEK_RETURN_IF_ERROR(CheckUnitVectors(owned.data(), n, d, kUnitTolerance));
  VamanaGraph g;
  g.vectors_ = std::move(owned);
  g.Link(g.vectors_.data(), n, dim, params, progress);
  return g;
}

Result<VamanaGraph> VamanaGraph::BuildLinks(std::vector<Bfloat16>&& taken, size_t n, int dim,
                                            const VamanaParams& params, const Progress& progress) {
  const std::vector<Bfloat16> vectors = std::move(taken);  // freed on return
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(n, dim, params));
  const size_t d = static_cast<size_t>(dim);
  if (vectors.size() != n * d) {
    return Status::InvalidArgument("vamana: expected " + std::to_string(n * d) +
                                   " bfloat16 values, got " + std::to_string(vectors.size()));
  }
  PIXSEEK_RETURN_IF_ERROR(CheckUnitVectors(vectors.data(), n, d, kBf16UnitTolerance));
  VamanaGraph g;
  g.Link(vectors.data(), n, dim, params, progress);
  return g;
}

template <typename T>
void VamanaGraph::Link(const T* data, size_t n, int dim, const VamanaParams& params,
                       const Progress& progress) {
  const size_t d = static_cast<size_t>(dim);
  n_ = n;
  dim_ = dim;
  max_degree_ = params.max_degree;
  const size_t max_degree = static_cast<size_t>(params.max_degree);
  entry_point_ = Medoid(data, n, d);
  std::mt19937 rng(params.seed);
  const size_t reserve = static_cast<size_t>(std::ceil(kSlack * max_degree)) + 1;
  GraphBuilder<T> builder(data, n, d, entry_point_, params,
                          RandomGraph(n, max_degree, reserve, rng));
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::vector<float> alphas = {params.alpha};
  if (params.passes == 2) alphas.insert(alphas.begin(), 1.0f);
  for (size_t pass = 0; pass < alphas.size(); ++pass) {
    std::shuffle(order.begin(), order.end(), rng);
    builder.Pass(order, alphas[pass], progress, pass * n, alphas.size() * n);
  }
  builder.FinalPrune(params.alpha);
  const auto& graph = builder.graph();

  // Freeze into fixed-stride rows, the layout the disk index will use.
  adjacency_.assign(n * max_degree, 0);
  degree_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    degree_[i] = static_cast<uint32_t>(graph[i].size());
    std::copy(graph[i].begin(), graph[i].end(), adjacency_.begin() + i * max_degree);
  }
}

Status VamanaGraph::Search(const float* query, size_t k, int search_list,
                           std::vector<SearchHit>* out, SearchStats* stats) const {
  if (query == nullptr || out == nullptr) {
    return Status::InvalidArgument("vamana search: null query or output");
  }
  if (search_list < 1) return Status::InvalidArgument("vamana search: search_list must be >= 1");
  if (!has_vectors() && n_ > 0) {
    return Status::FailedPrecondition("vamana search: the graph was built links only");
  }
  for (int j = 0; j < dim_; ++j) {
    if (!std::isfinite(query[j])) {
      return Status::InvalidArgument("vamana search: query has a non-finite value");
    }
  }
  out->clear();
  SearchStats local;
  if (k == 0 || n_ == 0) {
    if (stats != nullptr) *stats = local;
    return Status::Ok();
  }
  const size_t list_size = std::max(static_cast<size_t>(search_list), std::min(k, n_));
  NodeSet seen;
  std::vector<Candidate> list;
  list.reserve(std::min(list_size, n_) + 1);
  auto get_neighbours = [this](uint32_t node, std::vector<uint32_t>*) { return neighbours(node); };
  GreedySearch(query, entry_point_, list_size, vectors_.data(), static_cast<size_t>(dim_),
               get_neighbours, &seen, &list, nullptr, &local);
  const size_t count = std::min(k, list.size());
  out->reserve(count);
  for (size_t i = 0; i < count; ++i) out->push_back({int64_t{list[i].id}, list[i].ip});
  if (stats != nullptr) *stats = local;
  return Status::Ok();
}

}  // namespace pixseek
