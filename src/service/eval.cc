#include <algorithm>
#include <chrono>
#include <optional>
#include <set>
#include <unordered_map>

#include "pixseek/services.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "service/indexing.h"

namespace pixseek {
namespace {

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
  std::vector<LabelledImage> items;
  std::unordered_map<int64_t, size_t> position;  // id -> index in items
  std::unordered_map<std::string, size_t> label_count;

  explicit Gallery(std::vector<LabelledImage> labelled) : items(std::move(labelled)) {
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

// What an evaluation measures: the gallery (the held-out part of the
// labelled images under a root) and, for a class split, the classes training
// saw.
struct EvalSet {
  Gallery gallery;
  std::set<std::string> training_classes;  // kClasses only: kImages trains on every class
};

// The labelled stored images under `root`, split; the held-out part is the
// gallery of an evaluation.
Result<EvalSet> EvalSetUnder(Database& db, const std::filesystem::path& root_arg,
                             DataSplit split) {
  std::error_code ec;
  const auto root = std::filesystem::weakly_canonical(std::filesystem::absolute(root_arg), ec);
  if (ec) return Status::NotFound("cannot resolve " + root_arg.string());
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<LabelledImage> all, ListLabelledImages(db.store(), root));
  SplitParts parts = SplitLabelled(all, split);
  if (parts.held_out.size() < 2) {
    return Status::FailedPrecondition(
        std::string(split == DataSplit::kNone ? "fewer than two" : "fewer than two held-out") +
        " stored images lie in labelled folders under " + root.string() +
        (split == DataSplit::kNone ? " (build the database from that folder first)"
                                   : " (split '" + std::string(ToString(split)) + "')"));
  }
  std::set<std::string> training_classes;
  if (split == DataSplit::kClasses) {
    for (const LabelledImage& image : parts.train) training_classes.insert(image.label);
  }
  return EvalSet{Gallery(std::move(parts.held_out)), std::move(training_classes)};
}

// Ranks the gallery for batches of query vectors. Without a split, the
// index's full ranking of the whole database, as a search sees it (Score skips
// images outside the gallery). With a split, exact scores against the
// gallery's own vectors: nothing outside the held-out part can rank, and n
// held-out vectors cost n^2 dot products instead of n searches for k = all.
class Ranker {
 public:
  // Reads the gallery's vectors from the index when `exact`.
  static Result<Ranker> Make(Database& db, const Gallery& gallery, bool exact) {
    Ranker ranker(db, gallery, exact);
    if (!exact) return ranker;
    ranker.vectors_.resize(gallery.items.size() * ranker.dim_);
    for (size_t i = 0; i < gallery.items.size(); ++i) {
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, db.index().Get(gallery.items[i].id));
      if (v.size() != ranker.dim_) {
        return Status::DataLoss("image " + std::to_string(gallery.items[i].id) + " has a " +
                                std::to_string(v.size()) + "-dimensional vector");
      }
      std::copy(v.begin(), v.end(), ranker.vectors_.begin() + static_cast<long>(i * ranker.dim_));
    }
    return ranker;
  }

  // out[q] = the ranking for row q of `queries` (n rows of dimension()).
  Status Rank(const float* queries, size_t n, std::vector<std::vector<SearchHit>>* out) const {
    if (!exact_) return db_->index().Search(n, queries, db_->index().size(), out);
    out->assign(n, {});
    ParallelFor(n, ThreadCount(0), [&](size_t q) { (*out)[q] = RankExactly(queries + q * dim_); });
    return Status::Ok();
  }

 private:
  Ranker(Database& db, const Gallery& gallery, bool exact)
      : db_(&db), gallery_(&gallery), exact_(exact), dim_(static_cast<size_t>(db.dimension())) {}

  // Best first; equal scores by smaller id, as the indexes order them.
  std::vector<SearchHit> RankExactly(const float* query) const {
    std::vector<SearchHit> ranking(gallery_->items.size());
    for (size_t i = 0; i < ranking.size(); ++i) {
      const float* v = vectors_.data() + i * dim_;
      float dot = 0;
      for (size_t d = 0; d < dim_; ++d) dot += query[d] * v[d];
      ranking[i] = {gallery_->items[i].id, dot};
    }
    std::sort(ranking.begin(), ranking.end(), [](const SearchHit& a, const SearchHit& b) {
      return a.score != b.score ? a.score > b.score : a.id < b.id;
    });
    return ranking;
  }

