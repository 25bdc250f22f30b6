#include <algorithm>
#include <chrono>
#include <optional>
#include <unordered_map>

#include "pixseek/services.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "service/indexing.h"

namespace pixseek {
namespace {

struct Labelled {
  int64_t id;
  std::string label;
};

// Stored images under root with a label (first folder level below root).
Result<std::vector<Labelled>> LabelledImages(MetadataStore& store,
                                             const std::filesystem::path& root) {
  std::vector<Labelled> out;
  ListOptions list;
  list.limit = 1000;
  while (true) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> page, store.List(list));
    if (page.empty()) break;
    for (const auto& r : page) {
      auto rel = std::filesystem::path(r.path).lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") continue;
      if (std::distance(rel.begin(), rel.end()) < 2) continue;  // no folder, no label
      out.push_back({r.id, rel.begin()->string()});
    }
    list.after_id = page.back().id;
  }
  return out;
}

void Accumulate(EvalMetrics& sum, const EvalMetrics& one) {
  sum.map += one.map;
  sum.p_at_1 += one.p_at_1;
  sum.p_at_10 += one.p_at_10;
  sum.r_at_10 += one.r_at_10;
  sum.queries += one.queries;
}

EvalMetrics Mean(EvalMetrics sum, double n) {
  if (n > 0) {
    sum.map /= n;
    sum.p_at_1 /= n;
    sum.p_at_10 /= n;
    sum.r_at_10 /= n;
  }
  return sum;
}

// The gallery: labelled stored images, with lookups for scoring.
struct Gallery {
  std::vector<Labelled> items;
  std::unordered_map<int64_t, size_t> position;  // id -> index in items
  std::unordered_map<std::string, size_t> label_count;

  explicit Gallery(std::vector<Labelled> labelled) : items(std::move(labelled)) {
    for (size_t i = 0; i < items.size(); ++i) {
      position[items[i].id] = i;
      ++label_count[items[i].label];
    }
  }
};

// Scores one query's full ranking: relevant = gallery images with its label,
// `self` (the query's own id in leave-one-out, or -1) left out, images
// outside the gallery skipped.
EvalMetrics Score(const Gallery& gallery, const std::vector<SearchHit>& ranking,
                  const std::string& label, int64_t self) {
  EvalMetrics m;
  m.queries = 1;
  auto count = gallery.label_count.find(label);
  size_t relevant_total = count == gallery.label_count.end() ? 0 : count->second;
  if (self >= 0 && relevant_total > 0) --relevant_total;
  if (relevant_total == 0) return m;
  size_t rank = 0, relevant_seen = 0, relevant_in_10 = 0;
  double ap = 0;
  for (const SearchHit& hit : ranking) {
    if (hit.id == self) continue;  // leave one out
    auto it = gallery.position.find(hit.id);
    if (it == gallery.position.end()) continue;  // not part of the evaluated set
    ++rank;
    if (gallery.items[it->second].label == label) {
      ++relevant_seen;
      ap += static_cast<double>(relevant_seen) / static_cast<double>(rank);
      if (rank <= 10) ++relevant_in_10;
      if (rank == 1) m.p_at_1 = 1;
    }
    if (relevant_seen == relevant_total && rank >= 10) break;
  }
  m.map = ap / static_cast<double>(relevant_total);
  m.p_at_10 = static_cast<double>(relevant_in_10) / 10.0;
  m.r_at_10 = static_cast<double>(relevant_in_10) / static_cast<double>(relevant_total);
  return m;
}

// Means per label, over labels (macro) and over queries (overall).
void Summarise(const std::map<std::string, EvalMetrics>& sums, EvalReport& report) {
  EvalMetrics overall_sum;
  EvalMetrics macro_sum;
  for (const auto& [label, sum] : sums) {
    Accumulate(overall_sum, sum);
    report.per_label[label] = Mean(sum, static_cast<double>(sum.queries));
    report.per_label[label].queries = sum.queries;
    Accumulate(macro_sum, report.per_label[label]);
  }
  report.overall = Mean(overall_sum, static_cast<double>(overall_sum.queries));
  report.overall.queries = overall_sum.queries;
  report.macro = Mean(macro_sum, static_cast<double>(sums.size()));
  report.macro.queries = overall_sum.queries;
}

