// MigrateDatabase (pixseek/migrate.h): an embedded database moved, in place,
// to a vector server (and its rows to MariaDB). The steps, and why a kill at
// any moment loses nothing and copies nothing twice:
//
// 1. The database is opened for writing as every command opens it
//    (Database::Open): that takes its writer lock for the whole run (a
//    running server holds it: refused) and reconciles the embedded index
//    with the store, so the ids to copy are one consistent set that nobody
//    changes meanwhile.
// 2. DIR/migrate.json records the targets (without their secrets) before
//    anything is written to them. A target that already holds data is
//    continued only when this record names it (the vector server) or when
//    it records this database's id (the metadata store, as CheckStoreOwner
//    does): otherwise it is another database's, and refused.
// 3. Each target's ids are read first. Ids present were copied by an
//    earlier run and are skipped; ids the database no longer has (removed
//    between two runs) are removed from the target. The rest are copied in
//    batches in ascending order, each batch one transaction (rows) or one
//    insert request (vectors): a kill leaves each batch whole or absent.
// 4. Both targets must then hold exactly the database's ids.
// 5. The manifest is replaced atomically (WriteFileAtomic): the commit
//    point. Before it the embedded database is whole and in use; after it
//    the database is on the servers. The old files stay where they are.
// 6. migrate.json is removed.
#include "pixseek/migrate.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "core/progress.h"
#include "core/url.h"
#include "pixseek/database.h"
#include "pixseek/vector_index.h"
#include "service/manifest.h"
#include "service/vector_store.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;

constexpr char kStateFileName[] = "migrate.json";
// The settings a database keeps in its store (Database::Create,
// AddLibraryRoot), copied with its rows.
constexpr const char* kCopiedSettings[] = {"database_id", "model", "dimension", "library_roots"};

// What DIR/migrate.json records: the targets of a migration under way.
struct MigrationState {
  std::string vector_store;    // RecordedVectorStore of the vector URL
  std::string metadata_store;  // RedactUrl of the target store; "" = the rows stay
};

Result<std::optional<MigrationState>> ReadState(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::optional<MigrationState>();
  PIXSEEK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file));
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("vector_store") || !j["vector_store"].is_string()) {
    return Status::DataLoss("damaged " + file.string() +
                            " (the record of an interrupted "
                            "`pixseek migrate`); remove it and migrate into an empty "
                            "collection");
  }
  MigrationState state;
  state.vector_store = j["vector_store"].get<std::string>();
  state.metadata_store = j.value("metadata_store", "");
  return std::optional<MigrationState>(state);
}

Status WriteState(const fs::path& file, const MigrationState& state) {
  const nlohmann::json j = {{"vector_store", state.vector_store},
                            {"metadata_store", state.metadata_store},
                            {"started_at", static_cast<int64_t>(std::time(nullptr))}};
  return WriteFileAtomic(file, j.dump(2) + "\n");
}

