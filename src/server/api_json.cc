#include "server/api_json.h"

namespace pixseek::server {

std::string ThumbnailUrl(int64_t id) {
  return "/api/v1/images/" + std::to_string(id) + "/thumbnail";
}


nlohmann::json RecordJson(const ImageRecord& record) {
  return {
      {"id", record.id},
      {"path", record.path},
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

nlohmann::json HitJson(const QueryHit& hit) {
  nlohmann::json j = RecordJson(hit.record);
  j["id"] = hit.id;
  j["score"] = hit.score;
  return j;
}

nlohmann::json SearchResponseJson(const QueryResponse& response) {
  nlohmann::json results = nlohmann::json::array();
  for (const QueryHit& hit : response.hits) results.push_back(HitJson(hit));
  return {{"results", std::move(results)},
          {"took_ms", response.took_ms},
          {"cached", response.cached}};
}

nlohmann::json StatsJson(const DatabaseStats& stats) {
  nlohmann::json j = {{"count", stats.count},
                      {"dimension", stats.dimension},
                      {"model", stats.model},
                      {"index_kind", stats.index_kind}};
  if (!stats.index.empty()) {
    nlohmann::json index = nlohmann::json::object();
    for (const IndexStat& stat : stats.index) {
      std::visit([&](const auto& v) { index[stat.name] = v; }, stat.value);
    }
    j["index"] = std::move(index);
  }
  return j;
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

nlohmann::json BuildJobJson(const BuildJobStatus& job) {
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : job.failures) failures.push_back({{"path", f.path}, {"reason", f.reason}});
  nlohmann::json out = {{"id", job.id},           {"path", job.path},         {"state", job.state},
              {"processed", job.processed}, {"total", job.total},   {"failed", job.failed},
              {"indexed", job.indexed}, {"skipped", job.skipped},   {"rate", job.rate},
              {"eta_s", job.eta_s},     {"failures", std::move(failures)}};
  if (!job.error.empty()) out["error"] = job.error;
  return out;
}

}  // namespace pixseek::server

namespace pixseek {

std::string SearchResponseToJson(const QueryResponse& response) {
  return server::SearchResponseJson(response).dump();
}

std::string StatsToJson(const DatabaseStats& stats) { return server::StatsJson(stats).dump(); }

}  // namespace pixseek
