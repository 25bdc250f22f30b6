#include "service/indexing.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <vector>

namespace pixseek {

Result<std::optional<int64_t>> StoredUnchanged(Database& db, const std::string& path,
                                               const std::string& sha256) {
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<ImageRecord> existing, db.store().FindByPath(path));
  if (!existing) return std::optional<int64_t>();
  if (existing->sha256 == sha256) return std::optional<int64_t>(existing->id);
  PIXSEEK_RETURN_IF_ERROR(db.Remove(existing->id));
  return std::optional<int64_t>();
}

void DescribeImage(std::span<const uint8_t> bytes, const std::string& sha256,
                   const ImageInfo& info, ImageRecord* record) {
  record->sha256 = sha256;
  record->size_bytes = static_cast<int64_t>(bytes.size());
  record->format = std::string(ImageFormatName(info.format));
  record->width = info.width;
  record->height = info.height;
  record->exif_datetime = info.exif_datetime;
  record->added_at = static_cast<int64_t>(std::time(nullptr));
}

Result<int64_t> StoreDecoded(Database& db, std::span<const uint8_t> bytes,
                             const std::string& sha256, const DecodedImage& decoded,
                             ImageRecord record) {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> thumb, EncodeThumbnail(decoded.image));
  std::vector<float> feature(static_cast<size_t>(db.base_dimension()));
  PIXSEEK_RETURN_IF_ERROR(db.EmbedOne(decoded.image, feature.data()));
  DescribeImage(bytes, sha256, decoded.info, &record);
  return db.Insert(record, feature, thumb);
}

namespace {

bool HasImageExtension(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* kExts[] = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp",
                                ".dib", ".tif", ".tiff", ".gif"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

}  // namespace

std::optional<Image> DecodeFile(const std::filesystem::path& path, const DecodeOptions& decode) {
  auto bytes = ReadFileLimited(path, decode.limits.max_bytes);
  if (!bytes.ok()) return std::nullopt;
  auto decoded = DecodeImage(*bytes, decode);
  if (!decoded.ok()) return std::nullopt;
  return std::move(decoded->image);
}

namespace {

// Where the link `link` under `root` (`real_root`: root without links)
// leads when that is an image file under root, named under root; nullopt
// for a dangling link or one to anything else (skipped, as before links were
// looked at); empty when it leads outside.
std::optional<std::filesystem::path> LinkedFileUnder(const std::filesystem::path& link,
                                                     const std::filesystem::path& root,
                                                     const std::filesystem::path& real_root) {
  std::error_code ec;
  const auto target = std::filesystem::canonical(link, ec);
  if (ec || !std::filesystem::is_regular_file(target, ec)) return std::nullopt;
  const auto rel = target.lexically_relative(real_root);
  if (rel.empty() || *rel.begin() == "..") return std::filesystem::path();
  return root / rel;
}

}  // namespace

Result<std::vector<std::filesystem::path>> ListImages(const std::filesystem::path& root,
                                                      std::vector<RefusedFile>* refused) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  auto real_root = std::filesystem::canonical(root, ec);
  if (ec) return Status::NotFound("cannot read directory " + root.string() + ": " + ec.message());
  std::filesystem::recursive_directory_iterator it(
      root, std::filesystem::directory_options::skip_permission_denied, ec);
  if (ec) return Status::NotFound("cannot read directory " + root.string() + ": " + ec.message());
  for (; it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const auto& entry = *it;
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name[0] == '.') {
      if (entry.is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!HasImageExtension(entry.path())) continue;
    std::error_code link_ec;
    if (entry.is_symlink(link_ec)) {
      auto linked = LinkedFileUnder(entry.path(), root, real_root);
      if (linked && !linked->empty()) {
        files.push_back(std::move(*linked));
      } else if (linked && refused != nullptr) {
        refused->push_back({entry.path(), "a symbolic link to a file outside " + root.string() +
                                              "; links that leave the folder are not followed"});
      }
    } else if (entry.is_regular_file(ec)) {
      files.push_back(entry.path());
    }
  }
  if (ec) return Status::Internal("error while listing " + root.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

}  // namespace pixseek
