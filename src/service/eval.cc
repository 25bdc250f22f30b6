// Evaluation: exact rankings of every query against the labelled gallery,
// reduced to metrics chunk by chunk (eval_ranking.h, eval_metrics.h), and the
// index's own ranking measured apart on a sample of the same queries.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <set>
#include <unordered_map>

#include "pixseek/services.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "service/eval_metrics.h"
#include "service/eval_ranking.h"
#include "service/indexing.h"
#include "service/rerank.h"

namespace pixseek {
namespace {

constexpr size_t kIndexK = 10;      // index_recall_at_k
constexpr size_t kIndexMapK = 100;  // index_map_at_k
constexpr size_t kStripLength = 8;  // results shown per example in the report
constexpr size_t kWorstClasses = 3;

// The gallery: labelled stored images, with lookups for scoring.
struct Gallery {
  std::vector<LabelledImage> items;
  std::vector<int64_t> ids;                  // ids[i] = items[i].id
  std::vector<int32_t> labels;               // class index of items[i]
  std::map<std::string, int32_t> label_index;
  std::unordered_map<int64_t, size_t> position;  // id -> index in items

  explicit Gallery(std::vector<LabelledImage> labelled) : items(std::move(labelled)) {
    for (size_t i = 0; i < items.size(); ++i) {
      position[items[i].id] = i;
      ids.push_back(items[i].id);
      auto [it, added] =
          label_index.emplace(items[i].label, static_cast<int32_t>(label_index.size()));
      labels.push_back(it->second);
    }
  }

  int32_t LabelOf(const std::string& label) const {
    auto it = label_index.find(label);
    return it == label_index.end() ? -1 : it->second;
  }
};

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

// The gallery's vectors, row i = items[i]. The one copy an evaluation keeps
// (n x dimension floats); the chunks of scores come on top.
Result<std::vector<float>> GalleryMatrix(Database& db, const Gallery& gallery) {
  const size_t dim = static_cast<size_t>(db.dimension());
  std::vector<float> matrix(gallery.items.size() * dim);
  for (size_t i = 0; i < gallery.items.size(); ++i) {
    auto v = db.index().Get(gallery.items[i].id);
    if (!v.ok()) {
      return Status::DataLoss("image " + std::to_string(gallery.items[i].id) +
                              " has no stored vector: " + v.status().ToString());
    }
    if (v->size() != dim) {
      return Status::DataLoss("image " + std::to_string(gallery.items[i].id) + " has a " +
                              std::to_string(v->size()) + "-dimensional vector");
    }
    std::copy(v->begin(), v->end(), matrix.begin() + static_cast<long>(i * dim));
  }
  return matrix;
}

// One query as the evaluation sees it.
struct QueryInfo {
  std::string label;
  int64_t self_row = -1;  // leave-one-out: its gallery row
  std::string path;       // for the report's strips
};

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Queries scored at once when the options leave it open: at most 256, and
// no more than 128 MiB of scores.
size_t ChunkSize(const EvalOptions& options, size_t gallery) {
  if (options.chunk > 0) return options.chunk;
  const size_t by_memory = (size_t{128} << 20) / (sizeof(float) * std::max<size_t>(gallery, 1));
  return std::clamp<size_t>(by_memory, 16, 256);
}

// Scores queries chunk by chunk and keeps the sums. Queries are accumulated
// in the order given, whatever the chunking, so the figures do not depend on
// it.
class Evaluation {
 public:
  Evaluation(Database& db, const Gallery& gallery, const std::vector<float>& matrix,
             const EvalOptions& options, size_t total_queries, const RerankStage& rerank)
      : db_(db),
        rerank_(rerank),
        gallery_(gallery),
        options_(options),
        dim_(static_cast<size_t>(db.dimension())),
        ranker_(matrix.data(), gallery.items.size(), dim_, gallery.ids, gallery.labels),
        sample_stride_(options.index_sample == 0
                           ? 0
                           : std::max<size_t>(1, (total_queries + options.index_sample - 1) /
                                                     options.index_sample)) {}

