#include "pixseek/database.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/files.h"
#include "core/hash.h"
#include "core/url.h"
#include "embed/embed_batcher.h"
#include "pixseek/model_registry.h"
#include "service/fit.h"

namespace pixseek {
namespace {

constexpr int kFormatVersion = 1;
constexpr char kManifestName[] = "pixseek.json";
// Databases made before the disk index existed have no index_kind and are
// flat; new ones default to disk.
constexpr char kIndexKind[] = "flat";
constexpr char kDefaultIndexKind[] = "disk";

struct Manifest {
  int format_version = kFormatVersion;
  std::string model;
  std::string model_sha256;
  int dimension = 0;
  std::string index_kind = kIndexKind;
  // The disk index's parameters as chosen at creation (absent in databases
  // made before they were recorded).
  std::optional<DiskIndexParams> disk_params;
  // The metadata store without its password ("sqlite" for the database's own
  // SQLite file, the default).
  std::string metadata_store = "sqlite";
  int64_t created_at = 0;
  // PCA learned at creation (pca.bin; 0 = none): dimension is its output.
  int pca_dimension = 0;
  bool pca_whiten = false;
  // What ran an ONNX model ("opencv" or "libtorch"; their vectors differ
  // slightly, so a database keeps the one it was built with). Absent in
  // databases from before the libtorch engine: they are "opencv".
  std::string engine;
};

Result<Manifest> ReadManifest(const std::filesystem::path& file) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file));
  try {
    auto j = nlohmann::json::parse(text);
    Manifest m;
    m.format_version = j.at("format_version").get<int>();
    m.model = j.at("model").get<std::string>();
    m.model_sha256 = j.value("model_sha256", "");
    m.dimension = j.at("dimension").get<int>();
    m.index_kind = j.value("index_kind", kIndexKind);
    m.created_at = j.value("created_at", int64_t{0});
    m.pca_dimension = j.value("pca_dimension", 0);
    m.pca_whiten = j.value("pca_whiten", false);
    m.metadata_store = j.value("metadata_store", "sqlite");
    m.engine = j.value("engine", "");
    if (auto it = j.find("disk_params"); it != j.end()) {
      auto params = DiskIndexParams::FromJson(it->dump());
      if (!params.ok()) {
        return Status::DataLoss("damaged manifest " + file.string() + ": " +
                                params.status().message());
      }
      m.disk_params = *params;
    }
    if (m.format_version != kFormatVersion) {
      return Status::FailedPrecondition("database format version " +
                                        std::to_string(m.format_version) +
                                        " is not supported by this pixseek (expects " +
                                        std::to_string(kFormatVersion) + ")");
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss("damaged manifest " + file.string() + ": " + e.what());
  }
}

Status WriteManifest(const std::filesystem::path& file, const Manifest& m) {
  nlohmann::json j = {{"format_version", m.format_version}, {"model", m.model},
                      {"model_sha256", m.model_sha256},     {"dimension", m.dimension},
                      {"index_kind", m.index_kind},         {"created_at", m.created_at},
                      {"metadata_store", m.metadata_store}};
  if (m.disk_params) j["disk_params"] = nlohmann::json::parse(m.disk_params->ToJson());
  if (!m.engine.empty()) j["engine"] = m.engine;
  if (m.pca_dimension > 0) {
    j["pca_dimension"] = m.pca_dimension;
    j["pca_whiten"] = m.pca_whiten;
  }
  return WriteFileAtomic(file, j.dump(2) + "\n");
}

// The model used when the default one is neither installed nor downloadable.
constexpr char kOfflineModel[] = "sift-vlad";

