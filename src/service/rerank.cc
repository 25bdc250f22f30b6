#include "service/rerank.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "core/parallel.h"
#include "service/dba.h"
#include "service/indexing.h"

namespace pixseek {

Status ValidateRerank(const RerankOptions& options) {
  if (options.qe_n < 1 || options.qe_n > kMaxQeN) {
    return Status::InvalidArgument("qe_n must be between 1 and " + std::to_string(kMaxQeN));
  }
  if (!(options.qe_alpha >= 0 && options.qe_alpha <= 20)) {
    return Status::InvalidArgument("qe_alpha must be between 0 and 20");
  }
  if (options.spatial_top < 1 || options.spatial_top > kMaxSpatialTop) {
    return Status::InvalidArgument("spatial_top must be between 1 and " +
                                   std::to_string(kMaxSpatialTop));
  }
  return Status::Ok();
}

namespace {

bool Expands(RerankMethod m) { return m == RerankMethod::kQe || m == RerankMethod::kDbaQe; }

// Decoded large enough for SIFT to find the keypoints a match needs, small
// enough to keep a verification in tens of milliseconds.
DecodeOptions SpatialDecode(const Database& db) {
  DecodeOptions decode;
  decode.limits = db.options().limits;
  decode.min_short_side = 480;
  return decode;
}

}  // namespace

Result<std::unique_ptr<RerankStage>> RerankStage::Make(Database& db,
                                                       const RerankOptions& options) {
  PIXSEEK_RETURN_IF_ERROR(ValidateRerank(options));
  if ((options.method == RerankMethod::kDba || options.method == RerankMethod::kDbaQe) &&
      !db.dba().enabled()) {
    return Status::FailedPrecondition(
        "rerank=" + std::string(ToString(options.method)) + " needs a database with DBA; " +
        db.dir().string() + " has none (turn it on with `pixseek reindex --db DB --model " +
        db.model_name() + " --dba 10`)");
  }
  return std::unique_ptr<RerankStage>(new RerankStage(db, options));
}

size_t RerankStage::Depth(size_t k) const {
  if (Expands(options_.method)) return std::max(k, static_cast<size_t>(options_.qe_n) + 1);
  if (options_.method == RerankMethod::kSpatial) {
    return std::max(k, static_cast<size_t>(options_.spatial_top));
  }
  return k;
}

Status RerankStage::Apply(std::span<const RerankQuery> queries, size_t k, const RankFn& rank,
                          std::vector<std::vector<SearchHit>>* rankings) const {
  if (Expands(options_.method)) {
    std::vector<float> expanded;
    Expand(queries, *rankings, &expanded);
    PIXSEEK_RETURN_IF_ERROR(rank(expanded.data(), queries.size(), k, rankings));
  } else if (options_.method == RerankMethod::kSpatial) {
    for (size_t i = 0; i < queries.size(); ++i) {
      PIXSEEK_RETURN_IF_ERROR(Verify(queries[i], &(*rankings)[i]));
    }
  }
  for (auto& ranking : *rankings) {
    if (ranking.size() > k) ranking.resize(k);
  }
  return Status::Ok();
}

// alpha-QE: each query becomes WeightedMean of itself (weight 1) and its
// top qe_n results other than itself, with their vectors as the index holds
// them (augmented ones on a DBA database), then all are searched again.
void RerankStage::Expand(std::span<const RerankQuery> queries,
                         const std::vector<std::vector<SearchHit>>& rankings,
                         std::vector<float>* out) const {
  const auto dim = static_cast<size_t>(db_.dimension());
  std::vector<float>& expanded = *out;
  expanded.assign(queries.size() * dim, 0.0f);
  for (size_t i = 0; i < queries.size(); ++i) {
    std::vector<std::vector<float>> vectors;
    std::vector<const float*> rows = {queries[i].vector};
    std::vector<float> sims = {1.0f};
    for (const SearchHit& hit : rankings[i]) {
      if (vectors.size() == static_cast<size_t>(options_.qe_n)) break;
      if (hit.id == queries[i].self) continue;
      auto v = db_.index().Get(hit.id);
      if (!v.ok() || v->size() != dim) continue;  // removed meanwhile
      vectors.push_back(std::move(*v));
      sims.push_back(hit.score);
    }
    for (const auto& v : vectors) rows.push_back(v.data());
    WeightedMean(rows, sims, options_.qe_alpha, dim, expanded.data() + i * dim);
  }
}

Status RerankStage::QueryVectors(std::span<const RerankQuery> queries,
                                 std::vector<float>* out) const {
  const auto dim = static_cast<size_t>(db_.dimension());
  out->resize(queries.size() * dim);
  for (size_t i = 0; i < queries.size(); ++i) {
    std::copy_n(queries[i].vector, dim, out->begin() + static_cast<long>(i * dim));
  }
  if (!Expands(options_.method) || queries.empty()) return Status::Ok();
  std::vector<std::vector<SearchHit>> first;
  PIXSEEK_RETURN_IF_ERROR(db_.index().Search(queries.size(), out->data(), Depth(0), &first));
  Expand(queries, first, out);
  return Status::Ok();
}

Status RerankStage::ReorderTop(const RerankQuery& query, std::vector<int64_t>* ids) const {
  if (options_.method != RerankMethod::kSpatial) return Status::Ok();
  std::vector<SearchHit> ranking;
  for (int64_t id : *ids) ranking.push_back({id, 0.0f});
  PIXSEEK_RETURN_IF_ERROR(Verify(query, &ranking));
  for (size_t i = 0; i < ranking.size(); ++i) (*ids)[i] = ranking[i].id;
  return Status::Ok();
}

std::shared_ptr<const LocalFeatures> RerankStage::StoredFeatures(int64_t id) const {
  if (cache_features_) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(id); it != cache_.end()) return it->second;
  }
  auto features = std::make_shared<LocalFeatures>();
  if (auto record = db_.store().Get(id); record.ok()) {
    if (std::optional<Image> image = DecodeFile(db_.FilePath(*record), SpatialDecode(db_))) {
      if (auto extracted = ExtractLocalFeatures(*image, spatial_); extracted.ok()) {
        *features = std::move(*extracted);
      }
    }
  }
  if (cache_features_) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.emplace(id, features);
  }
  return features;
}

