#include "pixseek/database.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>
#include <set>

#include "core/files.h"
#include "core/hash.h"
#include "core/url.h"
#include "pixseek/embedding_engine.h"
#include "pixseek/model_registry.h"
#include "service/database_generation.h"
#include "service/dba.h"
#include "service/fit.h"
#include "service/manifest.h"
#include "service/model_resolution.h"
#include "service/vector_store.h"

namespace pixseek {
namespace {

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

// A new database needs a new or empty directory.
Status CheckCreatable(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec)) {
    return Status::InvalidArgument(dir.string() + " exists and is not a directory");
  }
  if (std::filesystem::is_directory(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
    return Status::InvalidArgument(dir.string() +
                                   " is a non-empty directory without a pixseek database; "
                                   "choose a new or empty directory for --db");
  }
  return Status::Ok();
}

// What this run asks of an existing database that its manifest fixed.
Status CheckRequest(const DatabaseManifest& m, const DatabaseOptions& options) {
  const std::string dir = options.dir.string();
  if (!options.model.empty() && options.model != m.model) {
    return Status::FailedPrecondition("database " + dir + " was built with model '" + m.model +
                                      "'; it cannot be used with model '" + options.model + "'");
  }
  // (Whitening asked for may have been skipped on a small sample, so only
  // the dimension must match.)
  if (options.pca.dimension > 0 && options.pca.dimension != m.pca_dimension) {
    return Status::FailedPrecondition("database " + dir + " was built with " + DescribePca(m) +
                                      "; its post-processing cannot be changed (build a new "
                                      "database)");
  }
  if (options.preprocessing) {
    const ImagePreprocessing& asked = *options.preprocessing;
    const ImagePreprocessing& have = m.preprocessing;
    const bool cap_differs =
        asked.stored_max_side > 0 && (asked.stored_max_side != have.stored_max_side ||
                                      asked.stored_quality != have.stored_quality);
    if (asked.grey != have.grey || asked.denoise != have.denoise || cap_differs) {
      return Status::FailedPrecondition(
          "database " + dir + " was built with " + DescribePreprocessing(have) +
          " but this command asks for " + DescribePreprocessing(asked) +
          "; a database's preprocessing is fixed when it is created (leave the options out "
          "to use the database's, or build a new database)");
    }
  }
  if (!options.index_kind.empty() && options.index_kind != m.index_kind) {
    return Status::FailedPrecondition("database " + dir + " uses the " + m.index_kind +
                                      " index; it cannot be opened as a " + options.index_kind +
                                      " index (build a new database for another kind)");
  }
  PIXSEEK_RETURN_IF_ERROR(CheckVectorStore(m, options.vector_url, dir));
  const std::string store = RecordedStore(options);
  if (store != m.metadata_store) {
    return Status::FailedPrecondition(
        "database " + dir + " keeps its metadata in " +
        (m.metadata_store == "sqlite" ? dir + "/metadata.db" : m.metadata_store) +
        " but this command was given " + (store == "sqlite" ? "the SQLite default" : store) +
        "; set PIXSEEK_METADATA_URL (or metadata_url in the config file) to match");
  }
  return Status::Ok();
}

// The installed model must still give the vectors the database holds.
Status CheckEmbedder(const DatabaseManifest& m, const InstalledModel& model, int dimension,
                     const std::filesystem::path& dir) {
  if (m.dimension != dimension) {
    return Status::FailedPrecondition(
        "database " + dir.string() + " holds " + std::to_string(m.dimension) +
        "-d vectors but the installed model '" + m.model + "' gives " +
        std::to_string(dimension) + "-d vectors");
  }
  if (!m.model_sha256.empty() && !model.card.sha256.empty() &&
      m.model_sha256 != model.card.sha256) {
    return Status::FailedPrecondition("the installed model '" + m.model +
                                      "' is not the file this database was built with "
                                      "(sha256 differs); its vectors would not be comparable");
  }
  if (m.head_sha256 != model.card.trained.head_sha256) {
    return Status::FailedPrecondition("the installed model '" + m.model +
                                      "' does not have the trained head this database was "
                                      "indexed with; its vectors would not be comparable");
  }
  return Status::Ok();
}

// 128 random bits as hex: a database's identity.
std::string RandomId() {
  std::random_device random;
  char hex[33];
  for (int i = 0; i < 4; ++i) std::snprintf(hex + 8 * i, 9, "%08x", random());
  return std::string(hex, 32);
}

// A metadata store records the database it belongs to when that is created
// (model, dimension, its random id). Two databases pointed at one MariaDB
// schema would mix their rows: the second is refused when it opens.
// The random id decides when both sides have one: a reindex changes the
// model and dimension, and a kill may come between the manifest and the
// store recording the new ones.
Status CheckStoreOwner(const MetadataStore& store, const DatabaseManifest& m,
                       const std::string& store_name) {
  std::vector<std::pair<const char*, std::string>> expected = {{"database_id", m.id}};
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::string> recorded_id, store.GetSetting("database_id"));
  if (!recorded_id || m.id.empty()) {
    expected.emplace_back("model", m.model);
    expected.emplace_back("dimension", std::to_string(m.dimension));
  }
  for (const auto& [key, value] : expected) {
    if (value.empty()) continue;
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::string> recorded, store.GetSetting(key));
    if (recorded && *recorded != value) {
      return Status::FailedPrecondition(
          "the metadata store " + store_name + " belongs to another database (its " + key +
          " is " + *recorded + ", this database's is " + value +
          "); give each pixseek database a store of its own");
    }
  }
  return Status::Ok();
}