// Finds the model, pulling the default one when allowed. A known model learned
// per collection (sift-vlad) is never installed: its file is in the database
// directory `dir`. With `quiet_unavailable`, a failed download returns the
// plain Unavailable status (the caller falls back).
Result<InstalledModel> FindModel(ModelRegistry& registry, const std::string& name, bool pull,
                                 const std::filesystem::path& dir,
                                 bool quiet_unavailable = false) {
  for (const KnownModel& k : KnownModels()) {
    if (k.name == name && LearnsPerCollection(k.card)) {
      InstalledModel m;
      m.card = k.card;
      m.dir = dir;
      m.model_file = dir / k.card.file;
      return m;
    }
  }
  auto found = registry.Find(name);
  if (found.ok() || !pull || found.status().code() != StatusCode::kNotFound) return found;
  bool known = std::any_of(KnownModels().begin(), KnownModels().end(),
                           [&](const KnownModel& k) { return k.name == name; });
  if (!known) return found;
  std::fprintf(stderr, "model '%s' is not installed; downloading it...\n", name.c_str());
  auto pulled = registry.Pull(name, std::nullopt);
  if (!pulled.ok() && quiet_unavailable && pulled.status().code() == StatusCode::kUnavailable) {
    return pulled;
  }
  if (!pulled.ok()) {
    return Status(pulled.status().code(),
                  pulled.status().message() + "\nNo model is available. Either connect to the "
                  "network and run `pixseek model pull " + name + "`, or copy the model file "
                  "to this machine and run `pixseek model import FILE`.");
  }
  return pulled;
}

// The metadata store's URL for `options` (dir already absolute).
std::string MetadataUrl(const DatabaseOptions& options) {
  if (!options.metadata_url.empty()) return options.metadata_url;
  return "sqlite://" + (options.dir / "metadata.db").string();
}

// The URL of one of the database's two caches, `kind` "r" (search results,
// cleared whenever the database changes) or "f" (query features, which do not
// depend on the stored images and so survive those changes). In Redis each
// gets a key prefix of this database's own (after the URL's prefix, if any):
// databases sharing one Redis must never see each other's results, and a
// Clear of the results must not drop the features.
std::string CacheUrl(const DatabaseOptions& options, const std::string& kind) {
  const std::string& url = options.cache_url;
  if (!url.starts_with("redis")) return url;
  if (auto at = url.find("prefix="); at != std::string::npos) {
    const size_t end = std::min(url.find('&', at), url.size());
    return url.substr(0, end) + kind + ":" + url.substr(end);
  }
  const std::string dir = options.dir.string();
  const std::string id = Sha256Hex({reinterpret_cast<const uint8_t*>(dir.data()), dir.size()});
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "prefix=pixseek:" +
         id.substr(0, 16) + ":" + kind + ":";
}

// What the manifest records of a metadata URL: "sqlite" for the database's own
// file, otherwise the URL without its password.
std::string RecordedStore(const DatabaseOptions& options) {
  const std::string url = MetadataUrl(options);
  if (url == "sqlite://" + (options.dir / "metadata.db").string()) return "sqlite";
  return RedactUrl(url);
}

}  // namespace

