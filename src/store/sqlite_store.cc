// MetadataStore on SQLite, through the C API.
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "pixseek/metadata_store.h"
#include "store/coordination.h"
#include "store/feature_blob.h"

namespace pixseek {
namespace {

// PRAGMA application_id of a pixseek metadata database ("PXK1").
constexpr int32_t kApplicationId = 0x50584B31;
constexpr int kBusyTimeoutMs = 5000;

// Schema migrations, applied in order inside one transaction each. A database
// at PRAGMA user_version = N has had every step with version <= N applied. To
// change the schema, append a step; never edit a shipped one.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1,
     "CREATE TABLE images ("
     "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  path TEXT NOT NULL,"
     "  name TEXT NOT NULL DEFAULT '',"
     "  sha256 TEXT NOT NULL,"
     "  size_bytes INTEGER NOT NULL DEFAULT 0,"
     "  format TEXT NOT NULL DEFAULT '',"
     "  width INTEGER NOT NULL DEFAULT 0,"
     "  height INTEGER NOT NULL DEFAULT 0,"
     "  exif_datetime TEXT NOT NULL DEFAULT '',"
     "  label TEXT NOT NULL DEFAULT '',"
     "  added_at INTEGER NOT NULL DEFAULT 0);"
     "CREATE UNIQUE INDEX images_path ON images(path);"
     "CREATE INDEX images_sha256 ON images(sha256);"
     "CREATE INDEX images_label ON images(label, id);"
     "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"},
    // Base features (feature_blob.h), apart from images so that reading
    // records never reads them. The cascade (foreign_keys is on in every
    // connection Open makes) removes a feature in the DELETE of its image.
    {2,
     "CREATE TABLE features ("
     "  id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
     "  vector BLOB NOT NULL);"},
    // Leases and jobs (MetadataStore's coordination API, store/coordination.h).
    {3,
     "CREATE TABLE leases ("
     "  name TEXT PRIMARY KEY,"
     "  owner TEXT NOT NULL,"
     "  expires_ms INTEGER NOT NULL,"
     "  version INTEGER NOT NULL DEFAULT 0);"
     "CREATE TABLE jobs ("
     "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  kind TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  payload TEXT NOT NULL DEFAULT '',"
     "  created_at INTEGER NOT NULL DEFAULT 0,"
     "  updated_at INTEGER NOT NULL DEFAULT 0,"
     "  revision INTEGER NOT NULL DEFAULT 0);"
     "CREATE INDEX jobs_kind_state ON jobs(kind, state, id);"},
};
constexpr int kSchemaVersion = kMigrations[std::size(kMigrations) - 1].version;

Status SqliteStatus(sqlite3* db, int rc, const std::string& what) {
  std::string m = what + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(std::move(m));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::DataLoss(std::move(m));
    case SQLITE_FULL:
      return Status::ResourceExhausted(std::move(m));
    case SQLITE_CANTOPEN:  // missing directory, or not allowed to create the file
      return Status::NotFound(std::move(m));
    case SQLITE_PERM:
    case SQLITE_READONLY:
      return Status::PermissionDenied(std::move(m));
    default:
      return Status::Internal(std::move(m));
  }
}

// Resets and unbinds a cached statement when a call is done with it.
class StatementScope {
 public:
  explicit StatementScope(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StatementScope() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StatementScope(const StatementScope&) = delete;
  StatementScope& operator=(const StatementScope&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

std::string_view ColumnBlob(sqlite3_stmt* stmt, int col) {
  const void* data = sqlite3_column_blob(stmt, col);
  if (data == nullptr) return {};
  return {static_cast<const char*>(data), static_cast<size_t>(sqlite3_column_bytes(stmt, col))};
}

std::string ColumnText(sqlite3_stmt* stmt, int col) {
  const unsigned char* text = sqlite3_column_text(stmt, col);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt, col)));
}

ImageRecord ReadRecord(sqlite3_stmt* stmt) {
  ImageRecord r;
  r.id = sqlite3_column_int64(stmt, 0);
  r.path = ColumnText(stmt, 1);
  r.name = ColumnText(stmt, 2);
  r.sha256 = ColumnText(stmt, 3);
  r.size_bytes = sqlite3_column_int64(stmt, 4);
  r.format = ColumnText(stmt, 5);
  r.width = sqlite3_column_int(stmt, 6);
  r.height = sqlite3_column_int(stmt, 7);
  r.exif_datetime = ColumnText(stmt, 8);
  r.label = ColumnText(stmt, 9);
  r.added_at = sqlite3_column_int64(stmt, 10);
  return r;
}