  // Ranks and scores rows of `vectors` (infos.size() of them).
  Status AddChunk(const float* vectors, std::span<const QueryInfo> infos) {
    std::vector<RankRequest> requests(infos.size());
    for (size_t q = 0; q < infos.size(); ++q) {
      requests[q] = {infos[q].self_row, gallery_.LabelOf(infos[q].label)};
    }
    // Re-ranking as a search does it (src/service/rerank.h): QE ranks the
    // expanded vectors, spatial verification re-orders the top.
    std::vector<RerankQuery> queries;
    std::vector<float> expanded;
    if (options_.rerank.method != RerankMethod::kNone) {
      for (size_t q = 0; q < infos.size(); ++q) {
        const int64_t self =
            infos[q].self_row >= 0 ? gallery_.ids[static_cast<size_t>(infos[q].self_row)] : -1;
        queries.push_back({vectors + q * dim_, self, nullptr, self >= 0 ? "" : infos[q].path});
      }
      PIXSEEK_RETURN_IF_ERROR(rerank_.QueryVectors(queries, &expanded));
      vectors = expanded.data();
    }
    std::vector<RankedQuery> ranked;
    ranker_.Rank(vectors, requests, std::max({kIndexK, kStripLength, rerank_.Depth(0)}),
                 options_.threads, &ranked);
    for (size_t q = 0; q < queries.size(); ++q) {
      PIXSEEK_RETURN_IF_ERROR(ReorderTop(queries[q], requests[q].label, &ranked[q]));
    }
    std::vector<EvalMetrics> metrics(infos.size());
    ParallelFor(infos.size(), ThreadCount(options_.threads), [&](size_t q) {
      metrics[q] = ScoreRanks(ranked[q].relevant_ranks, ranked[q].relevant_total);
    });
    std::vector<size_t> sampled;
    for (size_t q = 0; q < infos.size(); ++q) {
      AccumulateMetrics(sums_[infos[q].label], metrics[q]);
      Remember(infos[q], metrics[q].map, ranked[q].top);
      if (sample_stride_ > 0 && (seen_ + q) % sample_stride_ == 0) sampled.push_back(q);
    }
    seen_ += infos.size();
    return CompareWithIndex(vectors, requests, ranked, metrics, sampled);
  }

  EvalReport Finish() {
    EvalReport report;
    Summarise(report);
    if (index_queries_ > 0) {
      const double n = static_cast<double>(index_queries_);
      report.index_queries = index_queries_;
      report.index_k = static_cast<int>(kIndexK);
      report.index_recall_at_k = index_recall_sum_ / n;
      report.index_map_at_k = index_map_sum_ / n;
      report.index_exact_map_at_k = exact_map_sum_ / n;
    }
    report.examples = Examples(report);
    report.images = gallery_.items.size();
    report.split = options_.split;
    report.model = db_.model_name();
    report.rerank = options_.rerank.method;
    return report;
  }

 private:
  // The top of `ranked` as spatial verification re-orders it; the relevant
  // images there take their new ranks, those below keep theirs.
  Status ReorderTop(const RerankQuery& query, int32_t label, RankedQuery* ranked) const {
    std::vector<int64_t> ids;
    for (uint32_t row : ranked->top) ids.push_back(gallery_.ids[row]);
    PIXSEEK_RETURN_IF_ERROR(rerank_.ReorderTop(query, &ids));
    std::vector<uint32_t> ranks;
    for (size_t i = 0; i < ids.size(); ++i) {
      ranked->top[i] = static_cast<uint32_t>(gallery_.position.at(ids[i]));
      if (label >= 0 && gallery_.labels[ranked->top[i]] == label) {
        ranks.push_back(static_cast<uint32_t>(i + 1));
      }
    }
    for (uint32_t rank : ranked->relevant_ranks) {
      if (rank > ids.size()) ranks.push_back(rank);
    }
    ranked->relevant_ranks = std::move(ranks);
    return Status::Ok();
  }

  // What the report may show of a query: its AP and its best results.
  struct Seen {
    std::string label;
    std::string path;
    int64_t id = -1;
    double ap = 0;
    std::vector<uint32_t> top;
  };

  void Remember(const QueryInfo& info, double ap, const std::vector<uint32_t>& top) {
    Seen seen{info.label, info.path, -1, ap, {}};
    if (info.self_row >= 0) {
      seen.id = gallery_.ids[static_cast<size_t>(info.self_row)];
      seen.path = gallery_.items[static_cast<size_t>(info.self_row)].path;
    }
    seen.top.assign(top.begin(), top.begin() + static_cast<long>(std::min(kStripLength, top.size())));
    seen_queries_.push_back(std::move(seen));
  }

  // The index's top k (up to kIndexMapK gallery images, self left out)
  // against the exact ranking, for the sampled queries of a chunk.
  Status CompareWithIndex(const float* vectors, std::span<const RankRequest> requests,
                          const std::vector<RankedQuery>& ranked,
                          const std::vector<EvalMetrics>& metrics,
                          const std::vector<size_t>& sampled) {
    if (sampled.empty()) return Status::Ok();
    std::vector<float> rows(sampled.size() * dim_);
    for (size_t i = 0; i < sampled.size(); ++i) {
      std::copy_n(vectors + sampled[i] * dim_, dim_, rows.begin() + static_cast<long>(i * dim_));
    }
    // Room for the query itself and for stored images outside the gallery,
    // which a search returns but the evaluation does not count.
    const size_t outside = db_.index().size() - std::min(db_.index().size(), gallery_.items.size());
    const size_t k = std::min(db_.index().size(), std::min<size_t>(kIndexMapK + 1 + outside, 1000));
    std::vector<std::vector<SearchHit>> hits;
    PIXSEEK_RETURN_IF_ERROR(db_.index().Search(sampled.size(), rows.data(), k, &hits));
    for (size_t i = 0; i < sampled.size(); ++i) {
      const size_t q = sampled[i];
      IndexOne(requests[q], ranked[q], hits[i]);
      exact_map_sum_ += metrics[q].map_at_100;
    }
    index_queries_ += sampled.size();
    return Status::Ok();
  }

