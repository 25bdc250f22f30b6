// The in-memory Vamana graph against the exact flat index, on clustered
// random unit vectors.
//
//   pixseek_bench_vamana [n=20000] [dim=128] [queries=500] [k=10]
//                        [R=64] [L=100] [alpha=1.2] [build_threads=0]
//
// Prints JSON rows:
//   {"index":"vamana-build","build_s":...,...}
//   {"index":"flat-simd","threads":1,"qps":...,"recall_at_10":1.0,...}
//   {"index":"vamana","search_list":L,"threads":1,"qps":...,"recall_at_10":...,
//    "mean_distance_computations":...,"mean_hops":...}   (one per L)
// Queries run one per call on one thread for both indexes; the flat index's
// results are the ground truth for recall.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "index/inner_product.h"
#include "index/vamana.h"
#include "pixseek/vector_index.h"

namespace {

using Clock = std::chrono::steady_clock;
using pixseek::SearchHit;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// n unit vectors around `clusters` random unit centres (fixed by
// centre_seed), Gaussian noise of 0.2 / sqrt(dim / 64) per coordinate.
std::vector<float> Clustered(size_t n, size_t dim, size_t clusters, uint64_t centre_seed,
                             uint64_t point_seed) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto normalise = [dim](float* v) {
    double norm = 0;
    for (size_t j = 0; j < dim; ++j) norm += double{v[j]} * v[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (size_t j = 0; j < dim; ++j) v[j] *= inv;
  };
  std::mt19937_64 crng(centre_seed);
  std::vector<float> centres(clusters * dim);
  for (auto& x : centres) x = normal(crng);
  for (size_t c = 0; c < clusters; ++c) normalise(&centres[c * dim]);
  const float sigma = 0.2f / std::sqrt(static_cast<float>(dim) / 64.0f);
  std::mt19937_64 rng(point_seed);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    for (size_t j = 0; j < dim; ++j) out[i * dim + j] = centres[c * dim + j] + sigma * normal(rng);
    normalise(&out[i * dim]);
  }
  return out;
}

double Recall(const std::vector<std::vector<SearchHit>>& got,
              const std::vector<std::vector<SearchHit>>& truth) {
  size_t total = 0, found = 0;
  for (size_t q = 0; q < truth.size(); ++q) {
    std::set<int64_t> want;
    for (const auto& h : truth[q]) want.insert(h.id);
    for (const auto& h : got[q]) found += want.count(h.id);
    total += truth[q].size();
  }
  return total == 0 ? 1.0 : static_cast<double>(found) / static_cast<double>(total);
}

}  // namespace

int main(int argc, char** argv) {
  auto arg = [&](int i, double fallback) { return argc > i ? std::atof(argv[i]) : fallback; };
  const size_t n = static_cast<size_t>(arg(1, 20000));
  const size_t dim = static_cast<size_t>(arg(2, 128));
  const size_t nq = static_cast<size_t>(arg(3, 500));
  const size_t k = static_cast<size_t>(arg(4, 10));
  pixseek::VamanaParams params;
  params.max_degree = static_cast<int>(arg(5, 64));
  params.build_list = static_cast<int>(arg(6, 100));
  params.alpha = static_cast<float>(arg(7, 1.2));
  params.num_threads = static_cast<int>(arg(8, 0));
  if (n == 0 || dim == 0 || nq == 0 || k == 0) {
    std::fprintf(stderr, "usage: %s [n] [dim] [queries] [k] [R] [L] [alpha] [build_threads]\n",
                 argv[0]);
    return 2;
  }
  const size_t clusters = std::max<size_t>(1, n / 100);
  const auto data = Clustered(n, dim, clusters, 7, 1);
  const auto queries = Clustered(nq, dim, clusters, 7, 2);

  auto start = Clock::now();
  auto graph = pixseek::VamanaGraph::Build(data.data(), n, static_cast<int>(dim), params);
  const double build_s = Since(start);
  if (!graph.ok()) {
    std::fprintf(stderr, "%s\n", graph.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "{\"index\":\"vamana-build\",\"n\":%zu,\"dim\":%zu,\"R\":%d,\"L\":%d,\"alpha\":%.2f,"
      "\"build_threads\":%d,\"build_s\":%.3f,\"isa\":\"%s\"}\n",
      n, dim, params.max_degree, params.build_list, params.alpha, params.num_threads, build_s,
      pixseek::InnerProductIsa());
  std::fflush(stdout);

  // The peer and ground truth: the exact flat index, one query per call.
  const char* tmp = std::getenv("TMPDIR");
  const std::filesystem::path dir = std::filesystem::path(tmp ? tmp : "/tmp") /
                                    ("pixseek-bench-vamana-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<std::vector<SearchHit>> truth(nq);
  int rc = 0;
  {
    pixseek::FlatIndexOptions options;
    options.num_threads = 1;
    auto flat = pixseek::OpenFlatIndex(dir / "vectors.flat", static_cast<int>(dim), options);
    std::vector<int64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i);
    pixseek::Status s = flat.ok() ? (*flat)->Add(n, ids.data(), data.data()) : flat.status();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      rc = 1;
    } else {
      std::vector<std::vector<SearchHit>> one;
      start = Clock::now();
      for (size_t q = 0; q < nq && rc == 0; ++q) {
        if (!(*flat)->Search(1, queries.data() + q * dim, k, &one).ok())
          rc = 1;
        else
          truth[q] = one[0];
      }
      const double flat_s = Since(start);
      std::printf(
          "{\"index\":\"flat-simd\",\"threads\":1,\"n\":%zu,\"dim\":%zu,\"k\":%zu,"
          "\"qps\":%.1f,\"recall_at_%zu\":1.0,\"mean_distance_computations\":%zu}\n",
          n, dim, k, nq / flat_s, k, n);
      std::fflush(stdout);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (rc != 0) return rc;

  for (int list : {10, 20, 50, 100, 200}) {
    std::vector<std::vector<SearchHit>> results(nq);
    uint64_t distances = 0, hops = 0;
    start = Clock::now();
    for (size_t q = 0; q < nq; ++q) {
      pixseek::SearchStats stats;
      if (!graph->Search(queries.data() + q * dim, k, list, &results[q], &stats).ok()) return 1;
      distances += stats.distance_computations;
      hops += stats.hops;
    }
    const double search_s = Since(start);
    std::printf(
        "{\"index\":\"vamana\",\"search_list\":%d,\"threads\":1,\"n\":%zu,\"dim\":%zu,"
        "\"k\":%zu,\"qps\":%.1f,\"recall_at_%zu\":%.4f,\"mean_distance_computations\":%.1f,"
        "\"mean_hops\":%.1f}\n",
        list, n, dim, k, nq / search_s, k, Recall(results, truth),
        static_cast<double>(distances) / nq, static_cast<double>(hops) / nq);
    std::fflush(stdout);
  }
  return 0;
}
