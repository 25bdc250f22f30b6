// DecodeImage and friends: format sniffing, header limits, TurboJPEG for JPEG,
// giflib for GIF, OpenCV for the other formats, EXIF orientation, thumbnails.
#include <turbojpeg.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "image/exif.h"
#include "image/gif.h"
#include "image/header.h"
#include "pixseek/image.h"

namespace pixseek {

using image_internal::ApplyOrientation;
using image_internal::DecodeGifFirstFrame;
using image_internal::ExifMetadata;
using image_internal::OrientationTransposes;
using image_internal::ReadExif;
using image_internal::ReadHeader;

std::string_view ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "jpeg";
    case ImageFormat::kPng: return "png";
    case ImageFormat::kWebp: return "webp";
    case ImageFormat::kBmp: return "bmp";
    case ImageFormat::kTiff: return "tiff";
    case ImageFormat::kGif: return "gif";
    case ImageFormat::kUnknown: break;
  }
  return "unknown";
}

namespace {

// Beyond every decoder we use (OpenCV refuses sides over 2^20, JPEG and WebP
// stop far below); a header claiming more is lying or broken.
constexpr uint64_t kMaxSide = uint64_t{1} << 20;

struct TjDeleter {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using TjHandle = std::unique_ptr<void, TjDeleter>;

std::string Upper(ImageFormat format) {
  std::string name(ImageFormatName(format));
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name == "WEBP") name = "WebP";
  return name;
}

// Refuses zero, implausible and too-large source dimensions (from the header,
// before any pixel is decoded).
Status CheckDimensions(ImageFormat format, uint64_t width, uint64_t height,
                       const DecodeLimits& limits) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width == 0 || height == 0) {
    return Status::InvalidArgument(Upper(format) + " header gives an empty size " + size);
  }
  const uint64_t pixels = width * height;  // both < 2^32: no overflow
  if (pixels > limits.max_pixels) {
    return Status::ResourceExhausted(Upper(format) + " image is " + size + " = " +
                                     std::to_string(pixels) + " pixels, over the limit of " +
                                     std::to_string(limits.max_pixels) + " pixels");
  }
  if (width > kMaxSide || height > kMaxSide) {
    return Status::InvalidArgument(Upper(format) + " header claims implausible dimensions " +
                                   size);
  }
  return Status::Ok();
}

Status TurboJpegError(void* handle, const char* what) {
  const std::string detail = tjGetErrorStr2(handle);
  if (tjGetErrorCode(handle) == TJERR_WARNING) {
    return Status::InvalidArgument("corrupt or truncated JPEG: " + detail);
  }
  return Status::InvalidArgument(std::string(what) + ": " + detail);
}

// Adobe-style CMYK as stored by Photoshop and by libjpeg-turbo itself: the
// values are inverted (255 = no ink), so R = C * K / 255 and so on.
cv::Mat InvertedCmykToRgb(const cv::Mat& cmyk) {
  cv::Mat rgb(cmyk.rows, cmyk.cols, CV_8UC3);
  for (int y = 0; y < cmyk.rows; ++y) {
    const uint8_t* in = cmyk.ptr<uint8_t>(y);
    uint8_t* out = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < cmyk.cols; ++x, in += 4, out += 3) {
      const int k = in[3];
      out[0] = static_cast<uint8_t>((in[0] * k + 127) / 255);
      out[1] = static_cast<uint8_t>((in[1] * k + 127) / 255);
      out[2] = static_cast<uint8_t>((in[2] * k + 127) / 255);
    }
  }
  return rgb;
}