// One SQLite connection shared by every caller and serialised by mu_: SQLite
// work here is short (indexed point reads and single-row writes), so one
// connection is simpler than a pool and cannot deadlock against itself.
// Other processes may use the file at the same time (WAL, busy_timeout).
//
// Durability: WAL with synchronous=FULL, so a committed Insert survives a
// process kill and also an OS crash or power loss (WAL with NORMAL would
// survive a process crash but could lose the last commits on power loss;
// the vector index fdatasyncs every change, and the two stores must agree).
//
// Thread-safety: all methods are safe to call concurrently. Owns the
// connection and its prepared statements.
class SqliteStore final : public MetadataStore {
 public:
  explicit SqliteStore(std::filesystem::path file) : file_(std::move(file)) {}

  ~SqliteStore() override {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Opens the connection, sets it up and brings the schema up to date.
  Status Open() {
    std::lock_guard lock(mu_);
    int rc = sqlite3_open_v2(file_.c_str(), &db_,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) return Error(rc, "cannot open");
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    // The first statement reads the file header: a non-SQLite file fails here.
    rc = sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
      if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
        return Status::DataLoss(file_.string() + " is not a SQLite database: " +
                                sqlite3_errmsg(db_));
      }
      return Error(rc, "cannot enable WAL");
    }
    PIXSEEK_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
    PIXSEEK_RETURN_IF_ERROR(Migrate());
    // Preparing every statement now also checks that the tables have the
    // columns this code expects.
    for (const char* sql : kAllStatements) {
      sqlite3_stmt* stmt = nullptr;
      Status s = Prepare(sql, &stmt);
      if (!s.ok()) {
        return Status::DataLoss(file_.string() + " does not have the pixseek schema: " +
                                s.message());
      }
    }
    return Status::Ok();
  }

  using MetadataStore::Insert;

  Result<int64_t> Insert(const ImageRecord& r, std::span<const float> feature) override {
    if (r.path.empty()) return Status::InvalidArgument("image record without a path");
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckFinite(feature, "the base feature of " + r.path));
    std::lock_guard lock(mu_);
    // Without a feature the one statement is its own transaction.
    if (feature.empty()) return InsertLocked(r);
    return InTransaction([&]() -> Result<int64_t> {
      PIXSEEK_ASSIGN_OR_RETURN(int64_t id, InsertLocked(r));
      PIXSEEK_RETURN_IF_ERROR(PutFeatureLocked(id, feature));
      return id;
    });
  }

  Result<std::vector<int64_t>> InsertMany(std::span<const ImageRecord> records, int dimension,
                                          std::span<const float> features) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckNewRecords(records, dimension, features));
    const auto d = static_cast<size_t>(dimension);
    std::lock_guard lock(mu_);
    // One commit, so one WAL sync (synchronous=FULL) for the whole batch.
    return InTransaction([&]() -> Result<std::vector<int64_t>> {
      std::vector<int64_t> ids;
      ids.reserve(records.size());
      for (size_t i = 0; i < records.size(); ++i) {
        PIXSEEK_ASSIGN_OR_RETURN(int64_t id, InsertLocked(records[i]));
        PIXSEEK_RETURN_IF_ERROR(PutFeatureLocked(id, features.subspan(i * d, d)));
        ids.push_back(id);
      }
      return ids;
    });
  }

  Status InsertWithIds(std::span<const ImageRecord> records,
                       std::span<const std::vector<float>> features) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckImportedRecords(records, features));
    std::lock_guard lock(mu_);
    // AUTOINCREMENT raises its sequence to the largest id inserted, so later
    // Inserts get larger ids.
    return InTransaction([&]() -> Status {
      for (size_t i = 0; i < records.size(); ++i) {
        PIXSEEK_RETURN_IF_ERROR(InsertWithIdLocked(records[i]));
        if (!features[i].empty()) {
          PIXSEEK_RETURN_IF_ERROR(PutFeatureLocked(records[i].id, features[i]));
        }
      }
      return Status::Ok();
    });
  }

  Result<ImageRecord> Get(int64_t id) const override {
    std::lock_guard lock(mu_);
    PIXSEEK_ASSIGN_OR_RETURN(auto found, GetLocked(id));
    if (!found) return Status::NotFound("no image with id " + std::to_string(id));
    return std::move(*found);
  }

  Result<std::vector<ImageRecord>> GetMany(std::span<const int64_t> ids) const override {
    std::lock_guard lock(mu_);
    std::vector<ImageRecord> out;
    out.reserve(ids.size());
    // One read transaction: the records come from one snapshot.
    PIXSEEK_RETURN_IF_ERROR(Exec("BEGIN"));
    for (int64_t id : ids) {
      auto found = GetLocked(id);
      if (!found.ok()) {
        (void)Exec("ROLLBACK");
        return found.status();
      }
      if (*found) out.push_back(std::move(**found));
    }
    PIXSEEK_RETURN_IF_ERROR(Exec("COMMIT"));
    return out;
  }

  Result<std::optional<ImageRecord>> FindByPath(const std::string& path) const override {
    return FindOne(kFindByPath, path);
  }

  // One statement: the foreign key's cascade deletes the feature with it.
  Status Remove(int64_t id) override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kDelete, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) return Error(rc, "cannot remove image " + std::to_string(id));
    if (sqlite3_changes(db_) == 0) {
      return Status::NotFound("no image with id " + std::to_string(id));
    }
    return Status::Ok();
  }

  Result<std::vector<ImageRecord>> List(const ListOptions& options) const override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(options.label ? kListLabel : kList, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, options.after_id);
    const auto limit = static_cast<int64_t>(
        std::min<size_t>(options.limit, static_cast<size_t>(std::numeric_limits<int64_t>::max())));
    sqlite3_bind_int64(stmt, 2, limit);
    if (options.label) BindText(stmt, 3, *options.label);
    std::vector<ImageRecord> out;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) out.push_back(ReadRecord(stmt));
    if (rc != SQLITE_DONE) return Error(rc, "cannot list images");
    return out;
  }

  Result<std::vector<int64_t>> AllIds() const override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kAllIds, &stmt));
    StatementScope scope(stmt);
    std::vector<int64_t> out;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) out.push_back(sqlite3_column_int64(stmt, 0));
    if (rc != SQLITE_DONE) return Error(rc, "cannot list image ids");
    return out;
  }

  Result<std::vector<int64_t>> FilterIds(const RecordFilter& filter) const override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(filter.label ? kFilterIdsLabel : kFilterIds, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, filter.added_after.value_or(std::numeric_limits<int64_t>::min()));
    sqlite3_bind_int64(stmt, 2, filter.added_before.value_or(std::numeric_limits<int64_t>::max()));
    sqlite3_bind_int64(stmt, 3, filter.min_width);
    sqlite3_bind_int64(stmt, 4, filter.min_height);
    sqlite3_bind_int64(stmt, 5, filter.format ? 1 : 0);
    BindText(stmt, 6, filter.format.value_or(""));
    if (filter.label) BindText(stmt, 7, *filter.label);
    std::vector<int64_t> out;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) out.push_back(sqlite3_column_int64(stmt, 0));
    if (rc != SQLITE_DONE) return Error(rc, "cannot filter images");
    return out;
  }

  Status PutFeatures(std::span<const int64_t> ids, int dimension,
                     std::span<const float> features) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckFeatureRows(ids.size(), dimension, features));
    if (ids.empty()) return Status::Ok();
    std::lock_guard lock(mu_);
    const auto d = static_cast<size_t>(dimension);
    return InTransaction([&]() -> Status {
      for (size_t i = 0; i < ids.size(); ++i) {
        PIXSEEK_RETURN_IF_ERROR(PutFeatureLocked(ids[i], features.subspan(i * d, d)));
      }
      return Status::Ok();
    });
  }

  Result<std::vector<float>> GetFeature(int64_t id) const override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kGetFeature, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
      return Status::NotFound("no base feature stored for image " + std::to_string(id));
    }
    if (rc != SQLITE_ROW) return Error(rc, "cannot read the feature of image " + std::to_string(id));
    return store_internal::DecodeFeature(id, ColumnBlob(stmt, 0));
  }

  Status ScanFeatures(int dimension, const FeatureVisitor& visit) const override {
    return store_internal::ScanFeaturePages(
        dimension,
        [&](int64_t after_id, std::vector<int64_t>* ids, std::vector<float>* rows) {
          return ReadFeaturePage(after_id, dimension, ids, rows);
        },
        visit);
  }

  Result<uint64_t> CountFeatures() const override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kCountFeatures, &stmt));
    StatementScope scope(stmt);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) return Error(rc, "cannot count features");
    return static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  }

  Result<std::optional<std::string>> GetSetting(const std::string& key) const override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kGetSetting, &stmt));
    StatementScope scope(stmt);
    BindText(stmt, 1, key);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return std::optional<std::string>();
    if (rc != SQLITE_ROW) return Error(rc, "cannot read setting " + key);
    return std::optional<std::string>(ColumnText(stmt, 0));
  }

  // Each statement is atomic against other processes (SQLite's write lock);
  // the two steps of AcquireLease need not be one transaction: the first
  // takes an existing row that is free to take, the second creates a
  // missing one, and a row that another process creates in between makes
  // the second do nothing.
  Result<bool> AcquireLease(const std::string& name, const std::string& owner,
                            std::chrono::milliseconds ttl) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(name, owner, ttl));
    std::lock_guard lock(mu_);
    for (const char* sql : {kTakeLease, kNewLease}) {
      PIXSEEK_ASSIGN_OR_RETURN(int changes, LeaseStep(sql, name, owner, ttl.count()));
      if (changes == 1) return true;
    }
    return false;
  }

  Result<bool> RenewLease(const std::string& name, const std::string& owner,
                          std::chrono::milliseconds ttl) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(name, owner, ttl));
    std::lock_guard lock(mu_);
    PIXSEEK_ASSIGN_OR_RETURN(int changes, LeaseStep(kRenewLease, name, owner, ttl.count()));
    return changes == 1;
  }

  Status ReleaseLease(const std::string& name, const std::string& owner) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(name, owner));
    std::lock_guard lock(mu_);
    return LeaseStep(kReleaseLease, name, owner, 0).status();
  }

  Result<int64_t> CreateJob(const JobRecord& job) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckNewJob(job));
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(job.id == 0 ? kCreateJob : kCreateJobWithId, &stmt));
    StatementScope scope(stmt);
    BindText(stmt, 1, job.kind);
    BindText(stmt, 2, job.state);
    BindText(stmt, 3, job.payload);
    if (job.id != 0) sqlite3_bind_int64(stmt, 4, job.id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return Status::AlreadyExists("a job with id " + std::to_string(job.id) + " exists");
    }
    if (rc != SQLITE_DONE) return Error(rc, "cannot create a " + job.kind + " job");
    return sqlite3_last_insert_rowid(db_);
  }

  Status UpdateJob(const JobRecord& job, const std::string& lease,
                   const std::string& owner) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckJobState(job.state));
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(lease, owner));
    std::lock_guard lock(mu_);
    {
      sqlite3_stmt* stmt;
      PIXSEEK_RETURN_IF_ERROR(Prepare(kUpdateJob, &stmt));
      StatementScope scope(stmt);
      sqlite3_bind_int64(stmt, 1, job.id);
      BindText(stmt, 2, job.state);
      BindText(stmt, 3, job.payload);
      BindText(stmt, 4, lease);
      BindText(stmt, 5, owner);
      int rc = sqlite3_step(stmt);
      if (rc != SQLITE_DONE) return Error(rc, "cannot update job " + std::to_string(job.id));
      if (sqlite3_changes(db_) == 1) return Status::Ok();
    }
    // Nothing changed: no such job, or the lease is not the owner's.
    PIXSEEK_ASSIGN_OR_RETURN(auto found, GetJobLocked(job.id));
    if (!found) return Status::NotFound("no job with id " + std::to_string(job.id));
    return store_internal::LeaseNotHeld(lease, owner, job.id);
  }

  Result<JobRecord> GetJob(int64_t id) const override {
    std::lock_guard lock(mu_);
    PIXSEEK_ASSIGN_OR_RETURN(auto found, GetJobLocked(id));
    if (!found) return Status::NotFound("no job with id " + std::to_string(id));
    return std::move(*found);
  }

  Result<std::vector<JobRecord>> ListJobs(const JobQuery& query) const override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckJobQuery(query));
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(
        query.state ? (query.newest_first ? kListJobsStateDesc : kListJobsState)
                    : (query.newest_first ? kListJobsDesc : kListJobs),
        &stmt));
    StatementScope scope(stmt);
    BindText(stmt, 1, query.kind);
    sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(std::min<size_t>(
                                    query.limit, std::numeric_limits<int64_t>::max())));
    if (query.state) BindText(stmt, 3, *query.state);
    std::vector<JobRecord> out;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) out.push_back(ReadJob(stmt));
    if (rc != SQLITE_DONE) return Error(rc, "cannot list " + query.kind + " jobs");
    return out;
  }

  Status CheckIntegrity() const override {
    std::lock_guard lock(mu_);
    std::string problems;
    // integrity_check answers "ok" or up to 100 rows naming each problem;
    // foreign_key_check a row per feature whose image is gone.
    for (const char* sql : {"PRAGMA integrity_check(100)", "PRAGMA foreign_key_check"}) {
      sqlite3_stmt* stmt = nullptr;
      int rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
      if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
          return Status::DataLoss(file_.string() + ": " + sqlite3_errmsg(db_));
        }
        return Error(rc, std::string("cannot run ") + sql);
      }
      const bool foreign_keys = std::string_view(sql).find("foreign") != std::string_view::npos;
      while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        std::string row;
        if (foreign_keys) {
          row = "row " + std::to_string(sqlite3_column_int64(stmt, 1)) + " of " +
                ColumnText(stmt, 0) + " refers to a missing " + ColumnText(stmt, 2) + " row";
        } else {
          row = ColumnText(stmt, 0);
          if (row == "ok") continue;
        }
        problems += (problems.empty() ? "" : "; ") + row;
      }
      sqlite3_finalize(stmt);
      if (rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
          problems += (problems.empty() ? "" : "; ") + std::string(sqlite3_errmsg(db_));
          break;
        }
        return Error(rc, std::string("cannot run ") + sql);
      }
    }
    if (!problems.empty()) return Status::DataLoss(file_.string() + ": " + problems);
    return Status::Ok();
  }

  Status SetSetting(const std::string& key, const std::string& value) override {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kSetSetting, &stmt));
    StatementScope scope(stmt);
    BindText(stmt, 1, key);
    BindText(stmt, 2, value);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) return Error(rc, "cannot write setting " + key);
    return Status::Ok();
  }

 private:
