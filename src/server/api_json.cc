#include "server/api_json.h"

#include <iterator>
#include <system_error>

namespace pixseek::server {

std::string ThumbnailUrl(int64_t id) {
  return "/api/v1/images/" + std::to_string(id) + "/thumbnail";
}

namespace {

// `rel` (a path relative to a root) is where a build from that root would
// have put a file with `label`: under the folder named as the label, or
// straight in the root when there is none.
bool FitsLabel(const std::filesystem::path& rel, const std::string& label) {
  if (rel.empty() || *rel.begin() == ".." || rel.is_absolute()) return false;
  const auto parts = std::distance(rel.begin(), rel.end());
  return label.empty() ? parts == 1 : parts > 1 && *rel.begin() == label;
}

}  // namespace

PathView PathViewFor(const ServerOptions& options, const std::filesystem::path& db_dir) {
  PathView view;
  view.hide = options.hide_paths.value_or(!options.api_keys.empty());
  view.db_dir = db_dir;
  for (const std::string& root : options.import_roots) {
    std::error_code ec;
    if (auto given = std::filesystem::absolute(root, ec); !ec && !root.empty()) {
      view.roots.push_back(given.lexically_normal());
    }
    if (auto real = std::filesystem::canonical(root, ec); !ec) view.roots.push_back(real);
  }
  return view;
}

std::string ShownPath(const ImageRecord& record, const PathView& view) {
  const std::filesystem::path path = std::filesystem::path(record.path).lexically_normal();
  if (!view.hide) {
    // An upload's path resolved, as Database::FilePath does: the absolute
    // path of the file, as answers showed before uploads were recorded
    // relative.
    return path.is_relative() && !view.db_dir.empty() ? (view.db_dir / path).string() : record.path;
  }
  if (path.is_relative()) return path.generic_string();  // an upload, under the database
  if (!view.db_dir.empty()) {
    const auto rel = path.lexically_relative(view.db_dir);
    if (!rel.empty() && *rel.begin() != "..") return rel.generic_string();
  }
  std::filesystem::path best;
  size_t best_length = 0;
  for (const auto& root : view.roots) {
    const auto rel = path.lexically_relative(root);
    const size_t length = root.native().size();
    if (FitsLabel(rel, record.label) && length >= best_length) {
      best = rel;
      best_length = length;
    }
  }
  if (!best.empty()) return best.generic_string();
  if (!record.label.empty()) {
    // The nearest folder named as the label: the shortest path that fits.
    std::vector<std::filesystem::path> folders(path.begin(), path.end());
    if (!folders.empty()) folders.pop_back();  // the file name
    for (size_t i = folders.size(); i-- > 0;) {
      if (folders[i] != record.label) continue;
      std::filesystem::path shown;
      for (size_t j = i; j < folders.size(); ++j) shown /= folders[j];
      return (shown / path.filename()).generic_string();
    }
  }
  return path.filename().generic_string();
}

nlohmann::json RecordJson(const ImageRecord& record, const PathView& view) {
  return {
      {"id", record.id},
      {"path", ShownPath(record, view)},
      {"name", record.name},
      {"thumbnail_url", ThumbnailUrl(record.id)},
      {"metadata",
       {
           {"width", record.width},
           {"height", record.height},
           {"format", record.format},
           {"size_bytes", record.size_bytes},
           {"label", record.label},
           {"sha256", record.sha256},
           {"exif_datetime", record.exif_datetime},
           {"added_at", record.added_at},
       }},
  };
}

nlohmann::json HitJson(const QueryHit& hit, const PathView& view) {
  nlohmann::json j = RecordJson(hit.record, view);
  j["id"] = hit.id;
  j["score"] = hit.score;
  return j;
}

nlohmann::json SearchResponseJson(const QueryResponse& response, const PathView& view) {
  nlohmann::json results = nlohmann::json::array();
  for (const QueryHit& hit : response.hits) results.push_back(HitJson(hit, view));
  nlohmann::json out = {{"results", std::move(results)},
                        {"took_ms", response.took_ms},
                        {"cached", response.cached}};
  if (response.category) {
    out["category"] = {{"label", response.category->label},
                       {"confidence", response.category->confidence}};
  }
  return out;
}

nlohmann::json StatsJson(const DatabaseStats& stats) {
  nlohmann::json j = {{"count", stats.count},
                      {"dimension", stats.dimension},
                      {"model", stats.model},
                      {"index_kind", stats.index_kind},
                      {"base_dimension", stats.base_dimension},
                      {"base_features", stats.base_features},
                      {"trained_head", stats.trained_head},
                      {"preprocess",
                       {{"grey", stats.preprocessing.grey},
                        {"denoise", stats.preprocessing.denoise},
                        {"stored_max_side", stats.preprocessing.stored_max_side},
                        {"stored_quality", stats.preprocessing.stored_quality}}}};
  // Redacted when recorded (the manifest never holds a password or token).
  if (!stats.vector_store.empty()) j["vector_store"] = stats.vector_store;
  if (!stats.index.empty()) {
    nlohmann::json index = nlohmann::json::object();
    for (const IndexStat& stat : stats.index) {
      std::visit([&](const auto& v) { index[stat.name] = v; }, stat.value);
    }
    j["index"] = std::move(index);
  }
  return j;
}

nlohmann::json LearningJobJson(const LearningJobStatus& job) {
  nlohmann::json j = {{"id", job.id},       {"kind", job.kind},   {"model", job.model},
                      {"state", job.state}, {"done", job.done},   {"total", job.total},
                      {"rate", job.rate},   {"eta_s", job.eta_s}};
  if (job.kind == "train") {
    j["loss"] = job.loss;
    j["validation_map"] = job.validation_map;
    j["best_validation_map"] = job.best_validation_map;
  }
  if (!job.error.empty()) j["error"] = job.error;
  if (!job.result.empty()) j["result"] = nlohmann::json::parse(job.result, nullptr, false);
  return j;
}

namespace {

// Reads an optional number field within [lo, hi] into *out.
template <typename T>
Status ReadNumber(const nlohmann::json& body, const char* key, double lo, double hi, T* out) {
  auto it = body.find(key);
  if (it == body.end()) return Status::Ok();
  if (!it->is_number()) return Status::InvalidArgument(std::string(key) + " must be a number");
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    return Status::InvalidArgument(std::string(key) + " must be between " + std::to_string(lo) +
                                   " and " + std::to_string(hi));
  }
  *out = static_cast<T>(v);
  return Status::Ok();
}

Result<std::string> ReadText(const nlohmann::json& body, const char* key, std::string fallback) {
  auto it = body.find(key);
  if (it == body.end()) return fallback;
  if (!it->is_string()) return Status::InvalidArgument(std::string(key) + " must be a string");
  return it->get<std::string>();
}

}  // namespace