  Database* db_;
  const Gallery* gallery_;
  bool exact_;
  size_t dim_;
  std::vector<float> vectors_;  // exact only: row i = gallery_->items[i]
};

// A query file and its label (its first folder level under the query root).
struct Query {
  std::filesystem::path path;
  std::string label;
};

// The images in labelled folders under `query_root`, less those of the
// classes training saw (a class split keeps them out of the measure).
Result<std::vector<Query>> LabelledQueries(const std::filesystem::path& query_root_arg,
                                           const std::set<std::string>& training_classes) {
  std::error_code ec;
  if (!std::filesystem::is_directory(query_root_arg, ec)) {
    return Status::NotFound(query_root_arg.string() + " is not a directory");
  }
  const auto query_root = std::filesystem::canonical(query_root_arg, ec);
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> files, ListImages(query_root));
  std::vector<Query> queries;
  for (const auto& f : files) {
    auto rel = f.lexically_relative(query_root);
    if (std::distance(rel.begin(), rel.end()) < 2) continue;  // no folder, no label
    std::string label = rel.begin()->string();
    if (training_classes.count(label)) continue;
    queries.push_back({f, std::move(label)});
  }
  if (queries.empty()) {
    return Status::FailedPrecondition(
        "no images in labelled folders under " + query_root.string() +
        (training_classes.empty() ? "" : " outside the training classes"));
  }
  return queries;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Result<EvalReport> EvaluateQueries(Database& db, const std::filesystem::path& root_arg,
                                   const std::filesystem::path& query_root_arg,
                                   const EvalQueryOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(const EvalSet set, EvalSetUnder(db, root_arg, options.split));
  PIXSEEK_ASSIGN_OR_RETURN(const std::vector<Query> queries,
                           LabelledQueries(query_root_arg, set.training_classes));
  PIXSEEK_ASSIGN_OR_RETURN(const Ranker ranker,
                           Ranker::Make(db, set.gallery, options.split != DataSplit::kNone));

  EvalReport report;
  report.split = options.split;
  report.images = set.gallery.items.size();
  const size_t dim = static_cast<size_t>(db.dimension());
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
      // Embed gives base features; the index holds them projected.
      std::vector<float> base(images.size() * static_cast<size_t>(db.base_dimension()));
      PIXSEEK_RETURN_IF_ERROR(db.Embed(images, base.data()));
      std::vector<float> features(images.size() * dim);
      db.Project(base.data(), images.size(), features.data());
      PIXSEEK_RETURN_IF_ERROR(ranker.Rank(features.data(), images.size(), &results));
      for (size_t q = 0; q < images.size(); ++q) {
        const std::string& label = queries[begin + which[q]].label;
        Accumulate(sums[label], Score(set.gallery, results[q], label, /*self=*/-1));
      }
    }
    bar.Update(begin + n, report.failed_queries);
  }
  bar.Finish(queries.size(), report.failed_queries);
  Summarise(sums, report);
  report.seconds = SecondsSince(start);
  return report;
}

Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root_arg,
                            DataSplit split) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(const EvalSet set, EvalSetUnder(db, root_arg, split));
  const Gallery& gallery = set.gallery;
  PIXSEEK_ASSIGN_OR_RETURN(const Ranker ranker,
                           Ranker::Make(db, gallery, split != DataSplit::kNone));

  const size_t dim = static_cast<size_t>(db.dimension());
  constexpr size_t kChunk = 64;
  EvalReport report;
  report.split = split;
  report.images = gallery.items.size();
  std::map<std::string, EvalMetrics> sums;
  std::vector<float> queries;
  std::vector<std::vector<SearchHit>> results;
  for (size_t begin = 0; begin < gallery.items.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, gallery.items.size() - begin);
    queries.resize(n * dim);
    for (size_t q = 0; q < n; ++q) {
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, db.index().Get(gallery.items[begin + q].id));
      std::copy(v.begin(), v.end(), queries.begin() + static_cast<long>(q * dim));
    }
    PIXSEEK_RETURN_IF_ERROR(ranker.Rank(queries.data(), n, &results));
    for (size_t q = 0; q < n; ++q) {
      const LabelledImage& query = gallery.items[begin + q];
      Accumulate(sums[query.label], Score(gallery, results[q], query.label, query.id));
    }
  }
  Summarise(sums, report);
  report.seconds = SecondsSince(start);
  return report;
}

}  // namespace pixseek