// a \ b, both ascending.
std::vector<int64_t> Minus(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int64_t> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

std::string Count(size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// One run of the migration: the open database, the targets and the tally.
class Migration {
 public:
  explicit Migration(const MigrateOptions& options) : options_(options) {}

  Result<MigrateReport> Run();

 private:
  Status OpenSource();
  Status OpenTargets();
  Status CheckVectorTarget();
  Status CheckRowTarget();
  Status CopySettings();
  Status CopyRows();
  Status CopyVectors();
  Status Verify();
  Status Commit();
  // Called after each batch: the cancel flag, and the test hook that
  // kills the process.
  Status AfterBatch();
  void Say(const std::string& line) const {
    if (options_.progress_out != nullptr) {
      std::fprintf(options_.progress_out, "pixseek: migrate: %s\n", line.c_str());
      std::fflush(options_.progress_out);
    }
  }

  const MigrateOptions& options_;
  fs::path dir_;
  DatabaseManifest manifest_;
  std::unique_ptr<Database> db_;
  std::vector<int64_t> ids_;  // the database's, ascending
  // The vector server.
  VectorIndexSpec target_spec_;
  std::unique_ptr<VectorIndex> vectors_;
  // The metadata server, when the rows move.
  std::string rows_url_;
  std::unique_ptr<MetadataStore> rows_;
  MigrationState state_;
  std::optional<MigrationState> earlier_;  // migrate.json as an earlier run left it
  MigrateReport report_;
  uint64_t batches_ = 0;
};

Result<MigrateReport> Migration::Run() {
  const auto start = std::chrono::steady_clock::now();
  if (options_.vector_url.empty()) {
    return Status::InvalidArgument(
        "pixseek migrate needs the vector server: --vector-url milvus://HOST:PORT/COLLECTION "
        "(or PIXSEEK_VECTOR_URL, or vector_url in the config)");
  }
  PIXSEEK_RETURN_IF_ERROR(VectorKindOfUrl(options_.vector_url).status());
  if (options_.batch_rows == 0) return Status::InvalidArgument("batch_rows must be at least 1");
  PIXSEEK_RETURN_IF_ERROR(OpenSource());
  PIXSEEK_RETURN_IF_ERROR(OpenTargets());
  PIXSEEK_RETURN_IF_ERROR(CheckVectorTarget());
  PIXSEEK_RETURN_IF_ERROR(CheckRowTarget());
  // Recorded before the first write to a target.
  PIXSEEK_RETURN_IF_ERROR(WriteState(dir_ / kStateFileName, state_));
  if (rows_ != nullptr) {
    PIXSEEK_RETURN_IF_ERROR(CopySettings());
    PIXSEEK_RETURN_IF_ERROR(CopyRows());
  }
  PIXSEEK_RETURN_IF_ERROR(CopyVectors());
  PIXSEEK_RETURN_IF_ERROR(Verify());
  PIXSEEK_RETURN_IF_ERROR(Commit());
  report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report_;
}

Status Migration::OpenSource() {
  if (options_.dir.empty()) {
    return Status::InvalidArgument(
        "no database directory given (--db, $PIXSEEK_DB or [database] dir in the config file)");
  }
  dir_ = fs::absolute(options_.dir).lexically_normal();
  const fs::path manifest_file = dir_ / kManifestFileName;
  std::error_code ec;
  if (!fs::exists(manifest_file, ec)) {
    return Status::NotFound("no pixseek database at " + dir_.string());
  }
  PIXSEEK_ASSIGN_OR_RETURN(manifest_, ReadManifest(manifest_file));
  if (!manifest_.vector_store.empty()) {
    fs::remove(dir_ / kStateFileName, ec);  // left by a run killed after its commit
    return Status::FailedPrecondition("database " + dir_.string() +
                                      " already keeps its vectors in " + manifest_.vector_store +
                                      "; there is nothing to migrate");
  }
  DatabaseOptions source;
  source.dir = dir_;
  source.home = options_.home;
  if (manifest_.metadata_store == "sqlite") {
    rows_url_ = options_.metadata_url;
  } else if (options_.metadata_url.empty()) {
    return Status::FailedPrecondition(
        "database " + dir_.string() + " keeps its metadata in " + manifest_.metadata_store +
        "; give its URL with --metadata-url (or PIXSEEK_METADATA_URL): the rows stay there "
        "and only the vectors move");
  } else {
    source.metadata_url = options_.metadata_url;  // CheckRequest checks it is the recorded one
  }
  if (!rows_url_.empty()) {
    auto url = ParseStoreUrl(rows_url_);
    if (!url.ok()) return url.status();
    if (url->scheme != "mysql" && url->scheme != "mariadb") {
      return Status::InvalidArgument(
          "the rows move to a metadata server: --metadata-url must be "
          "mysql://USER:PASSWORD@HOST:PORT/DATABASE, not " +
          url->scheme + "://");
    }
  }
  auto db = Database::Open(source, /*create=*/false);
  if (!db.ok() && db.status().code() == StatusCode::kUnavailable) {
    return Status::Unavailable("database " + dir_.string() +
                               " is open for writing by another process (a running `pixseek "
                               "serve`?); stop it before migrating (" +
                               db.status().message() + ")");
  }
  PIXSEEK_ASSIGN_OR_RETURN(db_, std::move(db));
  ids_ = db_->index().Ids();
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> stored, db_->store().AllIds());
  if (stored != ids_) {
    return Status::Internal(
        "database " + dir_.string() + " holds " + Count(stored.size(), "row", "rows") + " but " +
        Count(ids_.size(), "vector", "vectors") + " after reconciling; run `pixseek check --db " +
        dir_.string() + "` and migrate again");
  }
  report_.images = ids_.size();
  report_.vector_store = RecordedVectorStore(options_.vector_url);
  report_.metadata_store = rows_url_.empty() ? manifest_.metadata_store : RedactUrl(rows_url_);
  state_.vector_store = report_.vector_store;
  state_.metadata_store = rows_url_.empty() ? "" : report_.metadata_store;
  PIXSEEK_ASSIGN_OR_RETURN(earlier_, ReadState(dir_ / kStateFileName));
  return Status::Ok();
}

Status Migration::OpenTargets() {
  PIXSEEK_ASSIGN_OR_RETURN(std::string kind_name, VectorKindOfUrl(options_.vector_url));
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* kind, FindVectorIndexKind(kind_name));
  target_spec_.kind = kind->name;
  target_spec_.dir = dir_;
  target_spec_.url = options_.vector_url;
  target_spec_.dimension = manifest_.dimension;
  target_spec_.threads = 0;
  std::vector<std::string> warnings;
  PIXSEEK_ASSIGN_OR_RETURN(target_spec_.params,
                           MergeParams(kind->name, kind->params, IndexParams{},
                                       options_.index_params, /*existing=*/false, &warnings));
  for (const std::string& w : warnings) Say("warning: " + w);
  PIXSEEK_ASSIGN_OR_RETURN(vectors_, OpenVectorIndex(target_spec_));
  if (!rows_url_.empty()) {
    PIXSEEK_ASSIGN_OR_RETURN(rows_, OpenMetadataStore(rows_url_));
  }
  return Status::Ok();
}

