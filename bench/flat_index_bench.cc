// Throughput of the flat index's SIMD scan against a plain scalar loop.
//
//   pixseek_bench_flat [n=100000] [dim=1280] [queries=200] [k=10]
//
// Prints one JSON row per configuration:
//   {"index":"flat-simd","threads":1,"batch":200,"qps":...,...}
//   {"index":"flat-scalar","threads":1,"batch":200,"qps":...,...}
// "flat-simd" is OpenFlatIndex (blocked scan, AVX2+FMA kernels where the CPU
// has them); "flat-scalar" is the textbook loop: one query at a time, one
// float accumulator, a std::priority_queue for the top k, the queries split
// among the threads. "agree" is the share of the scalar top-k ids the index
// returned too (1.0 up to float near-ties).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "index/inner_product.h"
#include "pixseek/vector_index.h"

namespace {

using Clock = std::chrono::steady_clock;
using pixseek::SearchHit;

std::vector<float> RandomUnitVectors(size_t n, size_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    float* v = out.data() + i * dim;
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) {
      v[d] = uniform(rng);
      norm += double{v[d]} * v[d];
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (size_t d = 0; d < dim; ++d) v[d] *= inv;
  }
  return out;
}

// The peer: a plain scalar loop.
std::vector<std::vector<SearchHit>> ScalarSearch(const std::vector<float>& data, size_t dim,
                                                 const std::vector<float>& queries, size_t k,
                                                 int threads) {
  const size_t n = data.size() / dim;
  const size_t nq = queries.size() / dim;
  std::vector<std::vector<SearchHit>> results(nq);
  auto worker = [&](size_t q_begin, size_t q_end) {
    for (size_t q = q_begin; q < q_end; ++q) {
      const float* query = queries.data() + q * dim;
      auto worse = [](const SearchHit& a, const SearchHit& b) {
        return a.score > b.score || (a.score == b.score && a.id < b.id);
      };
      std::priority_queue<SearchHit, std::vector<SearchHit>, decltype(worse)> heap(worse);
      for (size_t i = 0; i < n; ++i) {
        const float* v = data.data() + i * dim;
        float s = 0;
        for (size_t d = 0; d < dim; ++d) s += query[d] * v[d];
        SearchHit hit{static_cast<int64_t>(i), s};
        if (heap.size() < k) {
          heap.push(hit);
        } else if (worse(hit, heap.top())) {
          heap.pop();
          heap.push(hit);
        }
      }
      while (!heap.empty()) {
        results[q].push_back(heap.top());
        heap.pop();
      }
      std::reverse(results[q].begin(), results[q].end());
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back(worker, nq * t / threads, nq * (t + 1) / threads);
  }
  for (auto& t : pool) t.join();
  return results;
}

double Agreement(const std::vector<std::vector<SearchHit>>& a,
                 const std::vector<std::vector<SearchHit>>& b) {
  size_t total = 0, same = 0;
  for (size_t q = 0; q < a.size(); ++q) {
    std::set<int64_t> want;
    for (const auto& h : b[q]) want.insert(h.id);
    for (const auto& h : a[q]) same += want.count(h.id);
    total += b[q].size();
  }
  return total == 0 ? 1.0 : static_cast<double>(same) / static_cast<double>(total);
}

double Seconds(const std::function<void()>& f) {
  auto start = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void PrintRow(const char* index, int threads, size_t batch, size_t n, size_t dim, size_t k,
              double qps, double agree) {
  std::printf(
      "{\"index\":\"%s\",\"threads\":%d,\"batch\":%zu,\"n\":%zu,\"dim\":%zu,\"k\":%zu,"
      "\"qps\":%.1f,\"agree\":%.4f,\"isa\":\"%s\"}\n",
      index, threads, batch, n, dim, k, qps, agree, pixseek::InnerProductIsa());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  auto arg = [&](int i, size_t fallback) {
    return argc > i ? static_cast<size_t>(std::strtoull(argv[i], nullptr, 10)) : fallback;
  };
  const size_t n = arg(1, 100000), dim = arg(2, 1280), nq = arg(3, 200), k = arg(4, 10);
  if (n == 0 || dim == 0 || nq == 0 || k == 0) {
    std::fprintf(stderr, "usage: %s [n] [dim] [queries] [k] (all positive)\n", argv[0]);
    return 2;
  }

  const auto data = RandomUnitVectors(n, dim, 1);
  const auto queries = RandomUnitVectors(nq, dim, 2);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i);

  const char* tmp = std::getenv("TMPDIR");
  std::filesystem::path dir = std::filesystem::path(tmp ? tmp : "/tmp") /
                              ("pixseek-bench-flat-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "vectors.flat";
  int rc = 0;
  {
    auto index = pixseek::OpenFlatIndex(file, static_cast<int>(dim));
    if (!index.ok()) {
      std::fprintf(stderr, "%s\n", index.status().ToString().c_str());
      return 1;
    }
    const size_t chunk = 10000;
    double add_s = Seconds([&] {
      for (size_t i = 0; i < n && rc == 0; i += chunk) {
        size_t m = std::min(chunk, n - i);
        auto s = (*index)->Add(m, ids.data() + i, data.data() + i * dim);
        if (!s.ok()) {
          std::fprintf(stderr, "%s\n", s.ToString().c_str());
          rc = 1;
        }
      }
    });
    std::fprintf(stderr, "added %zu vectors in %.2f s\n", n, add_s);
  }

  for (int threads : {1, 2}) {
    if (rc != 0) break;
    auto reference = ScalarSearch(data, dim, queries, k, threads);
    double scalar_s = Seconds([&] { reference = ScalarSearch(data, dim, queries, k, threads); });
    PrintRow("flat-scalar", threads, nq, n, dim, k, nq / scalar_s, 1.0);

    pixseek::FlatIndexOptions options;
    options.num_threads = threads;
    auto index = pixseek::OpenFlatIndex(file, static_cast<int>(dim), options);
    if (!index.ok()) {
      std::fprintf(stderr, "%s\n", index.status().ToString().c_str());
      rc = 1;
      break;
    }
    std::vector<std::vector<SearchHit>> results;
    (void)(*index)->Search(1, queries.data(), k, &results);  // warm up
    // The whole batch in one call: each block of stored vectors is read from
    // RAM once for all queries.
    double batch_s = Seconds([&] { (void)(*index)->Search(nq, queries.data(), k, &results); });
    PrintRow("flat-simd", threads, nq, n, dim, k, nq / batch_s, Agreement(results, reference));
    // One query per call, as an interactive search does.
    std::vector<std::vector<SearchHit>> single(nq), one;
    double single_s = Seconds([&] {
      for (size_t q = 0; q < nq; ++q) {
        (void)(*index)->Search(1, queries.data() + q * dim, k, &one);
        single[q] = one[0];
      }
    });
    PrintRow("flat-simd", threads, 1, n, dim, k, nq / single_s, Agreement(single, reference));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
