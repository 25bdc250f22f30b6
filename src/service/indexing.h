// Steps shared by the build and upload services: deciding whether a file is
// already stored, describing a decoded image, storing one image, and listing
// the images of a folder.
#ifndef PIXSEEK_SERVICE_INDEXING_H_
#define PIXSEEK_SERVICE_INDEXING_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pixseek/database.h"

namespace pixseek {

// The id of the image stored under `path` when it holds exactly these bytes
// (same sha256): nothing to do. When `path` is stored with other content (the
// file changed), that stale image is removed and nullopt returned, as when
// `path` is not stored at all: the caller (re)indexes it.
Result<std::optional<int64_t>> StoredUnchanged(Database& db, const std::string& path,
                                               const std::string& sha256);

// Fills the fields of `record` that come from the bytes and their decoding
// (sha256, size, format, size in pixels, EXIF date, added time).
void DescribeImage(std::span<const uint8_t> bytes, const std::string& sha256,
                   const ImageInfo& info, ImageRecord* record);

// Embeds one decoded image and stores it with `record` (path, name and label
// set by the caller; the rest is described here). Returns the new id.
Result<int64_t> StoreDecoded(Database& db, std::span<const uint8_t> bytes,
                             const std::string& sha256, const DecodedImage& decoded,
                             ImageRecord record);

// Reads and decodes one file; nullopt when it is not a usable image (callers
// count or report it).
std::optional<Image> DecodeFile(const std::filesystem::path& path, const DecodeOptions& decode);

// A file that ListImages found and refused, and why.
struct RefusedFile {
  std::filesystem::path path;
  std::string reason;
};

// Image files under `root` (recursively, following no symlinked directories),
// sorted so that runs are repeatable. Hidden files and folders are skipped.
// A symbolic link to an image file is listed as the file it leads to (named
// under `root`, once even if it is also listed itself) when that file lies
// under `root`; a link that leads outside `root` is never followed: it is
// left out, and added to `refused` when that is given.
// NotFound when root cannot be read.
Result<std::vector<std::filesystem::path>> ListImages(const std::filesystem::path& root,
                                                      std::vector<RefusedFile>* refused = nullptr);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_INDEXING_H_
