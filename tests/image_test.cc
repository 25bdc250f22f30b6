// Tests for include/pixseek/image.h. Every input is generated here: OpenCV,
// TurboJPEG and giflib encode synthetic pictures, libexif builds EXIF blocks,
// and the hostile inputs are crafted byte by byte.
#include "pixseek/image.h"

#include <gif_lib.h>
#include <gtest/gtest.h>
#include <libexif/exif-data.h>
#include <turbojpeg.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "test_util.h"

namespace pixseek {
namespace {

using Bytes = std::vector<uint8_t>;
using Rgb = std::array<int, 3>;

constexpr Rgb kRed{255, 0, 0};
constexpr Rgb kGreen{0, 255, 0};
constexpr Rgb kBlue{0, 0, 255};
constexpr Rgb kWhite{255, 255, 255};

// An RGB picture whose four quadrants are red (top left), green (top right),
// blue (bottom left) and white (bottom right). Sides are multiples of 32 so
// JPEG blocks never straddle two colours.
cv::Mat Quadrants(int width, int height) {
  cv::Mat rgb(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const Rgb& c = y < height / 2 ? (x < width / 2 ? kRed : kGreen)
                                    : (x < width / 2 ? kBlue : kWhite);
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(c[0], c[1], c[2]);
    }
  }
  return rgb;
}

Bytes EncodeCv(const std::string& ext, const cv::Mat& bgr_or_gray,
               const std::vector<int>& params = {}) {
  std::vector<uchar> out;
  EXPECT_TRUE(cv::imencode(ext, bgr_or_gray, out, params)) << ext;
  return Bytes(out.begin(), out.end());
}

Bytes EncodeRgb(const std::string& ext, const cv::Mat& rgb,
                const std::vector<int>& params = {}) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return EncodeCv(ext, bgr, params);
}

Bytes Jpeg(const cv::Mat& rgb, int quality = 95) {
  return EncodeRgb(".jpg", rgb, {cv::IMWRITE_JPEG_QUALITY, quality});
}

Rgb PixelAt(const Image& image, int x, int y) {
  const size_t i = (static_cast<size_t>(y) * image.width + x) * 3;
  return {image.rgb[i], image.rgb[i + 1], image.rgb[i + 2]};
}

::testing::AssertionResult ColourNear(const Image& image, int x, int y, const Rgb& want,
                                      int tolerance) {
  const Rgb got = PixelAt(image, x, y);
  for (int c = 0; c < 3; ++c) {
    if (std::abs(got[c] - want[c]) > tolerance) {
      return ::testing::AssertionFailure()
             << "pixel (" << x << "," << y << ") is (" << got[0] << "," << got[1] << ","
             << got[2] << "), want (" << want[0] << "," << want[1] << "," << want[2]
             << ") +- " << tolerance;
    }
  }
  return ::testing::AssertionSuccess();
}

// Checks the quadrant colours of an upright Quadrants() picture, sampling a
// little inside each corner.
void ExpectQuadrants(const Image& image, int tolerance) {
  ASSERT_FALSE(image.empty());
  ASSERT_EQ(image.rgb.size(), size_t{3} * image.width * image.height);
  const int w = image.width, h = image.height, m = 3;
  EXPECT_TRUE(ColourNear(image, m, m, kRed, tolerance));
  EXPECT_TRUE(ColourNear(image, w - 1 - m, m, kGreen, tolerance));
  EXPECT_TRUE(ColourNear(image, m, h - 1 - m, kBlue, tolerance));
  EXPECT_TRUE(ColourNear(image, w - 1 - m, h - 1 - m, kWhite, tolerance));
}

Result<DecodedImage> Decode(const Bytes& bytes, DecodeOptions options = {}) {
  return DecodeImage(std::span<const uint8_t>(bytes), options);
}

void PutBe32(Bytes& b, size_t at, uint32_t v) {
  b[at] = v >> 24;
  b[at + 1] = v >> 16;
  b[at + 2] = v >> 8;
  b[at + 3] = v;
}

