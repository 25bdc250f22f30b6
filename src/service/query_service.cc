#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/hash.h"
#include "pixseek/services.h"
#include "service/category.h"
#include "service/record_filter.h"
#include "service/rerank.h"

namespace pixseek {
namespace {

Status ValidateParams(const QueryParams& params) {
  if (params.top_k < 1 || params.top_k > kMaxTopK) {
    return Status::InvalidArgument("top_k must be between 1 and " + std::to_string(kMaxTopK));
  }
  if (!(params.min_score >= -1.0f && params.min_score <= 1.0f)) {
    return Status::InvalidArgument("min_score must be between -1 and 1");
  }
  if (params.search.search_list < 0 || params.search.search_list > kMaxSearchList) {
    return Status::InvalidArgument("search_list must be between 0 and " +
                                   std::to_string(kMaxSearchList));
  }
  PIXSEEK_RETURN_IF_ERROR(ValidateRerank(params.rerank));
  PIXSEEK_RETURN_IF_ERROR(ValidateRecordFilter(params.filter));
  return ValidateCategory(params.category);
}

// The part of the cache key that re-ranking changes ("" for none, so that
// keys of plain searches stay as they were).
std::string RerankKey(const RerankOptions& r) {
  switch (r.method) {
    case RerankMethod::kNone:
    case RerankMethod::kDba:  // the index holds what DBA changes
      return "";
    case RerankMethod::kQe:
    case RerankMethod::kDbaQe:
      return "qe" + std::to_string(r.qe_n) + "/" + std::to_string(r.qe_alpha) + ":";
    case RerankMethod::kSpatial:
      return "sp" + std::to_string(r.spatial_top) + ":";
  }
  return "";
}

double MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// The cache holds the (id, score) pairs and the predicted category; metadata
// is joined on every answer so it is never stale.
std::string EncodeAnswer(const QueryResponse& response) {
  nlohmann::json hits = nlohmann::json::array();
  for (const QueryHit& h : response.hits) hits.push_back({h.id, h.score});
  nlohmann::json j = {{"hits", std::move(hits)}};
  if (response.category) {
    j["category"] = {response.category->label, response.category->confidence};
  }
  return j.dump();
}

// What the cache held; nothing for damaged (or foreign) text.
struct CachedAnswer {
  std::vector<SearchHit> hits;
  std::optional<CategoryPrediction> category;
};

CachedAnswer DecodeAnswer(const std::string& text) {
  CachedAnswer answer;
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return answer;
  if (auto hits = j.find("hits"); hits != j.end() && hits->is_array()) {
    for (const auto& e : *hits) {
      if (e.is_array() && e.size() == 2 && e[0].is_number() && e[1].is_number()) {
        answer.hits.push_back({e[0].get<int64_t>(), e[1].get<float>()});
      }
    }
  }
  if (auto c = j.find("category");
      c != j.end() && c->is_array() && c->size() == 2 && (*c)[0].is_string() &&
      (*c)[1].is_number()) {
    answer.category = CategoryPrediction{(*c)[0].get<std::string>(), (*c)[1].get<float>()};
  }
  return answer;
}

}  // namespace

Result<QueryResponse> QueryService::SearchImage(std::span<const uint8_t> bytes,
                                                const QueryParams& params) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(params));
  if (bytes.empty()) return Status::InvalidArgument("empty file");
  const std::string digest = Sha256Hex(bytes);
  // The filter is self-delimiting; the category comes last: it may hold any
  // printable text, ':' included.
  const std::string key = "search:" + db_.model_name() + ":" + digest + ":" +
                          std::to_string(params.top_k) + ":" + std::to_string(params.min_score) +
                          ":" + std::to_string(params.search.search_list) + ":" +
                          RerankKey(params.rerank) + RecordFilterKey(params.filter) +
                          params.category;
  // A method the database cannot serve fails before any work (and on a
  // cache hit too).
  PIXSEEK_RETURN_IF_ERROR(RerankStage::Make(db_, params.rerank).status());
  if (auto cached = db_.cache().Get(key)) {
    CachedAnswer answer = DecodeAnswer(*cached);
    QueryResponse response;
    PIXSEEK_ASSIGN_OR_RETURN(response.hits, Join(answer.hits));
    response.category = std::move(answer.category);
    response.cached = true;
    response.took_ms = MillisSince(start);
    return response;
  }
  // Read before searching: an upload or delete that clears the cache while
  // this search runs makes its results stale, and then they are not stored.
  const CacheGeneration generation = db_.cache().generation();

  // The results are stale or new; the query's base feature may still be
  // known (it depends on the network alone).
  std::vector<float> base(static_cast<size_t>(db_.base_dimension()));
  const size_t base_bytes = base.size() * sizeof(float);
  const std::string feature_key = "base:" + db_.model_name() + ":" + digest;
  if (auto known = db_.feature_cache().Get(feature_key); known && known->size() == base_bytes) {
    std::memcpy(base.data(), known->data(), base_bytes);
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, db_.decode_options()));
    PIXSEEK_RETURN_IF_ERROR(db_.EmbedOne(decoded.image, base.data()));
    db_.feature_cache().Put(feature_key,
                            std::string(reinterpret_cast<const char*>(base.data()), base_bytes));
  }
  std::vector<float> feature(static_cast<size_t>(db_.dimension()));
  db_.Project(base.data(), 1, feature.data());
  // Spatial verification matches the query's own pixels, at a resolution of
  // its own (the model's input size is too small for SIFT).
  QueryOrigin origin;
  std::optional<DecodedImage> pixels;
  if (params.rerank.method == RerankMethod::kSpatial) {
    DecodeOptions decode;
    decode.limits = db_.options().limits;
    decode.min_short_side = 480;
    PIXSEEK_ASSIGN_OR_RETURN(pixels, DecodeImage(bytes, decode));
    origin.image = &pixels->image;
  }
  PIXSEEK_ASSIGN_OR_RETURN(QueryResponse response, Answer(base, feature, origin, params));
  db_.cache().PutIfCurrent(key, EncodeAnswer(response), generation);
  response.took_ms = MillisSince(start);
  return response;
}