Result<std::unique_ptr<Database>> Database::Open(const DatabaseOptions& options, bool create) {
  std::unique_ptr<Database> db(new Database());
  db->options_ = options;
  if (db->options_.home.empty()) db->options_.home = DefaultPixseekHome();
  if (options.dir.empty()) return Status::InvalidArgument(
        "no database directory given (--db, $PIXSEEK_DB or [database] dir in the config file)");
  db->options_.dir = std::filesystem::absolute(options.dir).lexically_normal();
  const auto& dir = db->options_.dir;

  const auto manifest_file = dir / kManifestName;
  std::error_code ec;
  const bool exists = std::filesystem::exists(manifest_file, ec);
  if (!exists) {
    if (!create || options.read_only) {
      return Status::NotFound("no pixseek database at " + dir.string() +
                              " (create one with `pixseek build DIR --db " + dir.string() + "`)");
    }
    if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec)) {
      return Status::InvalidArgument(dir.string() + " exists and is not a directory");
    }
    if (std::filesystem::is_directory(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
      return Status::InvalidArgument(dir.string() +
                                     " is a non-empty directory without a pixseek database; "
                                     "choose a new or empty directory for --db");
    }
  }

  ModelRegistry registry(db->options_.home);
  Manifest manifest;
  if (exists) {
    PIXSEEK_ASSIGN_OR_RETURN(manifest, ReadManifest(manifest_file));
    if (!options.model.empty() && options.model != manifest.model) {
      return Status::FailedPrecondition("database " + dir.string() + " was built with model '" +
                                        manifest.model + "'; it cannot be used with model '" +
                                        options.model + "'");
    }
    // (Whitening asked for may have been skipped on a small sample, so only
    // the dimension must match.)
    if (options.pca.dimension > 0 && options.pca.dimension != manifest.pca_dimension) {
      return Status::FailedPrecondition(
          "database " + dir.string() + " was built with " +
          (manifest.pca_dimension > 0 ? "PCA" + std::string(manifest.pca_whiten ? "-whitening" : "") +
                                            " to " + std::to_string(manifest.pca_dimension) + "-d"
                                      : std::string("no PCA")) +
          "; its post-processing cannot be changed (build a new database)");
    }
  } else {
    manifest.model = options.model.empty() ? DefaultModelName() : options.model;
  }
  // No --model, the default not installed and no network: a new database
  // falls back to features that need no download rather than failing.
  const bool may_fall_back = !exists && options.model.empty() && options.pull_missing_model;
  auto found = FindModel(registry, manifest.model, options.pull_missing_model, dir, may_fall_back);
  if (may_fall_back && !found.ok() && found.status().code() == StatusCode::kUnavailable) {
    std::fprintf(stderr,
                 "pixseek: warning: the default model '%s' is not installed and cannot be "
                 "downloaded (%s); building with '%s' instead: classical SIFT features learned "
                 "from these images, no download needed, good for near-duplicates but weaker "
                 "on similar-looking content. For better results later, run `pixseek model pull "
                 "%s` (or `pixseek model import FILE`) and build a new database.\n",
                 manifest.model.c_str(), found.status().message().c_str(), kOfflineModel,
                 manifest.model.c_str());
    manifest.model = kOfflineModel;
    found = FindModel(registry, manifest.model, false, dir);
  }
  PIXSEEK_ASSIGN_OR_RETURN(InstalledModel model, std::move(found));
  if (exists && model.card.runtime == "onnx") {
    model.card.engine = manifest.engine.empty() ? "opencv" : manifest.engine;
  }
  // Parts learned from the collection (codebook, PCA): reopened from dir, or
  // learned now for a new database and written below, before the manifest.
  std::vector<std::pair<std::string, std::string>> fitted_files;
  if (exists) {
    PIXSEEK_ASSIGN_OR_RETURN(db->embedder_,
                             OpenFittedEmbedder(model, dir, manifest.pca_dimension));
  } else if (NeedsFit(model.card, options.pca)) {
    FitInputs inputs;
    inputs.root = options.fit_root;
    inputs.max_images = options.fit_sample;
    inputs.limits = options.limits;
    inputs.threads = options.threads;
    inputs.pca = options.pca;
    PIXSEEK_ASSIGN_OR_RETURN(FittedEmbedder fitted, FitEmbedder(model, inputs));
    db->embedder_ = std::move(fitted.embedder);
    fitted_files = std::move(fitted.files);
    manifest.pca_dimension = options.pca.dimension;
    // What was applied (whitening is skipped on too small a sample).
    manifest.pca_whiten = options.pca.dimension > 0 && options.pca.whiten &&
                          fitted.whitened;
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(db->embedder_, OpenEmbedder(model.card, model.model_file));
  }
  db->model_name_ = manifest.model;
  if (EmbedBatcher::Supports(*db->embedder_) &&
      EmbedBatcher::EffectiveMaxBatch(*db->embedder_, options.batching) > 1) {
    db->batcher_ = std::make_unique<EmbedBatcher>(*db->embedder_, db->embed_mu_, options.batching);
  }

  if (exists) {
    if (manifest.dimension != db->embedder_->dimension()) {
      return Status::FailedPrecondition(
          "database " + dir.string() + " holds " + std::to_string(manifest.dimension) +
          "-d vectors but the installed model '" + manifest.model + "' gives " +
          std::to_string(db->embedder_->dimension()) + "-d vectors");
    }
    if (!manifest.model_sha256.empty() && !model.card.sha256.empty() &&
        manifest.model_sha256 != model.card.sha256) {
      return Status::FailedPrecondition("the installed model '" + manifest.model +
                                        "' is not the file this database was built with "
                                        "(sha256 differs); its vectors would not be comparable");
    }
  } else {
    PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(dir));
    for (const auto& [name, bytes] : fitted_files) {
      PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(dir / name, bytes));
    }
    manifest.model_sha256 = model.card.sha256;
    if (model.card.runtime == "onnx") manifest.engine = db->embedder_->card().engine;
    manifest.dimension = db->embedder_->dimension();
    manifest.created_at = static_cast<int64_t>(std::time(nullptr));
  }

  if (!options.read_only) {
    PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(dir / "thumbs"));
    PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(dir / "images"));
  }
  if (!exists) {
    manifest.index_kind = options.index_kind.empty() ? kDefaultIndexKind : options.index_kind;
  }
  if (manifest.index_kind == "flat") {
    FlatIndexOptions index_options;
    index_options.num_threads = options.threads;
    index_options.read_only = options.read_only;
    PIXSEEK_ASSIGN_OR_RETURN(db->index_,
                             OpenFlatIndex(dir / "vectors.flat", manifest.dimension, index_options));
  } else if (manifest.index_kind == "disk") {
    DiskIndexOptions index_options = options.disk;
    if (exists) {
      if (manifest.disk_params) manifest.disk_params->ApplyTo(index_options);
      options.disk_params.ApplyTo(index_options);
    } else {
      options.disk_params.ApplyTo(index_options);
      manifest.disk_params = DiskIndexParams::From(index_options);
    }
    index_options.num_threads = options.threads;
    index_options.read_only = options.read_only;
    PIXSEEK_ASSIGN_OR_RETURN(auto disk,
                             OpenDiskIndex(dir / "index", manifest.dimension, index_options));
    db->disk_index_ = disk.get();
    db->index_ = std::move(disk);
  } else {
    return Status::InvalidArgument("unknown index kind '" + manifest.index_kind +
                                   "' (expected disk or flat)");
  }
  const std::string store = RecordedStore(db->options_);
  if (exists && store != manifest.metadata_store) {
    return Status::FailedPrecondition(
        "database " + dir.string() + " keeps its metadata in " +
        (manifest.metadata_store == "sqlite" ? dir.string() + "/metadata.db"
                                             : manifest.metadata_store) +
        " but this command was given " + (store == "sqlite" ? "the SQLite default" : store) +
        "; set PIXSEEK_METADATA_URL (or metadata_url in the config file) to match");
  }
  manifest.metadata_store = store;
  PIXSEEK_ASSIGN_OR_RETURN(db->store_, OpenMetadataStore(MetadataUrl(db->options_)));
  PIXSEEK_ASSIGN_OR_RETURN(db->cache_,
                           OpenCache(CacheUrl(db->options_, "r"), options.cache_bytes));
  PIXSEEK_ASSIGN_OR_RETURN(db->feature_cache_,
                           OpenCache(CacheUrl(db->options_, "f"), options.cache_bytes / 4));

  if (!exists) {
    PIXSEEK_RETURN_IF_ERROR(db->store_->SetSetting("model", manifest.model));
    PIXSEEK_RETURN_IF_ERROR(
        db->store_->SetSetting("dimension", std::to_string(manifest.dimension)));
    // The manifest is written last: a directory without one is not a database
    // yet, so a crash during creation leaves nothing half-made behind.
    PIXSEEK_RETURN_IF_ERROR(WriteManifest(manifest_file, manifest));
  }
  // A reader leaves repairs to the writer (it may be mid-insert right now).
  if (!options.read_only) PIXSEEK_RETURN_IF_ERROR(db->Reconcile());
  return db;
}

