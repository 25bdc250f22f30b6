// libFuzzer target for DecodeImage: any byte string must give a status or a
// well-formed image, never a crash, leak or out-of-bounds read. Limits are
// small so that the fuzzer explores parsers rather than allocating.
//
//   make build-fuzz     (or cmake -DCMAKE_CXX_COMPILER=clang++-16 -DPIXSEEK_BUILD_FUZZERS=ON ...)
//   scripts/run-fuzzer.sh build-fuzz decode_fuzz 60   (seeds, then 60 s of fuzzing)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "pixseek/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pixseek::DecodeOptions options;
  options.limits.max_bytes = 1 << 20;
  options.limits.max_pixels = 1 << 22;
  options.min_short_side = (size > 0 ? data[0] % 4 : 0) * 32;  // exercise DCT scaling
  auto result = pixseek::DecodeImage(std::span<const uint8_t>(data, size), options);
  if (result.ok()) {
    const pixseek::Image& image = result->image;
    if (image.empty() ||
        image.rgb.size() != size_t{3} * static_cast<size_t>(image.width) *
                                static_cast<size_t>(image.height)) {
      std::abort();
    }
    auto thumb = pixseek::EncodeThumbnail(image, 64);
    if (!thumb.ok()) std::abort();
  }
  return 0;
}
