#include <ctime>
#include <fstream>

#include "core/files.h"
#include "core/hash.h"
#include "pixseek/services.h"

namespace pixseek {

Result<int64_t> IndexImageBytes(Database& db, std::span<const uint8_t> bytes,
                                ImageRecord record) {
  PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, db.decode_options()));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> thumb, EncodeThumbnail(decoded.image));
  std::vector<float> feature(static_cast<size_t>(db.dimension()));
  const Image* images[] = {&decoded.image};
  PIXSEEK_RETURN_IF_ERROR(db.Embed(images, feature.data()));
  if (record.sha256.empty()) record.sha256 = Sha256Hex(bytes);
  record.size_bytes = static_cast<int64_t>(bytes.size());
  record.format = std::string(ImageFormatName(decoded.info.format));
  record.width = decoded.info.width;
  record.height = decoded.info.height;
  record.exif_datetime = decoded.info.exif_datetime;
  record.added_at = static_cast<int64_t>(std::time(nullptr));
  return db.Insert(record, feature, thumb);
}

Result<int64_t> UploadService::AddBytes(std::span<const uint8_t> bytes, const std::string& name) {
  if (bytes.empty()) return Status::InvalidArgument("empty file");
  if (bytes.size() > db_.options().limits.max_bytes) {
    return Status::ResourceExhausted("file of " + std::to_string(bytes.size()) +
                                     " bytes exceeds the limit of " +
                                     std::to_string(db_.options().limits.max_bytes));
  }
  const ImageFormat format = SniffFormat(bytes);
  if (format == ImageFormat::kUnknown) {
    return Status::Unsupported("not a supported image format (JPEG, PNG, WebP, BMP, TIFF, GIF)");
  }
  const std::string sha = Sha256Hex(bytes);
  const auto path = db_.UploadPath(sha, ImageFormatName(format));
  // The same bytes uploaded again are the same stored image.
  PIXSEEK_ASSIGN_OR_RETURN(auto existing, db_.store().FindByPath(path.string()));
  if (existing) return existing->id;

  // The file is written (durably) before it is indexed, so an acknowledged
  // upload always has its bytes on disk.
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(path.parent_path()));
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(path, bytes));
  ImageRecord record;
  record.path = path.string();
  record.name = name.empty() ? path.filename().string() : name;
  record.sha256 = sha;
  auto id = IndexImageBytes(db_, bytes, record);
  if (!id.ok()) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  return id;
}

Result<int64_t> UploadService::AddFile(const std::filesystem::path& file,
                                       const std::string& label) {
  const auto path = std::filesystem::absolute(file).lexically_normal();
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           ReadFileLimited(path, db_.options().limits.max_bytes));
  const std::string sha = Sha256Hex(bytes);
  PIXSEEK_ASSIGN_OR_RETURN(auto existing, db_.store().FindByPath(path.string()));
  if (existing) {
    if (existing->sha256 == sha) return existing->id;
    PIXSEEK_RETURN_IF_ERROR(db_.Remove(existing->id));  // the file changed
  }
  ImageRecord record;
  record.path = path.string();
  record.name = path.filename().string();
  record.label = label;
  record.sha256 = sha;
  return IndexImageBytes(db_, bytes, record);
}

Status UploadService::Remove(int64_t id) { return db_.Remove(id); }

}  // namespace pixseek