// A new database's index kind, and where its vectors live: the vector URL's
// server when one is given, else the kind asked for (the first registered
// kind, "disk", by default).
Status ChooseNewIndexKind(const DatabaseOptions& options, DatabaseManifest* m) {
  if (options.vector_url.empty()) {
    m->index_kind =
        options.index_kind.empty() ? VectorIndexKinds().front().name : options.index_kind;
    if (IsServerIndexKind(m->index_kind)) {
      return Status::InvalidArgument(
          "the " + m->index_kind + " index keeps its vectors on a server: give its URL with "
          "PIXSEEK_VECTOR_URL, vector_url in the config or --vector-url");
    }
    return Status::Ok();
  }
  PIXSEEK_ASSIGN_OR_RETURN(std::string kind, VectorKindOfUrl(options.vector_url));
  if (!options.index_kind.empty() && options.index_kind != kind) {
    return Status::InvalidArgument(
        "--index " + options.index_kind + " keeps the vectors in the database directory, but "
        "the vector URL " + RecordedVectorStore(options.vector_url) + " puts them in " + kind +
        "; leave out --index (or [index] kind) to build on " + kind +
        ", or unset the vector URL to build an embedded index");
  }
  m->index_kind = kind;
  m->vector_store = RecordedVectorStore(options.vector_url);
  return Status::Ok();
}

}  // namespace

// What the steps of Open hand on to each other.
struct Database::Opening {
  bool exists = false;  // the directory holds a database (a manifest)
  std::filesystem::path manifest_file;
  DatabaseManifest manifest;
  InstalledModel model;
  // Parts learned for a new database (codebook, PCA): file name, bytes.
  std::vector<std::pair<std::string, std::string>> fitted_files;
  VectorIndexSpec index;  // what OpenVectorIndex gets
  std::unique_ptr<Generation> generation;  // filled by the steps
};