// Decodes a JPEG to RGB, possibly downscaled in the DCT domain. Sets the
// stored (pre-orientation) source size in *width / *height.
Result<cv::Mat> DecodeJpeg(std::span<const uint8_t> bytes, const DecodeOptions& options,
                           int* width, int* height) {
  TjHandle tj(tjInitDecompress());
  if (!tj) return Status::Internal("tjInitDecompress failed");
  const auto* data = bytes.data();
  const auto size = static_cast<unsigned long>(bytes.size());
  int subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.get(), data, size, width, height, &subsamp, &colorspace) != 0) {
    return TurboJpegError(tj.get(), "corrupt JPEG header");
  }
  PIXSEEK_RETURN_IF_ERROR(CheckDimensions(ImageFormat::kJpeg, static_cast<uint64_t>(*width),
                                          static_cast<uint64_t>(*height), options.limits));

  tjscalingfactor best{1, 1};
  if (options.min_short_side > 0) {
    int count = 0;
    const tjscalingfactor* factors = tjGetScalingFactors(&count);
    for (int i = 0; factors != nullptr && i < count; ++i) {
      const tjscalingfactor f = factors[i];
      if (f.num != 1 || (f.denom != 1 && f.denom != 2 && f.denom != 4 && f.denom != 8)) {
        continue;
      }
      const int short_side = std::min(TJSCALED(*width, f), TJSCALED(*height, f));
      if (short_side >= options.min_short_side && f.denom > best.denom) best = f;
    }
  }
  const int out_w = TJSCALED(*width, best);
  const int out_h = TJSCALED(*height, best);

  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  cv::Mat pixels(out_h, out_w, cmyk ? CV_8UC4 : CV_8UC3);
  // Stop at the first libjpeg warning (truncation, corrupt entropy data) and
  // bound the number of progressive scans against denial-of-service files.
  const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  if (tjDecompress2(tj.get(), data, size, pixels.data, out_w, 0, out_h,
                    cmyk ? TJPF_CMYK : TJPF_RGB, flags) != 0) {
    return TurboJpegError(tj.get(), "cannot decode JPEG");
  }
  if (cmyk) return InvertedCmykToRgb(pixels);
  return pixels;
}

// Any depth and channel count from IMREAD_UNCHANGED -> 8-bit RGB, with
// transparency composited over white.
cv::Mat ToRgb8(const cv::Mat& in) {
  cv::Mat m8;
  switch (in.depth()) {
    case CV_8U: m8 = in; break;
    case CV_16U: in.convertTo(m8, CV_8U, 1.0 / 257.0); break;
    case CV_32F:
    case CV_64F: in.convertTo(m8, CV_8U, 255.0); break;  // [0, 1] floats
    default: cv::normalize(in, m8, 0, 255, cv::NORM_MINMAX, CV_8U); break;
  }
  cv::Mat rgb;
  switch (m8.channels()) {
    case 1: cv::cvtColor(m8, rgb, cv::COLOR_GRAY2RGB); return rgb;
    case 3: cv::cvtColor(m8, rgb, cv::COLOR_BGR2RGB); return rgb;
    case 2:
    case 4: break;
    default: {
      // Unusual channel counts (multi-sample TIFF): keep the first three.
      std::vector<cv::Mat> planes;
      cv::split(m8, planes);
      planes.resize(3, planes.empty() ? cv::Mat() : planes[0]);
      cv::merge(planes, rgb);
      cv::cvtColor(rgb, rgb, cv::COLOR_BGR2RGB);
      return rgb;
    }
  }
  // Gray+alpha or BGRA: blend over white.
  const int channels = m8.channels();
  rgb.create(m8.rows, m8.cols, CV_8UC3);
  for (int y = 0; y < m8.rows; ++y) {
    const uint8_t* in_px = m8.ptr<uint8_t>(y);
    uint8_t* out = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < m8.cols; ++x, in_px += channels, out += 3) {
      const int a = in_px[channels - 1];
      auto blend = [a](int c) { return static_cast<uint8_t>((c * a + 255 * (255 - a) + 127) / 255); };
      if (channels == 2) {
        out[0] = out[1] = out[2] = blend(in_px[0]);
      } else {
        out[0] = blend(in_px[2]);
        out[1] = blend(in_px[1]);
        out[2] = blend(in_px[0]);
      }
    }
  }
  return rgb;
}

