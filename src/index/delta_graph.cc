#include "index/delta_graph.h"

#include <algorithm>

#include "index/graph_search.h"
#include "index/inner_product.h"

namespace pixseek {

using graph::Candidate;
using graph::GreedySearch;
using graph::NodeSet;
using graph::RobustPrune;

DeltaGraph::DeltaGraph(int dim, const VamanaParams& params)
    : dim_(dim), params_(params), max_degree_(static_cast<size_t>(params.max_degree)) {}

void DeltaGraph::SetNeighbours(uint32_t node, const std::vector<uint32_t>& list) {
  std::copy(list.begin(), list.end(), adjacency_.begin() + size_t{node} * max_degree_);
  degree_[node] = static_cast<uint32_t>(list.size());
}

uint32_t DeltaGraph::Insert(const float* v) {
  const size_t d = static_cast<size_t>(dim_);
  const auto p = static_cast<uint32_t>(size());
  vectors_.insert(vectors_.end(), v, v + d);
  adjacency_.resize(adjacency_.size() + max_degree_, 0);
  degree_.push_back(0);
  if (p == 0) return p;  // the first node is the entry point

  // Node 0 is the entry point: FreshDiskANN keeps a fixed start node too.
  NodeSet seen;
  std::vector<Candidate> list, visited;
  SearchStats ignored;
  auto get = [this](uint32_t node, std::vector<uint32_t>*) { return neighbours(node); };
  GreedySearch(vector(p), 0, static_cast<size_t>(params_.build_list), vectors_.data(), d, get,
               &seen, &list, &visited, &ignored);
  const std::vector<uint32_t> out =
      RobustPrune(p, std::move(visited), params_.alpha, max_degree_, vectors_.data(), d);
  SetNeighbours(p, out);

  // Reverse edges: a full neighbour list is re-pruned with the new node in.
  for (uint32_t j : out) {
    std::span<const uint32_t> nbs = neighbours(j);
    if (std::find(nbs.begin(), nbs.end(), p) != nbs.end()) continue;
    if (nbs.size() < max_degree_) {
      adjacency_[size_t{j} * max_degree_ + nbs.size()] = p;
      ++degree_[j];
      continue;
    }
    std::vector<Candidate> pool;
    pool.reserve(nbs.size() + 1);
    for (uint32_t q : nbs) pool.push_back({InnerProduct(vector(j), vector(q), d), q, false});
    pool.push_back({InnerProduct(vector(j), vector(p), d), p, false});
    SetNeighbours(j, RobustPrune(j, std::move(pool), params_.alpha, max_degree_, vectors_.data(), d));
  }
  return p;
}

void DeltaGraph::Search(const float* query, size_t k, int search_list,
                        std::vector<SearchHit>* out) const {
  out->clear();
  if (k == 0 || size() == 0) return;
  const size_t list_size = std::max(static_cast<size_t>(std::max(search_list, 1)), k);
  NodeSet seen;
  std::vector<Candidate> list;
  SearchStats ignored;
  auto get = [this](uint32_t node, std::vector<uint32_t>*) { return neighbours(node); };
  GreedySearch(query, 0, list_size, vectors_.data(), static_cast<size_t>(dim_), get, &seen, &list,
               nullptr, &ignored);
  const size_t count = std::min(k, list.size());
  for (size_t i = 0; i < count; ++i) out->push_back({int64_t{list[i].id}, list[i].ip});
}

}  // namespace pixseek
