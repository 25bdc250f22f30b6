// Image metadata: the MetadataStore interface and its SQLite and MySQL/MariaDB
// implementations.
#ifndef PIXSEEK_METADATA_STORE_H_
#define PIXSEEK_METADATA_STORE_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

// One stored image. `id` is assigned by the store on Insert.
struct ImageRecord {
  int64_t id = 0;
  // The stored file: absolute for a file indexed in place, relative to the
  // database directory for an upload ("images/HH/SHA.ext"; absolute in older
  // databases). Database::FilePath resolves it.
  std::string path;
  std::string name;           // file name shown to users (original upload name)
  std::string sha256;         // hex, of the file's bytes
  int64_t size_bytes = 0;
  std::string format;         // ImageFormatName()
  int width = 0;
  int height = 0;
  std::string exif_datetime;  // empty if absent
  std::string label;          // first folder level under the build root; may be empty
  int64_t added_at = 0;       // unix seconds
};

struct ListOptions {
  int64_t after_id = 0;   // keyset paging: records with id > after_id
  size_t limit = 100;
  std::optional<std::string> label;  // only this label when set
};

// The records a filtered search keeps (MetadataStore::FilterIds): every
// condition that is set must hold. Dates are a half-open range,
// added_after <= added_at < added_before.
struct RecordFilter {
  std::optional<std::string> label;
  std::optional<int64_t> added_after;   // unix seconds, inclusive
  std::optional<int64_t> added_before;  // unix seconds, exclusive
  std::optional<std::string> format;    // ImageFormatName(): "jpeg", "png", ...
  int min_width = 0;                    // pixels; 0 = any
  int min_height = 0;

  // No condition set: every record passes.
  bool empty() const {
    return !label && !added_after && !added_before && !format && min_width <= 0 &&
           min_height <= 0;
  }
};

// One unit of background work (a build started over HTTP), kept in the store
// so that every process sharing it sees the same list (MetadataStore's jobs).
// The store knows nothing of what a job does: `state` and `payload` are the
// runner's vocabulary.
struct JobRecord {
  int64_t id = 0;          // CreateJob assigns it (or keeps a given one)
  std::string kind;        // who runs it, e.g. "build"; 1..64 characters
  std::string state;       // e.g. "queued", "running", "done"; 1..32 characters
  std::string payload;     // the runner's description and progress (JSON)
  int64_t created_at = 0;  // unix seconds by the store's clock, set by CreateJob
  int64_t updated_at = 0;  // unix seconds by the store's clock, set by every write
};

// Which jobs MetadataStore::ListJobs returns.
struct JobQuery {
  std::string kind;                  // required
  std::optional<std::string> state;  // only jobs in this state when set
  size_t limit = 100;
  bool newest_first = false;         // by id; oldest first otherwise
};