uint32_t Crc32(const uint8_t* data, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// A PNG signature plus a valid IHDR chunk (8-bit RGB) claiming width x height.
Bytes PngHeader(uint32_t width, uint32_t height) {
  Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  b.resize(b.size() + 13);
  PutBe32(b, 16, width);
  PutBe32(b, 20, height);
  b[24] = 8;  // bit depth
  b[25] = 2;  // RGB
  b.resize(b.size() + 4);
  PutBe32(b, 29, Crc32(b.data() + 12, 17));
  return b;
}

// A 1x1 GIF.
Bytes TinyGif() {
  return {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 0xFF, 0xFF, 0xFF, 0, 0, 0,
          0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0, 0x3B};
}

// ---------------------------------------------------------------- GIF encoding

// giflib's OutputFunc: appends to the Bytes in UserData.
int AppendToBytes(GifFileType* gif, const GifByteType* data, int len) {
  auto* out = static_cast<Bytes*>(gif->UserData);
  out->insert(out->end(), data, data + len);
  return len;
}

using GifMap = std::unique_ptr<ColorMapObject, void (*)(ColorMapObject*)>;

// A giflib colour map holding `colours`, padded with black to a power of two
// (giflib's requirement); null when `colours` is empty.
GifMap MakeGifMap(const std::vector<Rgb>& colours) {
  if (colours.empty()) return GifMap(nullptr, &GifFreeMapObject);
  int count = 2;
  while (count < static_cast<int>(colours.size())) count *= 2;
  std::vector<GifColorType> padded(count, GifColorType{0, 0, 0});
  for (size_t i = 0; i < colours.size(); ++i) {
    padded[i] = GifColorType{static_cast<GifByteType>(colours[i][0]),
                             static_cast<GifByteType>(colours[i][1]),
                             static_cast<GifByteType>(colours[i][2])};
  }
  return GifMap(GifMakeMapObject(count, padded.data()), &GifFreeMapObject);
}

struct GifFrame {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
  bool interlace = false;
  std::vector<uint8_t> indices;  // width * height colour indices, top row first
  int transparent = -1;          // Graphics Control Extension index; -1: none
  std::vector<Rgb> local_map;    // empty: the frame uses the global map
};

// The order in which rows are stored: top to bottom, or the four GIF
// interlace passes (every 8th row from 0, every 8th from 4, every 4th from 2,
// every 2nd from 1).
std::vector<int> GifStorageOrder(int height, bool interlace) {
  std::vector<int> rows;
  if (!interlace) {
    for (int y = 0; y < height; ++y) rows.push_back(y);
    return rows;
  }
  const int starts[] = {0, 4, 2, 1};
  const int steps[] = {8, 8, 4, 2};
  for (int pass = 0; pass < 4; ++pass) {
    for (int y = starts[pass]; y < height; y += steps[pass]) rows.push_back(y);
  }
  return rows;
}

// Encodes a GIF89a with giflib's low-level encoder.
Bytes EncodeGif(int width, int height, const std::vector<Rgb>& global_map, int background,
                const std::vector<GifFrame>& frames) {
  Bytes out;
  int error = 0;
  GifFileType* gif = EGifOpen(&out, &AppendToBytes, &error);
  EXPECT_NE(gif, nullptr) << GifErrorString(error);
  if (gif == nullptr) return out;
  EGifSetGifVersion(gif, true);
  GifMap global = MakeGifMap(global_map);
  EXPECT_EQ(EGifPutScreenDesc(gif, width, height, 8, background, global.get()), GIF_OK)
      << GifErrorString(gif->Error);
  for (const GifFrame& f : frames) {
    EXPECT_EQ(f.indices.size(), static_cast<size_t>(f.width) * f.height);
    if (f.transparent >= 0) {
      GraphicsControlBlock gcb{};
      gcb.DisposalMode = DISPOSAL_UNSPECIFIED;
      gcb.DelayTime = 10;
      gcb.TransparentColor = f.transparent;
      GifByteType ext[4];
      const size_t n = EGifGCBToExtension(&gcb, ext);
      EXPECT_EQ(EGifPutExtension(gif, GRAPHICS_EXT_FUNC_CODE, static_cast<int>(n), ext), GIF_OK);
    }
    GifMap local = MakeGifMap(f.local_map);
    EXPECT_EQ(EGifPutImageDesc(gif, f.left, f.top, f.width, f.height, f.interlace, local.get()),
              GIF_OK)
        << GifErrorString(gif->Error);
    for (int row : GifStorageOrder(f.height, f.interlace)) {
      // EGifPutLine masks the line in place, so hand it a copy.
      std::vector<GifPixelType> line(f.indices.begin() + static_cast<size_t>(row) * f.width,
                                     f.indices.begin() + static_cast<size_t>(row + 1) * f.width);
      EXPECT_EQ(EGifPutLine(gif, line.data(), f.width), GIF_OK) << GifErrorString(gif->Error);
    }
  }
  EXPECT_EQ(EGifCloseFile(gif, &error), GIF_OK) << GifErrorString(error);
  return out;
}

// A full-screen frame whose quadrants are indices 0 (top left), 1 (top
// right), 2 (bottom left) and 3 (bottom right).
GifFrame QuadrantFrame(int width, int height) {
  GifFrame f;
  f.width = width;
  f.height = height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      f.indices.push_back(static_cast<uint8_t>((y < height / 2 ? 0 : 2) + (x < width / 2 ? 0 : 1)));
    }
  }
  return f;
}

// A frame of one colour index.
GifFrame SolidFrame(int width, int height, uint8_t index) {
  GifFrame f;
  f.width = width;
  f.height = height;
  f.indices.assign(static_cast<size_t>(width) * height, index);
  return f;
}

const std::vector<Rgb> kQuadrantMap = {kRed, kGreen, kBlue, kWhite};

// ---------------------------------------------------------------- sniffing

TEST(SniffFormatTest, MagicBytes) {
  auto sniff = [](std::string s) {
    return SniffFormat(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()),
                                                s.size()));
  };
  EXPECT_EQ(sniff(std::string("\xFF\xD8\xFF\xE0", 4)), ImageFormat::kJpeg);
  EXPECT_EQ(sniff(std::string("\x89PNG\r\n\x1a\n", 8)), ImageFormat::kPng);
  EXPECT_EQ(sniff(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16)), ImageFormat::kWebp);
  EXPECT_EQ(sniff(std::string("RIFF\x10\0\0\0WAVEfmt ", 16)), ImageFormat::kUnknown);
  EXPECT_EQ(sniff("BM\x36\0\0\0"), ImageFormat::kBmp);
  EXPECT_EQ(sniff(std::string("II*\0\x08\0\0\0", 8)), ImageFormat::kTiff);
  EXPECT_EQ(sniff(std::string("MM\0*\0\0\0\x08", 8)), ImageFormat::kTiff);
  EXPECT_EQ(sniff("GIF87a"), ImageFormat::kGif);
  EXPECT_EQ(sniff("GIF89a"), ImageFormat::kGif);
  EXPECT_EQ(sniff("GIF90a"), ImageFormat::kUnknown);
  EXPECT_EQ(sniff("hello"), ImageFormat::kUnknown);
  EXPECT_EQ(sniff(""), ImageFormat::kUnknown);
  EXPECT_EQ(sniff(std::string("\xFF\xD8", 2)), ImageFormat::kUnknown);
}

TEST(ImageFormatNameTest, Names) {
  EXPECT_EQ(ImageFormatName(ImageFormat::kJpeg), "jpeg");
  EXPECT_EQ(ImageFormatName(ImageFormat::kPng), "png");
  EXPECT_EQ(ImageFormatName(ImageFormat::kWebp), "webp");
  EXPECT_EQ(ImageFormatName(ImageFormat::kBmp), "bmp");
  EXPECT_EQ(ImageFormatName(ImageFormat::kTiff), "tiff");
  EXPECT_EQ(ImageFormatName(ImageFormat::kGif), "gif");
  EXPECT_EQ(ImageFormatName(ImageFormat::kUnknown), "unknown");
}

// ---------------------------------------------------------------- formats

struct FormatCase {
  const char* name;
  const char* ext;
  std::vector<int> params;
  ImageFormat format;
  int tolerance;
};

class DecodeFormatTest : public ::testing::TestWithParam<FormatCase> {};

TEST_P(DecodeFormatTest, SizeAndColours) {
  const FormatCase& c = GetParam();
  const Bytes bytes = EncodeRgb(c.ext, Quadrants(96, 64), c.params);
  ASSERT_EQ(SniffFormat(bytes), c.format);
  auto decoded = Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.width, 96);
  EXPECT_EQ(decoded->image.height, 64);
  EXPECT_EQ(decoded->info.width, 96);
  EXPECT_EQ(decoded->info.height, 64);
  EXPECT_EQ(decoded->info.format, c.format);
  EXPECT_EQ(decoded->info.orientation, 1);
  EXPECT_EQ(decoded->info.exif_datetime, "");
  ExpectQuadrants(decoded->image, c.tolerance);
}

