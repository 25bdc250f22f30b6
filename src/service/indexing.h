// Steps shared by the build and upload services: deciding whether a file is
// already stored, describing a decoded image, and storing one image.
#ifndef PIXSEEK_SERVICE_INDEXING_H_
#define PIXSEEK_SERVICE_INDEXING_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>

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

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_INDEXING_H_