// Thread-safety: all methods are safe to call concurrently.
class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // Stores `record` (its id is ignored) and its base feature (`feature`;
  // empty: none) in one transaction; returns the new id. InvalidArgument for
  // an empty path or a non-finite feature value; AlreadyExists for a path
  // already stored.
  virtual Result<int64_t> Insert(const ImageRecord& record, std::span<const float> feature) = 0;
  // A record without a base feature. (Implementations declare
  // `using MetadataStore::Insert;` so that their override does not hide it.)
  Result<int64_t> Insert(const ImageRecord& record) { return Insert(record, {}); }
  // Stores several records with their base features (`features`:
  // records.size() rows of `dimension` floats, in the order of `records`) in
  // one transaction, so one commit (one sync) for all of them; returns their
  // ids in order. On any error nothing is written. InvalidArgument for
  // dimension < 1, a size other than records.size() * dimension, an empty
  // path or a non-finite value; AlreadyExists for a path already stored or
  // given twice.
  virtual Result<std::vector<int64_t>> InsertMany(std::span<const ImageRecord> records,
                                                  int dimension,
                                                  std::span<const float> features) = 0;
  // Stores records under the ids they carry (`pixseek migrate` copying a
  // database into this store), each with its base feature (`features[i]`;
  // empty: none), in one transaction; ids assigned later are larger than
  // every id stored. On any error nothing is written. InvalidArgument for
  // sizes that differ, an id < 1, an empty path or a non-finite value;
  // AlreadyExists for an id or a path already stored or given twice.
  virtual Status InsertWithIds(std::span<const ImageRecord> records,
                               std::span<const std::vector<float>> features) = 0;
  // NotFound for an unknown id.
  virtual Result<ImageRecord> Get(int64_t id) const = 0;
  // Records for the ids that exist, in the order of `ids`; unknown ids skipped.
  virtual Result<std::vector<ImageRecord>> GetMany(std::span<const int64_t> ids) const = 0;
  virtual Result<std::optional<ImageRecord>> FindByPath(const std::string& path) const = 0;
  // Removes the record and its base feature in one transaction. NotFound for
  // an unknown id.
  virtual Status Remove(int64_t id) = 0;
  virtual Result<std::vector<ImageRecord>> List(const ListOptions& options) const = 0;
  // Every id, ascending.
  virtual Result<std::vector<int64_t>> AllIds() const = 0;
  // The ids of the records that pass `filter`, ascending.
  virtual Result<std::vector<int64_t>> FilterIds(const RecordFilter& filter) const = 0;

  // Base features: the network's L2-normalised output before PCA or any
  // head, one per image at most, kept beside the record (its own table, so
  // that Get, GetMany and List never read it). Stored as raw little-endian
  // float32; the store does not know the dimension, the caller names it.

  // Sets (replaces) the base features of existing images: `features` holds
  // ids.size() rows of `dimension` floats, in the order of `ids`. One
  // transaction: on any error nothing is written. InvalidArgument for
  // dimension < 1, a size other than ids.size() * dimension, or a non-finite
  // value; NotFound naming the first id without a record.
  virtual Status PutFeatures(std::span<const int64_t> ids, int dimension,
                             std::span<const float> features) = 0;
  // The base feature of `id`. NotFound when the image or its feature is absent;
  // DataLoss when the stored bytes are not whole floats.
  virtual Result<std::vector<float>> GetFeature(int64_t id) const = 0;
  // Hands every stored feature to `visit`, ascending by id, in pages of at
  // most kFeaturePageRows: `ids` and `rows` (ids.size() rows of `dimension`
  // floats), both valid only during the call. Pages are read one at a time,
  // without holding the store: `visit` may call the store, and writes made
  // meanwhile may or may not be seen. InvalidArgument for dimension < 1;
  // DataLoss naming the id of a stored feature of another length (the pages
  // before it have been visited); a non-OK status from `visit` stops the scan
  // and is returned.
  using FeatureVisitor =
      std::function<Status(std::span<const int64_t> ids, std::span<const float> rows)>;
  static constexpr size_t kFeaturePageRows = 1000;
  virtual Status ScanFeatures(int dimension, const FeatureVisitor& visit) const = 0;
  // How many images have a stored base feature.
  virtual Result<uint64_t> CountFeatures() const = 0;

  // Small key/value settings of the database (model name, dimension, ...).
  virtual Result<std::optional<std::string>> GetSetting(const std::string& key) const = 0;
  virtual Status SetSetting(const std::string& key, const std::string& value) = 0;

  // ---- Coordination of the processes that share the store ----
  //
  // Several processes (the nodes of a multi-node deployment, all on one
  // MariaDB) divide work through leases and job records. Times come from the
  // store's own clock (the MariaDB server's NOW(); for SQLite, the clock of
  // the machine that holds the file), so the nodes' clocks need not agree.

  // Leases: named locks that lapse unless renewed. A lease is held by the
  // owner recorded for it until that owner releases it; once its expiry has
  // passed, any other owner may take it (and so become its holder), but
  // until someone does, it is still the old owner's. `owner` names one
  // process (make it unique: host, pid and a random part); `name` and
  // `owner` are 1..255 characters and `ttl` 1 ms..24 h, InvalidArgument
  // otherwise.
  //
  // Takes lease `name` for `owner` until `ttl` from now when nobody holds
  // it, its expiry has passed, or `owner` holds it already (which extends
  // it). Returns whether `owner` holds it now; false (not an error) while
  // another owner holds it unexpired.
  virtual Result<bool> AcquireLease(const std::string& name, const std::string& owner,
                                    std::chrono::milliseconds ttl) = 0;
  // Extends lease `name` until `ttl` from now if `owner` still holds it.
  // False when it does not (it released it, or another owner took it after
  // it expired): whatever it guarded may have been done by another since.
  virtual Result<bool> RenewLease(const std::string& name, const std::string& owner,
                                  std::chrono::milliseconds ttl) = 0;
  // Gives lease `name` up if `owner` holds it; otherwise does nothing.
  virtual Status ReleaseLease(const std::string& name, const std::string& owner) = 0;

  // Jobs. Any process may create one; only the holder of a lease may change
  // one (UpdateJob), so that a process that lost its lease (stalled, cut off
  // from the store) cannot overwrite what the new holder writes.
  //
  // Stores `job` and returns its id. With job.id == 0 the store assigns the
  // next id; a positive job.id is kept (importing older jobs), and later
  // assigned ids are larger. created_at and updated_at are set to now.
  // InvalidArgument for an empty or too long kind or state, or a negative
  // id; AlreadyExists for a positive id that is taken. (On MariaDB, like
  // Insert, an Unavailable answer does not prove that nothing was stored.)
  virtual Result<int64_t> CreateJob(const JobRecord& job) = 0;
  // Sets the state and payload of job `job.id` (its kind and times are
  // not taken from `job`; updated_at becomes now), provided `owner` holds
  // lease `lease`. NotFound for an unknown job; FailedPrecondition when
  // `owner` does not hold the lease (nothing is written then);
  // InvalidArgument for an empty or too long state.
  virtual Status UpdateJob(const JobRecord& job, const std::string& lease,
                           const std::string& owner) = 0;
  // NotFound for an unknown id.
  virtual Result<JobRecord> GetJob(int64_t id) const = 0;
  // The jobs of query.kind (and query.state, when set) in id order, at most
  // query.limit of them. InvalidArgument for an empty kind.
  virtual Result<std::vector<JobRecord>> ListJobs(const JobQuery& query) const = 0;

  // Verifies the store's own structures (`pixseek check`): SQLite's PRAGMA
  // integrity_check and foreign_key_check; for MariaDB, that the server
  // answers and every pixseek table can be read. DataLoss saying what is
  // damaged; Unavailable when the server cannot be reached.
  virtual Status CheckIntegrity() const = 0;
};

