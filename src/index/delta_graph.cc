#include "index/delta_graph.h"

#include <algorithm>

#include "index/graph_search.h"
#include "index/inner_product.h"

namespace pixseek {

using graph::Candidate;
using graph::GreedySearch;
using graph::NodeSet;
using graph::RobustPrune;

DeltaGraph::DeltaGraph(int dim, const VamanaParams& params, size_t exact_limit)
    : dim_(dim),
      params_(params),
      max_degree_(static_cast<size_t>(params.max_degree)),
      exact_limit_(exact_limit) {}

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
  if (linked_) {
    Link(p);
  } else if (size() > exact_limit_) {
    for (uint32_t node = 1; node < size(); ++node) Link(node);
    linked_ = true;
  }
  return p;
}

void DeltaGraph::Link(uint32_t p) {
  if (p == 0) return;  // the first node is the entry point
  const size_t d = static_cast<size_t>(dim_);

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
}

void DeltaGraph::SearchExact(const float* query, size_t k, std::vector<SearchHit>* out) const {
  const size_t d = static_cast<size_t>(dim_);
  std::vector<SearchHit> all(size());
  for (size_t node = 0; node < size(); ++node) {
    all[node] = {static_cast<int64_t>(node), InnerProduct(query, vector(static_cast<uint32_t>(node)), d)};
  }
  const size_t count = std::min(k, all.size());
  auto better = [](const SearchHit& a, const SearchHit& b) {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
  };
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(count), all.end(), better);
  out->assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(count));
}

void DeltaGraph::Search(const float* query, size_t k, int search_list,
                        std::vector<SearchHit>* out) const {
  out->clear();
  if (k == 0 || size() == 0) return;
  if (!linked_) return SearchExact(query, k, out);
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