// The header check must run for every format: one pixel under the image's
// size is refused, the exact size is accepted.
TEST_P(DecodeFormatTest, PixelLimitFromHeader) {
  const FormatCase& c = GetParam();
  const Bytes bytes = EncodeRgb(c.ext, Quadrants(96, 64), c.params);
  DecodeOptions options;
  options.limits.max_pixels = 96 * 64 - 1;
  auto refused = Decode(bytes, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("96x64"), std::string::npos)
      << refused.status().message();
  options.limits.max_pixels = 96 * 64;
  EXPECT_TRUE(Decode(bytes, options).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Formats, DecodeFormatTest,
    ::testing::Values(
        FormatCase{"Jpeg", ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95}, ImageFormat::kJpeg, 12},
        FormatCase{"Png", ".png", {}, ImageFormat::kPng, 0},
        FormatCase{"WebpLossless", ".webp", {cv::IMWRITE_WEBP_QUALITY, 101},
                   ImageFormat::kWebp, 0},
        FormatCase{"WebpLossy", ".webp", {cv::IMWRITE_WEBP_QUALITY, 90}, ImageFormat::kWebp,
                   24},
        FormatCase{"Bmp", ".bmp", {}, ImageFormat::kBmp, 0},
        FormatCase{"Tiff", ".tiff", {}, ImageFormat::kTiff, 0}),
    [](const ::testing::TestParamInfo<FormatCase>& info) { return info.param.name; });

TEST(DecodeImageTest, TopDownBmp) {
  // OpenCV writes bottom-up rows; rewrite as a top-down BMP (negative height).
  const cv::Mat rgb = Quadrants(96, 64);
  Bytes bmp = EncodeRgb(".bmp", rgb);
  const uint32_t offset = bmp[10] | bmp[11] << 8 | bmp[12] << 16 | bmp[13] << 24;
  const size_t row = 96 * 3;  // already a multiple of 4
  ASSERT_EQ(bmp.size(), offset + row * 64);
  Bytes flipped = bmp;
  for (int y = 0; y < 64; ++y) {
    std::memcpy(&flipped[offset + y * row], &bmp[offset + (63 - y) * row], row);
  }
  const int32_t negative = -64;
  std::memcpy(&flipped[22], &negative, 4);  // little-endian host
  auto decoded = Decode(flipped);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.width, 96);
  EXPECT_EQ(decoded->image.height, 64);
  ExpectQuadrants(decoded->image, 0);
}

TEST(DecodeImageTest, GifTinyAndHugeHeader) {
  auto decoded = Decode(TinyGif());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->info.format, ImageFormat::kGif);
  EXPECT_EQ(decoded->image.width, 1);
  EXPECT_EQ(decoded->image.height, 1);
  EXPECT_TRUE(ColourNear(decoded->image, 0, 0, kWhite, 0));  // colour 0 of the map
  // The logical screen size is checked before any pixel is decoded.
  Bytes huge = TinyGif();
  huge[6] = huge[8] = 0x50;  // 50000 = 0xC350
  huge[7] = huge[9] = 0xC3;
  auto refused = Decode(huge);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("50000x50000"), std::string::npos);
}

TEST(DecodeImageTest, GrayscaleJpeg) {
  cv::Mat gray(64, 96, CV_8UC1, cv::Scalar(0));
  gray(cv::Rect(48, 0, 48, 64)).setTo(200);
  const Bytes bytes = EncodeCv(".jpg", gray, {cv::IMWRITE_JPEG_QUALITY, 95});
  auto decoded = Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.width, 96);
  EXPECT_EQ(decoded->image.rgb.size(), size_t{96 * 64 * 3});
  EXPECT_TRUE(ColourNear(decoded->image, 5, 5, {0, 0, 0}, 4));
  EXPECT_TRUE(ColourNear(decoded->image, 90, 60, {200, 200, 200}, 4));
}

TEST(DecodeImageTest, CmykJpeg) {
  // Adobe (inverted) CMYK as libjpeg-turbo and Photoshop store it:
  // R = C * K / 255. Quadrants: red, green, blue, mid grey.
  const int w = 96, h = 64;
  const std::array<uint8_t, 4> quads[4] = {
      {255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}, {255, 255, 255, 128}};
  std::vector<uint8_t> cmyk(w * h * 4);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const auto& q = quads[(y < h / 2 ? 0 : 2) + (x < w / 2 ? 0 : 1)];
      std::memcpy(&cmyk[(y * w + x) * 4], q.data(), 4);
    }
  }
  tjhandle tj = tjInitCompress();
  ASSERT_NE(tj, nullptr);
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, cmyk.data(), w, 0, h, TJPF_CMYK, &jpeg, &size, TJSAMP_444, 95, 0),
            0)
      << tjGetErrorStr2(tj);
  const Bytes bytes(jpeg, jpeg + size);
  tjFree(jpeg);
  tjDestroy(tj);

  auto decoded = Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.width, w);
  EXPECT_EQ(decoded->image.height, h);
  EXPECT_TRUE(ColourNear(decoded->image, 3, 3, kRed, 12));
  EXPECT_TRUE(ColourNear(decoded->image, w - 4, 3, kGreen, 12));
  EXPECT_TRUE(ColourNear(decoded->image, 3, h - 4, kBlue, 12));
  EXPECT_TRUE(ColourNear(decoded->image, w - 4, h - 4, {128, 128, 128}, 12));
}

TEST(DecodeImageTest, SixteenBitPng) {
  cv::Mat rgb16;
  Quadrants(96, 64).convertTo(rgb16, CV_16U, 257.0);
  rgb16(cv::Rect(16, 8, 8, 8)).setTo(cv::Scalar(128 * 257, 64 * 257, 32 * 257));
  cv::Mat bgr16;
  cv::cvtColor(rgb16, bgr16, cv::COLOR_RGB2BGR);
  const Bytes bytes = EncodeCv(".png", bgr16);
  ASSERT_EQ(bytes[24], 16) << "not a 16-bit PNG";
  auto decoded = Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ExpectQuadrants(decoded->image, 0);
  EXPECT_TRUE(ColourNear(decoded->image, 20, 12, {128, 64, 32}, 0));

  cv::Mat gray16(32, 32, CV_16UC1, cv::Scalar(50000));
  auto gray = Decode(EncodeCv(".png", gray16));
  ASSERT_TRUE(gray.ok()) << gray.status().ToString();
  EXPECT_TRUE(ColourNear(gray->image, 10, 10, {195, 195, 195}, 1));  // 50000 / 257
}