Result<std::unique_ptr<Database>> Database::Open(const DatabaseOptions& options, bool create) {
  if (options.dir.empty()) {
    return Status::InvalidArgument(
        "no database directory given (--db, $PIXSEEK_DB or [database] dir in the config file)");
  }
  std::unique_ptr<Database> db(new Database());
  db->options_ = options;
  if (db->options_.home.empty()) db->options_.home = DefaultPixseekHome();
  db->options_.dir = std::filesystem::absolute(options.dir).lexically_normal();
  const std::filesystem::path& dir = db->options_.dir;

  Opening o;
  o.manifest_file = dir / kManifestFileName;
  std::error_code ec;
  o.exists = std::filesystem::exists(o.manifest_file, ec);
  if (o.exists) {
    PIXSEEK_ASSIGN_OR_RETURN(o.manifest, ReadManifest(o.manifest_file));
    PIXSEEK_RETURN_IF_ERROR(CheckRequest(o.manifest, db->options_));
  } else if (!create || options.read_only) {
    return Status::NotFound("no pixseek database at " + dir.string() +
                            " (create one with `pixseek build DIR --db " + dir.string() + "`)");
  } else {
    PIXSEEK_RETURN_IF_ERROR(CheckCreatable(dir));
    if (options.preprocessing) {
      const ImagePreprocessing& p = *options.preprocessing;
      if (p.stored_max_side < 0 || p.stored_quality < 1 || p.stored_quality > 100) {
        return Status::InvalidArgument(
            "the size cap of uploaded copies needs a max side >= 0 and a JPEG quality in 1..100");
      }
      o.manifest.preprocessing = p;
    }
  }
  db->preprocessing_ = o.manifest.preprocessing;
  // The index's kind and parameters are checked before the model is loaded
  // or anything is learned: a typo fails at once.
  o.generation = std::make_unique<Generation>();
  PIXSEEK_RETURN_IF_ERROR(db->ResolveIndex(o));
  PIXSEEK_RETURN_IF_ERROR(db->OpenEmbedding(o));
  PIXSEEK_RETURN_IF_ERROR(db->OpenIndexAndStores(o));
  if (!o.exists) PIXSEEK_RETURN_IF_ERROR(db->Create(o));
  o.generation->manifest = o.manifest;
  {
    std::lock_guard<std::mutex> lock(db->write_mu_);
    db->Adopt(std::move(o.generation));
  }
  // A reader leaves repairs to the writer (it may be mid-insert right now).
  // So does every node of a database whose vectors are on a shared server:
  // another node's insert in flight (its metadata committed, its vector not
  // yet added) is exactly what Reconcile takes for an interrupted write, and
  // would remove. There the repair is `pixseek check --repair`, run while no
  // node writes (docs/configuration.md). Until then a row without a vector
  // is never a search hit: searches start from the vectors, and QueryService
  // joins each hit to its row, dropping hits without one.
  if (!options.read_only) {
    db->RemoveStaleGenerations(o.manifest.index_dir);
    if (!IsServerIndexKind(o.manifest.index_kind)) PIXSEEK_RETURN_IF_ERROR(db->Reconcile());
  }
  return db;
}

// Finds the model and opens its embedder: with the parts an existing
// database learned, or learning them now for a new one.
Status Database::OpenEmbedding(Opening& o) {
  const DatabaseOptions& options = options_;
  ModelRequest request;
  request.name = o.exists ? o.manifest.model
                          : (options.model.empty() ? DefaultModelName() : options.model);
  request.home = options.home;
  request.db_dir = options.dir;
  request.pull = options.pull_missing_model;
  // No --model, the default not installed and no network: a new database
  // falls back to features that need no download rather than failing.
  request.may_fall_back = !o.exists && options.model.empty() && options.pull_missing_model;
  PIXSEEK_ASSIGN_OR_RETURN(ResolvedModel resolved, ResolveModel(request));
  o.model = std::move(resolved.model);
  o.generation->model_name = resolved.name;
  o.manifest.model = resolved.name;
  if (o.exists && o.model.card.runtime == Runtime::kOnnx) {
    PIXSEEK_ASSIGN_OR_RETURN(
        o.model.card.onnx.engine,
        ParseCardEnum<Engine>(o.manifest.engine.empty() ? "opencv" : o.manifest.engine));
  }

  FittedEmbedder fitted;
  if (o.exists) {
    PIXSEEK_ASSIGN_OR_RETURN(fitted,
                             OpenFittedEmbedder(o.model, options.dir, o.manifest.pca_dimension));
    PIXSEEK_RETURN_IF_ERROR(
        CheckEmbedder(o.manifest, o.model, fitted.projection.output_dimension(), options.dir));
  } else if (NeedsFit(o.model.card, options.pca)) {
    FitInputs inputs;
    inputs.root = options.fit_root;
    inputs.max_images = options.fit_sample;
    inputs.limits = options.limits;
    inputs.threads = options.threads;
    inputs.pca = options.pca;
    inputs.preprocessing = o.manifest.preprocessing;
    PIXSEEK_ASSIGN_OR_RETURN(fitted, FitEmbedder(o.model, inputs));
    o.fitted_files = std::move(fitted.files);
    o.manifest.pca_dimension = options.pca.dimension;
    // What was applied (whitening is skipped on too small a sample).
    o.manifest.pca_whiten = options.pca.dimension > 0 && options.pca.whiten && fitted.whitened;
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(fitted, OpenFittedEmbedder(o.model, options.dir, 0));
  }
  if (!o.exists) {
    o.manifest.model_sha256 = o.model.card.sha256;
    o.manifest.head_sha256 = o.model.card.trained.head_sha256;
    if (o.model.card.runtime == Runtime::kOnnx) {
      o.manifest.engine = std::string(ToString(fitted.embedder->card().onnx.engine));
    }
    o.manifest.dimension = fitted.projection.output_dimension();
  }
  Generation& g = *o.generation;
  g.model = o.model;
  g.projection = std::move(fitted.projection);
  g.embedding = std::make_unique<EmbeddingEngine>(std::move(fitted.embedder), options.batching);
  return Status::Ok();
}

