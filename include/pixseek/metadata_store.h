// Image metadata: the MetadataStore interface and its SQLite implementation.
#ifndef PIXSEEK_METADATA_STORE_H_
#define PIXSEEK_METADATA_STORE_H_

#include <cstdint>
#include <filesystem>
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
  std::string path;           // absolute path of the stored file
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

// Thread-safety: all methods are safe to call concurrently.
class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // Stores `record` (its id is ignored) and returns the new id.
  virtual Result<int64_t> Insert(const ImageRecord& record) = 0;
  // NotFound for an unknown id.
  virtual Result<ImageRecord> Get(int64_t id) const = 0;
  // Records for the ids that exist, in the order of `ids`; unknown ids skipped.
  virtual Result<std::vector<ImageRecord>> GetMany(std::span<const int64_t> ids) const = 0;
  virtual Result<std::optional<ImageRecord>> FindByPath(const std::string& path) const = 0;
  virtual Result<std::optional<ImageRecord>> FindBySha256(const std::string& sha256) const = 0;
  // NotFound for an unknown id.
  virtual Status Remove(int64_t id) = 0;
  virtual Result<int64_t> Count() const = 0;
  virtual Result<std::vector<ImageRecord>> List(const ListOptions& options) const = 0;
  // Every id, ascending.
  virtual Result<std::vector<int64_t>> AllIds() const = 0;

  // Small key/value settings of the database (model name, dimension, ...).
  virtual Result<std::optional<std::string>> GetSetting(const std::string& key) const = 0;
  virtual Status SetSetting(const std::string& key, const std::string& value) = 0;
};

// SQLite in WAL mode at `file` (created with its schema when absent).
// DataLoss when the file is not a pixseek SQLite database.
Result<std::unique_ptr<MetadataStore>> OpenSqliteStore(const std::filesystem::path& file);

}  // namespace pixseek

#endif  // PIXSEEK_METADATA_STORE_H_
