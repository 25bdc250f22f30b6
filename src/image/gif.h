// GIF decoding through giflib: the first frame, composited onto the logical
// screen, as 8-bit RGB.
//
// OpenCV 4.6 (Debian 12) has no GIF reader, and later OpenCV versions decode
// GIF differently, so every build decodes GIF here for consistent pixels.
// All functions are thread-safe (giflib 5 keeps no global state).
#ifndef PIXSEEK_IMAGE_GIF_H_
#define PIXSEEK_IMAGE_GIF_H_

#include <cstdint>
#include <span>

#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek::image_internal {

// Decodes the first frame of the GIF in `bytes` onto a canvas the size of the
// logical screen. Reads records only up to the end of the first image, so the
// cost does not grow with the length of an animation.
//
// The canvas starts as the screen background colour (white when there is no
// global colour map, the index is out of range, or it is the frame's
// transparent index). Pixels of the frame that are transparent (Graphics
// Control Extension) or whose index lies outside the colour map are white, the
// same "transparency over white" rule applied to PNG and WebP. Parts of the
// frame outside the screen are clipped.
//
// The caller must have checked the screen size against `limits` already; this
// function checks the frame's own size (a frame may claim more than the
// screen). Errors:
//   InvalidArgument   corrupt or truncated data, no image, no colour map;
//   ResourceExhausted the frame has more pixels than `limits.max_pixels`.
Result<Image> DecodeGifFirstFrame(std::span<const uint8_t> bytes, const DecodeLimits& limits);

}  // namespace pixseek::image_internal

#endif  // PIXSEEK_IMAGE_GIF_H_
