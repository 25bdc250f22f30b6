// The preprocessing filters of include/pixseek/image.h (ImagePreprocessing).
//
// Denoising is a bilateral filter rather than OpenCV's non-local means
// (fastNlMeansDenoisingColored): non-local means compares 7x7 patches over a
// 21x21 search window (hundreds of times the work of a 5x5 bilateral filter
// a pixel, tens of milliseconds for one 224-px image), would add the
// opencv_photo module, and its gain is in removing strong noise that
// retrieval networks already ignore at 224 px. The bilateral filter keeps
// edges (what a CNN matches on) and costs a fixed 25 taps a pixel.
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "pixseek/image.h"

namespace pixseek {

namespace {

constexpr int kBilateralDiameter = 5;
constexpr double kBilateralSigmaColor = 30.0;  // intensity levels (of 255)
constexpr double kBilateralSigmaSpace = 5.0;   // pixels

}  // namespace

std::string DescribePreprocessing(const ImagePreprocessing& p) {
  std::string out;
  auto add = [&out](const std::string& part) { out += (out.empty() ? "" : " + ") + part; };
  if (p.grey) add("greyscale");
  if (p.denoise) add("denoise");
  if (p.stored_max_side > 0) {
    add("uploads capped at " + std::to_string(p.stored_max_side) + " px, JPEG quality " +
        std::to_string(p.stored_quality));
  }
  return out.empty() ? "no preprocessing" : out;
}

Status ApplyPreprocessing(const ImagePreprocessing& p, Image* image) {
  if (!p.filters()) return Status::Ok();
  if (image->empty() || image->rgb.size() != size_t{3} * static_cast<size_t>(image->width) *
                                                 static_cast<size_t>(image->height)) {
    return Status::InvalidArgument("image buffer size does not match 3 * width * height");
  }
  try {
    cv::Mat rgb(image->height, image->width, CV_8UC3, image->rgb.data());
    if (p.denoise) {
      // bilateralFilter cannot work in place.
      cv::Mat smoothed;
      cv::bilateralFilter(rgb, smoothed, kBilateralDiameter, kBilateralSigmaColor,
                          kBilateralSigmaSpace);
      smoothed.copyTo(rgb);
    }
    if (p.grey) {
      cv::Mat grey;
      cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
      cv::cvtColor(grey, rgb, cv::COLOR_GRAY2RGB);  // writes into image->rgb
    }
  } catch (const cv::Exception& e) {
    return Status::Internal(std::string("cannot preprocess image: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace pixseek