// The vector index's kind and parameters: the manifest's, or for a new
// database this run's (recorded by Create).
Status Database::ResolveIndex(Opening& o) {
  const DatabaseOptions& options = options_;
  if (!o.exists) PIXSEEK_RETURN_IF_ERROR(ChooseNewIndexKind(options, &o.manifest));
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* kind, FindVectorIndexKind(o.manifest.index_kind));
  VectorIndexSpec& spec = o.index;
  spec.kind = kind->name;
  if (IsServerIndexKind(kind->name)) spec.url = options.vector_url;
  spec.dir = options.dir;
  spec.read_only = options.read_only;
  spec.threads = options.threads;
  spec.background_compaction = options.background_compaction;
  spec.compaction_progress = options.compaction_progress;
  std::vector<std::string> warnings;
  PIXSEEK_ASSIGN_OR_RETURN(spec.params,
                           MergeParams(kind->name, kind->params, o.manifest.index_params,
                                       options.index_params, o.exists, &warnings));
  for (const std::string& w : warnings) std::fprintf(stderr, "pixseek: warning: %s\n", w.c_str());
  if (!o.exists) o.manifest.index_params = spec.params;
  return Status::Ok();
}

// Opens the vector index, the metadata store and the caches.
Status Database::OpenIndexAndStores(Opening& o) {
  const DatabaseOptions& options = options_;
  if (!o.exists) o.manifest.metadata_store = RecordedStore(options);
  o.index.dimension = o.manifest.dimension;
  if (!options.read_only) {
    PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(options.dir / "thumbs"));
    PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(options.dir / "images"));
  }
  o.index.dir = options.dir / o.manifest.index_dir;
  o.generation->spec = o.index;
  auto index = OpenVectorIndex(o.index);
  if (!index.ok() && index.status().code() == StatusCode::kDataLoss) {
    // A damaged log or disk graph: its intact part can be salvaged.
    return Status::DataLoss(index.status().message() + "; run `pixseek check --db " +
                            options.dir.string() + " --repair` to salvage what is intact");
  }
  PIXSEEK_ASSIGN_OR_RETURN(o.generation->index, std::move(index));
  PIXSEEK_ASSIGN_OR_RETURN(store_, OpenMetadataStore(MetadataUrl(options)));
  if (o.exists) {
    PIXSEEK_RETURN_IF_ERROR(CheckStoreOwner(*store_, o.manifest, RedactUrl(MetadataUrl(options))));
  }
  PIXSEEK_ASSIGN_OR_RETURN(cache_, OpenCache(CacheUrl(options, "r"), options.cache_bytes));
  PIXSEEK_ASSIGN_OR_RETURN(feature_cache_,
                           OpenCache(CacheUrl(options, "f"), options.cache_bytes / 4));
  return Status::Ok();
}

