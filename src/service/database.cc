#include "pixseek/database.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/files.h"
#include "pixseek/model_registry.h"

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
  int64_t created_at = 0;
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
                      {"index_kind", m.index_kind},         {"created_at", m.created_at}};
  return WriteFileAtomic(file, j.dump(2) + "\n");
}

// Finds the model, pulling the default one when allowed.
Result<InstalledModel> FindModel(ModelRegistry& registry, const std::string& name, bool pull) {
  auto found = registry.Find(name);
  if (found.ok() || !pull || found.status().code() != StatusCode::kNotFound) return found;
  bool known = std::any_of(KnownModels().begin(), KnownModels().end(),
                           [&](const KnownModel& k) { return k.name == name; });
  if (!known) return found;
  std::fprintf(stderr, "model '%s' is not installed; downloading it...\n", name.c_str());
  auto pulled = registry.Pull(name, std::nullopt);
  if (!pulled.ok()) {
    return Status(pulled.status().code(),
                  pulled.status().message() + "\nNo model is available. Either connect to the "
                  "network and run `pixseek model pull " + name + "`, or copy the model file "
                  "to this machine and run `pixseek model import FILE`.");
  }
  return pulled;
}

}  // namespace

Result<std::unique_ptr<Database>> Database::Open(const DatabaseOptions& options, bool create) {
  std::unique_ptr<Database> db(new Database());
  db->options_ = options;
  if (db->options_.home.empty()) db->options_.home = DefaultPixseekHome();
  if (options.dir.empty()) return Status::InvalidArgument("no database directory given (--db)");
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
  } else {
    manifest.model = options.model.empty() ? DefaultModelName() : options.model;
  }
  PIXSEEK_ASSIGN_OR_RETURN(InstalledModel model,
                           FindModel(registry, manifest.model, options.pull_missing_model));
  PIXSEEK_ASSIGN_OR_RETURN(db->embedder_, OpenEmbedder(model.card, model.model_file));
  db->model_name_ = manifest.model;

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
    manifest.model_sha256 = model.card.sha256;
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
  PIXSEEK_ASSIGN_OR_RETURN(db->store_, OpenSqliteStore(dir / "metadata.db"));
  db->cache_ = NewLruCache(options.cache_bytes);

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
  DecodeOptions o;
  o.limits = options_.limits;
  const ModelCard& c = embedder_->card();
  int need = std::min(c.input_width, c.input_height);
  if (c.crop == "center") need = std::max(need, c.resize_shorter);
  o.min_short_side = need;
  return o;
}

Status Database::Embed(std::span<const Image* const> images, float* out) {
  std::lock_guard<std::mutex> lock(embed_mu_);
  return embedder_->Embed(images, out);
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
