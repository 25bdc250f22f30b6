#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/hash.h"
#include "pixseek/services.h"

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
  return Status::Ok();
}

double MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// The cache holds (id, score) pairs; metadata is joined on every answer so it
// is never stale.
std::string EncodeHits(const std::vector<SearchHit>& hits) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& h : hits) j.push_back({h.id, h.score});
  return j.dump();
}

std::vector<SearchHit> DecodeHits(const std::string& text) {
  std::vector<SearchHit> hits;
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return hits;
  for (const auto& e : j) {
    if (e.is_array() && e.size() == 2) hits.push_back({e[0].get<int64_t>(), e[1].get<float>()});
  }
  return hits;
}

}  // namespace

Result<QueryResponse> QueryService::SearchImage(std::span<const uint8_t> bytes,
                                                const QueryParams& params) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(params));
  if (bytes.empty()) return Status::InvalidArgument("empty file");
  const std::string digest = Sha256Hex(bytes);
  const std::string key = "search:" + db_.model_name() + ":" + digest + ":" +
                          std::to_string(params.top_k) + ":" + std::to_string(params.min_score) +
                          ":" + std::to_string(params.search.search_list);
  if (auto cached = db_.cache().Get(key)) return Join(DecodeHits(*cached), true, start);
  // Read before searching: an upload or delete that clears the cache while
  // this search runs makes its results stale, and then they are not stored.
  const CacheGeneration generation = db_.cache().generation();

  // The results are stale or new; the query's feature may still be known.
  std::vector<float> feature(static_cast<size_t>(db_.dimension()));
  const size_t feature_bytes = feature.size() * sizeof(float);
  const std::string feature_key = "feature:" + db_.model_name() + ":" + digest;
  if (auto known = db_.feature_cache().Get(feature_key); known && known->size() == feature_bytes) {
    std::memcpy(feature.data(), known->data(), feature_bytes);
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, db_.decode_options()));
    PIXSEEK_RETURN_IF_ERROR(db_.EmbedOne(decoded.image, feature.data()));
    db_.feature_cache().Put(feature_key,
                            std::string(reinterpret_cast<const char*>(feature.data()), feature_bytes));
  }
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<SearchHit> hits, Nearest(feature, params));
  db_.cache().PutIfCurrent(key, EncodeHits(hits), generation);
  return Join(hits, false, start);
}

Result<QueryResponse> QueryService::SearchById(int64_t id, const QueryParams& params) {
  const auto start = std::chrono::steady_clock::now();
  PIXSEEK_RETURN_IF_ERROR(ValidateParams(params));
  auto vector = db_.index().Get(id);
  if (!vector.ok()) return Status::NotFound("no image with id " + std::to_string(id));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<SearchHit> hits, Nearest(*vector, params));
  return Join(hits, false, start);
}

Result<std::vector<SearchHit>> QueryService::Nearest(std::span<const float> query,
                                                     const QueryParams& params) {
  std::vector<std::vector<SearchHit>> results;
  PIXSEEK_RETURN_IF_ERROR(
      db_.index().Search(1, query.data(), params.top_k, params.search, &results));
  std::vector<SearchHit> hits;
  for (const auto& h : results[0]) {
    if (h.score >= params.min_score) hits.push_back(h);
  }
  return hits;
}

Result<QueryResponse> QueryService::Join(const std::vector<SearchHit>& hits, bool cached,
                                         std::chrono::steady_clock::time_point start) {
  std::vector<int64_t> ids;
  for (const auto& h : hits) ids.push_back(h.id);
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, db_.store().GetMany(ids));
  QueryResponse response;
  response.cached = cached;
  size_t r = 0;
  for (const auto& h : hits) {
    if (r < records.size() && records[r].id == h.id) {
      response.hits.push_back({h.id, h.score, std::move(records[r])});
      ++r;
    }
  }
  response.took_ms = MillisSince(start);
  return response;
}

}  // namespace pixseek