// Every query that reads whole rows selects these columns in this order
// (ReadRecord depends on it).
#define PIXSEEK_SELECT_IMAGES                                                                  \
  "SELECT id, path, name, sha256, size_bytes, format, width, height, exif_datetime, " \
  "label, added_at FROM images "
  static constexpr const char* kInsert =
      "INSERT INTO images (path, name, sha256, size_bytes, format, width, height, "
      "exif_datetime, label, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
  static constexpr const char* kInsertWithId =
      "INSERT INTO images (path, name, sha256, size_bytes, format, width, height, "
      "exif_datetime, label, added_at, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
  static constexpr const char* kGet =
      PIXSEEK_SELECT_IMAGES "WHERE id = ?1";
  static constexpr const char* kFindByPath =
      PIXSEEK_SELECT_IMAGES "WHERE path = ?1";
  static constexpr const char* kDelete = "DELETE FROM images WHERE id = ?1";
  static constexpr const char* kList =
      PIXSEEK_SELECT_IMAGES "WHERE id > ?1 ORDER BY id LIMIT ?2";
  static constexpr const char* kListLabel =
      PIXSEEK_SELECT_IMAGES "WHERE label = ?3 AND id > ?1 ORDER BY id LIMIT ?2";
  static constexpr const char* kAllIds = "SELECT id FROM images ORDER BY id";
  // FilterIds: an absent date bound is bound as the widest value, an absent
  // format as ?5 = 0. The label has a statement of its own so that it can
  // use the images_label index.