Result<cv::Mat> DecodeWithOpenCv(ImageFormat format, std::span<const uint8_t> bytes,
                                 const DecodeOptions& options) {
  PIXSEEK_ASSIGN_OR_RETURN(image_internal::HeaderInfo header, ReadHeader(format, bytes));
  PIXSEEK_RETURN_IF_ERROR(CheckDimensions(format, header.width, header.height, options.limits));
  if (format == ImageFormat::kWebp && header.animated) {
    return Status::Unsupported("animated WebP is not supported");
  }
  // cv::imdecode picks its decoder by signature, not by our sniffed format.
  // When the right decoder rejects a damaged file, the DICOM (GDCM) and GDAL
  // decoders, which look for signatures at offsets 128 and 140, could claim it
  // and parse it without our limits.
  auto has_at = [&](size_t offset, const char* tag) {
    return bytes.size() >= offset + 4 && std::memcmp(bytes.data() + offset, tag, 4) == 0;
  };
  if (has_at(128, "DICM") || has_at(140, "DTED")) {
    return Status::InvalidArgument("corrupt " + Upper(format) +
                                   ": carries a DICOM or DTED signature");
  }
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return Status::ResourceExhausted("image is too many bytes for OpenCV");
  }
  try {
    cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1,
                const_cast<uint8_t*>(bytes.data()));
    // IMREAD_UNCHANGED keeps 16-bit depth and alpha, and never applies EXIF
    // orientation: we do that ourselves, exactly once, for every format.
    cv::Mat raw = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
    if (raw.empty()) {
      return Status::InvalidArgument("corrupt or truncated " + Upper(format));
    }
    return ToRgb8(raw);
  } catch (const cv::Exception& e) {
    return Status::InvalidArgument("corrupt " + Upper(format) + ": " + e.what());
  }
}

// GIF always goes through giflib, even where OpenCV (4.11+) has a GIF reader,
// so that every build gives the same pixels. The logical screen size is
// checked against the limits before any pixel is decoded.
Result<Image> DecodeGif(std::span<const uint8_t> bytes, const DecodeOptions& options) {
  PIXSEEK_ASSIGN_OR_RETURN(image_internal::HeaderInfo header,
                           ReadHeader(ImageFormat::kGif, bytes));
  PIXSEEK_RETURN_IF_ERROR(
      CheckDimensions(ImageFormat::kGif, header.width, header.height, options.limits));
  return DecodeGifFirstFrame(bytes, options.limits);
}

}  // namespace

Result<DecodedImage> DecodeImage(std::span<const uint8_t> bytes, const DecodeOptions& options) {
  if (bytes.empty()) return Status::InvalidArgument("empty file");
  if (bytes.size() > options.limits.max_bytes) {
    return Status::ResourceExhausted("image is " + std::to_string(bytes.size()) +
                                     " bytes, over the limit of " +
                                     std::to_string(options.limits.max_bytes) + " bytes");
  }
  const ImageFormat format = SniffFormat(bytes);
  if (format == ImageFormat::kUnknown) {
    return Status::Unsupported(
        "not a supported image format (expected JPEG, PNG, WebP, BMP, TIFF or GIF)");
  }

  Image gif_frame;  // owns the pixels `pixels` points at for a GIF
  cv::Mat pixels;
  int stored_w = 0, stored_h = 0;
  if (format == ImageFormat::kJpeg) {
    PIXSEEK_ASSIGN_OR_RETURN(pixels, DecodeJpeg(bytes, options, &stored_w, &stored_h));
  } else if (format == ImageFormat::kGif) {
    PIXSEEK_ASSIGN_OR_RETURN(gif_frame, DecodeGif(bytes, options));
    pixels = cv::Mat(gif_frame.height, gif_frame.width, CV_8UC3, gif_frame.rgb.data());
    stored_w = pixels.cols;
    stored_h = pixels.rows;
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(pixels, DecodeWithOpenCv(format, bytes, options));
    stored_w = pixels.cols;
    stored_h = pixels.rows;
  }

  const ExifMetadata exif = ReadExif(format, bytes);
  DecodedImage out;
  out.info.format = format;
  out.info.orientation = exif.orientation;
  out.info.exif_datetime = exif.datetime;
  const bool swap = OrientationTransposes(exif.orientation);
  out.info.width = swap ? stored_h : stored_w;
  out.info.height = swap ? stored_w : stored_h;

  try {
    ApplyOrientation(pixels, exif.orientation);
  } catch (const cv::Exception& e) {
    return Status::Internal(std::string("cannot rotate image: ") + e.what());
  }
  if (!pixels.isContinuous()) pixels = pixels.clone();
  out.image.width = pixels.cols;
  out.image.height = pixels.rows;
  out.image.rgb.assign(pixels.data, pixels.data + pixels.total() * pixels.elemSize());
  return out;
}

