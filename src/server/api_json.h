// The JSON shapes of the HTTP API (docs/openapi.json, components/schemas).
// Every function here is thread-safe (no shared state).
#ifndef PIXSEEK_SERVER_API_JSON_H_
#define PIXSEEK_SERVER_API_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pixseek/database.h"
#include "pixseek/metadata_store.h"
#include "pixseek/services.h"

namespace pixseek::server {

// "/api/v1/images/ID/thumbnail".
std::string ThumbnailUrl(int64_t id);

// Image schema: {"id","path","name","thumbnail_url","metadata":{...}}.
nlohmann::json RecordJson(const ImageRecord& record);

// SearchResult schema: the Image schema plus "score".
nlohmann::json HitJson(const QueryHit& hit);

// SearchResponse schema: {"results":[...],"took_ms","cached"}.
nlohmann::json SearchResponseJson(const QueryResponse& response);

// Stats schema: {"count","dimension","model","index_kind"}.
nlohmann::json StatsJson(const DatabaseStats& stats);

// BuildJob schema: {"id","path","state","processed","total","failed","indexed",
// "skipped","rate","eta_s","failures":[{"path","reason"}],"error"?}.
nlohmann::json BuildJobJson(const BuildJobStatus& job);

// The Content-Type for a stored file of the given format (ImageFormatName);
// application/octet-stream when unknown.
std::string_view ContentTypeForFormat(std::string_view format);

}  // namespace pixseek::server

#endif  // PIXSEEK_SERVER_API_JSON_H_