#define PIXSEEK_FILTER_CONDITIONS                                                    \
  "added_at >= ?1 AND added_at < ?2 AND (?5 = 0 OR format = ?6) AND width >= ?3 " \
  "AND height >= ?4 "
  static constexpr const char* kFilterIds =
      "SELECT id FROM images WHERE " PIXSEEK_FILTER_CONDITIONS "ORDER BY id";
  static constexpr const char* kFilterIdsLabel =
      "SELECT id FROM images WHERE label = ?7 AND " PIXSEEK_FILTER_CONDITIONS "ORDER BY id";
#undef PIXSEEK_FILTER_CONDITIONS
  static constexpr const char* kPutFeature =
      "INSERT INTO features (id, vector) VALUES (?1, ?2) "
      "ON CONFLICT(id) DO UPDATE SET vector = excluded.vector";
  static constexpr const char* kGetFeature = "SELECT vector FROM features WHERE id = ?1";
  static constexpr const char* kScanFeatures =
      "SELECT id, vector FROM features WHERE id > ?1 ORDER BY id LIMIT ?2";
  static constexpr const char* kCountFeatures = "SELECT COUNT(*) FROM features";
  static constexpr const char* kGetSetting = "SELECT value FROM settings WHERE key = ?1";
  static constexpr const char* kSetSetting =
      "INSERT INTO settings (key, value) VALUES (?1, ?2) "
      "ON CONFLICT(key) DO UPDATE SET value = excluded.value";

  // Leases and jobs. Times are the store's clock: now in milliseconds and
  // in seconds since the epoch ('now' is fixed within one statement).
