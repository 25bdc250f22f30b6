#include "image/header.h"

#include <cstring>
#include <limits>
#include <string>

namespace pixseek {

namespace {

bool StartsWith(std::span<const uint8_t> bytes, size_t offset, const char* magic,
                size_t n) {
  return bytes.size() >= offset + n && std::memcmp(bytes.data() + offset, magic, n) == 0;
}

}  // namespace

ImageFormat SniffFormat(std::span<const uint8_t> bytes) {
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    return ImageFormat::kJpeg;
  }
  if (StartsWith(bytes, 0, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::kPng;
  if (StartsWith(bytes, 0, "RIFF", 4) && StartsWith(bytes, 8, "WEBP", 4)) {
    return ImageFormat::kWebp;
  }
  if (StartsWith(bytes, 0, "BM", 2)) return ImageFormat::kBmp;
  if (StartsWith(bytes, 0, "II*\0", 4) || StartsWith(bytes, 0, "MM\0*", 4)) {
    return ImageFormat::kTiff;
  }
  if (StartsWith(bytes, 0, "GIF87a", 6) || StartsWith(bytes, 0, "GIF89a", 6)) {
    return ImageFormat::kGif;
  }
  return ImageFormat::kUnknown;
}

namespace image_internal {

namespace {

// Bounds-checked little/big-endian readers over a span. Callers check the size
// first; these are only the arithmetic.
uint32_t Le16(std::span<const uint8_t> b, size_t o) {
  return uint32_t{b[o]} | uint32_t{b[o + 1]} << 8;
}
uint32_t Le24(std::span<const uint8_t> b, size_t o) {
  return Le16(b, o) | uint32_t{b[o + 2]} << 16;
}
uint32_t Le32(std::span<const uint8_t> b, size_t o) {
  return Le24(b, o) | uint32_t{b[o + 3]} << 24;
}
uint32_t Be16(std::span<const uint8_t> b, size_t o) {
  return uint32_t{b[o]} << 8 | uint32_t{b[o + 1]};
}
uint32_t Be32(std::span<const uint8_t> b, size_t o) {
  return Be16(b, o) << 16 | Be16(b, o + 2);
}

Status Truncated(const char* format) {
  return Status::InvalidArgument(std::string("truncated ") + format + " header");
}

Status ZeroSize(const char* format) {
  return Status::InvalidArgument(std::string(format) + " header gives a zero or negative size");
}

Result<HeaderInfo> Png(std::span<const uint8_t> b) {
  if (b.size() < 24) return Truncated("PNG");
  if (Be32(b, 8) != 13 || std::memcmp(b.data() + 12, "IHDR", 4) != 0) {
    return Status::InvalidArgument("PNG does not start with an IHDR chunk");
  }
  HeaderInfo h{Be32(b, 16), Be32(b, 20)};
  // The PNG specification limits each side to 2^31 - 1.
  if (h.width == 0 || h.height == 0 || h.width > 0x7FFFFFFFu || h.height > 0x7FFFFFFFu) {
    return ZeroSize("PNG");
  }
  return h;
}

Result<HeaderInfo> Gif(std::span<const uint8_t> b) {
  if (b.size() < 10) return Truncated("GIF");
  HeaderInfo h{Le16(b, 6), Le16(b, 8)};
  if (h.width == 0 || h.height == 0) return ZeroSize("GIF");
  return h;
}

Result<HeaderInfo> Bmp(std::span<const uint8_t> b) {
  if (b.size() < 18) return Truncated("BMP");
  const uint32_t dib_size = Le32(b, 14);
  HeaderInfo h;
  if (dib_size == 12) {  // BITMAPCOREHEADER: unsigned 16-bit sides.
    if (b.size() < 22) return Truncated("BMP");
    h.width = Le16(b, 18);
    h.height = Le16(b, 20);
  } else if (dib_size >= 16 && dib_size <= 1024) {
    // BITMAPINFOHEADER and its successors: signed 32-bit sides, a negative
    // height meaning top-down rows.
    if (b.size() < 26) return Truncated("BMP");
    const auto width = static_cast<int32_t>(Le32(b, 18));
    const auto height = static_cast<int32_t>(Le32(b, 22));
    if (width <= 0 || height == 0 || height == std::numeric_limits<int32_t>::min()) {
      return ZeroSize("BMP");
    }
    h.width = static_cast<uint32_t>(width);
    h.height = static_cast<uint32_t>(height < 0 ? -height : height);
  } else {
    return Status::InvalidArgument("BMP has an unknown info header size " +
                                   std::to_string(dib_size));
  }
  if (h.width == 0 || h.height == 0) return ZeroSize("BMP");
  return h;
}

Result<HeaderInfo> Webp(std::span<const uint8_t> b) {
  // RIFF header (12 bytes), then the first chunk: fourcc, size, payload.
  if (b.size() < 20) return Truncated("WebP");
  HeaderInfo h;
  if (std::memcmp(b.data() + 12, "VP8 ", 4) == 0) {
    // Lossy: 3-byte frame tag, start code 9d 01 2a, then 14-bit sides.
    if (b.size() < 30) return Truncated("WebP");
    if ((b[20] & 1) != 0 || b[23] != 0x9d || b[24] != 0x01 || b[25] != 0x2a) {
      return Status::InvalidArgument("WebP VP8 chunk does not start with a key frame");
    }
    h.width = Le16(b, 26) & 0x3FFF;
    h.height = Le16(b, 28) & 0x3FFF;
  } else if (std::memcmp(b.data() + 12, "VP8L", 4) == 0) {
    // Lossless: signature 0x2f, then width-1 and height-1 in 14 bits each.
    if (b.size() < 25) return Truncated("WebP");
    if (b[20] != 0x2f) return Status::InvalidArgument("WebP VP8L chunk has a bad signature");
    const uint32_t bits = Le32(b, 21);
    if ((bits >> 29) != 0) return Status::InvalidArgument("WebP VP8L has an unknown version");
    h.width = (bits & 0x3FFF) + 1;
    h.height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (std::memcmp(b.data() + 12, "VP8X", 4) == 0) {
    // Extended: flags byte, 3 reserved bytes, canvas width-1 and height-1 in
    // 24 bits each.
    if (b.size() < 30) return Truncated("WebP");
    h.animated = (b[20] & 0x02) != 0;
    h.width = Le24(b, 24) + 1;
    h.height = Le24(b, 27) + 1;
  } else {
    return Status::InvalidArgument("WebP has no VP8, VP8L or VP8X chunk first");
  }
  if (h.width == 0 || h.height == 0) return ZeroSize("WebP");
  return h;
}

Result<HeaderInfo> Tiff(std::span<const uint8_t> b) {
  if (b.size() < 8) return Truncated("TIFF");
  const bool little = b[0] == 'I';
  auto u16 = [&](size_t o) { return little ? Le16(b, o) : Be16(b, o); };
  auto u32 = [&](size_t o) { return little ? Le32(b, o) : Be32(b, o); };
  const uint64_t ifd = u32(4);
  if (ifd < 8 || ifd + 2 > b.size()) {
    return Status::InvalidArgument("TIFF first IFD offset is outside the file");
  }
  const uint32_t count = u16(ifd);
  HeaderInfo h;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t entry = ifd + 2 + uint64_t{12} * i;
    if (entry + 12 > b.size()) return Truncated("TIFF");
    const uint32_t tag = u16(entry);
    if (tag != 256 && tag != 257) continue;
    const uint32_t type = u16(entry + 2);
    const uint32_t n = u32(entry + 4);
    if (n < 1) continue;
    uint32_t value;
    if (type == 3) {
      value = u16(entry + 8);  // SHORT, left-justified in the value field.
    } else if (type == 4) {
      value = u32(entry + 8);  // LONG
    } else {
      return Status::InvalidArgument("TIFF image size has an unexpected field type " +
                                     std::to_string(type));
    }
    (tag == 256 ? h.width : h.height) = value;
  }
  if (h.width == 0 || h.height == 0) {
    return Status::InvalidArgument("TIFF first IFD lacks ImageWidth/ImageLength or gives zero");
  }
  return h;
}

}  // namespace

Result<HeaderInfo> ReadHeader(ImageFormat format, std::span<const uint8_t> bytes) {
  switch (format) {
    case ImageFormat::kPng: return Png(bytes);
    case ImageFormat::kGif: return Gif(bytes);
    case ImageFormat::kBmp: return Bmp(bytes);
    case ImageFormat::kWebp: return Webp(bytes);
    case ImageFormat::kTiff: return Tiff(bytes);
    case ImageFormat::kJpeg:
    case ImageFormat::kUnknown: break;
  }
  return Status::Internal("ReadHeader called for an unhandled format");
}

std::span<const uint8_t> FindContainerExif(ImageFormat format,
                                           std::span<const uint8_t> b) {
  if (format == ImageFormat::kPng) {
    // Chunks: length (BE32), type, data, CRC.
    uint64_t pos = 8;
    while (pos + 12 <= b.size()) {
      const uint64_t length = Be32(b, pos);
      if (pos + 12 + length > b.size()) break;
      if (std::memcmp(b.data() + pos + 4, "eXIf", 4) == 0) {
        return b.subspan(pos + 8, length);
      }
      if (std::memcmp(b.data() + pos + 4, "IDAT", 4) == 0 ||
          std::memcmp(b.data() + pos + 4, "IEND", 4) == 0) {
        break;  // eXIf must come before the image data.
      }
      pos += 12 + length;
    }
  } else if (format == ImageFormat::kWebp) {
    // Chunks: fourcc, size (LE32), data padded to an even length.
    uint64_t pos = 12;
    while (pos + 8 <= b.size()) {
      const uint64_t length = Le32(b, pos + 4);
      if (pos + 8 + length > b.size()) break;
      if (std::memcmp(b.data() + pos, "EXIF", 4) == 0) return b.subspan(pos + 8, length);
      pos += 8 + length + (length & 1);
    }
  }
  return {};
}

}  // namespace image_internal
}  // namespace pixseek
