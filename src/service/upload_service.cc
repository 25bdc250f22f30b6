#include <algorithm>
#include <system_error>
#include <vector>

#include "core/files.h"
#include "core/hash.h"
#include "pixseek/services.h"
#include "service/indexing.h"

namespace pixseek {

Result<int64_t> UploadService::AddBytes(std::span<const uint8_t> bytes, const std::string& name) {
  // Decoding first checks size, format and pixel limits before anything is
  // written.
  PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, db_.decode_options()));
  const std::string sha = Sha256Hex(bytes);
  // Over the database's size cap, the copy kept (and embedded, so that a
  // reindex that reads it again gives the same vector) is a re-encoded JPEG,
  // still filed under the sha256 of the bytes sent so that sending them
  // again finds it.
  std::vector<uint8_t> capped;
  const ImagePreprocessing& pre = db_.preprocessing();
  if (pre.stored_max_side > 0 &&
      std::max(decoded.info.width, decoded.info.height) > pre.stored_max_side) {
    DecodeOptions full;
    full.limits = db_.options().limits;
    PIXSEEK_ASSIGN_OR_RETURN(DecodedImage original, DecodeImage(bytes, full));
    PIXSEEK_ASSIGN_OR_RETURN(capped, EncodeThumbnail(original.image, pre.stored_max_side,
                                                     pre.stored_quality));
    PIXSEEK_ASSIGN_OR_RETURN(decoded, DecodeImage(capped, db_.decode_options()));
  }
  const std::span<const uint8_t> kept = capped.empty() ? bytes : std::span<const uint8_t>(capped);
  const auto path = db_.UploadPath(sha, ImageFormatName(decoded.info.format));
  // The same bytes uploaded again are the same stored image. Two uploads of
  // them at once share one file: the lock keeps the one that finds it stored
  // from racing the one storing it (whose failure would remove the file).
  std::lock_guard<std::mutex> same_content(db_.ContentMutex(sha));
  // Recorded relative to the database directory, so that a moved database
  // keeps its uploads (Database::FilePath); older databases recorded the
  // absolute path.
  const std::string stored = path.lexically_relative(db_.dir()).generic_string();
  for (const std::string& known : {stored, path.string()}) {
    PIXSEEK_ASSIGN_OR_RETURN(auto existing, db_.store().FindByPath(known));
    if (existing) return existing->id;
  }

  // The file is written (durably) before it is indexed, so an acknowledged
  // upload always has its bytes on disk.
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(path.parent_path()));
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(path, kept));
  ImageRecord record;
  record.path = stored;
  record.name = name.empty() ? path.filename().string() : name;
  auto id = StoreDecoded(db_, kept, capped.empty() ? sha : Sha256Hex(kept), decoded, record);
  if (!id.ok()) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  return id;
}

Result<int64_t> UploadService::AddFile(const std::filesystem::path& file,
                                       const std::string& label) {
  // Recorded without links (as a build records its files), so that the
  // file can be served: GET .../file follows none.
  std::error_code ec;
  auto path = std::filesystem::canonical(file, ec);
  if (ec) path = std::filesystem::absolute(file, ec).lexically_normal();
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           ReadFileLimited(path, db_.options().limits.max_bytes));
  PIXSEEK_RETURN_IF_ERROR(db_.AddLibraryRoot(path.parent_path()));
  const std::string sha = Sha256Hex(bytes);
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<int64_t> stored,
                           StoredUnchanged(db_, path.string(), sha));
  if (stored) return *stored;
  PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, db_.decode_options()));
  ImageRecord record;
  record.path = path.string();
  record.name = path.filename().string();
  record.label = label;
  return StoreDecoded(db_, bytes, sha, decoded, record);
}

Status UploadService::Remove(int64_t id) { return db_.Remove(id); }

}  // namespace pixseek
