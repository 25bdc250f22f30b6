// What `pixseek check` reads of a database once and its parts share, for
// CheckDatabase (check.cc) and RepairDatabase (repair.cc). Internal to the
// service module.
#ifndef PIXSEEK_SERVICE_CHECK_CONTEXT_H_
#define PIXSEEK_SERVICE_CHECK_CONTEXT_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pixseek/database_check.h"
#include "pixseek/image.h"
#include "pixseek/metadata_store.h"
#include "pixseek/status.h"
#include "pixseek/vector_index.h"
#include "service/manifest.h"

namespace pixseek {

// Not thread-safe; owns the store it opened.
struct CheckContext {
  CheckOptions options;
  std::filesystem::path dir;  // absolute, normalised
  Result<DatabaseManifest> manifest = Status::NotFound("manifest not read");
  std::unique_ptr<MetadataStore> store;  // null when it could not be opened
  Status store_status;                   // why it could not
  std::vector<ImageRecord> records;      // every record, ascending by id
};

// Reads the manifest, opens the store (never creating its file) and lists
// every record. NotFound when the directory holds no database at all.
Result<CheckContext> OpenCheckContext(const CheckOptions& options);

// The metadata store's URL: the given one, else the database's SQLite file.
std::string CheckedStoreUrl(const CheckContext& ctx);

// How the database opens its index (kind, folder, dimension, parameters,
// and the server's URL, `vector_url`, for a server kind). FailedPrecondition
// when `vector_url` does not match the manifest (CheckVectorStore).
Result<VectorIndexSpec> IndexSpecOf(const DatabaseManifest& manifest,
                                    const std::filesystem::path& dir,
                                    const std::string& vector_url);

// Where the thumbnail of `id` lives (the layout of Database::ThumbnailPath).
std::filesystem::path ThumbnailFile(const std::filesystem::path& dir, int64_t id);
// A record's file: its path, or one relative to the database directory.
std::filesystem::path StoredFile(const std::filesystem::path& dir, const ImageRecord& record);
// Whether that file is an upload the database keeps under DIR/images/.
bool IsUpload(const std::filesystem::path& dir, const std::filesystem::path& file);
// `file` relative to the database directory when it is inside it.
std::string RelativeName(const std::filesystem::path& dir, const std::filesystem::path& file);

// What is wrong with a stored base feature of `dim` floats: "of another
// length", "with non-finite values", "not of unit length"; "" when nothing.
std::string FeatureFault(std::span<const float> feature, size_t dim);
// Why a thumbnail is unusable: "missing", "empty", "unreadable", "not
// decodable"; "" when it decodes.
std::string ThumbnailFault(const std::filesystem::path& file, const DecodeLimits& limits);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_CHECK_CONTEXT_H_