TEST(DecodeImageTest, PngWithAlphaIsCompositedOverWhite) {
  cv::Mat bgra(64, 96, CV_8UC4);
  bgra(cv::Rect(0, 0, 48, 32)).setTo(cv::Scalar(0, 0, 255, 255));    // opaque red
  bgra(cv::Rect(48, 0, 48, 32)).setTo(cv::Scalar(0, 255, 0, 0));     // transparent
  bgra(cv::Rect(0, 32, 48, 32)).setTo(cv::Scalar(0, 0, 0, 128));     // half black
  bgra(cv::Rect(48, 32, 48, 32)).setTo(cv::Scalar(255, 0, 0, 255));  // opaque blue
  auto decoded = Decode(EncodeCv(".png", bgra));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.rgb.size(), size_t{96 * 64 * 3});
  EXPECT_TRUE(ColourNear(decoded->image, 5, 5, kRed, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 90, 5, kWhite, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 5, 60, {127, 127, 127}, 1));
  EXPECT_TRUE(ColourNear(decoded->image, 90, 60, kBlue, 0));
}

// ---------------------------------------------------------------- EXIF

// An APP1 "Exif" segment (marker included) built with libexif.
Bytes ExifApp1(int orientation, const char* date_time_original, const char* date_time) {
  ExifData* exif = exif_data_new();
  exif_data_unset_option(exif, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
  exif_data_set_byte_order(exif, EXIF_BYTE_ORDER_MOTOROLA);
  auto add = [exif](ExifIfd ifd, ExifTag tag) {
    ExifEntry* entry = exif_entry_new();
    exif_content_add_entry(exif->ifd[ifd], entry);
    exif_entry_initialize(entry, tag);
    exif_entry_unref(entry);  // the content holds a reference
    return entry;
  };
  if (orientation > 0) {
    ExifEntry* e = add(EXIF_IFD_0, EXIF_TAG_ORIENTATION);
    exif_set_short(e->data, EXIF_BYTE_ORDER_MOTOROLA, static_cast<ExifShort>(orientation));
  }
  auto set_ascii = [](ExifEntry* e, const char* text) {
    EXPECT_GE(e->size, 20u);
    std::memset(e->data, 0, e->size);
    std::strncpy(reinterpret_cast<char*>(e->data), text, e->size - 1);
  };
  if (date_time_original) {
    set_ascii(add(EXIF_IFD_EXIF, EXIF_TAG_DATE_TIME_ORIGINAL), date_time_original);
  }
  if (date_time) set_ascii(add(EXIF_IFD_0, EXIF_TAG_DATE_TIME), date_time);
  unsigned char* data = nullptr;
  unsigned int size = 0;
  exif_data_save_data(exif, &data, &size);
  exif_data_unref(exif);
  EXPECT_NE(data, nullptr);
  Bytes app1(4 + size);
  app1[0] = 0xFF;
  app1[1] = 0xE1;
  app1[2] = static_cast<uint8_t>((size + 2) >> 8);
  app1[3] = static_cast<uint8_t>((size + 2) & 0xFF);
  std::memcpy(app1.data() + 4, data, size);
  std::free(data);
  return app1;
}

Bytes WithExif(Bytes jpeg, const Bytes& app1) {
  jpeg.insert(jpeg.begin() + 2, app1.begin(), app1.end());  // right after SOI
  return jpeg;
}

// The stored picture that a camera with EXIF `orientation` would write for
// the upright picture `upright`, built from the definitions in the EXIF
// specification ("row 0 is the visual ..., column 0 is the visual ...").
cv::Mat StoredFor(const cv::Mat& upright, int orientation) {
  const int w = upright.cols, h = upright.rows;
  const bool swap = orientation >= 5;
  cv::Mat stored(swap ? w : h, swap ? h : w, CV_8UC3);
  for (int y = 0; y < stored.rows; ++y) {
    for (int x = 0; x < stored.cols; ++x) {
      int ux = x, uy = y;
      switch (orientation) {
        case 2: ux = w - 1 - x; break;
        case 3: ux = w - 1 - x; uy = h - 1 - y; break;
        case 4: uy = h - 1 - y; break;
        case 5: ux = y; uy = x; break;
        case 6: ux = w - 1 - y; uy = x; break;
        case 7: ux = w - 1 - y; uy = h - 1 - x; break;
        case 8: ux = y; uy = h - 1 - x; break;
        default: break;
      }
      stored.at<cv::Vec3b>(y, x) = upright.at<cv::Vec3b>(uy, ux);
    }
  }
  return stored;
}

class OrientationTest : public ::testing::TestWithParam<int> {};

TEST_P(OrientationTest, DecodesUpright) {
  const int orientation = GetParam();
  const cv::Mat upright = Quadrants(128, 64);
  const Bytes bytes = WithExif(Jpeg(StoredFor(upright, orientation)),
                               ExifApp1(orientation, "2021:07:04 12:34:56", nullptr));
  auto decoded = Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->info.orientation, orientation);
  EXPECT_EQ(decoded->info.exif_datetime, "2021-07-04 12:34:56");
  EXPECT_EQ(decoded->info.width, 128);
  EXPECT_EQ(decoded->info.height, 64);
  EXPECT_EQ(decoded->image.width, 128);
  EXPECT_EQ(decoded->image.height, 64);
  ExpectQuadrants(decoded->image, 12);
}

INSTANTIATE_TEST_SUITE_P(AllEight, OrientationTest, ::testing::Range(1, 9));

TEST(ExifTest, OrientationWithDctScaling) {
  const cv::Mat upright = Quadrants(640, 480);
  const Bytes bytes = WithExif(Jpeg(StoredFor(upright, 6)), ExifApp1(6, nullptr, nullptr));
  DecodeOptions options;
  options.min_short_side = 100;  // 1/4 -> 160x120 upright
  auto decoded = Decode(bytes, options);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->info.width, 640);
  EXPECT_EQ(decoded->info.height, 480);
  EXPECT_EQ(decoded->image.width, 160);
  EXPECT_EQ(decoded->image.height, 120);
  ExpectQuadrants(decoded->image, 16);
}

TEST(ExifTest, DateTimeFallbackAndValidation) {
  const Bytes jpeg = Jpeg(Quadrants(64, 32));
  auto date_of = [&](const char* original, const char* plain) {
    auto decoded = Decode(WithExif(jpeg, ExifApp1(1, original, plain)));
    EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
    return decoded.ok() ? decoded->info.exif_datetime : std::string("<error>");
  };
  EXPECT_EQ(date_of("2020:01:02 03:04:05", "2019:12:31 23:59:59"), "2020-01-02 03:04:05");
  EXPECT_EQ(date_of(nullptr, "2019:12:31 23:59:59"), "2019-12-31 23:59:59");
  EXPECT_EQ(date_of("0000:00:00 00:00:00", "2019:12:31 23:59:59"), "2019-12-31 23:59:59");
  EXPECT_EQ(date_of("    :  :     :  :  ", nullptr), "");
  EXPECT_EQ(date_of("2020:13:02 03:04:05", nullptr), "");
  EXPECT_EQ(date_of(nullptr, nullptr), "");
}