Result<TrainRequest> TrainRequestFromJson(const nlohmann::json& body) {
  if (!body.is_object()) {
    return Status::InvalidArgument("send a JSON body {\"path\": DIR, \"name\": NAME, ...}");
  }
  TrainRequest r;
  MetricTrainOptions& m = r.metric;
  PIXSEEK_ASSIGN_OR_RETURN(std::string path, ReadText(body, "path", ""));
  PIXSEEK_ASSIGN_OR_RETURN(r.name, ReadText(body, "name", ""));
  if (path.empty() || r.name.empty()) {
    return Status::InvalidArgument("\"path\" (the folder the images were built from) and "
                                   "\"name\" (the new model) are required");
  }
  r.root = path;
  PIXSEEK_ASSIGN_OR_RETURN(std::string loss, ReadText(body, "loss", "contrastive"));
  PIXSEEK_ASSIGN_OR_RETURN(m.loss, ParseMetricLoss(loss));
  PIXSEEK_ASSIGN_OR_RETURN(std::string split, ReadText(body, "split", "none"));
  PIXSEEK_ASSIGN_OR_RETURN(r.split, ParseDataSplit(split));
  PIXSEEK_ASSIGN_OR_RETURN(std::string fine_tune, ReadText(body, "fine_tune", "head"));
  PIXSEEK_ASSIGN_OR_RETURN(r.fine_tune, ParseFineTune(fine_tune));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "margin", 0, 2, &m.margin));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "xbm", 0, 1 << 20, &m.xbm));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "koleo", 0, 10, &m.koleo));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "dim", 0, 1 << 16, &m.dimension));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "epochs", 1, 10000, &m.epochs));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "batch_classes", 2, 4096, &m.batch_classes));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "per_class", 2, 4096, &m.per_class));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "learning_rate", 1e-7, 10, &m.learning_rate));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "patience", 1, 10000, &m.patience));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "val_fraction", 0.01, 0.9, &r.validation_fraction));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "seed", 0, 4294967295.0, &m.seed));
  PIXSEEK_RETURN_IF_ERROR(ReadNumber(body, "trainable_blocks", 1, 100, &r.trainable_blocks));
  PIXSEEK_RETURN_IF_ERROR(
      ReadNumber(body, "backbone_learning_rate", 1e-9, 1, &r.backbone_learning_rate));
  return r;
}

std::string_view ContentTypeForFormat(std::string_view format) {
  if (format == "jpeg") return "image/jpeg";
  if (format == "png") return "image/png";
  if (format == "webp") return "image/webp";
  if (format == "bmp") return "image/bmp";
  if (format == "tiff") return "image/tiff";
  if (format == "gif") return "image/gif";
  return "application/octet-stream";
}

nlohmann::json BuildJobJson(const BuildJobStatus& job, const PathView& view) {
  // Hidden: a failed file's path relative to the build's folder (the
  // client's own input, shown as given), and that folder named so in the
  // reasons.
  auto shown = [&](const std::string& text) {
    if (!view.hide || job.path.empty()) return text;
    const std::filesystem::path rel = std::filesystem::path(text).lexically_relative(job.path);
    if (!rel.empty() && *rel.begin() != "..") return rel.string();
    std::string out = text;
    for (size_t at; (at = out.find(job.path)) != std::string::npos;) {
      out.replace(at, job.path.size(), "the build's folder");
    }
    return out;
  };
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : job.failures) {
    failures.push_back({{"path", shown(f.path)}, {"reason", shown(f.reason)}});
  }
  nlohmann::json out = {{"id", job.id},           {"path", job.path},         {"state", job.state},
              {"processed", job.processed}, {"total", job.total},   {"failed", job.failed},
              {"indexed", job.indexed}, {"skipped", job.skipped},   {"rate", job.rate},
              {"eta_s", job.eta_s},     {"failures", std::move(failures)}};
  if (!job.error.empty()) out["error"] = shown(job.error);
  return out;
}

}  // namespace pixseek::server

namespace pixseek {

std::string SearchResponseToJson(const QueryResponse& response) {
  return server::SearchResponseJson(response).dump();
}

std::string StatsToJson(const DatabaseStats& stats) { return server::StatsJson(stats).dump(); }

}  // namespace pixseek