Database::~Database() = default;

Status Database::Reconcile() {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> stored, store_->AllIds());
  std::vector<int64_t> indexed = index_->Ids();
  std::vector<int64_t> vectors_only, metadata_only;
  std::set_difference(indexed.begin(), indexed.end(), stored.begin(), stored.end(),
                      std::back_inserter(vectors_only));
  std::set_difference(stored.begin(), stored.end(), indexed.begin(), indexed.end(),
                      std::back_inserter(metadata_only));
  if (!vectors_only.empty()) {
    std::fprintf(stderr, "pixseek: removing %zu vectors without metadata (interrupted write)\n",
                 vectors_only.size());
    PIXSEEK_RETURN_IF_ERROR(index_->Remove(vectors_only));
  }
  if (!metadata_only.empty()) {
    std::fprintf(stderr,
                 "pixseek: removing %zu metadata rows without a vector (interrupted write)\n",
                 metadata_only.size());
    for (int64_t id : metadata_only) {
      Status s = store_->Remove(id);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
    }
  }
  return Status::Ok();
}

DecodeOptions Database::decode_options() const {
  return DecodeOptionsFor(embedder_->card(), options_.limits);
}

Status Database::Embed(std::span<const Image* const> images, float* out) {
  std::lock_guard<std::mutex> lock(embed_mu_);
  return embedder_->Embed(images, out);
}