TEST(ExifTest, OutOfRangeOrientationIsIgnored) {
  const Bytes bytes = WithExif(Jpeg(Quadrants(64, 32)), ExifApp1(9, nullptr, nullptr));
  auto decoded = Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->info.orientation, 1);
  EXPECT_EQ(decoded->image.width, 64);
  ExpectQuadrants(decoded->image, 12);
}

TEST(ExifTest, PngEXifChunk) {
  // Insert an eXIf chunk (a TIFF structure, no "Exif\0\0") after IHDR.
  const cv::Mat upright = Quadrants(96, 64);
  Bytes png = EncodeRgb(".png", StoredFor(upright, 8));
  const Bytes app1 = ExifApp1(8, "2022:02:22 22:22:22", nullptr);
  const Bytes tiff(app1.begin() + 4 + 6, app1.end());  // drop marker, length, "Exif\0\0"
  Bytes chunk(8);
  PutBe32(chunk, 0, static_cast<uint32_t>(tiff.size()));
  std::memcpy(&chunk[4], "eXIf", 4);
  chunk.insert(chunk.end(), tiff.begin(), tiff.end());
  chunk.resize(chunk.size() + 4);
  PutBe32(chunk, chunk.size() - 4, Crc32(chunk.data() + 4, chunk.size() - 8));
  png.insert(png.begin() + 33, chunk.begin(), chunk.end());  // 33 = signature + IHDR
  auto decoded = Decode(png);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->info.orientation, 8);
  EXPECT_EQ(decoded->info.exif_datetime, "2022-02-22 22:22:22");
  EXPECT_EQ(decoded->image.width, 96);
  EXPECT_EQ(decoded->image.height, 64);
  ExpectQuadrants(decoded->image, 0);
}

// ---------------------------------------------------------------- scaling

TEST(DctScalingTest, PicksSmallestFactorKeepingShortSide) {
  const Bytes bytes = Jpeg(Quadrants(2000, 1600), 90);
  struct Case {
    int min_short_side, width, height;
  };
  for (const Case& c : {Case{224, 500, 400}, Case{0, 2000, 1600}, Case{200, 250, 200},
                        Case{201, 500, 400}, Case{401, 1000, 800}, Case{1600, 2000, 1600},
                        Case{5000, 2000, 1600}}) {
    DecodeOptions options;
    options.min_short_side = c.min_short_side;
    auto decoded = Decode(bytes, options);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(decoded->image.width, c.width) << "min_short_side " << c.min_short_side;
    EXPECT_EQ(decoded->image.height, c.height) << "min_short_side " << c.min_short_side;
    EXPECT_EQ(decoded->info.width, 2000);
    EXPECT_EQ(decoded->info.height, 1600);
    ExpectQuadrants(decoded->image, 12);
  }
}

// ---------------------------------------------------------------- bad input

void ExpectCode(const Result<DecodedImage>& r, StatusCode code, const std::string& substring) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_NE(r.status().message().find(substring), std::string::npos) << r.status().ToString();
}

TEST(BadInputTest, Empty) {
  ExpectCode(Decode({}), StatusCode::kInvalidArgument, "empty file");
}

TEST(BadInputTest, TruncatedJpeg) {
  const Bytes jpeg = Jpeg(Quadrants(256, 128));
  const Bytes half(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  ExpectCode(Decode(half), StatusCode::kInvalidArgument, "corrupt or truncated JPEG");
  // Even with DCT scaling, which decodes less.
  DecodeOptions options;
  options.min_short_side = 16;
  ExpectCode(Decode(half, options), StatusCode::kInvalidArgument, "JPEG");
}

TEST(BadInputTest, CorruptJpeg) {
  Bytes jpeg = Jpeg(Quadrants(256, 128));
  // Garbage over the entropy-coded data (after the headers).
  std::mt19937 rng(7);
  for (size_t i = jpeg.size() / 2; i < jpeg.size() - 2; ++i) jpeg[i] = rng() & 0xFF;
  ExpectCode(Decode(jpeg), StatusCode::kInvalidArgument, "JPEG");
  ExpectCode(Decode(Bytes{0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3}), StatusCode::kInvalidArgument,
             "JPEG");
}

TEST(BadInputTest, TruncatedPng) {
  const Bytes png = EncodeRgb(".png", Quadrants(256, 128) + cv::Scalar(0, 0, 0));
  ExpectCode(Decode(Bytes(png.begin(), png.begin() + png.size() / 2)),
             StatusCode::kInvalidArgument, "PNG");
  ExpectCode(Decode(Bytes(png.begin(), png.begin() + 20)), StatusCode::kInvalidArgument,
             "truncated PNG header");
}

TEST(BadInputTest, TruncatedOtherFormats) {
  for (const char* ext : {".webp", ".bmp", ".tiff"}) {
    const Bytes full = EncodeRgb(ext, Quadrants(256, 128));
    for (size_t n : {size_t{10}, size_t{40}, full.size() / 2}) {
      auto r = Decode(Bytes(full.begin(), full.begin() + n));
      // Some decoders (BMP, TIFF) may tolerate missing rows; what matters is
      // a clean status or a correctly sized image, never a crash.
      if (r.ok()) {
        EXPECT_EQ(r->image.rgb.size(), size_t{3} * r->image.width * r->image.height) << ext;
      } else if (n < 12 && std::string(ext) == ".webp") {
        // "RIFF....WE" no longer carries the WebP magic.
        EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << r.status().ToString();
      } else {
        EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument)
            << ext << " " << n << ": " << r.status().ToString();
      }
    }
  }
}

TEST(BadInputTest, RandomBytesAndText) {
  std::mt19937 rng(42);
  Bytes noise(4096);
  for (auto& b : noise) b = rng() & 0xFF;
  noise[0] = 0x00;  // no magic can start with 0
  ExpectCode(Decode(noise), StatusCode::kUnsupported, "not a supported image format");
  const std::string text = "Hello, this is a plain text file.\n";
  ExpectCode(Decode(Bytes(text.begin(), text.end())), StatusCode::kUnsupported,
             "not a supported image format");
}