#define PIXSEEK_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
#define PIXSEEK_NOW_S "CAST(strftime('%s', 'now') AS INTEGER)"
  // ?1 name, ?2 owner, ?3 ttl in ms.
  static constexpr const char* kTakeLease =
      "UPDATE leases SET owner = ?2, expires_ms = " PIXSEEK_NOW_MS " + ?3, version = version + 1 "
      "WHERE name = ?1 AND (owner = ?2 OR expires_ms <= " PIXSEEK_NOW_MS ")";
  static constexpr const char* kNewLease =
      "INSERT INTO leases (name, owner, expires_ms) VALUES (?1, ?2, " PIXSEEK_NOW_MS " + ?3) "
      "ON CONFLICT(name) DO NOTHING";
  static constexpr const char* kRenewLease =
      "UPDATE leases SET expires_ms = " PIXSEEK_NOW_MS " + ?3, version = version + 1 "
      "WHERE name = ?1 AND owner = ?2";
  static constexpr const char* kReleaseLease = "DELETE FROM leases WHERE name = ?1 AND owner = ?2";
  static constexpr const char* kCreateJob =
      "INSERT INTO jobs (kind, state, payload, created_at, updated_at) "
      "VALUES (?1, ?2, ?3, " PIXSEEK_NOW_S ", " PIXSEEK_NOW_S ")";
  static constexpr const char* kCreateJobWithId =
      "INSERT INTO jobs (id, kind, state, payload, created_at, updated_at) "
      "VALUES (?4, ?1, ?2, ?3, " PIXSEEK_NOW_S ", " PIXSEEK_NOW_S ")";
  static constexpr const char* kUpdateJob =
      "UPDATE jobs SET state = ?2, payload = ?3, updated_at = " PIXSEEK_NOW_S
      ", revision = revision + 1 "
      "WHERE id = ?1 AND EXISTS (SELECT 1 FROM leases WHERE name = ?4 AND owner = ?5)";