Status Database::EmbedPreprocessed(const float* input, size_t n, float* out) {
  std::lock_guard<std::mutex> lock(embed_mu_);
  return embedder_->EmbedPreprocessed(input, n, out);
}

Status Database::EmbedOne(const Image& image, float* out) {
  if (batcher_) return batcher_->Embed(image, out);
  const Image* images[] = {&image};
  return Embed(images, out);
}

EmbedBatcherStats Database::batcher_stats() const {
  return batcher_ ? batcher_->stats() : EmbedBatcherStats{};
}

std::filesystem::path Database::ThumbnailPath(int64_t id) const {
  char shard[8];
  std::snprintf(shard, sizeof shard, "%02d", static_cast<int>(id % 100));
  return options_.dir / "thumbs" / shard / (std::to_string(id) + ".jpg");
}

std::filesystem::path Database::UploadPath(const std::string& sha256,
                                           std::string_view format) const {
  std::string ext(format == "jpeg" ? "jpg" : format);
  return options_.dir / "images" / sha256.substr(0, 2) / (sha256 + "." + ext);
}

Result<int64_t> Database::Insert(const ImageRecord& record, std::span<const float> feature,
                                 std::span<const uint8_t> thumbnail_jpeg) {
  if (feature.size() != static_cast<size_t>(dimension())) {
    return Status::InvalidArgument("feature has " + std::to_string(feature.size()) +
                                   " values, database expects " + std::to_string(dimension()));
  }
  if (options_.read_only) return Status::FailedPrecondition("database is open read-only");
  std::lock_guard<std::mutex> lock(write_mu_);
  PIXSEEK_ASSIGN_OR_RETURN(int64_t id, store_->Insert(record));
  auto undo = [&](Status cause) {
    (void)store_->Remove(id);
    std::error_code ec;
    std::filesystem::remove(ThumbnailPath(id), ec);
    return cause;
  };
  // A thumbnail can be regenerated from the file, so it is written without
  // fsync; the vector log and the metadata are the durable record.
  auto thumb = ThumbnailPath(id);
  Status s = EnsureDirectory(thumb.parent_path());
  if (!s.ok()) return undo(s);
  {
    std::ofstream out(thumb, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(thumbnail_jpeg.data()),
              static_cast<std::streamsize>(thumbnail_jpeg.size()));
    if (!out) return undo(Status::Internal("cannot write thumbnail " + thumb.string()));
  }
  s = index_->Add(1, &id, feature.data());
  if (!s.ok()) return undo(s);
  cache_->Clear();
  return id;
}

Status Database::Remove(int64_t id) {
  if (options_.read_only) return Status::FailedPrecondition("database is open read-only");
  std::lock_guard<std::mutex> lock(write_mu_);
  PIXSEEK_ASSIGN_OR_RETURN(ImageRecord record, store_->Get(id));
  const int64_t one[] = {id};
  PIXSEEK_RETURN_IF_ERROR(index_->Remove(one));
  cache_->Clear();
  PIXSEEK_RETURN_IF_ERROR(store_->Remove(id));
  std::error_code ec;
  std::filesystem::remove(ThumbnailPath(id), ec);
  // Files uploaded over HTTP belong to the database; files indexed in place
  // belong to the user and are never deleted.
  const auto uploads = (options_.dir / "images").lexically_normal().string() + "/";
  if (record.path.rfind(uploads, 0) == 0) std::filesystem::remove(record.path, ec);
  return Status::Ok();
}

Result<DatabaseStats> Database::Stats() const {
  DatabaseStats s;
  // The searchable images. Metadata may hold one more row for an insert in
  // flight (or cut off by a crash, until the next writer reconciles); a
  // vector is appended last, so the index never holds an unfinished image.
  s.count = static_cast<int64_t>(index_->size());
  s.dimension = embedder_->dimension();
  s.model = model_name_;
  s.index_kind = index_->kind();
  if (disk_index_ != nullptr) s.disk = disk_index_->stats();
  return s;
}

Status Database::Compact() {
  if (disk_index_ == nullptr) return Status::Ok();
  return disk_index_->Compact();
}

Status Database::CompactIfNeeded() {
  if (disk_index_ == nullptr) return Status::Ok();
  return disk_index_->CompactIfNeeded();
}

}  // namespace pixseek