// The vector server's collection must be empty, or hold what an earlier run
// of this migration (migrate.json names it) copied.
Status Migration::CheckVectorTarget() {
  const std::vector<int64_t> present = vectors_->Ids();
  if (present.empty()) return Status::Ok();
  if (!earlier_ || !SameVectorStore(earlier_->vector_store, options_.vector_url)) {
    return Status::FailedPrecondition(
        report_.vector_store + " already holds " + Count(present.size(), "vector", "vectors") +
        " and this database has no interrupted migration into it (" +
        (dir_ / kStateFileName).string() + "); migrate into a new or empty collection");
  }
  return Status::Ok();
}

// The metadata server must be empty, or record this database as its owner.
Status Migration::CheckRowTarget() {
  if (rows_ == nullptr) return Status::Ok();
  const std::string where = "the metadata store " + report_.metadata_store;
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::string> owner, rows_->GetSetting("database_id"));
  if (owner && *owner != manifest_.id) {
    return Status::FailedPrecondition(where + " belongs to another database (its database_id is " +
                                      *owner + ", this database's is " + manifest_.id +
                                      "); give each pixseek database a store of its own");
  }
  if (!owner) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> rows, rows_->AllIds());
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::string> model, rows_->GetSetting("model"));
    if (!rows.empty() || model) {
      return Status::FailedPrecondition(
          where + " already holds " +
          (rows.empty() ? "the settings" : Count(rows.size(), "row", "rows")) +
          " of another database; migrate into an empty database");
    }
  }
  return Status::Ok();
}

// The database's settings, its owner id first, so that a later run knows
// the rows as this database's.
Status Migration::CopySettings() {
  for (const char* key : kCopiedSettings) {
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::string> value, db_->store().GetSetting(key));
    if (std::string(key) == "database_id" && !value && !manifest_.id.empty()) value = manifest_.id;
    if (value) PIXSEEK_RETURN_IF_ERROR(rows_->SetSetting(key, *value));
  }
  return Status::Ok();
}

Status Migration::AfterBatch() {
  ++batches_;
  if (options_.kill_after_batches > 0 && batches_ >= options_.kill_after_batches) {
    Say("killing itself after " + std::to_string(batches_) + " batches (test hook)");
    ::raise(SIGKILL);
  }
  if (options_.cancel != nullptr && options_.cancel->load()) {
    return Status::Cancelled("migrate interrupted");
  }
  return Status::Ok();
}

Status Migration::CopyRows() {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> present, rows_->AllIds());
  const std::vector<int64_t> stale = Minus(present, ids_);
  for (int64_t id : stale) {
    Status s = rows_->Remove(id);
    if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  }
  report_.stale_removed += stale.size();
  const std::vector<int64_t> missing = Minus(ids_, present);
  report_.rows_present = ids_.size() - missing.size();
  Say("copying " + Count(missing.size(), "metadata row", "metadata rows") + " to " +
      report_.metadata_store + " (" + std::to_string(report_.rows_present) + " already there)");
  ProgressBar bar("metadata rows", missing.size(), options_.progress_out,
                  options_.progress_out != nullptr);
  for (size_t start = 0; start < missing.size(); start += options_.batch_rows) {
    const size_t n = std::min(options_.batch_rows, missing.size() - start);
    const std::span<const int64_t> batch(missing.data() + start, n);
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, db_->store().GetMany(batch));
    std::vector<std::vector<float>> features;
    features.reserve(records.size());
    for (const ImageRecord& r : records) {
      auto feature = db_->store().GetFeature(r.id);
      if (!feature.ok() && feature.status().code() != StatusCode::kNotFound) {
        return feature.status();
      }
      features.push_back(feature.ok() ? std::move(*feature) : std::vector<float>());
    }
    PIXSEEK_RETURN_IF_ERROR(rows_->InsertWithIds(records, features));
    report_.rows_copied += records.size();
    bar.Update(start + n, 0);
    PIXSEEK_RETURN_IF_ERROR(AfterBatch());
  }
  bar.Finish(missing.size(), 0);
  return Status::Ok();
}

