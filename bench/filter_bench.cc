// Filtered search on the disk index: recall against an exact filtered search,
// and the peer every post-filter reaches (search, then drop what the filter
// rejects).
//
//   pixseek_bench_filter [n=100000] [dim=256] [queries=200] [k=10] [dir=/tmp/pixseek-filter-bench]
//
// Data: n vectors around 100 random centres (a "label" each; noise 0.6 per
// dimension before normalising, so a label is a loose cluster), the disk
// index built under its defaults (10 % RAM, fp16, PQ) in `dir`, the exact
// flat index beside it. Queries: stored-like vectors around random centres.
// Filters: "random" keeps each id with probability s; "label" keeps whole
// labels, so that the allowed ids are far from most queries (the hard case
// for a graph search). One JSON row per filter, share and method:
//   {"filter":"label","share":0.01,"method":"disk-filtered","recall_at_10":...,
//    "qps":...,"full_k":...}
// "exact" (the flat index with the filter) is the ground truth;
// "disk-filtered" is SearchParams::filter; "post-filter kx" searches k x
// (1 and 10) results without the filter and keeps the allowed ones. "full_k"
// is the share of queries that got k results. One thread, one query a call.
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

#include "pixseek/disk_index.h"
#include "pixseek/vector_index.h"

namespace {

using Clock = std::chrono::steady_clock;
using pixseek::IdFilter;
using pixseek::SearchHit;
using pixseek::SearchParams;
using pixseek::VectorIndex;

constexpr size_t kLabels = 100;

void Normalise(float* v, size_t dim) {
  double norm = 0;
  for (size_t d = 0; d < dim; ++d) norm += double{v[d]} * v[d];
  const float inv = static_cast<float>(1.0 / std::sqrt(norm));
  for (size_t d = 0; d < dim; ++d) v[d] *= inv;
}

// n vectors around the centres, and each one's label.
void Generate(size_t n, size_t dim, const std::vector<float>& centres, uint64_t seed,
              std::vector<float>* out, std::vector<size_t>* labels) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.6f);
  out->resize(n * dim);
  labels->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = rng() % kLabels;
    (*labels)[i] = c;
    float* v = out->data() + i * dim;
    for (size_t d = 0; d < dim; ++d) v[d] = centres[c * dim + d] + noise(rng) / std::sqrt(float(dim));
    Normalise(v, dim);
  }
}

struct Row {
  double recall = 0;
  double qps = 0;
  double full_k = 0;
};

