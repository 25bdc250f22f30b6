// First-frame GIF decoding with giflib's record-level API (DGifGetRecordType,
// DGifGetImageDesc, DGifGetLine), so nothing after the first image is read.
#include "image/gif.h"

#include <gif_lib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace pixseek::image_internal {
namespace {

constexpr std::array<uint8_t, 3> kWhite{255, 255, 255};

// The encoded bytes and how far giflib has read; owned by the decode call.
struct SpanReader {
  std::span<const uint8_t> bytes;
  size_t pos = 0;
};

// giflib's InputFunc. A short count at the end of the data makes giflib
// report D_GIF_ERR_READ_FAILED, which is how truncation surfaces.
int ReadFromSpan(GifFileType* gif, GifByteType* out, int len) {
  auto* reader = static_cast<SpanReader*>(gif->UserData);
  if (len <= 0) return 0;
  const size_t n = std::min(static_cast<size_t>(len), reader->bytes.size() - reader->pos);
  std::memcpy(out, reader->bytes.data() + reader->pos, n);
  reader->pos += n;
  return static_cast<int>(n);
}

struct GifCloser {
  void operator()(GifFileType* gif) const {
    int error = 0;
    DGifCloseFile(gif, &error);  // frees `gif` whatever it returns
  }
};
using GifHandle = std::unique_ptr<GifFileType, GifCloser>;

Status GifError(int code) {
  const char* text = GifErrorString(code);
  return Status::InvalidArgument("corrupt or truncated GIF: " +
                                 (text != nullptr ? std::string(text)
                                                  : "giflib error " + std::to_string(code)));
}

std::string SizeText(uint64_t width, uint64_t height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

Status TooManyPixels(const char* what, uint64_t width, uint64_t height,
                     const DecodeLimits& limits) {
  return Status::ResourceExhausted(std::string("GIF ") + what + " is " + SizeText(width, height) +
                                   " = " + std::to_string(width * height) +
                                   " pixels, over the limit of " +
                                   std::to_string(limits.max_pixels) + " pixels");
}

// Skips the records up to the first image descriptor and returns the
// transparent colour index that applies to it (only the last Graphics
// Control Extension before the image does).
Result<int> SkipToFirstImage(GifFileType* gif) {
  int transparent = NO_TRANSPARENT_COLOR;
  while (true) {
    GifRecordType type = UNDEFINED_RECORD_TYPE;
    if (DGifGetRecordType(gif, &type) == GIF_ERROR) return GifError(gif->Error);
    if (type == IMAGE_DESC_RECORD_TYPE) return transparent;
    if (type == TERMINATE_RECORD_TYPE) {
      return Status::InvalidArgument("corrupt GIF: the file ends before any image");
    }
    if (type != EXTENSION_RECORD_TYPE) {
      return Status::InvalidArgument("corrupt GIF: unexpected record before the first image");
    }
    int code = 0;
    GifByteType* block = nullptr;  // block[0] is the length, the data follows
    if (DGifGetExtension(gif, &code, &block) == GIF_ERROR) return GifError(gif->Error);
    if (code == GRAPHICS_EXT_FUNC_CODE && block != nullptr) {
      GraphicsControlBlock gcb;
      // A malformed control block is ignored, as browsers do.
      if (DGifExtensionToGCB(block[0], block + 1, &gcb) == GIF_OK) {
        transparent = gcb.TransparentColor;
      }
    }
    while (block != nullptr) {
      if (DGifGetExtensionNext(gif, &block) == GIF_ERROR) return GifError(gif->Error);
    }
  }
}

// The logical screen filled with the background colour (white when the
// background is transparent or has no colour).
Image BlankScreen(const GifFileType& gif, uint64_t screen_w, uint64_t screen_h, int transparent) {
  std::array<uint8_t, 3> background = kWhite;
  const ColorMapObject* global = gif.SColorMap;
  const int bg_index = gif.SBackGroundColor;
  if (global != nullptr && global->Colors != nullptr && bg_index >= 0 &&
      bg_index < global->ColorCount && bg_index != transparent) {
    const GifColorType& c = global->Colors[bg_index];
    background = {c.Red, c.Green, c.Blue};
  }
  Image image;
  image.width = static_cast<int>(screen_w);
  image.height = static_cast<int>(screen_h);
  image.rgb.resize(size_t{3} * screen_w * screen_h);
  for (size_t i = 0; i < image.rgb.size(); i += 3) {
    std::copy(background.begin(), background.end(), image.rgb.begin() + i);
  }
  return image;
}

// Decompresses the first frame's rows (in interlaced order where it is
// interlaced) and draws the visible part of each onto `image`.
Status DrawFrame(GifFileType* gif, const ColorMapObject& map, int transparent, Image& image) {
  const GifImageDesc& desc = gif->Image;
  const int width = desc.Width;
  const int height = desc.Height;
  const auto screen_w = static_cast<int64_t>(image.width);
  const auto screen_h = static_cast<int64_t>(image.height);
  std::vector<GifPixelType> line(static_cast<size_t>(width));
  auto decode_row = [&](int row) -> Status {
    if (DGifGetLine(gif, line.data(), width) == GIF_ERROR) return GifError(gif->Error);
    const int64_t y = int64_t{desc.Top} + row;
    const int64_t visible = std::min<int64_t>(width, screen_w - int64_t{desc.Left});
    if (y >= screen_h || visible <= 0) return Status::Ok();
    uint8_t* out = image.rgb.data() + (static_cast<size_t>(y * screen_w) + desc.Left) * 3;
    for (int64_t x = 0; x < visible; ++x, out += 3) {
      const int index = line[static_cast<size_t>(x)];
      if (index == transparent || index >= map.ColorCount) {
        std::copy(kWhite.begin(), kWhite.end(), out);
      } else {
        const GifColorType& c = map.Colors[index];
        out[0] = c.Red;
        out[1] = c.Green;
        out[2] = c.Blue;
      }
    }
    return Status::Ok();
  };
  if (desc.Interlace) {
    // Rows are stored in four passes: every 8th from 0, every 8th from 4,
    // every 4th from 2, every 2nd from 1.
    constexpr int kStart[] = {0, 4, 2, 1};
    constexpr int kStep[] = {8, 8, 4, 2};
    for (int pass = 0; pass < 4; ++pass) {
      for (int row = kStart[pass]; row < height; row += kStep[pass]) {
        PIXSEEK_RETURN_IF_ERROR(decode_row(row));
      }
    }
    return Status::Ok();
  }
  for (int row = 0; row < height; ++row) PIXSEEK_RETURN_IF_ERROR(decode_row(row));
  return Status::Ok();
}

}  // namespace

Result<Image> DecodeGifFirstFrame(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  SpanReader reader{bytes};
  int open_error = 0;
  GifHandle gif(DGifOpen(&reader, &ReadFromSpan, &open_error));
  if (!gif) return GifError(open_error);

  const uint64_t screen_w = static_cast<uint64_t>(std::max(gif->SWidth, 0));
  const uint64_t screen_h = static_cast<uint64_t>(std::max(gif->SHeight, 0));
  if (screen_w == 0 || screen_h == 0) {
    return Status::InvalidArgument("GIF header gives an empty size " +
                                   SizeText(screen_w, screen_h));
  }
  // DecodeImage checked this already; repeated so that no caller can skip it.
  if (screen_w * screen_h > limits.max_pixels) {
    return TooManyPixels("image", screen_w, screen_h, limits);
  }
  PIXSEEK_ASSIGN_OR_RETURN(const int transparent, SkipToFirstImage(gif.get()));
  if (DGifGetImageDesc(gif.get()) == GIF_ERROR) return GifError(gif->Error);
  const GifImageDesc& desc = gif->Image;
  const ColorMapObject* map = desc.ColorMap != nullptr ? desc.ColorMap : gif->SColorMap;
  if (map == nullptr || map->Colors == nullptr || map->ColorCount <= 0) {
    return Status::InvalidArgument(
        "corrupt GIF: the first frame has no colour map (neither local nor global)");
  }
  const uint64_t frame_w = static_cast<uint64_t>(std::max(desc.Width, 0));
  const uint64_t frame_h = static_cast<uint64_t>(std::max(desc.Height, 0));
  // Every row of the frame is decompressed, even rows clipped off the screen.
  if (frame_w * frame_h > limits.max_pixels) {
    return TooManyPixels("first frame", frame_w, frame_h, limits);
  }
  Image image = BlankScreen(*gif, screen_w, screen_h, transparent);
  if (frame_w == 0 || frame_h == 0) return image;
  PIXSEEK_RETURN_IF_ERROR(DrawFrame(gif.get(), *map, transparent, image));
  return image;
}

}  // namespace pixseek::image_internal