TEST(BadInputTest, MagicFollowedByNoiseNeverCrashes) {
  const std::vector<std::string> magics = {
      std::string("\xFF\xD8\xFF", 3), std::string("\x89PNG\r\n\x1a\n", 8),
      std::string("RIFF\0\0\0\0WEBPVP8 ", 16), std::string("RIFF\0\0\0\0WEBPVP8L", 16),
      std::string("RIFF\0\0\0\0WEBPVP8X", 16), "BM", std::string("II*\0", 4),
      std::string("MM\0*", 4), "GIF89a"};
  std::mt19937 rng(1234);
  DecodeOptions options;
  options.limits.max_pixels = 1 << 20;
  for (const std::string& magic : magics) {
    for (int trial = 0; trial < 50; ++trial) {
      Bytes bytes(magic.begin(), magic.end());
      const size_t extra = rng() % 200;
      for (size_t i = 0; i < extra; ++i) bytes.push_back(rng() & 0xFF);
      auto r = Decode(bytes, options);
      if (r.ok()) {
        EXPECT_EQ(r->image.rgb.size(), size_t{3} * r->image.width * r->image.height);
      } else {
        EXPECT_NE(r.status().code(), StatusCode::kInternal) << r.status().ToString();
      }
    }
  }
}

// Found by tests/fuzz/decode_fuzz.cc: a broken WebP (bad VP8L version) with
// "DICM" at offset 128 made cv::imdecode hand the bytes to its DICOM decoder,
// which tried to allocate gigabytes.
TEST(BadInputTest, ForeignDecoderSignaturesAreRefused) {
  Bytes webp = {'R', 'I', 'F', 'F', 0x00, 0x5e, 0x09, 0x02, 'W', 'E', 'B', 'P',
                'V', 'P', '8', 'L', 0x51, 0x09, 0, 0, 0x2f, 0x1f, 0x32, 0x34, 0x30};
  webp.resize(160, 0x5A);
  std::memcpy(&webp[128], "DICM", 4);
  ExpectCode(Decode(webp), StatusCode::kInvalidArgument, "WebP");
  webp[24] = 0x10;  // a valid VP8L version: still refused for the DICOM tag
  ExpectCode(Decode(webp), StatusCode::kInvalidArgument, "DICOM");

  Bytes png = PngHeader(16, 16);
  png.resize(200, 0);
  std::memcpy(&png[140], "DTED", 4);
  ExpectCode(Decode(png), StatusCode::kInvalidArgument, "PNG");
}

TEST(BadInputTest, HugePngHeaderIsRefusedBeforeDecoding) {
  ExpectCode(Decode(PngHeader(50000, 50000)), StatusCode::kResourceExhausted, "50000x50000");
}

TEST(BadInputTest, HugeJpegSofIsRefusedBeforeDecoding) {
  Bytes jpeg = Jpeg(Quadrants(64, 32));
  size_t sof = 0;
  for (size_t i = 2; i + 9 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xFF && (jpeg[i + 1] == 0xC0 || jpeg[i + 1] == 0xC2)) {
      sof = i;
      break;
    }
  }
  ASSERT_NE(sof, 0u);
  // SOF: marker(2) length(2) precision(1) height(2) width(2).
  jpeg[sof + 5] = jpeg[sof + 7] = 0xC3;
  jpeg[sof + 6] = jpeg[sof + 8] = 0x50;
  ExpectCode(Decode(jpeg), StatusCode::kResourceExhausted, "50000x50000");
}

TEST(BadInputTest, HugeHeadersOfOtherFormats) {
  // BMP: BITMAPINFOHEADER width/height at 18/22 (little-endian int32).
  Bytes bmp = EncodeRgb(".bmp", Quadrants(32, 32));
  const int32_t big = 50000;
  std::memcpy(&bmp[18], &big, 4);
  std::memcpy(&bmp[22], &big, 4);
  ExpectCode(Decode(bmp), StatusCode::kResourceExhausted, "50000x50000");
  const int32_t minus = -50000;  // top-down
  std::memcpy(&bmp[22], &minus, 4);
  ExpectCode(Decode(bmp), StatusCode::kResourceExhausted, "50000x50000");

  // WebP VP8X: canvas width-1 / height-1 as 24-bit little-endian at 24/27.
  Bytes webp = {'R', 'I', 'F', 'F', 22, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X',
                10, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 2; ++i) {
    const uint32_t v = 50000 - 1;
    webp.push_back(v & 0xFF);
    webp.push_back((v >> 8) & 0xFF);
    webp.push_back(v >> 16);
  }
  ExpectCode(Decode(webp), StatusCode::kResourceExhausted, "50000x50000");

  // TIFF, big-endian, one IFD: ImageWidth as LONG, ImageLength as SHORT.
  Bytes tiff = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 2,
                1, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0xC3, 0x50,  // 256 LONG 50000
                1, 1, 0, 3, 0, 0, 0, 1, 0xC3, 0x50, 0, 0,  // 257 SHORT 50000
                0, 0, 0, 0};
  ExpectCode(Decode(tiff), StatusCode::kResourceExhausted, "50000x50000");
  // Little-endian, both SHORT.
  Bytes tiff_le = {'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0,
                   0, 1, 3, 0, 1, 0, 0, 0, 0x50, 0xC3, 0, 0,
                   1, 1, 3, 0, 1, 0, 0, 0, 0x50, 0xC3, 0, 0,
                   0, 0, 0, 0};
  ExpectCode(Decode(tiff_le), StatusCode::kResourceExhausted, "50000x50000");
  // IFD offset past the end.
  tiff_le[4] = 200;
  ExpectCode(Decode(tiff_le), StatusCode::kInvalidArgument, "TIFF");
}

TEST(BadInputTest, ZeroAndAbsurdDimensions) {
  ExpectCode(Decode(PngHeader(0, 10)), StatusCode::kInvalidArgument, "PNG");
  ExpectCode(Decode(PngHeader(0x80000000u, 1)), StatusCode::kInvalidArgument, "PNG");
  ExpectCode(Decode(PngHeader(4'000'000, 1)), StatusCode::kInvalidArgument, "implausible");
  Bytes gif = TinyGif();
  gif[6] = gif[7] = 0;
  ExpectCode(Decode(gif), StatusCode::kInvalidArgument, "GIF");
  Bytes bmp = EncodeRgb(".bmp", Quadrants(32, 32));
  const int32_t negative_width = -32;
  std::memcpy(&bmp[18], &negative_width, 4);
  ExpectCode(Decode(bmp), StatusCode::kInvalidArgument, "BMP");
}

