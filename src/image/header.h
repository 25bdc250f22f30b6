// Format sniffing and header-only dimension parsing for untrusted image bytes.
//
// These parsers read a few fixed fields from the start of a file so that the
// caller can refuse decompression bombs before any pixel buffer is allocated.
// They never read outside `bytes` and never allocate more than a few bytes.
// All functions are pure and thread-safe.
#ifndef PIXSEEK_IMAGE_HEADER_H_
#define PIXSEEK_IMAGE_HEADER_H_

#include <cstdint>
#include <span>

#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek::image_internal {

// Width and height of the stored (not yet EXIF-rotated) source image.
struct HeaderInfo {
  uint32_t width = 0;
  uint32_t height = 0;
  // WebP only: the VP8X header announces an animation.
  bool animated = false;
};

// Reads the dimensions of a PNG, GIF, BMP, WebP or TIFF file from its header.
// JPEG is not handled here (TurboJPEG's header reader is used instead).
// InvalidArgument when the header is truncated or malformed, or when a
// dimension is zero or negative.
Result<HeaderInfo> ReadHeader(ImageFormat format, std::span<const uint8_t> bytes);

// Finds the raw EXIF payload embedded in a PNG (eXIf chunk) or WebP (EXIF
// chunk) container. Returns an empty span when there is none or the container
// is malformed. The span points into `bytes`.
std::span<const uint8_t> FindContainerExif(ImageFormat format,
                                           std::span<const uint8_t> bytes);

}  // namespace pixseek::image_internal

#endif  // PIXSEEK_IMAGE_HEADER_H_
