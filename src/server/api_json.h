// The JSON shapes of the HTTP API (docs/openapi.json, components/schemas).
// Every function here is thread-safe (no shared state).
#ifndef PIXSEEK_SERVER_API_JSON_H_
#define PIXSEEK_SERVER_API_JSON_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "pixseek/database.h"
#include "pixseek/metadata_store.h"
#include "pixseek/server.h"
#include "pixseek/services.h"
#include "pixseek/train_service.h"

namespace pixseek::server {

// "/api/v1/images/ID/thumbnail".
std::string ThumbnailUrl(int64_t id);

// How answers show records' paths (ServerOptions::hide_paths).
struct PathView {
  // false: paths as recorded, an upload's resolved under db_dir (absolute).
  bool hide = false;
  // The database directory: uploads lie under it.
  std::filesystem::path db_dir;
  // Folders a record may have been built from (the import roots, as given
  // and without links), tried before guessing from the record's label.
  std::vector<std::filesystem::path> roots;
};

// The view `options` ask for: hide_paths, by default hidden exactly when
// API keys are set; the import roots as given and without links.
PathView PathViewFor(const ServerOptions& options, const std::filesystem::path& db_dir);

// `record`'s path as an answer shows it. Hidden, it is never absolute: an
// upload's path relative to the database directory ("images/HH/SHA.ext");
// a built file's relative to the folder it was built from: the longest
// root under which it lies with its label as the first folder (or no
// folder when it has no label), else the part from the nearest folder named
// as its label (a build labels a file by its first folder under the root),
// else its file name.
std::string ShownPath(const ImageRecord& record, const PathView& view);

// Image schema: {"id","path","name","thumbnail_url","metadata":{...}}, the
// path as `view` shows it.
nlohmann::json RecordJson(const ImageRecord& record, const PathView& view = {});

// SearchResult schema: the Image schema plus "score".
nlohmann::json HitJson(const QueryHit& hit, const PathView& view = {});

// SearchResponse schema: {"results":[...],"took_ms","cached"}, and
// "category":{"label","confidence"} when one was predicted.
nlohmann::json SearchResponseJson(const QueryResponse& response, const PathView& view = {});

// Stats schema: {"count","dimension","model","index_kind","base_dimension",
// "base_features","trained_head","preprocess":{"grey","denoise",
// "stored_max_side","stored_quality"},"index"?}.
nlohmann::json StatsJson(const DatabaseStats& stats);

// BuildJob schema: {"id","path","state","processed","total","failed","indexed",
// "skipped","rate","eta_s","failures":[{"path","reason"}],"error"?}.
nlohmann::json BuildJobJson(const BuildJobStatus& job, const PathView& view = {});

// LearningJob schema: {"id","kind","model","state","done","total","rate",
// "eta_s","loss"?,"validation_map"?,"best_validation_map"?,"error"?,
// "result"?} (train and reindex jobs).
nlohmann::json LearningJobJson(const LearningJobStatus& job);

// The TrainRequest schema (POST /api/v1/train) read into a request:
// "path" and "name" required; "loss", "margin", "xbm", "koleo", "dim",
// "epochs", "batch_classes", "per_class", "learning_rate", "patience",
// "split", "val_fraction", "seed", "fine_tune", "trainable_blocks" optional,
// with the CLI's defaults and ranges. InvalidArgument names a bad field.
Result<TrainRequest> TrainRequestFromJson(const nlohmann::json& body);

// The Content-Type for a stored file of the given format (ImageFormatName);
// application/octet-stream when unknown.
std::string_view ContentTypeForFormat(std::string_view format);

}  // namespace pixseek::server

#endif  // PIXSEEK_SERVER_API_JSON_H_
