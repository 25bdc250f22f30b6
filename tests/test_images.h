// Synthetic test pictures, encoded with OpenCV, so no test depends on files
// that are not generated at test time.
#ifndef PIXSEEK_TESTS_TEST_IMAGES_H_
#define PIXSEEK_TESTS_TEST_IMAGES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace pixseek::testing {

// A picture with base colour (r, g, b) and a few random shapes drawn from
// `seed`, encoded as `ext` (".jpg", ".png", ".webp", ".bmp", ".tiff").
// Pictures with different seeds differ; similar base colours look alike.
std::vector<uint8_t> SyntheticImage(const std::string& ext, int width, int height, int r, int g,
                                    int b, uint32_t seed);

// An edited copy of an encoded picture, as a user's downsized, re-saved
// photo: decoded, resized by `scale` (area interpolation) and encoded again
// as `ext` (JPEG at `jpeg_quality`, 1..100).
std::vector<uint8_t> EditedCopy(const std::vector<uint8_t>& image, double scale,
                                const std::string& ext, int jpeg_quality);

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_TEST_IMAGES_H_
