// EXIF reading (through libexif) and orientation handling for decoded pixels.
//
// Thread-safe: no shared state; each call owns its libexif objects.
#ifndef PIXSEEK_IMAGE_EXIF_H_
#define PIXSEEK_IMAGE_EXIF_H_

#include <cstdint>
#include <span>
#include <string>

#include <opencv2/core.hpp>

#include "pixseek/image.h"

namespace pixseek::image_internal {

struct ExifMetadata {
  int orientation = 1;   // 1..8; 1 when absent or out of range
  std::string datetime;  // "YYYY-MM-DD HH:MM:SS", empty when absent or invalid
};

// Best-effort EXIF extraction: JPEG (APP1), PNG (eXIf), WebP (EXIF chunk) and
// TIFF (IFD0 of the file itself). Missing or malformed EXIF yields the
// defaults; it is never an error because the pixels are still usable.
ExifMetadata ReadExif(ImageFormat format, std::span<const uint8_t> bytes);

// Turns an image stored with EXIF `orientation` (1..8) upright. Values outside
// 1..8 leave the image unchanged.
void ApplyOrientation(cv::Mat& image, int orientation);

// True when `orientation` swaps width and height (5..8).
inline bool OrientationTransposes(int orientation) {
  return orientation >= 5 && orientation <= 8;
}

}  // namespace pixseek::image_internal

#endif  // PIXSEEK_IMAGE_EXIF_H_