  void IndexOne(const RankRequest& request, const RankedQuery& exact,
                const std::vector<SearchHit>& hits) {
    std::vector<uint32_t> rows;  // the index's ranking, gallery rows only
    for (const SearchHit& hit : hits) {
      auto it = gallery_.position.find(hit.id);
      if (it == gallery_.position.end() || static_cast<int64_t>(it->second) == request.self) continue;
      rows.push_back(static_cast<uint32_t>(it->second));
      if (rows.size() == kIndexMapK) break;
    }
    // Recall of the exact top k.
    const size_t k = std::min(kIndexK, exact.top.size());
    size_t found = 0;
    for (size_t i = 0; i < k; ++i) {
      const size_t limit = std::min(kIndexK, rows.size());
      found += std::find(rows.begin(), rows.begin() + static_cast<long>(limit), exact.top[i]) !=
               rows.begin() + static_cast<long>(limit);
    }
    index_recall_sum_ += k == 0 ? 1.0 : static_cast<double>(found) / static_cast<double>(k);
    // AP@100 through the index.
    std::vector<uint32_t> ranks;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (request.label >= 0 && gallery_.labels[rows[i]] == request.label) {
        ranks.push_back(static_cast<uint32_t>(i + 1));
      }
    }
    index_map_sum_ += ScoreRanks(ranks, exact.relevant_total).map_at_100;
  }

  // Means per label, over labels (macro) and over queries (overall).
  void Summarise(EvalReport& report) const {
    EvalMetrics overall_sum, macro_sum;
    for (const auto& [label, sum] : sums_) {
      AccumulateMetrics(overall_sum, sum);
      report.per_label[label] = MeanMetrics(sum, static_cast<double>(sum.queries));
      AccumulateMetrics(macro_sum, report.per_label[label]);
    }
    report.overall = MeanMetrics(overall_sum, static_cast<double>(overall_sum.queries));
    report.macro = MeanMetrics(macro_sum, static_cast<double>(sums_.size()));
    report.macro.queries = overall_sum.queries;
  }

  // For the classes with the lowest mAP, the query whose AP is closest to
  // its class's: a typical failure, not the single worst.
  std::vector<EvalExample> Examples(const EvalReport& report) const {
    std::vector<std::pair<double, std::string>> classes;
    for (const auto& [label, m] : report.per_label) classes.push_back({m.map, label});
    std::sort(classes.begin(), classes.end());
    if (classes.size() > kWorstClasses) classes.resize(kWorstClasses);
    std::vector<EvalExample> examples;
    for (const auto& [map, label] : classes) {
      const Seen* best = nullptr;
      for (const Seen& s : seen_queries_) {
        if (s.label == label && (!best || std::abs(s.ap - map) < std::abs(best->ap - map))) {
          best = &s;
        }
      }
      if (!best) continue;
      EvalExample example{label, best->id, best->path, best->ap, {}};
      const int32_t index = gallery_.LabelOf(label);
      for (uint32_t row : best->top) {
        example.top.push_back(
            {gallery_.ids[row], gallery_.items[row].path, gallery_.labels[row] == index});
      }
      examples.push_back(std::move(example));
    }
    return examples;
  }

