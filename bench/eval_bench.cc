// Leave-one-out evaluation at scale: the exact ranking and the metrics that
// `pixseek eval` runs per chunk (ExactRanker::Rank, ScoreRanks), on
// generated vectors with class labels, against the plain way (score, sort
// every ranking) on a sample of the same queries, extrapolated.
//
//   pixseek_bench_eval [n=100000] [dim=1280] [classes=100] [chunk=256] [peer_queries=100]
//                      [noise=0.1]
//
// Vectors: per class a random unit centre; a vector is its centre plus
// Gaussian noise (sd `noise` per dimension: at 0.1 and 1,280 dimensions classes
// overlap and mAP is about 0.5), L2-normalised. Prints JSON rows:
//   {"method":"exact-chunked",...,"seconds":...,"map":...,"peak_rss_kb":...}
//   {"method":"sort-per-query",...,"seconds_extrapolated":...,"agree":...}
// "agree" is whether the sampled queries' AP matched the chunked run's.
//
//   pixseek_bench_eval --make-db DB MODEL [n=100000] [classes=100] [noise=0.1]
//
// writes the same vectors (MODEL's dimension) as a real database instead: a
// new `--index flat` database at DB on MODEL (installed under
// $PIXSEEK_HOME), one SQLite record per vector at DB/labelled/class-C/N.jpg
// (the files do not exist; `pixseek eval` reads only the records and the
// index), so that `pixseek eval DB/labelled --db DB` times the whole command
// on n stored images.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <string>

#include "core/parallel.h"
#include "pixseek/database.h"
#include "service/eval_metrics.h"
#include "service/eval_ranking.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

long PeakRssKb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

void Generate(size_t n, size_t dim, int classes, float sigma, std::vector<float>* vectors,
              std::vector<int32_t>* labels) {
  std::vector<float> centres(static_cast<size_t>(classes) * dim);
  std::mt19937_64 rng(20240611);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : centres) x = normal(rng) / std::sqrt(static_cast<float>(dim));
  vectors->resize(n * dim);
  labels->resize(n);
  // Rows in parallel, each from its own seeded generator: the same data on
  // any thread count.
  pixseek::ParallelFor(n, pixseek::ThreadCount(0), [&](size_t i) {
    std::mt19937_64 row_rng(i * 7919 + 1);
    std::normal_distribution<float> noise(0.0f, sigma);
    const auto label = static_cast<int32_t>(i % static_cast<size_t>(classes));
    (*labels)[i] = label;
    float* v = vectors->data() + i * dim;
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) {
      v[d] = centres[static_cast<size_t>(label) * dim + d] + noise(row_rng);
      norm += double{v[d]} * v[d];
    }
    const auto inv = static_cast<float>(1 / std::sqrt(norm));
    for (size_t d = 0; d < dim; ++d) v[d] *= inv;
  });
}

int Fail(const pixseek::Status& s) {
  std::fprintf(stderr, "pixseek_bench_eval: %s\n", s.ToString().c_str());
  return 1;
}