Status Migration::CopyVectors() {
  const std::vector<int64_t> present = vectors_->Ids();
  const std::vector<int64_t> stale = Minus(present, ids_);
  if (!stale.empty()) PIXSEEK_RETURN_IF_ERROR(vectors_->Remove(stale));
  report_.stale_removed += stale.size();
  const std::vector<int64_t> missing = Minus(ids_, present);
  report_.vectors_present = ids_.size() - missing.size();
  Say("copying " + Count(missing.size(), "vector", "vectors") + " to " + report_.vector_store +
      " (" + std::to_string(report_.vectors_present) + " already there)");
  ProgressBar bar("vectors", missing.size(), options_.progress_out,
                  options_.progress_out != nullptr);
  const auto dim = static_cast<size_t>(manifest_.dimension);
  std::vector<float> rows;
  for (size_t start = 0; start < missing.size(); start += options_.batch_rows) {
    const size_t n = std::min(options_.batch_rows, missing.size() - start);
    rows.resize(n * dim);
    for (size_t i = 0; i < n; ++i) {
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, db_->index().Get(missing[start + i]));
      if (v.size() != dim) {
        return Status::DataLoss("the vector of image " + std::to_string(missing[start + i]) +
                                " has " + std::to_string(v.size()) + " values, not " +
                                std::to_string(dim));
      }
      std::copy(v.begin(), v.end(), rows.begin() + static_cast<ptrdiff_t>(i * dim));
    }
    Status added = vectors_->Add(n, missing.data() + start, rows.data());
    if (added.code() == StatusCode::kAlreadyExists) {
      // Written meanwhile: an insert of an earlier, killed run that reached
      // the server after this run read its ids.
      return Status::FailedPrecondition(added.message() +
                                        "; run `pixseek migrate` again to continue");
    }
    PIXSEEK_RETURN_IF_ERROR(added);
    report_.vectors_copied += n;
    bar.Update(start + n, 0);
    PIXSEEK_RETURN_IF_ERROR(AfterBatch());
  }
  bar.Finish(missing.size(), 0);
  return Status::Ok();
}

// Both targets hold exactly the database's ids, each once.
Status Migration::Verify() {
  const std::vector<int64_t> vectors = vectors_->Ids();
  if (vectors == ids_ && vectors_->size() > ids_.size()) {
    // Every id there, some twice: an insert of a killed run reached the
    // server after this run read its ids and added them again. The
    // server's compaction keeps the newest row of each id.
    PIXSEEK_RETURN_IF_ERROR(vectors_->Compact());
  }
  if (vectors != ids_ || vectors_->size() != ids_.size()) {
    return Status::DataLoss(report_.vector_store + " holds " +
                            Count(vectors_->size(), "vector", "vectors") + " (" +
                            Count(vectors.size(), "id", "ids") +
                            ") after the copy, but the "
                            "database has " +
                            Count(ids_.size(), "image", "images") +
                            "; the database is unchanged: run `pixseek migrate` again");
  }
  if (rows_ != nullptr) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> rows, rows_->AllIds());
    if (rows != ids_) {
      return Status::DataLoss(report_.metadata_store + " holds " +
                              Count(rows.size(), "row", "rows") +
                              " after the copy, but the "
                              "database has " +
                              Count(ids_.size(), "image", "images") +
                              "; the database is unchanged: run `pixseek migrate` again");
    }
  }
  return Status::Ok();
}

Status Migration::Commit() {
  DatabaseManifest next = manifest_;
  next.index_kind = target_spec_.kind;
  next.index_params = target_spec_.params;
  next.vector_store = report_.vector_store;
  if (rows_ != nullptr) next.metadata_store = report_.metadata_store;
  // index_dir stays: the old index's folder is left in place, and a writer
  // removes gen-N folders the manifest does not name.
  PIXSEEK_RETURN_IF_ERROR(WriteManifest(dir_ / kManifestFileName, next));
  std::error_code ec;
  fs::remove(dir_ / kStateFileName, ec);
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* old, FindVectorIndexKind(manifest_.index_kind));
  std::string files = old->files != nullptr ? old->files : "";
  if (!files.empty() && files.back() == '/') files.pop_back();
  if (!manifest_.index_dir.empty()) {
    report_.old_files.push_back(dir_ / manifest_.index_dir);
  } else if (!files.empty()) {
    report_.old_files.push_back(dir_ / files);
  }
  if (rows_ != nullptr) {
    for (const char* f : {"metadata.db", "metadata.db-wal", "metadata.db-shm"}) {
      if (fs::exists(dir_ / f, ec)) report_.old_files.push_back(dir_ / f);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<MigrateReport> MigrateDatabase(const MigrateOptions& options) {
  Migration migration(options);
  return migration.Run();
}

}  // namespace pixseek