// SQLite in WAL mode at `file` (created with its schema when absent).
// DataLoss when the file is not a pixseek SQLite database.
Result<std::unique_ptr<MetadataStore>> OpenSqliteStore(const std::filesystem::path& file);

// Settings of the MySQL/MariaDB store that the URL does not carry.
struct MysqlStoreOptions {
  // Connections kept open; concurrent calls beyond this many wait for one.
  int pool_size = 4;
  // Bounds, in seconds, on how long a call waits for the server: a stopped
  // or unreachable server gives Unavailable after about this long.
  int connect_timeout_s = 3;
  int read_timeout_s = 10;
  int write_timeout_s = 10;
};

// MariaDB (10.4 or later) at `url`, of the form
//   mysql://USER:PASSWORD@HOST:PORT/DATABASE   (mariadb:// is the same)
// USER and PASSWORD are percent-decoded (write '@' as %40, ':' as %3A, '/'
// as %2F, '%' as %25); ":PASSWORD" and ":PORT" (default 3306) may be left
// out; HOST may be an IPv6 address in brackets; "localhost" means the
// server's default Unix socket. The database must exist; its tables are
// created (utf8mb4, InnoDB) or migrated on open. (MySQL 8 servers lack the
// utf8mb4_nopad_bin collation the tables use, so they are refused on open.)
// Errors: InvalidArgument naming the malformed part of the URL (never the
// password); Unavailable when the server cannot be reached;
// PermissionDenied when it refuses the user; NotFound for an unknown
// database; FailedPrecondition when the database holds other tables or a
// newer pixseek schema; DataLoss when pixseek's tables lack what this build
// needs. Unlike SQLite, text must be valid UTF-8, and label, format,
// sha256, exif_datetime and setting keys are at most 255 characters
// (InvalidArgument otherwise).
// Every call after open that finds the server gone retries once on a fresh
// connection, then returns Unavailable("MariaDB at HOST:PORT is unreachable:
// ..."); the store reconnects by itself when the server is back. Insert
// returns only after the row is committed; an Unavailable answer to a write
// does not prove that nothing was written (the server may have committed
// it before the connection broke).
Result<std::unique_ptr<MetadataStore>> OpenMysqlStore(const std::string& url,
                                                      const MysqlStoreOptions& options = {});

// Opens the store that `url` names:
//   sqlite://PATH          SQLite file at PATH (everything after "sqlite://",
//                          taken literally: sqlite:///var/db/metadata.db is
//                          absolute, sqlite://metadata.db relative)
//   mysql://... mariadb://...   OpenMysqlStore with default options
// InvalidArgument for any other scheme.
Result<std::unique_ptr<MetadataStore>> OpenMetadataStore(const std::string& url);

}  // namespace pixseek

#endif  // PIXSEEK_METADATA_STORE_H_