// The labelled stored images under `root`, the gallery of an evaluation.
Result<Gallery> GalleryUnder(Database& db, const std::filesystem::path& root_arg) {
  std::error_code ec;
  const auto root = std::filesystem::weakly_canonical(std::filesystem::absolute(root_arg), ec);
  if (ec) return Status::NotFound("cannot resolve " + root_arg.string());
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<Labelled> items, LabelledImages(db.store(), root));
  if (items.size() < 2) {
    return Status::FailedPrecondition(
        "fewer than two stored images lie in labelled folders under " + root.string() +
        " (build the database from that folder first)");
  }
  return Gallery(std::move(items));
}

}  // namespace

Result<EvalReport> EvaluateQueries(Database& db, const std::filesystem::path& root_arg,
                                   const std::filesystem::path& query_root_arg,
                                   const EvalQueryOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(const Gallery gallery, GalleryUnder(db, root_arg));

  std::error_code ec;
  if (!std::filesystem::is_directory(query_root_arg, ec)) {
    return Status::NotFound(query_root_arg.string() + " is not a directory");
  }
  const auto query_root = std::filesystem::canonical(query_root_arg, ec);
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> files, ListImages(query_root));
  struct Query {
    std::filesystem::path path;
    std::string label;
  };
  std::vector<Query> queries;
  for (const auto& f : files) {
    auto rel = f.lexically_relative(query_root);
    if (std::distance(rel.begin(), rel.end()) < 2) continue;  // no folder, no label
    queries.push_back({f, rel.begin()->string()});
  }
  if (queries.empty()) {
    return Status::FailedPrecondition("no images in labelled folders under " +
                                      query_root.string());
  }

  EvalReport report;
  report.images = gallery.items.size();
  const size_t dim = static_cast<size_t>(db.dimension());
  const size_t k_all = db.index().size();
  const DecodeOptions decode = db.decode_options();
  const int threads = ThreadCount(options.decode_threads);
  constexpr size_t kChunk = 64;
  std::map<std::string, EvalMetrics> sums;
  std::vector<std::vector<SearchHit>> results;
  ProgressBar bar("eval", queries.size(), options.progress_out, options.show_progress);
  for (size_t begin = 0; begin < queries.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, queries.size() - begin);
    // Read and decode the chunk on worker threads; failures are counted.
    std::vector<std::optional<Image>> decoded(n);
    ParallelFor(n, threads, [&](size_t i) {
      decoded[i] = DecodeFile(queries[begin + i].path, decode);
    });

    std::vector<const Image*> images;
    std::vector<size_t> which;  // chunk positions of `images`
    for (size_t i = 0; i < n; ++i) {
      if (decoded[i]) {
        images.push_back(&*decoded[i]);
        which.push_back(i);
      } else {
        ++report.failed_queries;
      }
    }
    if (!images.empty()) {
      std::vector<float> features(images.size() * dim);
      PIXSEEK_RETURN_IF_ERROR(db.Embed(images, features.data()));
      PIXSEEK_RETURN_IF_ERROR(db.index().Search(images.size(), features.data(), k_all, &results));
      for (size_t q = 0; q < images.size(); ++q) {
        const std::string& label = queries[begin + which[q]].label;
        Accumulate(sums[label], Score(gallery, results[q], label, /*self=*/-1));
      }
    }
    bar.Update(begin + n, report.failed_queries);
  }
  bar.Finish(queries.size(), report.failed_queries);
  Summarise(sums, report);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root_arg) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(const Gallery gallery, GalleryUnder(db, root_arg));

  const size_t dim = static_cast<size_t>(db.dimension());
  const size_t k_all = db.index().size();  // full ranking; other images are filtered out
  constexpr size_t kChunk = 64;
  EvalReport report;
  report.images = gallery.items.size();
  std::map<std::string, EvalMetrics> sums;
  std::vector<float> queries;
  std::vector<std::vector<SearchHit>> results;
  for (size_t begin = 0; begin < gallery.items.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, gallery.items.size() - begin);
    queries.resize(n * dim);
    for (size_t q = 0; q < n; ++q) {
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, db.index().Get(gallery.items[begin + q].id));
      std::copy(v.begin(), v.end(), queries.begin() + q * dim);
    }
    PIXSEEK_RETURN_IF_ERROR(db.index().Search(n, queries.data(), k_all, &results));
    for (size_t q = 0; q < n; ++q) {
      const Labelled& query = gallery.items[begin + q];
      Accumulate(sums[query.label], Score(gallery, results[q], query.label, query.id));
    }
  }
  Summarise(sums, report);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace pixseek