// Records a new database: learned files, store settings, and the manifest
// last: a directory without one is not a database yet, so a crash during
// creation leaves nothing half-made behind.
Status Database::Create(Opening& o) {
  for (const auto& [name, bytes] : o.fitted_files) {
    PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(options_.dir / name, bytes));
  }
  // Likewise a vector collection that holds vectors: they are another
  // database's (this one has no manifest yet), and would mix with its own.
  if (IsServerIndexKind(o.manifest.index_kind)) {
    if (const size_t held = o.generation->index->size(); held > 0) {
      return Status::FailedPrecondition(
          o.manifest.vector_store + " already holds " + std::to_string(held) +
          " vectors (another database's?); a new database needs an empty collection");
    }
  }
  o.manifest.created_at = static_cast<int64_t>(std::time(nullptr));
  o.manifest.id = RandomId();
  // A store that records another database is not taken over.
  if (Status owner = CheckStoreOwner(*store_, o.manifest, RedactUrl(MetadataUrl(options_)));
      !owner.ok()) {
    return Status(owner.code(), owner.message() + " (a new database needs an empty store)");
  }
  PIXSEEK_RETURN_IF_ERROR(store_->SetSetting("model", o.manifest.model));
  PIXSEEK_RETURN_IF_ERROR(store_->SetSetting("dimension", std::to_string(o.manifest.dimension)));
  PIXSEEK_RETURN_IF_ERROR(store_->SetSetting("database_id", o.manifest.id));
  return WriteManifest(o.manifest_file, o.manifest);
}

Database::~Database() {
  if (current_ == nullptr || options_.read_only) return;
  // Generations a reindex replaced are closed first (their threads and
  // files), then their folders go.
  const std::string index_dir = current().manifest.index_dir;
  std::unique_ptr<Generation> last = std::move(generations_.back());
  generations_.clear();
  generations_.push_back(std::move(last));
  RemoveStaleGenerations(index_dir);
}

Status Database::Reconcile() {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> stored, store_->AllIds());
  std::vector<int64_t> indexed = index().Ids();
  std::vector<int64_t> vectors_only, metadata_only;
  std::set_difference(indexed.begin(), indexed.end(), stored.begin(), stored.end(),
                      std::back_inserter(vectors_only));
  std::set_difference(stored.begin(), stored.end(), indexed.begin(), indexed.end(),
                      std::back_inserter(metadata_only));
  if (!vectors_only.empty()) {
    std::fprintf(stderr, "pixseek: removing %zu vectors without metadata (interrupted write)\n",
                 vectors_only.size());
    PIXSEEK_RETURN_IF_ERROR(index().Remove(vectors_only));
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

void Database::Adopt(std::unique_ptr<Generation> next) {
  current_.store(next.get(), std::memory_order_release);
  generations_.push_back(std::move(next));
}

void Database::RemoveStaleGenerations(const std::string& index_dir) const {
  std::error_code ec;
  std::vector<std::filesystem::path> stale;
  for (const auto& entry : std::filesystem::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("gen-") && name != index_dir) stale.push_back(entry.path());
  }
  // The index files of the first generation, once a reindex replaced them.
  if (!index_dir.empty()) {
    for (const char* file : {"index", "vectors.flat"}) {
      if (std::filesystem::exists(options_.dir / file, ec)) stale.push_back(options_.dir / file);
    }
  }
  for (const auto& path : stale) {
    std::fprintf(stderr, "pixseek: removing %s (left by an earlier reindex)\n", path.c_str());
    std::filesystem::remove_all(path, ec);
  }
}

const std::string& Database::model_name() const { return current().model_name; }
int Database::dimension() const { return current().projection.output_dimension(); }
int Database::base_dimension() const { return current().embedding->dimension(); }
const ModelCard& Database::card() const { return current().embedding->card(); }
const TrainedHead* Database::head() const { return current().projection.head(); }
DbaOptions Database::dba() const { return current().manifest.dba; }
VectorIndex& Database::index() { return *current().index; }

DecodeOptions Database::decode_options() const {
  return DecodeOptionsFor(card(), options_.limits);
}

Status EmbedFiltered(EmbeddingEngine& embedding, const ImagePreprocessing& preprocessing,
                     std::span<const Image* const> images, float* out) {
  if (!preprocessing.filters()) return embedding.Embed(images, out);
  std::vector<Image> filtered(images.size());
  for (size_t i = 0; i < images.size(); ++i) filtered[i] = *images[i];
  std::vector<const Image*> pointers;
  pointers.reserve(filtered.size());
  for (Image& image : filtered) {
    PIXSEEK_RETURN_IF_ERROR(ApplyPreprocessing(preprocessing, &image));
    pointers.push_back(&image);
  }
  return embedding.Embed(pointers, out);
}