#undef PIXSEEK_NOW_MS
#undef PIXSEEK_NOW_S
  // ReadJob depends on the order of the columns.
#define PIXSEEK_SELECT_JOBS "SELECT id, kind, state, payload, created_at, updated_at FROM jobs "
  static constexpr const char* kGetJob = PIXSEEK_SELECT_JOBS "WHERE id = ?1";
  static constexpr const char* kListJobs =
      PIXSEEK_SELECT_JOBS "WHERE kind = ?1 ORDER BY id LIMIT ?2";
  static constexpr const char* kListJobsDesc =
      PIXSEEK_SELECT_JOBS "WHERE kind = ?1 ORDER BY id DESC LIMIT ?2";
  static constexpr const char* kListJobsState =
      PIXSEEK_SELECT_JOBS "WHERE kind = ?1 AND state = ?3 ORDER BY id LIMIT ?2";
  static constexpr const char* kListJobsStateDesc =
      PIXSEEK_SELECT_JOBS "WHERE kind = ?1 AND state = ?3 ORDER BY id DESC LIMIT ?2";
#undef PIXSEEK_SELECT_JOBS

#undef PIXSEEK_SELECT_IMAGES
  static constexpr const char* kAllStatements[] = {
      kInsert,       kGet,          kFindByPath,    kDelete,          kList,
      kListLabel,    kAllIds,       kFilterIds,     kFilterIdsLabel,  kPutFeature,
      kGetFeature,   kScanFeatures, kCountFeatures, kGetSetting,      kSetSetting,
      kTakeLease,    kNewLease,     kRenewLease,    kReleaseLease,    kCreateJob,
      kCreateJobWithId, kUpdateJob, kGetJob,        kListJobs,        kListJobsDesc,
      kListJobsState, kListJobsStateDesc};

  static JobRecord ReadJob(sqlite3_stmt* stmt) {
    JobRecord job;
    job.id = sqlite3_column_int64(stmt, 0);
    job.kind = ColumnText(stmt, 1);
    job.state = ColumnText(stmt, 2);
    job.payload = ColumnText(stmt, 3);
    job.created_at = sqlite3_column_int64(stmt, 4);
    job.updated_at = sqlite3_column_int64(stmt, 5);
    return job;
  }

  // Runs one lease statement (?1 name, ?2 owner, ?3 ttl in ms, when it
  // takes one) and returns how many rows it changed. Requires mu_.
  Result<int> LeaseStep(const char* sql, const std::string& name, const std::string& owner,
                        int64_t ttl_ms) {
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(sql, &stmt));
    StatementScope scope(stmt);
    BindText(stmt, 1, name);
    BindText(stmt, 2, owner);
    if (sqlite3_bind_parameter_count(stmt) >= 3) sqlite3_bind_int64(stmt, 3, ttl_ms);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) return Error(rc, "cannot write lease " + name);
    return sqlite3_changes(db_);
  }

  Result<std::optional<JobRecord>> GetJobLocked(int64_t id) const {
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kGetJob, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return std::optional<JobRecord>();
    if (rc != SQLITE_ROW) return Error(rc, "cannot read job " + std::to_string(id));
    return std::optional<JobRecord>(ReadJob(stmt));
  }

  Status Error(int rc, const std::string& what) const {
    return SqliteStatus(db_, rc, file_.string() + ": " + what);
  }

  Status Exec(const char* sql) const {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Error(rc, std::string("cannot run ") + sql);
    return Status::Ok();
  }

  Result<int64_t> PragmaInt(const char* sql) const {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
    if (rc != SQLITE_OK) return Error(rc, std::string("cannot run ") + sql);
    rc = sqlite3_step(stmt);
    int64_t value = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
    Status s = rc == SQLITE_ROW ? Status::Ok() : Error(rc, std::string("cannot run ") + sql);
    sqlite3_finalize(stmt);
    if (!s.ok()) return s;
    return value;
  }

  // Brings the schema to kSchemaVersion, one transaction per step. BEGIN
  // IMMEDIATE takes the write lock before reading the version, so two
  // processes opening a new file at once do not both migrate it.
  Status Migrate() {
    PIXSEEK_ASSIGN_OR_RETURN(int64_t version, PragmaInt("PRAGMA user_version"));
    if (version == kSchemaVersion) return CheckApplicationId();
    PIXSEEK_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = MigrateLocked();
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  Status MigrateLocked() {
    PIXSEEK_ASSIGN_OR_RETURN(int64_t version, PragmaInt("PRAGMA user_version"));
    if (version > kSchemaVersion) {
      return Status::FailedPrecondition(
          file_.string() + " has metadata schema version " + std::to_string(version) +
          "; this build of pixseek knows versions up to " + std::to_string(kSchemaVersion));
    }
    if (version == 0) {
      // A brand-new file has no tables; anything else is someone else's data.
      PIXSEEK_ASSIGN_OR_RETURN(int64_t objects, PragmaInt("SELECT COUNT(*) FROM sqlite_master"));
      if (objects != 0) {
        return Status::DataLoss(file_.string() +
                                " is a SQLite database but not a pixseek metadata database");
      }
      PIXSEEK_RETURN_IF_ERROR(
          Exec(("PRAGMA application_id = " + std::to_string(kApplicationId)).c_str()));
    } else {
      PIXSEEK_RETURN_IF_ERROR(CheckApplicationId());
    }
    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      PIXSEEK_RETURN_IF_ERROR(Exec(m.sql));
      PIXSEEK_RETURN_IF_ERROR(
          Exec(("PRAGMA user_version = " + std::to_string(m.version)).c_str()));
    }
    return Status::Ok();
  }

  Status CheckApplicationId() const {
    PIXSEEK_ASSIGN_OR_RETURN(int64_t app, PragmaInt("PRAGMA application_id"));
    if (app != kApplicationId) {
      return Status::DataLoss(file_.string() +
                              " is a SQLite database but not a pixseek metadata database "
                              "(application_id " + std::to_string(app) + ")");
    }
    return Status::Ok();
  }

  // The cached statement for `sql` (one of the k* constants), prepared on
  // first use. Requires mu_.
  Status Prepare(const char* sql, sqlite3_stmt** stmt) const {
    auto it = statements_.find(sql);
    if (it != statements_.end()) {
      *stmt = it->second;
      return Status::Ok();
    }
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr);
    if (rc != SQLITE_OK) return Error(rc, std::string("cannot prepare ") + sql);
    statements_.emplace(sql, *stmt);
    return Status::Ok();
  }

  static void BindText(sqlite3_stmt* stmt, int index, const std::string& text) {
    sqlite3_bind_text64(stmt, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }

  // Binds a record's columns as parameters 1..10 of kInsert and
  // kInsertWithId (the id, when there is one, is the 11th).
  static void BindRecord(sqlite3_stmt* stmt, const ImageRecord& r) {
    BindText(stmt, 1, r.path);
    BindText(stmt, 2, r.name);
    BindText(stmt, 3, r.sha256);
    sqlite3_bind_int64(stmt, 4, r.size_bytes);
    BindText(stmt, 5, r.format);
    sqlite3_bind_int(stmt, 6, r.width);
    sqlite3_bind_int(stmt, 7, r.height);
    BindText(stmt, 8, r.exif_datetime);
    BindText(stmt, 9, r.label);
    sqlite3_bind_int64(stmt, 10, r.added_at);
  }

  // Inserts the record alone. Requires mu_.
  Result<int64_t> InsertLocked(const ImageRecord& r) {
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kInsert, &stmt));
    StatementScope scope(stmt);
    BindRecord(stmt, r);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return Status::AlreadyExists("an image with path " + r.path + " is already stored");
    }
    if (rc != SQLITE_DONE) return Error(rc, "cannot insert image " + r.path);
    return sqlite3_last_insert_rowid(db_);
  }

  // Inserts the record alone under its own id (InsertWithIds). Requires mu_.
  Status InsertWithIdLocked(const ImageRecord& r) {
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kInsertWithId, &stmt));
    StatementScope scope(stmt);
    BindRecord(stmt, r);
    sqlite3_bind_int64(stmt, 11, r.id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return Status::AlreadyExists("an image with id " + std::to_string(r.id) + " or path " +
                                   r.path + " is already stored");
    }
    if (rc != SQLITE_DONE) return Error(rc, "cannot insert image " + r.path);
    return Status::Ok();
  }

  // Sets the feature of image `id`. NotFound when there is no such image
  // (the foreign key). Requires mu_.
  Status PutFeatureLocked(int64_t id, std::span<const float> feature) {
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kPutFeature, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, id);
    const std::string_view bytes = store_internal::FeatureBytes(feature);
    sqlite3_bind_blob64(stmt, 2, bytes.data(), bytes.size(), SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
      return Status::NotFound("no image with id " + std::to_string(id));
    }
    if (rc != SQLITE_DONE) return Error(rc, "cannot write the feature of image " + std::to_string(id));
    return Status::Ok();
  }

  // Appends up to kFeaturePageRows features with ids above `after_id`.
  // Takes mu_ for this page only.
  Status ReadFeaturePage(int64_t after_id, int dimension, std::vector<int64_t>* ids,
                         std::vector<float>* rows) const {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kScanFeatures, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, after_id);
    sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(kFeaturePageRows));
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      const int64_t id = sqlite3_column_int64(stmt, 0);
      PIXSEEK_RETURN_IF_ERROR(
          store_internal::AppendFeature(id, ColumnBlob(stmt, 1), dimension, rows));
      ids->push_back(id);
    }
    if (rc != SQLITE_DONE) return Error(rc, "cannot read features");
    return Status::Ok();
  }

  static Status StatusOf(const Status& s) { return s; }
  template <typename T>
  static Status StatusOf(const Result<T>& r) {
    return r.status();
  }

  // Runs fn (returning a Status or a Result) in a write transaction:
  // committed when it succeeds, rolled back otherwise. Requires mu_.
  template <typename Fn>
  auto InTransaction(Fn&& fn) -> decltype(fn()) {
    // IMMEDIATE takes the write lock now (waiting up to busy_timeout), so the
    // transaction cannot fail later for another process's write lock.
    PIXSEEK_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    auto result = fn();
    Status s = StatusOf(result);
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) {
      // A failed COMMIT (SQLITE_BUSY) leaves the transaction open.
      (void)Exec("ROLLBACK");
      return s;
    }
    return result;
  }

  Result<std::optional<ImageRecord>> GetLocked(int64_t id) const {
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(kGet, &stmt));
    StatementScope scope(stmt);
    sqlite3_bind_int64(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return std::optional<ImageRecord>();
    if (rc != SQLITE_ROW) return Error(rc, "cannot read image " + std::to_string(id));
    return std::optional<ImageRecord>(ReadRecord(stmt));
  }

  Result<std::optional<ImageRecord>> FindOne(const char* sql, const std::string& key) const {
    std::lock_guard lock(mu_);
    sqlite3_stmt* stmt;
    PIXSEEK_RETURN_IF_ERROR(Prepare(sql, &stmt));
    StatementScope scope(stmt);
    BindText(stmt, 1, key);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return std::optional<ImageRecord>();
    if (rc != SQLITE_ROW) return Error(rc, "cannot look up image " + key);
    return std::optional<ImageRecord>(ReadRecord(stmt));
  }

  const std::filesystem::path file_;
  mutable std::mutex mu_;
  sqlite3* db_ = nullptr;  // GUARDED_BY(mu_)
  // GUARDED_BY(mu_): keyed by the address of the k* SQL constants.
  mutable std::unordered_map<const char*, sqlite3_stmt*> statements_;
};

}  // namespace

Result<std::unique_ptr<MetadataStore>> OpenSqliteStore(const std::filesystem::path& file) {
  auto store = std::make_unique<SqliteStore>(file);
  PIXSEEK_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<MetadataStore>(std::move(store));
}

}  // namespace pixseek
