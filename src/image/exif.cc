#include "image/exif.h"

#include <libexif/exif-data.h>

#include <cctype>
#include <cstring>
#include <memory>
#include <vector>

#include <opencv2/core.hpp>

#include "image/header.h"

namespace pixseek::image_internal {

namespace {

struct ExifDataDeleter {
  void operator()(ExifData* data) const { exif_data_unref(data); }
};
using ExifDataPtr = std::unique_ptr<ExifData, ExifDataDeleter>;

constexpr char kExifHeader[] = "Exif\0\0";  // 6 bytes, the APP1 identifier

// Parses `data` (JPEG bytes, or a payload starting with "Exif\0\0").
ExifDataPtr LoadExif(const uint8_t* data, size_t size) {
  ExifDataPtr exif(exif_data_new());
  if (!exif) return nullptr;
  // Following the specification makes libexif *add* mandatory tags, such as
  // DateTime set to the current time; we only want what the file says.
  exif_data_unset_option(exif.get(), EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
  exif_data_load_data(exif.get(), data, static_cast<unsigned int>(size));
  return exif;
}

// Loads a payload that may or may not carry the "Exif\0\0" prefix (PNG eXIf
// and TIFF never do; WebP EXIF chunks sometimes do).
ExifDataPtr LoadTiffStructure(std::span<const uint8_t> payload) {
  if (payload.size() >= 6 && std::memcmp(payload.data(), kExifHeader, 6) == 0) {
    return LoadExif(payload.data(), payload.size());
  }
  std::vector<uint8_t> prefixed(kExifHeader, kExifHeader + 6);
  prefixed.insert(prefixed.end(), payload.begin(), payload.end());
  return LoadExif(prefixed.data(), prefixed.size());
}

int ReadOrientation(ExifData* exif) {
  ExifEntry* entry = exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
  if (entry == nullptr || entry->data == nullptr || entry->components < 1) return 1;
  int value = 0;
  if (entry->format == EXIF_FORMAT_SHORT && entry->size >= 2) {
    value = exif_get_short(entry->data, exif_data_get_byte_order(exif));
  } else if (entry->format == EXIF_FORMAT_LONG && entry->size >= 4) {
    value = static_cast<int>(exif_get_long(entry->data, exif_data_get_byte_order(exif)));
  }
  return value >= 1 && value <= 8 ? value : 1;
}

// "YYYY:MM:DD HH:MM:SS" -> "YYYY-MM-DD HH:MM:SS"; empty when malformed or a
// placeholder such as "0000:00:00 00:00:00".
std::string NormalizeDateTime(ExifEntry* entry) {
  if (entry == nullptr || entry->data == nullptr || entry->format != EXIF_FORMAT_ASCII ||
      entry->size < 19) {
    return {};
  }
  const char* s = reinterpret_cast<const char*>(entry->data);
  static constexpr char kPattern[] = "dddd:dd:dd dd:dd:dd";
  for (int i = 0; i < 19; ++i) {
    const bool digit = std::isdigit(static_cast<unsigned char>(s[i])) != 0;
    if (kPattern[i] == 'd' ? !digit : s[i] != kPattern[i]) return {};
  }
  auto num = [s](int pos, int len) {
    int v = 0;
    for (int i = 0; i < len; ++i) v = v * 10 + (s[pos + i] - '0');
    return v;
  };
  const int month = num(5, 2), day = num(8, 2);
  if (num(0, 4) == 0 || month < 1 || month > 12 || day < 1 || day > 31 ||
      num(11, 2) > 23 || num(14, 2) > 59 || num(17, 2) > 60) {
    return {};
  }
  std::string out(s, 19);
  out[4] = '-';
  out[7] = '-';
  return out;
}

}  // namespace

ExifMetadata ReadExif(ImageFormat format, std::span<const uint8_t> bytes) {
  ExifDataPtr exif;
  switch (format) {
    case ImageFormat::kJpeg:
      // libexif walks the JPEG markers itself to find the Exif APP1 segment.
      exif = LoadExif(bytes.data(), bytes.size());
      break;
    case ImageFormat::kPng:
    case ImageFormat::kWebp: {
      std::span<const uint8_t> payload = FindContainerExif(format, bytes);
      if (!payload.empty()) exif = LoadTiffStructure(payload);
      break;
    }
    case ImageFormat::kTiff:
      exif = LoadTiffStructure(bytes);
      break;
    default:
      break;
  }
  ExifMetadata meta;
  if (!exif) return meta;
  meta.orientation = ReadOrientation(exif.get());
  meta.datetime = NormalizeDateTime(
      exif_content_get_entry(exif->ifd[EXIF_IFD_EXIF], EXIF_TAG_DATE_TIME_ORIGINAL));
  if (meta.datetime.empty()) {
    meta.datetime =
        NormalizeDateTime(exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_DATE_TIME));
  }
  return meta;
}

void ApplyOrientation(cv::Mat& image, int orientation) {
  cv::Mat out;
  switch (orientation) {
    case 2: cv::flip(image, out, 1); break;                           // mirror left-right
    case 3: cv::rotate(image, out, cv::ROTATE_180); break;
    case 4: cv::flip(image, out, 0); break;                           // mirror top-bottom
    case 5: cv::transpose(image, out); break;                         // transpose
    case 6: cv::rotate(image, out, cv::ROTATE_90_CLOCKWISE); break;
    case 7: cv::transpose(image, out); cv::flip(out, out, -1); break; // transverse
    case 8: cv::rotate(image, out, cv::ROTATE_90_COUNTERCLOCKWISE); break;
    default: return;
  }
  image = out;
}

}  // namespace pixseek::image_internal