Result<std::vector<uint8_t>> ReadFileLimited(const std::filesystem::path& path,
                                             size_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    if (ec == std::errc::permission_denied) {
      return Status::PermissionDenied(path.string() + ": " + ec.message());
    }
    if (ec == std::errc::not_a_directory) return Status::NotFound(path.string() + ": not found");
    return Status::InvalidArgument(path.string() + ": " + ec.message());
  }
  if (!fs::exists(st)) return Status::NotFound(path.string() + ": no such file");
  if (!fs::is_regular_file(st)) {
    return Status::InvalidArgument(path.string() + ": not a regular file");
  }
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return Status::InvalidArgument(path.string() + ": " + ec.message());
  auto too_big = [&](uintmax_t n) {
    return Status::ResourceExhausted(path.string() + " is " + std::to_string(n) +
                                     " bytes, over the limit of " + std::to_string(max_bytes) +
                                     " bytes");
  };
  if (size > max_bytes) return too_big(size);

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) {
    const int err = errno;
    const std::string why = path.string() + ": " + std::strerror(err);
    if (err == EACCES || err == EPERM) return Status::PermissionDenied(why);
    if (err == ENOENT) return Status::NotFound(why);
    return Status::InvalidArgument(why);
  }
  // The file may change after stat: read until EOF but never past the limit.
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  size_t used = 0;
  while (true) {
    if (used == bytes.size()) {
      if (bytes.size() >= max_bytes) {
        if (std::fgetc(file.get()) != EOF) return too_big(bytes.size() + 1);
        break;
      }
      bytes.resize(std::min<size_t>(max_bytes, std::max<size_t>(bytes.size() * 2, 4096)));
    }
    const size_t n = std::fread(bytes.data() + used, 1, bytes.size() - used, file.get());
    used += n;
    if (n == 0) {
      if (std::ferror(file.get())) {
        return Status::InvalidArgument(path.string() + ": read error");
      }
      break;
    }
  }
  bytes.resize(used);
  return bytes;
}

Result<std::vector<uint8_t>> EncodeThumbnail(const Image& image, int max_side, int quality) {
  if (image.empty()) return Status::InvalidArgument("cannot make a thumbnail of an empty image");
  if (image.width < 0 || image.height < 0 ||
      image.rgb.size() != size_t{3} * static_cast<size_t>(image.width) *
                              static_cast<size_t>(image.height)) {
    return Status::InvalidArgument("image buffer size does not match 3 * width * height");
  }
  if (max_side <= 0) return Status::InvalidArgument("max_side must be positive");
  if (quality < 1 || quality > 100) return Status::InvalidArgument("quality must be 1..100");

  cv::Mat src(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
  cv::Mat thumb = src;
  const int longer = std::max(image.width, image.height);
  if (longer > max_side) {
    const double scale = static_cast<double>(max_side) / longer;
    const int w = std::clamp(static_cast<int>(image.width * scale + 0.5), 1, max_side);
    const int h = std::clamp(static_cast<int>(image.height * scale + 0.5), 1, max_side);
    try {
      cv::resize(src, thumb, cv::Size(w, h), 0, 0, cv::INTER_AREA);
    } catch (const cv::Exception& e) {
      return Status::Internal(std::string("cannot resize thumbnail: ") + e.what());
    }
  }
  if (!thumb.isContinuous()) thumb = thumb.clone();

  TjHandle tj(tjInitCompress());
  if (!tj) return Status::Internal("tjInitCompress failed");
  unsigned char* jpeg = nullptr;
  unsigned long jpeg_size = 0;
  const int rc = tjCompress2(tj.get(), thumb.data, thumb.cols, 0, thumb.rows, TJPF_RGB, &jpeg,
                             &jpeg_size, TJSAMP_420, quality, 0);
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> owned(jpeg, &tjFree);
  if (rc != 0) return Status::Internal(std::string("tjCompress2: ") + tjGetErrorStr2(tj.get()));
  return std::vector<uint8_t>(jpeg, jpeg + jpeg_size);
}

}  // namespace pixseek