  Database& db_;
  const RerankStage& rerank_;
  const Gallery& gallery_;
  const EvalOptions& options_;
  size_t dim_;
  ExactRanker ranker_;
  size_t sample_stride_;  // every sample_stride_-th query is compared with the index
  size_t seen_ = 0;       // queries ranked so far
  std::map<std::string, EvalMetrics> sums_;
  std::vector<Seen> seen_queries_;
  uint64_t index_queries_ = 0;
  double index_recall_sum_ = 0, index_map_sum_ = 0, exact_map_sum_ = 0;
};

Status CheckCancel(const EvalOptions& options) {
  if (options.cancel && options.cancel->load()) return Status::Cancelled("evaluation stopped");
  return Status::Ok();
}

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

// Decodes and embeds queries[begin, begin + n) into index vectors; files
// that fail are counted and left out of `infos`.
Status EmbedChunk(Database& db, const std::vector<Query>& queries, size_t begin, size_t n,
                  int threads, std::vector<float>* features, std::vector<QueryInfo>* infos,
                  uint64_t* failed) {
  std::vector<std::optional<Image>> decoded(n);
  const DecodeOptions decode = db.decode_options();
  ParallelFor(n, threads, [&](size_t i) { decoded[i] = DecodeFile(queries[begin + i].path, decode); });
  std::vector<const Image*> images;
  infos->clear();
  for (size_t i = 0; i < n; ++i) {
    if (!decoded[i]) {
      ++*failed;
      continue;
    }
    images.push_back(&*decoded[i]);
    infos->push_back({queries[begin + i].label, -1, queries[begin + i].path.string()});
  }
  if (images.empty()) return Status::Ok();
  // Embed gives base features; the index holds them projected.
  std::vector<float> base(images.size() * static_cast<size_t>(db.base_dimension()));
  PIXSEEK_RETURN_IF_ERROR(db.Embed(images, base.data()));
  features->resize(images.size() * static_cast<size_t>(db.dimension()));
  db.Project(base.data(), images.size(), features->data());
  return Status::Ok();
}

}  // namespace

Result<EvalReport> EvaluateQueries(Database& db, const std::filesystem::path& root_arg,
                                   const std::filesystem::path& query_root_arg,
                                   const EvalOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(const EvalSet set, EvalSetUnder(db, root_arg, options.split));
  PIXSEEK_ASSIGN_OR_RETURN(const std::vector<Query> queries,
                           LabelledQueries(query_root_arg, set.training_classes));
  PIXSEEK_ASSIGN_OR_RETURN(const std::vector<float> matrix, GalleryMatrix(db, set.gallery));
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<RerankStage> rerank,
                           RerankStage::Make(db, options.rerank));
  rerank->CacheLocalFeatures();
  Evaluation evaluation(db, set.gallery, matrix, options, queries.size(), *rerank);

  const size_t chunk = std::min<size_t>(ChunkSize(options, set.gallery.items.size()), 64);
  uint64_t failed = 0;
  std::vector<float> features;
  std::vector<QueryInfo> infos;
  ProgressBar bar("eval", queries.size(), options.progress_out, options.show_progress);
  for (size_t begin = 0; begin < queries.size(); begin += chunk) {
    PIXSEEK_RETURN_IF_ERROR(CheckCancel(options));
    const size_t n = std::min(chunk, queries.size() - begin);
    PIXSEEK_RETURN_IF_ERROR(
        EmbedChunk(db, queries, begin, n, ThreadCount(options.threads), &features, &infos, &failed));
    if (!infos.empty()) PIXSEEK_RETURN_IF_ERROR(evaluation.AddChunk(features.data(), infos));
    bar.Update(begin + n, failed);
    if (options.on_progress) options.on_progress(begin + n, queries.size());
  }
  bar.Finish(queries.size(), failed);
  EvalReport report = evaluation.Finish();
  report.protocol = "queries";
  report.failed_queries = failed;
  report.seconds = SecondsSince(start);
  return report;
}

Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root_arg,
                            const EvalOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(const EvalSet set, EvalSetUnder(db, root_arg, options.split));
  const Gallery& gallery = set.gallery;
  PIXSEEK_ASSIGN_OR_RETURN(const std::vector<float> matrix, GalleryMatrix(db, gallery));
  const size_t n = gallery.items.size();
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<RerankStage> rerank,
                           RerankStage::Make(db, options.rerank));
  rerank->CacheLocalFeatures();
  Evaluation evaluation(db, gallery, matrix, options, n, *rerank);

  // Leave-one-out: the queries are the gallery's own rows.
  const size_t dim = static_cast<size_t>(db.dimension());
  const size_t chunk = ChunkSize(options, n);
  std::vector<QueryInfo> infos;
  ProgressBar bar("eval", n, options.progress_out, options.show_progress);
  for (size_t begin = 0; begin < n; begin += chunk) {
    PIXSEEK_RETURN_IF_ERROR(CheckCancel(options));
    const size_t count = std::min(chunk, n - begin);
    infos.clear();
    for (size_t q = begin; q < begin + count; ++q) {
      infos.push_back({gallery.items[q].label, static_cast<int64_t>(q), {}});
    }
    PIXSEEK_RETURN_IF_ERROR(evaluation.AddChunk(matrix.data() + begin * dim, infos));
    bar.Update(begin + count, 0);
    if (options.on_progress) options.on_progress(begin + count, n);
  }
  bar.Finish(n, 0);
  EvalReport report = evaluation.Finish();
  report.seconds = SecondsSince(start);
  return report;
}

Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root, DataSplit split) {
  EvalOptions options;
  options.split = split;
  return Evaluate(db, root, options);
}

}  // namespace pixseek
