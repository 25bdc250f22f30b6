// Image decoding with limits, EXIF orientation, and thumbnail encoding.
//
// JPEG goes through libjpeg-turbo (with DCT-domain downscaling when the caller
// only needs a small image); GIF (first frame, composited onto the logical
// screen, transparency over white) through giflib; PNG, WebP, BMP and TIFF
// through OpenCV. Every function here is thread-safe (no shared state).
#ifndef PIXSEEK_IMAGE_H_
#define PIXSEEK_IMAGE_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp, kBmp, kTiff, kGif };

// "jpeg", "png", "webp", "bmp", "tiff", "gif" or "unknown".
std::string_view ImageFormatName(ImageFormat format);

// Limits that protect the process from huge files and decompression bombs.
struct DecodeLimits {
  // Largest encoded file accepted, in bytes. Larger: ResourceExhausted.
  size_t max_bytes = 64u << 20;  // 64 MiB
  // Largest image accepted, width * height of the *source* image, checked from
  // the header before any pixel is decoded. Larger: ResourceExhausted.
  uint64_t max_pixels = 100'000'000;  // 100 MP
};

struct DecodeOptions {
  DecodeLimits limits;
  // When > 0, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
  // as long as the shorter side of the result stays >= min_short_side. 0 means
  // full resolution. Other formats always decode at full resolution.
  int min_short_side = 0;
};

// An 8-bit RGB image, rows packed (stride = 3 * width), already rotated
// upright according to EXIF orientation.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // size 3 * width * height

  bool empty() const { return width == 0 || height == 0; }
};

// What the header and EXIF say about the source file.
struct ImageInfo {
  ImageFormat format = ImageFormat::kUnknown;
  int width = 0;        // of the upright source image, full resolution
  int height = 0;
  int orientation = 1;  // EXIF orientation 1..8 as found (1 when absent)
  std::string exif_datetime;  // "YYYY-MM-DD HH:MM:SS" from EXIF, empty if absent
};

struct DecodedImage {
  Image image;
  ImageInfo info;
};

// Detects the format from magic bytes. kUnknown when none matches.
ImageFormat SniffFormat(std::span<const uint8_t> bytes);

// Decodes `bytes`. Errors:
//   InvalidArgument   empty, corrupt or truncated data;
//   Unsupported       not an image format we know;
//   ResourceExhausted more bytes or pixels than `options.limits` allow.
Result<DecodedImage> DecodeImage(std::span<const uint8_t> bytes,
                                 const DecodeOptions& options = {});

// Reads a whole file, refusing (ResourceExhausted) files over max_bytes before
// reading them. NotFound when missing, InvalidArgument when not a regular file.
Result<std::vector<uint8_t>> ReadFileLimited(const std::filesystem::path& path,
                                             size_t max_bytes);

// Encodes a JPEG thumbnail whose longer side is at most `max_side` (never
// upscaled).
Result<std::vector<uint8_t>> EncodeThumbnail(const Image& image,
                                             int max_side = 256,
                                             int quality = 85);

// Filters applied to every decoded image before the embedder sees it, the
// same at build, upload, query, eval and reindex time (a database records
// them in its manifest at creation; DatabaseOptions::preprocessing).
struct ImagePreprocessing {
  // Luma (ITU-R BT.601) copied to all three channels: colour stops counting,
  // so a colour photo matches its greyscale copy (sketches, scans).
  bool grey = false;
  // Edge-preserving bilateral filter (5x5 neighbourhood, OpenCV
  // bilateralFilter): smooths sensor and JPEG noise at a bounded cost of 25
  // taps a pixel, on the image as decoded for the model (DCT-downscaled).
  bool denoise = false;
  // Uploaded files that the database keeps under DB/images/: a larger one is
  // re-encoded as JPEG at most stored_max_side pixels on its longer side at
  // stored_quality (1..100); 0 = kept as sent. Files indexed in place are
  // never rewritten.
  int stored_max_side = 0;
  int stored_quality = 90;

  // grey or denoise: the embedder's input differs from the decoded image.
  bool filters() const { return grey || denoise; }
  bool operator==(const ImagePreprocessing&) const = default;
};

// "greyscale + denoise" / "none", for messages.
std::string DescribePreprocessing(const ImagePreprocessing& preprocessing);

// Applies the filters of `preprocessing` (grey, denoise) in place; nothing
// when it has none. InvalidArgument when the buffer does not match the size,
// Internal when OpenCV fails.
[[nodiscard]] Status ApplyPreprocessing(const ImagePreprocessing& preprocessing, Image* image);

}  // namespace pixseek

#endif  // PIXSEEK_IMAGE_H_