// Spatial verification: the top spatial_top results with at least
// kMinInliers inliers come first, most inliers first; the others keep their
// order after them, and results below the top keep theirs.
Status RerankStage::Verify(const RerankQuery& query, std::vector<SearchHit>* ranking) const {
  std::shared_ptr<const LocalFeatures> mine;
  if (query.image != nullptr || !query.file.empty()) {
    std::optional<Image> decoded;
    if (query.image == nullptr) {
      decoded = DecodeFile(query.file, SpatialDecode(db_));
      if (!decoded) return Status::DataLoss("cannot read the query image " + query.file);
    }
    PIXSEEK_ASSIGN_OR_RETURN(
        LocalFeatures f,
        ExtractLocalFeatures(query.image != nullptr ? *query.image : *decoded, spatial_));
    mine = std::make_shared<LocalFeatures>(std::move(f));
  } else {
    mine = StoredFeatures(query.self);
    if (mine->size() == 0 && !db_.store().Get(query.self).ok()) {
      return Status::NotFound("no image with id " + std::to_string(query.self));
    }
  }
  const size_t top = std::min(ranking->size(), static_cast<size_t>(options_.spatial_top));
  std::vector<int> inliers(top, 0);
  ParallelFor(top, ThreadCount(db_.options().threads), [&](size_t i) {
    const int64_t id = (*ranking)[i].id;
    if (id == query.self) {
      inliers[i] = std::numeric_limits<int>::max();  // itself: the best match there is
      return;
    }
    inliers[i] = CountInliers(*mine, *StoredFeatures(id), spatial_);
  });
  std::vector<size_t> order(top);
  for (size_t i = 0; i < top; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const bool va = inliers[a] >= kMinInliers, vb = inliers[b] >= kMinInliers;
    if (va != vb) return va;
    return va && inliers[a] > inliers[b];
  });
  std::vector<SearchHit> reordered;
  reordered.reserve(ranking->size());
  for (size_t i : order) reordered.push_back((*ranking)[i]);
  reordered.insert(reordered.end(), ranking->begin() + static_cast<long>(top), ranking->end());
  *ranking = std::move(reordered);
  return Status::Ok();
}

}  // namespace pixseek