Result<QueryResponse> QueryService::SearchById(int64_t id, const QueryParams& params) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(params));
  auto vector = db_.index().Get(id);
  if (!vector.ok()) return Status::NotFound("no image with id " + std::to_string(id));
  // A trained classifier reads the stored base feature; without one (or
  // without the feature) the neighbours vote.
  std::vector<float> base;
  if (const TrainedHead* head = db_.head(); head != nullptr && head->has_classifier()) {
    if (auto stored = db_.store().GetFeature(id); stored.ok()) base = std::move(*stored);
  }
  QueryOrigin origin;
  origin.id = id;
  PIXSEEK_ASSIGN_OR_RETURN(QueryResponse response, Answer(base, *vector, origin, params));
  response.took_ms = MillisSince(start);
  return response;
}

Result<QueryResponse> QueryService::Answer(std::span<const float> base,
                                           std::span<const float> query,
                                           const QueryOrigin& origin,
                                           const QueryParams& params) {
  // Enough neighbours for the answer and for the vote on its category.
  PIXSEEK_ASSIGN_OR_RETURN(
      std::vector<QueryHit> nearest,
      Nearest(query, origin, std::max(params.top_k, kCategoryVoters), params));
  QueryResponse response;
  response.category = PredictCategory(db_.head(), base, nearest);
  RecordFilter filter = params.filter;
  if (const std::optional<std::string> label = CategoryFilter(params.category, response.category)) {
    if (filter.label && *filter.label != *label) return response;  // no image has two labels
    filter.label = *label;
  }
  if (!filter.empty()) {
    // The vote above needed the nearest images of any kind; the answer is
    // searched again, inside the images that pass.
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> ids, db_.store().FilterIds(filter));
    const IdFilter allowed(std::move(ids));
    PIXSEEK_ASSIGN_OR_RETURN(nearest, Nearest(query, origin, params.top_k, params, &allowed));
  }
  // (Re-ranked hits need not be in score order: each is checked.)
  for (QueryHit& hit : nearest) {
    if (response.hits.size() == params.top_k) break;
    if (hit.score >= params.min_score) response.hits.push_back(std::move(hit));
  }
  return response;
}

Result<std::vector<QueryHit>> QueryService::Nearest(std::span<const float> query,
                                                    const QueryOrigin& origin, size_t k,
                                                    const QueryParams& params,
                                                    const IdFilter* allowed) {
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<RerankStage> stage,
                           RerankStage::Make(db_, params.rerank));
  SearchParams search = params.search;
  search.filter = allowed;
  const RankFn rank = [&](const float* vectors, size_t n, size_t depth,
                          std::vector<std::vector<SearchHit>>* out) {
    return db_.index().Search(n, vectors, depth, search, out);
  };
  std::vector<std::vector<SearchHit>> results;
  PIXSEEK_RETURN_IF_ERROR(rank(query.data(), 1, stage->Depth(k), &results));
  const RerankQuery one[] = {{query.data(), origin.id, origin.image, {}}};
  PIXSEEK_RETURN_IF_ERROR(stage->Apply(one, k, rank, &results));
  return Join(results[0]);
}

Result<std::vector<QueryHit>> QueryService::Join(const std::vector<SearchHit>& hits) {
  std::vector<int64_t> ids;
  for (const auto& h : hits) ids.push_back(h.id);
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, db_.store().GetMany(ids));
  std::vector<QueryHit> joined;
  size_t r = 0;
  for (const auto& h : hits) {
    if (r < records.size() && records[r].id == h.id) {
      joined.push_back({h.id, h.score, std::move(records[r])});
      ++r;
    }
  }
  return joined;
}

}  // namespace pixseek