Status Database::Embed(std::span<const Image* const> images, float* out) {
  return EmbedFiltered(*current().embedding, preprocessing_, images, out);
}

size_t Database::preprocessed_size() const { return current().embedding->preprocessed_size(); }

Status Database::Preprocess(const Image& image, float* dst) const {
  if (!preprocessing_.filters()) return current().embedding->Preprocess(image, dst);
  Image filtered = image;
  PIXSEEK_RETURN_IF_ERROR(ApplyPreprocessing(preprocessing_, &filtered));
  return current().embedding->Preprocess(filtered, dst);
}

Status Database::EmbedPreprocessed(const float* input, size_t n, float* out) {
  return current().embedding->EmbedPreprocessed(input, n, out);
}

Status Database::EmbedOne(const Image& image, float* out) {
  if (!preprocessing_.filters()) return current().embedding->EmbedOne(image, out);
  Image filtered = image;
  PIXSEEK_RETURN_IF_ERROR(ApplyPreprocessing(preprocessing_, &filtered));
  return current().embedding->EmbedOne(filtered, out);
}

void Database::Project(const float* base, size_t n, float* out) const {
  current().projection.Apply(base, n, out);
}

EmbedBatcherStats Database::batcher_stats() const { return current().embedding->batcher_stats(); }