// --make-db: the generated vectors as a real flat-index database.
int MakeDatabase(const std::filesystem::path& dir, const std::string& model, size_t n,
                 int classes, float noise) {
  pixseek::DatabaseOptions options;
  options.dir = dir;
  options.model = model;
  options.index_kind = "flat";
  auto db = pixseek::Database::Open(options, /*create=*/true);
  if (!db.ok()) return Fail(db.status());
  const auto dim = static_cast<size_t>((*db)->dimension());
  std::vector<float> vectors;
  std::vector<int32_t> labels;
  Generate(n, dim, classes, noise, &vectors, &labels);
  const auto root = std::filesystem::absolute(dir) / "labelled";
  const auto start = Clock::now();
  constexpr size_t kBatch = 1000;
  for (size_t begin = 0; begin < n; begin += kBatch) {
    const size_t count = std::min(kBatch, n - begin);
    std::vector<int64_t> ids;
    for (size_t i = begin; i < begin + count; ++i) {
      pixseek::ImageRecord r;
      r.label = "class-" + std::to_string(labels[i]);
      r.path = (root / r.label / (std::to_string(i) + ".jpg")).string();
      r.name = std::to_string(i) + ".jpg";
      r.sha256 = std::to_string(i);
      r.format = "jpeg";
      r.width = r.height = 224;
      r.added_at = 1764547200;
      auto id = (*db)->store().Insert(r);
      if (!id.ok()) return Fail(id.status());
      ids.push_back(*id);
    }
    if (auto s = (*db)->index().Add(count, ids.data(), vectors.data() + begin * dim); !s.ok()) {
      return Fail(s);
    }
    std::fprintf(stderr, "\r%zu / %zu", begin + count, n);
  }
  std::printf("{\"made\":\"%s\",\"n\":%zu,\"dim\":%zu,\"classes\":%d,\"seconds\":%.1f,"
              "\"eval\":\"pixseek eval %s --db %s --json\"}\n",
              dir.c_str(), n, dim, classes, Since(start), root.c_str(), dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::string(argv[1]) == "--make-db") {
    return MakeDatabase(argv[2], argv[3], argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 100000,
                        argc > 5 ? std::atoi(argv[5]) : 100,
                        argc > 6 ? std::strtof(argv[6], nullptr) : 0.1f);
  }
  const size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 100000;
  const size_t dim = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1280;
  const int classes = argc > 3 ? std::atoi(argv[3]) : 100;
  const size_t chunk = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 256;
  const size_t peer_queries = argc > 5 ? std::strtoull(argv[5], nullptr, 10) : 100;
  const float noise = argc > 6 ? std::strtof(argv[6], nullptr) : 0.1f;

  std::vector<float> gallery;
  std::vector<int32_t> labels;
  Generate(n, dim, classes, noise, &gallery, &labels);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i + 1);
  pixseek::ExactRanker ranker(gallery.data(), n, dim, ids, labels);

  // The evaluation's loop: chunks of queries, ranked, scored, summed.
  const auto start = Clock::now();
  pixseek::EvalMetrics sum;
  std::vector<double> ap(n);
  std::vector<pixseek::RankedQuery> ranked;
  for (size_t begin = 0; begin < n; begin += chunk) {
    const size_t count = std::min(chunk, n - begin);
    std::vector<pixseek::RankRequest> requests(count);
    for (size_t q = 0; q < count; ++q) {
      requests[q] = {static_cast<int64_t>(begin + q), labels[begin + q]};
    }
    ranker.Rank(gallery.data() + begin * dim, requests, 10, 0, &ranked);
    std::vector<pixseek::EvalMetrics> metrics(count);
    pixseek::ParallelFor(count, pixseek::ThreadCount(0), [&](size_t q) {
      metrics[q] = pixseek::ScoreRanks(ranked[q].relevant_ranks, ranked[q].relevant_total);
    });
    for (size_t q = 0; q < count; ++q) {
      pixseek::AccumulateMetrics(sum, metrics[q]);
      ap[begin + q] = metrics[q].map;
    }
  }
  const double seconds = Since(start);
  const auto mean = pixseek::MeanMetrics(sum, static_cast<double>(n));
  std::printf("{\"method\":\"exact-chunked\",\"n\":%zu,\"dim\":%zu,\"classes\":%d,\"chunk\":%zu,"
              "\"threads\":%d,\"seconds\":%.2f,\"queries_per_s\":%.1f,\"map\":%.4f,"
              "\"p_at_10\":%.4f,\"ndcg_at_10\":%.4f,\"peak_rss_kb\":%ld}\n",
              n, dim, classes, chunk, pixseek::ThreadCount(0), seconds, n / seconds, mean.map,
              mean.p_at_10, mean.ndcg_at_10, PeakRssKb());
  std::fflush(stdout);

  // The peer: every ranking sorted in full (what k = n through an index
  // amounts to, at best), on a spread sample of the queries.
  const size_t stride = std::max<size_t>(1, n / std::max<size_t>(peer_queries, 1));
  const auto peer_start = Clock::now();
  size_t sampled = 0;
  bool agree = true;
  std::vector<float> scores(n);
  for (size_t q = 0; q < n; q += stride, ++sampled) {
    pixseek::ParallelFor(n, 1, [&](size_t j) {
      float dot = 0;
      for (size_t d = 0; d < dim; ++d) dot += gallery[q * dim + d] * gallery[j * dim + d];
      scores[j] = dot;
    });
    std::vector<uint32_t> order;
    for (size_t j = 0; j < n; ++j) if (j != q) order.push_back(static_cast<uint32_t>(j));
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
    });
    std::vector<uint32_t> ranks;
    for (size_t r = 0; r < order.size(); ++r) {
      if (labels[order[r]] == labels[q]) ranks.push_back(static_cast<uint32_t>(r + 1));
    }
    const double peer_ap = pixseek::ScoreRanks(ranks, ranks.size()).map;
    // Scores summed in another order may differ in the last bit: near-ties.
    agree = agree && std::abs(peer_ap - ap[q]) < 1e-3;
  }
  const double peer_seconds = Since(peer_start);
  std::printf("{\"method\":\"sort-per-query\",\"n\":%zu,\"dim\":%zu,\"threads\":1,"
              "\"sampled_queries\":%zu,\"seconds\":%.2f,\"seconds_extrapolated\":%.0f,"
              "\"agree\":%s}\n",
              n, dim, sampled, peer_seconds, peer_seconds / static_cast<double>(sampled) * n,
              agree ? "true" : "false");
  return 0;
}
