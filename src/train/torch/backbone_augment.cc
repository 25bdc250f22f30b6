// Augmentation for backbone fine-tuning (see backbone_augment.h).
#include "train/torch/backbone_augment.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace pixseek::train {
namespace {

constexpr double kMinArea = 0.35;
constexpr double kMaxArea = 1.0;
constexpr double kMinRatio = 3.0 / 4.0;
constexpr double kMaxRatio = 4.0 / 3.0;
constexpr double kJitter = 0.2;  // brightness, contrast and saturation
constexpr int kCropTries = 10;   // as torchvision, then the centre crop

int CvInterpolation(Interpolation interpolation) {
  switch (interpolation) {
    case Interpolation::kArea: return cv::INTER_AREA;
    case Interpolation::kBicubic: return cv::INTER_CUBIC;
    case Interpolation::kBilinear: break;
  }
  return cv::INTER_LINEAR;
}

// torchvision's RandomResizedCrop.get_params: a random box of the allowed
// area and aspect ratio, or the largest centred box of an allowed ratio
// when ten draws do not fit.
cv::Rect RandomCropBox(int w, int h, std::mt19937& rng) {
  const double area = static_cast<double>(w) * h;
  std::uniform_real_distribution<double> scale(kMinArea, kMaxArea);
  std::uniform_real_distribution<double> log_ratio(std::log(kMinRatio), std::log(kMaxRatio));
  for (int t = 0; t < kCropTries; ++t) {
    const double target = area * scale(rng);
    const double ratio = std::exp(log_ratio(rng));
    const int cw = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int ch = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (cw <= 0 || ch <= 0 || cw > w || ch > h) continue;
    const int x = std::uniform_int_distribution<int>(0, w - cw)(rng);
    const int y = std::uniform_int_distribution<int>(0, h - ch)(rng);
    return {x, y, cw, ch};
  }
  const double ratio = static_cast<double>(w) / h;
  int cw = w, ch = h;
  if (ratio < kMinRatio) ch = std::max(1, static_cast<int>(std::lround(w / kMinRatio)));
  if (ratio > kMaxRatio) cw = std::max(1, static_cast<int>(std::lround(h * kMaxRatio)));
  return {(w - cw) / 2, (h - ch) / 2, cw, ch};
}

uint8_t Clamp(double v) { return static_cast<uint8_t>(std::clamp(v, 0.0, 255.0) + 0.5); }

double Grey(const uint8_t* p) { return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]; }

// ColorJitter's three adjustments, in its definitions: brightness scales
// the pixels, contrast blends with the mean grey level, saturation with
// each pixel's grey.
void JitterColours(Image& image, std::mt19937& rng) {
  std::uniform_real_distribution<double> factor(1.0 - kJitter, 1.0 + kJitter);
  const double brightness = factor(rng);
  const double contrast = factor(rng);
  const double saturation = factor(rng);
  std::vector<uint8_t>& px = image.rgb;
  for (uint8_t& v : px) v = Clamp(v * brightness);
  double mean = 0.0;
  for (size_t i = 0; i < px.size(); i += 3) mean += Grey(&px[i]);
  mean /= static_cast<double>(px.size() / 3);
  for (uint8_t& v : px) v = Clamp(mean + (v - mean) * contrast);
  for (size_t i = 0; i < px.size(); i += 3) {
    const double grey = Grey(&px[i]);
    for (int c = 0; c < 3; ++c) px[i + c] = Clamp(grey + (px[i + c] - grey) * saturation);
  }
}

}  // namespace

Image Augment(const Image& image, int width, int height, Interpolation interpolation,
              std::mt19937& rng) {
  // OpenCV only reads the source, so the const_cast is safe.
  const cv::Mat src(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<size_t>(width) * height * 3);
  cv::Mat dst(height, width, CV_8UC3, out.rgb.data());
  cv::resize(src(RandomCropBox(image.width, image.height, rng)), dst, cv::Size(width, height), 0,
             0, CvInterpolation(interpolation));
  if (std::bernoulli_distribution(0.5)(rng)) {
    cv::Mat flipped;
    cv::flip(dst, flipped, 1);
    flipped.copyTo(dst);  // into out.rgb: dst keeps its buffer
  }
  JitterColours(out, rng);
  return out;
}

}  // namespace pixseek::train