TEST(BadInputTest, MaxBytes) {
  const Bytes png = EncodeRgb(".png", Quadrants(96, 64));
  DecodeOptions options;
  options.limits.max_bytes = png.size() - 1;
  ExpectCode(Decode(png, options), StatusCode::kResourceExhausted,
             std::to_string(png.size()) + " bytes");
  options.limits.max_bytes = png.size();
  EXPECT_TRUE(Decode(png, options).ok());
}

// ---------------------------------------------------------------- GIF

TEST(GifTest, Quadrants) {
  const Bytes gif = EncodeGif(64, 48, kQuadrantMap, 0, {QuadrantFrame(64, 48)});
  auto decoded = Decode(gif);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->info.format, ImageFormat::kGif);
  EXPECT_EQ(decoded->info.width, 64);
  EXPECT_EQ(decoded->info.height, 48);
  EXPECT_EQ(decoded->info.orientation, 1);
  EXPECT_EQ(decoded->image.width, 64);
  EXPECT_EQ(decoded->image.height, 48);
  ExpectQuadrants(decoded->image, 0);
  // The quadrant borders are exact: GIF is lossless.
  EXPECT_TRUE(ColourNear(decoded->image, 31, 23, kRed, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 32, 23, kGreen, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 31, 24, kBlue, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 32, 24, kWhite, 0));
}

TEST(GifTest, TwoColours) {
  GifFrame frame = SolidFrame(10, 6, 0);
  for (int y = 0; y < 6; ++y) {
    for (int x = 5; x < 10; ++x) frame.indices[y * 10 + x] = 1;
  }
  auto decoded = Decode(EncodeGif(10, 6, {kBlue, kGreen}, 0, {frame}));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  for (int y = 0; y < 6; ++y) {
    EXPECT_TRUE(ColourNear(decoded->image, 4, y, kBlue, 0));
    EXPECT_TRUE(ColourNear(decoded->image, 5, y, kGreen, 0));
  }
}

TEST(GifTest, InterlacedRowsComeOutInPlace) {
  // Every row has its own colour, so a row decoded into the wrong place shows.
  constexpr int kWidth = 5, kHeight = 27;
  std::vector<Rgb> map;
  for (int i = 0; i < 32; ++i) map.push_back({i * 8, 255 - i * 8, (i * 37) % 256});
  GifFrame frame = SolidFrame(kWidth, kHeight, 0);
  frame.interlace = true;
  for (int y = 0; y < kHeight; ++y) {
    std::fill_n(frame.indices.begin() + y * kWidth, kWidth, static_cast<uint8_t>(y));
  }
  auto decoded = Decode(EncodeGif(kWidth, kHeight, map, 0, {frame}));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_EQ(decoded->image.height, kHeight);
  for (int y = 0; y < kHeight; ++y) {
    EXPECT_TRUE(ColourNear(decoded->image, 0, y, map[y], 0)) << "row " << y;
    EXPECT_TRUE(ColourNear(decoded->image, kWidth - 1, y, map[y], 0)) << "row " << y;
  }
}

TEST(GifTest, FrameAtOffsetOnScreenBackground) {
  constexpr Rgb kNavy{0, 0, 128};
  // The frame has its own two-colour map; the global map gives the background.
  GifFrame frame = SolidFrame(12, 8, 0);
  frame.left = 10;
  frame.top = 5;
  frame.local_map = {kRed, kGreen};
  for (int y = 0; y < 8; ++y) {
    for (int x = 6; x < 12; ++x) frame.indices[y * 12 + x] = 1;
  }
  auto decoded = Decode(EncodeGif(40, 30, {kWhite, kNavy}, 1, {frame}));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  const Image& image = decoded->image;
  ASSERT_EQ(image.width, 40);
  ASSERT_EQ(image.height, 30);
  EXPECT_EQ(decoded->info.width, 40);
  EXPECT_TRUE(ColourNear(image, 10, 5, kRed, 0));
  EXPECT_TRUE(ColourNear(image, 15, 12, kRed, 0));
  EXPECT_TRUE(ColourNear(image, 16, 5, kGreen, 0));
  EXPECT_TRUE(ColourNear(image, 21, 12, kGreen, 0));
  for (auto [x, y] : {std::pair{0, 0}, {9, 5}, {22, 5}, {10, 4}, {10, 13}, {39, 29}}) {
    EXPECT_TRUE(ColourNear(image, x, y, kNavy, 0)) << x << "," << y;
  }
}

TEST(GifTest, FrameOverhangingTheScreenIsClipped) {
  GifFrame frame = SolidFrame(20, 10, 1);
  frame.left = 30;
  frame.top = 25;
  auto decoded = Decode(EncodeGif(40, 30, {kWhite, kBlue}, 0, {frame}));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.width, 40);
  EXPECT_EQ(decoded->image.height, 30);
  EXPECT_TRUE(ColourNear(decoded->image, 30, 25, kBlue, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 39, 29, kBlue, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 29, 29, kWhite, 0));
}

TEST(GifTest, TransparentPixelsAreWhite) {
  // Left half transparent (index 1, red in the map), right half green. The
  // screen background (blue) shows only outside the frame.
  GifFrame frame = SolidFrame(16, 16, 1);
  for (int y = 0; y < 16; ++y) {
    for (int x = 8; x < 16; ++x) frame.indices[y * 16 + x] = 2;
  }
  frame.transparent = 1;
  frame.top = 4;
  auto decoded = Decode(EncodeGif(16, 20, {kBlue, kRed, kGreen, kWhite}, 0, {frame}));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_TRUE(ColourNear(decoded->image, 0, 4, kWhite, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 7, 19, kWhite, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 8, 4, kGreen, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 0, 0, kBlue, 0));

  // A background index that is also the transparent index means "no
  // background": white.
  frame.transparent = 0;
  auto see_through = Decode(EncodeGif(16, 20, {kBlue, kRed, kGreen, kWhite}, 0, {frame}));
  ASSERT_TRUE(see_through.ok()) << see_through.status().ToString();
  EXPECT_TRUE(ColourNear(see_through->image, 0, 0, kWhite, 0));
  EXPECT_TRUE(ColourNear(see_through->image, 0, 4, kRed, 0));
}