std::mutex& Database::ContentMutex(std::string_view sha256) {
  return content_mu_[std::hash<std::string_view>{}(sha256) % content_mu_.size()];
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

std::filesystem::path Database::FilePath(const ImageRecord& record) const {
  const std::filesystem::path path(record.path);
  return path.is_relative() ? options_.dir / path : path;
}

namespace {

// `record`'s path relative to `dir` when the database owns the file (an
// upload: recorded relative, or by an older release absolute under
// dir/images/); empty for a file indexed in place.
std::filesystem::path UploadUnder(const std::filesystem::path& dir, const ImageRecord& record) {
  const std::filesystem::path path = std::filesystem::path(record.path).lexically_normal();
  const std::filesystem::path rel = path.is_relative() ? path : path.lexically_relative(dir);
  if (rel.empty() || *rel.begin() != "images") return {};
  return rel;
}

}  // namespace

namespace {

constexpr char kLibraryRootsSetting[] = "library_roots";

// The recorded library folders; nullopt when none were ever recorded.
Result<std::optional<std::vector<std::string>>> LibraryRoots(const MetadataStore& store) {
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::string> text, store.GetSetting(kLibraryRootsSetting));
  if (!text) return std::optional<std::vector<std::string>>();
  const auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> roots;
  if (j.is_array()) {
    for (const auto& r : j) {
      if (r.is_string()) roots.push_back(r.get<std::string>());
    }
  }
  return std::optional<std::vector<std::string>>(std::move(roots));
}

bool Under(const std::filesystem::path& path, const std::filesystem::path& folder) {
  const std::filesystem::path rel = path.lexically_relative(folder);
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

Status Database::AddLibraryRoot(const std::filesystem::path& folder) {
  std::lock_guard<std::mutex> lock(roots_mu_);
  PIXSEEK_ASSIGN_OR_RETURN(auto known, LibraryRoots(*store_));
  std::vector<std::string> roots = known.value_or(std::vector<std::string>());
  for (const std::string& r : roots) {
    if (folder == r || Under(folder, r)) return Status::Ok();
  }
  roots.push_back(folder.string());
  return store_->SetSetting(kLibraryRootsSetting, nlohmann::json(roots).dump());
}

Result<std::vector<uint8_t>> Database::ReadImageFile(const ImageRecord& record) const {
  const std::string what = "the file of image " + std::to_string(record.id);
  // An upload is opened beneath the database directory (which may itself be
  // reached through a link: the operator chose it), anything else by its
  // absolute path, with no link followed in either.
  const std::filesystem::path upload = UploadUnder(options_.dir, record);
  const std::filesystem::path path(record.path);
  if (upload.empty() && !path.is_absolute()) {
    return Status::NotFound(what + " has no usable path");
  }
  if (upload.empty()) {
    PIXSEEK_ASSIGN_OR_RETURN(auto roots, LibraryRoots(*store_));
    if (roots && std::none_of(roots->begin(), roots->end(), [&](const std::string& root) {
          return Under(path.lexically_normal(), root);
        })) {
      return Status::NotFound(what + " lies outside the library's folders");
    }
  }
  auto fd =
      upload.empty() ? OpenRegularNoFollow({}, path) : OpenRegularNoFollow(options_.dir, upload);
  if (!fd.ok()) {
    return Status(fd.status().code(), what + " cannot be served: " + fd.status().message());
  }
  PIXSEEK_ASSIGN_OR_RETURN(uint64_t size, OpenFileSize(fd->get()));
  const std::string changed = what + " changed since it was indexed";
  if (size != static_cast<uint64_t>(record.size_bytes)) {
    return Status::FailedPrecondition(changed + " (its size differs); index it again");
  }
  auto bytes = ReadOpenFile(fd->get(), options_.limits.max_bytes);
  if (!bytes.ok()) return Status(bytes.status().code(), what + ": " + bytes.status().message());
  if (bytes->size() != static_cast<size_t>(record.size_bytes) ||
      Sha256Hex(*bytes) != record.sha256) {
    return Status::FailedPrecondition(changed + " (its content differs); index it again");
  }
  return bytes;
}

Result<std::vector<uint8_t>> Database::ReadThumbnail(int64_t id, size_t max_bytes) const {
  const std::string what = "the thumbnail of image " + std::to_string(id);
  auto fd = OpenRegularNoFollow(options_.dir, ThumbnailPath(id).lexically_relative(options_.dir));
  if (!fd.ok()) {
    return Status(fd.status().code(), what + " cannot be served: " + fd.status().message());
  }
  auto bytes = ReadOpenFile(fd->get(), max_bytes);
  if (!bytes.ok()) return Status(bytes.status().code(), what + ": " + bytes.status().message());
  return bytes;
}

Result<int64_t> Database::Insert(const ImageRecord& record, std::span<const float> base_feature,
                                 std::span<const uint8_t> thumbnail_jpeg) {
  if (options_.read_only) return Status::FailedPrecondition("database is open read-only");
  std::lock_guard<std::mutex> lock(write_mu_);
  // Under the lock: a reindex switches the generation only while holding it.
  Generation& g = current();
  if (base_feature.size() != static_cast<size_t>(g.embedding->dimension())) {
    return Status::InvalidArgument("feature has " + std::to_string(base_feature.size()) +
                                   " values, database expects " +
                                   std::to_string(g.embedding->dimension()));
  }
  std::vector<float> vector(static_cast<size_t>(g.projection.output_dimension()));
  g.projection.Apply(base_feature.data(), 1, vector.data());
  // A DBA index holds augmented vectors: the new one is augmented from its
  // neighbours (theirs stay as they are; src/service/dba.h).
  if (g.manifest.dba.enabled()) {
    PIXSEEK_ASSIGN_OR_RETURN(vector, AugmentJoining(*g.index, *store_, g.projection, vector,
                                                    /*self=*/-1, g.manifest.dba));
  }
  PIXSEEK_ASSIGN_OR_RETURN(int64_t id, store_->Insert(record, base_feature));
  auto undo = [&](Status cause) {
    (void)store_->Remove(id);
    std::error_code ec;
    std::filesystem::remove(ThumbnailPath(id), ec);
    return cause;
  };
  Status s = WriteThumbnail(id, thumbnail_jpeg);
  if (!s.ok()) return undo(s);
  s = g.index->Add(1, &id, vector.data());
  if (!s.ok()) return undo(s);
  cache_->Clear();
  return id;
}

Result<std::vector<int64_t>> Database::InsertBatch(std::span<const NewImage> images) {
  if (options_.read_only) return Status::FailedPrecondition("database is open read-only");
  if (images.empty()) return std::vector<int64_t>();
  std::lock_guard<std::mutex> lock(write_mu_);
  Generation& g = current();
  if (g.manifest.dba.enabled()) {
    return Status::FailedPrecondition(
        "a DBA index augments each new vector from the images stored before it; store the "
        "images one at a time");
  }
  const auto base_dim = static_cast<size_t>(g.embedding->dimension());
  const auto dim = static_cast<size_t>(g.projection.output_dimension());
  std::vector<ImageRecord> records;
  std::vector<float> base(images.size() * base_dim);
  records.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const NewImage& image = images[i];
    if (image.base_feature.size() != base_dim) {
      return Status::InvalidArgument("feature of " + image.record.path + " has " +
                                     std::to_string(image.base_feature.size()) +
                                     " values, database expects " + std::to_string(base_dim));
    }
    records.push_back(image.record);
    std::copy(image.base_feature.begin(), image.base_feature.end(), base.begin() + i * base_dim);
  }
  std::vector<float> vectors(images.size() * dim);
  g.projection.Apply(base.data(), images.size(), vectors.data());
  // The crash ordering of Insert, step by step for the whole batch. Sync 1
  // (the metadata commit) makes the rows durable; a crash after it and
  // before sync 2 leaves rows without vectors, which Reconcile removes, and
  // the next build reads those files again.
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                           store_->InsertMany(records, static_cast<int>(base_dim), base));
  auto undo = [&](Status cause) {
    std::error_code ec;
    for (int64_t id : ids) {
      (void)store_->Remove(id);
      std::filesystem::remove(ThumbnailPath(id), ec);
    }
    return cause;
  };
  for (size_t i = 0; i < images.size(); ++i) {
    Status s = WriteThumbnail(ids[i], images[i].thumbnail_jpeg);
    if (!s.ok()) return undo(s);
  }
  // Sync 2 (one fdatasync of the index's log for the batch) makes the
  // vectors durable: from here every image of the batch is stored and
  // searchable, and OK promises exactly that.
  Status s = g.index->Add(images.size(), ids.data(), vectors.data());
  if (!s.ok()) return undo(s);
  cache_->Clear();
  return ids;
}

