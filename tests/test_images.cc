#include "test_images.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <stdexcept>

namespace pixseek::testing {

std::vector<uint8_t> SyntheticImage(const std::string& ext, int width, int height, int r, int g,
                                    int b, uint32_t seed) {
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(b, g, r));  // OpenCV is BGR
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> x(0, width - 1), y(0, height - 1), c(-60, 60);
  auto clamp = [](int v) { return std::max(0, std::min(255, v)); };
  for (int i = 0; i < 6; ++i) {
    cv::Scalar colour(clamp(b + c(rng)), clamp(g + c(rng)), clamp(r + c(rng)));
    if (i % 2 == 0) {
      cv::rectangle(img, cv::Point(x(rng), y(rng)), cv::Point(x(rng), y(rng)), colour, cv::FILLED);
    } else {
      cv::circle(img, cv::Point(x(rng), y(rng)), 5 + x(rng) % (width / 4 + 1), colour, cv::FILLED);
    }
  }
  std::vector<uint8_t> out;
  if (!cv::imencode(ext, img, out)) throw std::runtime_error("cannot encode " + ext);
  return out;
}

std::vector<uint8_t> EditedCopy(const std::vector<uint8_t>& image, double scale,
                                const std::string& ext, int jpeg_quality) {
  const cv::Mat decoded = cv::imdecode(image, cv::IMREAD_COLOR);
  if (decoded.empty()) throw std::runtime_error("cannot decode the picture to copy");
  cv::Mat resized;
  cv::resize(decoded, resized, cv::Size(), scale, scale, cv::INTER_AREA);
  std::vector<uint8_t> out;
  if (!cv::imencode(ext, resized, out, {cv::IMWRITE_JPEG_QUALITY, jpeg_quality})) {
    throw std::runtime_error("cannot encode " + ext);
  }
  return out;
}

}  // namespace pixseek::testing