TEST(GifTest, AnimationGivesTheFirstFrame) {
  const std::vector<Rgb> map = {kRed, kGreen};
  const Bytes one = EncodeGif(24, 16, map, 0, {SolidFrame(24, 16, 0)});
  const Bytes two = EncodeGif(24, 16, map, 0, {SolidFrame(24, 16, 0), SolidFrame(24, 16, 1)});
  auto decoded = Decode(two);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->image.width, 24);
  EXPECT_EQ(decoded->image.height, 16);
  EXPECT_TRUE(ColourNear(decoded->image, 0, 0, kRed, 0));
  EXPECT_TRUE(ColourNear(decoded->image, 23, 15, kRed, 0));

  // Nothing after the first image is read: a later frame cut off in its
  // pixel data does not matter.
  ASSERT_GT(two.size(), one.size() + 8);
  ASSERT_TRUE(std::equal(one.begin(), one.end() - 1, two.begin()));  // all but the trailer
  const Bytes cut(two.begin(), two.begin() + static_cast<std::ptrdiff_t>(one.size()) + 8);
  auto first = Decode(cut);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(ColourNear(first->image, 12, 8, kRed, 0));
}

TEST(GifTest, TruncatedIsInvalidArgument) {
  const Bytes gif = EncodeGif(64, 48, kQuadrantMap, 0, {QuadrantFrame(64, 48)});
  // 12: inside the screen descriptor; 16: inside the colour map; 30: inside
  // the image descriptor; then inside the pixel data.
  for (size_t keep : {size_t{12}, size_t{16}, size_t{30}, gif.size() / 2, gif.size() - 3}) {
    SCOPED_TRACE("kept " + std::to_string(keep) + " of " + std::to_string(gif.size()));
    const Bytes cut(gif.begin(), gif.begin() + static_cast<std::ptrdiff_t>(keep));
    ExpectCode(Decode(cut), StatusCode::kInvalidArgument, "GIF");
  }
  const Bytes half(gif.begin(), gif.begin() + static_cast<std::ptrdiff_t>(gif.size() / 2));
  ExpectCode(Decode(half), StatusCode::kInvalidArgument, "corrupt or truncated GIF");
}

TEST(GifTest, NoColourMapIsInvalidArgument) {
  // TinyGif without its global colour table.
  const Bytes gif = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x00, 0, 0, 0x2C, 0, 0, 0,
                     0,   1,   0,   1,   0,   0,   0x02, 0x02, 0x44, 0x01, 0, 0x3B};
  ExpectCode(Decode(gif), StatusCode::kInvalidArgument, "colour map");
}

TEST(GifTest, NoImageIsInvalidArgument) {
  Bytes gif = TinyGif();
  gif.resize(19);  // header, screen descriptor and colour map
  gif.push_back(0x3B);
  ExpectCode(Decode(gif), StatusCode::kInvalidArgument, "before any image");
}

TEST(GifTest, HugeFrameOnSmallScreenIsRefused) {
  Bytes gif = TinyGif();
  gif[24] = gif[26] = 0x50;  // first frame 50000x50000 on a 1x1 screen
  gif[25] = gif[27] = 0xC3;
  ExpectCode(Decode(gif), StatusCode::kResourceExhausted, "50000x50000");
}

TEST(GifTest, ConcurrentDecodesAgree) {
  const Bytes gif = EncodeGif(64, 48, kQuadrantMap, 0, {QuadrantFrame(64, 48)});
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        auto decoded = Decode(gif);
        if (!decoded.ok() || PixelAt(decoded->image, 40, 40) != kWhite) return;
      }
      ok[t] = 1;
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), 8);
}

// ---------------------------------------------------------------- files

TEST(ReadFileLimitedTest, Errors) {
  testing::TempDir dir;
  auto missing = ReadFileLimited(dir.path() / "nope.jpg", 1000);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  auto directory = ReadFileLimited(dir.path(), 1000);
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), StatusCode::kInvalidArgument);

  const Bytes content(5000, 0xAB);
  testing::WriteBytes(dir.path() / "big.bin", content);
  auto big = ReadFileLimited(dir.path() / "big.bin", 4999);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("5000"), std::string::npos) << big.status().message();
  EXPECT_NE(big.status().message().find("4999"), std::string::npos) << big.status().message();
}

TEST(ReadFileLimitedTest, ReadsWholeFile) {
  testing::TempDir dir;
  Bytes content(70000);
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<uint8_t>(i * 31);
  testing::WriteBytes(dir.path() / "a.bin", content);
  auto read = ReadFileLimited(dir.path() / "a.bin", content.size());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, content);

  testing::WriteBytes(dir.path() / "empty.bin", {});
  auto empty = ReadFileLimited(dir.path() / "empty.bin", 10);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  // ...which DecodeImage then refuses.
  ExpectCode(Decode(*empty), StatusCode::kInvalidArgument, "empty file");
}

// ---------------------------------------------------------------- thumbnails

Image ToImage(const cv::Mat& rgb) {
  Image image;
  image.width = rgb.cols;
  image.height = rgb.rows;
  image.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
  return image;
}

TEST(EncodeThumbnailTest, ShrinksAndDecodesBack) {
  const Image big = ToImage(Quadrants(2000, 1600));
  auto jpeg = EncodeThumbnail(big, 256, 85);
  ASSERT_TRUE(jpeg.ok()) << jpeg.status().ToString();
  ASSERT_EQ(SniffFormat(*jpeg), ImageFormat::kJpeg);
  auto back = Decode(*jpeg);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->image.width, 256);
  EXPECT_EQ(back->image.height, 205);  // 1600 * 256 / 2000 = 204.8
  ExpectQuadrants(back->image, 16);

  const Image tall = ToImage(Quadrants(64, 640));
  auto tall_jpeg = EncodeThumbnail(tall, 100);
  ASSERT_TRUE(tall_jpeg.ok());
  auto tall_back = Decode(*tall_jpeg);
  ASSERT_TRUE(tall_back.ok());
  EXPECT_EQ(tall_back->image.width, 10);
  EXPECT_EQ(tall_back->image.height, 100);
}

TEST(EncodeThumbnailTest, NeverUpscales) {
  auto jpeg = EncodeThumbnail(ToImage(Quadrants(96, 64)), 256);
  ASSERT_TRUE(jpeg.ok());
  auto back = Decode(*jpeg);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->image.width, 96);
  EXPECT_EQ(back->image.height, 64);
  ExpectQuadrants(back->image, 16);
}

TEST(EncodeThumbnailTest, RejectsBadImages) {
  auto empty = EncodeThumbnail(Image{});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  Image wrong;
  wrong.width = 10;
  wrong.height = 10;
  wrong.rgb.resize(10);
  auto mismatch = EncodeThumbnail(wrong);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), StatusCode::kInvalidArgument);
  auto bad_side = EncodeThumbnail(ToImage(Quadrants(32, 32)), 0);
  ASSERT_FALSE(bad_side.ok());
  EXPECT_EQ(bad_side.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pixseek