Status Database::WriteThumbnail(int64_t id, std::span<const uint8_t> jpeg) const {
  // A thumbnail can be regenerated from the file, so it is written without
  // fsync; the vector log and the metadata are the durable record.
  const auto thumb = ThumbnailPath(id);
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(thumb.parent_path()));
  std::ofstream out(thumb, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
  if (!out) return Status::Internal("cannot write thumbnail " + thumb.string());
  return Status::Ok();
}

Status Database::Remove(int64_t id) {
  if (options_.read_only) return Status::FailedPrecondition("database is open read-only");
  std::lock_guard<std::mutex> lock(write_mu_);
  PIXSEEK_ASSIGN_OR_RETURN(ImageRecord record, store_->Get(id));
  const int64_t one[] = {id};
  PIXSEEK_RETURN_IF_ERROR(index().Remove(one));
  cache_->Clear();
  PIXSEEK_RETURN_IF_ERROR(store_->Remove(id));
  std::error_code ec;
  std::filesystem::remove(ThumbnailPath(id), ec);
  // Files uploaded over HTTP belong to the database; files indexed in place
  // belong to the user and are never deleted.
  if (auto upload = UploadUnder(options_.dir, record); !upload.empty()) {
    std::filesystem::remove(options_.dir / upload, ec);
  }
  return Status::Ok();
}

Result<DatabaseStats> Database::Stats() const {
  DatabaseStats s;
  // The searchable images. Metadata may hold one more row for an insert in
  // flight (or cut off by a crash, until the next writer reconciles); a
  // vector is appended last, so the index never holds an unfinished image.
  const Generation& g = current();
  s.count = static_cast<int64_t>(g.index->size());
  s.dimension = g.projection.output_dimension();
  s.base_dimension = g.embedding->dimension();
  s.model = g.model_name;
  s.index_kind = g.index->kind();
  s.vector_store = g.manifest.vector_store;
  s.index = g.index->Stats();
  s.trained_head = g.projection.head() != nullptr;
  s.preprocessing = preprocessing_;
  PIXSEEK_ASSIGN_OR_RETURN(uint64_t features, store_->CountFeatures());
  s.base_features = static_cast<int64_t>(features);
  return s;
}

Status Database::Compact() { return index().Compact(); }

Status Database::CompactIfNeeded() { return index().CompactIfNeeded(); }

}  // namespace pixseek