// Runs `search` on every query; recall@k against `truth`.
template <typename Search>
Row Measure(const std::vector<float>& queries, size_t dim, size_t k,
            const std::vector<std::vector<SearchHit>>& truth, Search&& search) {
  const size_t nq = queries.size() / dim;
  Row row;
  std::vector<SearchHit> hits;
  const auto start = Clock::now();
  for (size_t q = 0; q < nq; ++q) {
    search(queries.data() + q * dim, &hits);
    std::set<int64_t> want;
    for (const SearchHit& h : truth[q]) want.insert(h.id);
    size_t found = 0;
    for (const SearchHit& h : hits) found += want.count(h.id);
    row.recall += truth[q].empty() ? 1.0 : double(found) / double(truth[q].size());
    row.full_k += hits.size() == std::min(k, truth[q].size()) ? 1.0 : 0.0;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  row.recall /= double(nq);
  row.full_k /= double(nq);
  row.qps = double(nq) / seconds;
  return row;
}

void Print(const char* filter, double share, size_t allowed, const char* method, const Row& r) {
  std::printf(
      "{\"filter\":\"%s\",\"share\":%g,\"allowed\":%zu,\"method\":\"%s\",\"recall_at_10\":%.4f,"
      "\"qps\":%.1f,\"full_k\":%.3f}\n",
      filter, share, allowed, method, r.recall, r.qps, r.full_k);
  std::fflush(stdout);
}

int Fail(const pixseek::Status& s) {
  std::fprintf(stderr, "pixseek_bench_filter: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 100000;
  const size_t dim = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const size_t nq = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 200;
  const size_t k = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 10;
  const std::filesystem::path dir = argc > 5 ? argv[5] : "/tmp/pixseek-filter-bench";
  std::filesystem::create_directories(dir);

  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> centres(kLabels * dim);
  for (float& x : centres) x = normal(rng);
  for (size_t c = 0; c < kLabels; ++c) Normalise(centres.data() + c * dim, dim);
  std::vector<float> data, queries;
  std::vector<size_t> labels, query_labels;
  Generate(n, dim, centres, 1, &data, &labels);
  Generate(nq, dim, centres, 2, &queries, &query_labels);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i + 1);

  // The indexes of an earlier run on the same arguments are used again (the
  // data is generated from fixed seeds); anything else is built afresh.
  auto flat = pixseek::OpenFlatIndex(dir / "exact.flat", static_cast<int>(dim));
  pixseek::DiskIndexOptions options;
  options.num_threads = 2;
  auto disk = pixseek::OpenDiskIndex(dir / "disk", static_cast<int>(dim), options);
  if (!flat.ok() || !disk.ok() || (*flat)->size() != n || (*disk)->size() != n) {
    flat = pixseek::Status::Cancelled("rebuilt");  // closes the files before they are removed
    disk = pixseek::Status::Cancelled("rebuilt");
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    flat = pixseek::OpenFlatIndex(dir / "exact.flat", static_cast<int>(dim));
    if (!flat.ok()) return Fail(flat.status());
    if (auto s = (*flat)->Add(n, ids.data(), data.data()); !s.ok()) return Fail(s);
    disk = pixseek::OpenDiskIndex(dir / "disk", static_cast<int>(dim), options);
    if (!disk.ok()) return Fail(disk.status());
    const auto build_start = Clock::now();
    if (auto s = (*disk)->Add(n, ids.data(), data.data()); !s.ok()) return Fail(s);
    if (auto s = (*disk)->Compact(); !s.ok()) return Fail(s);
    std::fprintf(stderr, "disk index of %zu x %zu built in %.1f s\n", n, dim,
                 std::chrono::duration<double>(Clock::now() - build_start).count());
  }
  // Everything in the disk graph: vectors still in the in-RAM delta (an
  // earlier run stopped before its compaction) would be scored exactly.
  if (auto s = (*disk)->Compact(); !s.ok()) return Fail(s);
  for (const pixseek::IndexStat& stat : (*disk)->Stats()) {
    if (stat.name == "delta_vectors" && std::get<int64_t>(stat.value) != 0) {
      return Fail(pixseek::Status::Internal("vectors left in the delta after compaction"));
    }
  }
  VectorIndex& exact = **flat;
  VectorIndex& index = **disk;

  for (const char* kind : {"random", "label"}) {
    for (double share : {1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.01, 0.001}) {
      if (std::string(kind) == "label" && share * kLabels < 1) continue;
      std::vector<int64_t> allowed_ids;
      std::mt19937_64 pick(42);
      const size_t allowed_labels = static_cast<size_t>(share * kLabels);
      for (size_t i = 0; i < n; ++i) {
        const bool keep = std::string(kind) == "random"
                              ? std::uniform_real_distribution<double>()(pick) < share
                              : labels[i] < allowed_labels;
        if (keep) allowed_ids.push_back(ids[i]);
      }
      const IdFilter filter(allowed_ids);
      SearchParams filtered;
      filtered.filter = &filter;
      // The ground truth: the exact index's answers, timed as its row.
      std::vector<std::vector<SearchHit>> truth(nq), one;
      const auto exact_start = Clock::now();
      for (size_t q = 0; q < nq; ++q) {
        if (auto s = exact.Search(1, queries.data() + q * dim, k, filtered, &one); !s.ok()) {
          return Fail(s);
        }
        truth[q] = one[0];
      }
      Row exact_row;
      exact_row.recall = 1.0;
      exact_row.full_k = 1.0;
      exact_row.qps = double(nq) / std::chrono::duration<double>(Clock::now() - exact_start).count();
      Print(kind, share, filter.size(), "exact", exact_row);
      Print(kind, share, filter.size(), "disk-filtered",
            Measure(queries, dim, k, truth, [&](const float* q, std::vector<SearchHit>* out) {
              (void)index.Search(1, q, k, filtered, &one);
              *out = one[0];
            }));
      for (size_t over : {size_t{1}, size_t{10}}) {
        const std::string name = "post-filter " + std::to_string(over) + "x";
        Print(kind, share, filter.size(), name.c_str(),
              Measure(queries, dim, k, truth, [&](const float* q, std::vector<SearchHit>* out) {
                (void)index.Search(1, q, over * k, &one);
                out->clear();
                for (const SearchHit& h : one[0]) {
                  if (out->size() < k && filter.Contains(h.id)) out->push_back(h);
                }
              }));
      }
    }
  }
  return 0;
}
