#include "service/manifest.h"

#include <nlohmann/json.hpp>

#include "core/files.h"
#include "pixseek/vector_index.h"

namespace pixseek {

Result<DatabaseManifest> ReadManifest(const std::filesystem::path& file) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file));
  auto damaged = [&](const std::string& why) {
    return Status::DataLoss("damaged manifest " + file.string() + ": " + why);
  };
  DatabaseManifest m;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    m.format_version = j.at("format_version").get<int>();
    m.model = j.at("model").get<std::string>();
    m.model_sha256 = j.value("model_sha256", "");
    m.dimension = j.at("dimension").get<int>();
    m.index_kind = j.value("index_kind", "flat");
    m.created_at = j.value("created_at", int64_t{0});
    m.pca_dimension = j.value("pca_dimension", 0);
    m.pca_whiten = j.value("pca_whiten", false);
    m.metadata_store = j.value("metadata_store", "sqlite");
    m.vector_store = j.value("vector_store", "");
    m.engine = j.value("engine", "");
    m.id = j.value("id", "");
    m.head_sha256 = j.value("head_sha256", "");
    m.index_dir = j.value("index_dir", "");
    m.reindexed_at = j.value("reindexed_at", int64_t{0});
    if (auto pre = j.find("preprocess"); pre != j.end()) {
      m.preprocessing.grey = pre->value("grey", false);
      m.preprocessing.denoise = pre->value("denoise", false);
      m.preprocessing.stored_max_side = pre->value("stored_max_side", 0);
      m.preprocessing.stored_quality = pre->value("stored_quality", 90);
    }
    if (auto dba = j.find("dba"); dba != j.end()) {
      m.dba.n = dba->at("n").get<int>();
      m.dba.alpha = dba->at("alpha").get<float>();
    }
  } catch (const nlohmann::json::exception& e) {
    return damaged(e.what());
  }
  if (m.format_version != DatabaseManifest::kFormatVersion) {
    return Status::FailedPrecondition(
        "database format version " + std::to_string(m.format_version) +
        " is not supported by this pixseek (expects " +
        std::to_string(DatabaseManifest::kFormatVersion) + ")");
  }
  // The index lives in the database directory or in one folder of it that a
  // reindex made ("gen-N"), never elsewhere.
  if (!m.index_dir.empty() && (m.index_dir.find('/') != std::string::npos ||
                               !m.index_dir.starts_with("gen-"))) {
    return damaged("index_dir must be a gen-N folder of the database");
  }
  if (m.dba.n < 0 || m.dba.n > kMaxDbaN || !(m.dba.alpha >= 0 && m.dba.alpha <= kMaxDbaAlpha)) {
    return damaged("dba must have n in [0, " + std::to_string(kMaxDbaN) + "] and alpha in [0, " +
                   std::to_string(kMaxDbaAlpha) + "]");
  }
  if (m.preprocessing.stored_max_side < 0 || m.preprocessing.stored_quality < 1 ||
      m.preprocessing.stored_quality > 100) {
    return damaged("preprocess must have stored_max_side >= 0 and stored_quality in [1, 100]");
  }
  auto kind = FindVectorIndexKind(m.index_kind);
  if (!kind.ok()) {
    return Status::FailedPrecondition("database " + file.parent_path().string() + ": " +
                                      kind.status().message());
  }
  for (const char* key : {"index_params", "disk_params"}) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    auto params = IndexParams::FromJson(it->dump(), (*kind)->params, "the database's manifest");
    if (!params.ok()) return damaged(params.status().message());
    m.index_params = std::move(*params);
    break;
  }
  return m;
}

Status WriteManifest(const std::filesystem::path& file, const DatabaseManifest& m) {
  nlohmann::json j = {{"format_version", m.format_version}, {"model", m.model},
                      {"model_sha256", m.model_sha256},     {"dimension", m.dimension},
                      {"index_kind", m.index_kind},         {"created_at", m.created_at},
                      {"metadata_store", m.metadata_store}};
  if (!m.index_params.empty()) j["index_params"] = nlohmann::json::parse(m.index_params.ToJson());
  if (!m.vector_store.empty()) j["vector_store"] = m.vector_store;
  if (!m.engine.empty()) j["engine"] = m.engine;
  if (!m.id.empty()) j["id"] = m.id;
  if (!m.head_sha256.empty()) j["head_sha256"] = m.head_sha256;
  if (!m.index_dir.empty()) j["index_dir"] = m.index_dir;
  if (m.reindexed_at != 0) j["reindexed_at"] = m.reindexed_at;
  if (m.dba.enabled()) j["dba"] = {{"n", m.dba.n}, {"alpha", m.dba.alpha}};
  if (m.preprocessing != ImagePreprocessing{}) {
    j["preprocess"] = {{"grey", m.preprocessing.grey},
                       {"denoise", m.preprocessing.denoise},
                       {"stored_max_side", m.preprocessing.stored_max_side},
                       {"stored_quality", m.preprocessing.stored_quality}};
  }
  if (m.pca_dimension > 0) {
    j["pca_dimension"] = m.pca_dimension;
    j["pca_whiten"] = m.pca_whiten;
  }
  return WriteFileAtomic(file, j.dump(2) + "\n");
}

std::string DescribePca(const DatabaseManifest& m) {
  if (m.pca_dimension <= 0) return "no PCA";
  return std::string(m.pca_whiten ? "PCA-whitening" : "PCA") + " to " +
         std::to_string(m.pca_dimension) + "-d";
}

}  // namespace pixseek
