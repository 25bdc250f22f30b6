// Spatial verification for instance search: RootSIFT keypoints matched with
// Lowe's ratio test and checked by a RANSAC homography (OpenCV). OpenCV stays
// inside this file; its exceptions become Status (or 0 inliers).
#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/calib3d.hpp>
#include <opencv2/core.hpp>
#include <opencv2/features2d.hpp>
#include <opencv2/imgproc.hpp>

#include "pixseek/feature_fit.h"

namespace pixseek {
namespace {

std::string CvError(const cv::Exception& e) { return e.err.empty() ? e.msg : e.err; }

void Extract(const Image& image, const SpatialOptions& options, LocalFeatures* out) {
  cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
  cv::Mat grey;
  cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
  const double scale = std::min(1.0, static_cast<double>(options.max_side) /
                                         std::max(image.width, image.height));
  if (scale < 1.0) {
    cv::Mat small;
    cv::resize(grey, small,
               cv::Size(std::max(1, static_cast<int>(std::lround(image.width * scale))),
                        std::max(1, static_cast<int>(std::lround(image.height * scale)))),
               0, 0, cv::INTER_AREA);
    grey = small;
  }
  cv::Ptr<cv::SIFT> sift = cv::SIFT::create(options.max_keypoints);
  std::vector<cv::KeyPoint> keypoints;
  cv::Mat desc;
  sift->detectAndCompute(grey, cv::noArray(), keypoints, desc);
  if (desc.empty()) return;
  desc.convertTo(desc, CV_32F);
  const int n = std::min(desc.rows, options.max_keypoints);
  out->points.reserve(2 * static_cast<size_t>(n));
  out->descriptors.reserve(static_cast<size_t>(n) * kSiftDimension);
  for (int i = 0; i < n; ++i) {
    out->points.push_back(keypoints[static_cast<size_t>(i)].pt.x);
    out->points.push_back(keypoints[static_cast<size_t>(i)].pt.y);
    // RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root,
    // so that Euclidean distance compares as the Hellinger kernel.
    const float* row = desc.ptr<float>(i);
    float l1 = 0;
    for (int d = 0; d < kSiftDimension; ++d) l1 += std::abs(row[d]);
    for (int d = 0; d < kSiftDimension; ++d) {
      out->descriptors.push_back(l1 > 0 ? std::sqrt(std::abs(row[d]) / l1) : 0.0f);
    }
  }
}

}  // namespace

Result<LocalFeatures> ExtractLocalFeatures(const Image& image, const SpatialOptions& options) {
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return Status::InvalidArgument("spatial verification: empty or malformed image");
  }
  LocalFeatures out;
  try {
    Extract(image, options, &out);
  } catch (const cv::Exception& e) {
    return Status::Internal("spatial verification: SIFT failed: " + CvError(e));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("spatial verification: SIFT failed: ") + e.what());
  }
  return out;
}

int CountInliers(const LocalFeatures& a, const LocalFeatures& b, const SpatialOptions& options) {
  constexpr size_t kMinPoints = 4;  // a homography's degrees of freedom / 2
  if (a.size() < kMinPoints || b.size() < kMinPoints) return 0;
  try {
    cv::Mat da(static_cast<int>(a.size()), kSiftDimension, CV_32F,
               const_cast<float*>(a.descriptors.data()));
    cv::Mat db(static_cast<int>(b.size()), kSiftDimension, CV_32F,
               const_cast<float*>(b.descriptors.data()));
    cv::BFMatcher matcher(cv::NORM_L2);
    std::vector<std::vector<cv::DMatch>> knn;
    matcher.knnMatch(da, db, knn, 2);
    std::vector<cv::Point2f> from, to;
    for (const auto& m : knn) {
      if (m.size() < 2 || m[0].distance >= options.ratio * m[1].distance) continue;
      const auto qi = static_cast<size_t>(m[0].queryIdx);
      const auto ti = static_cast<size_t>(m[0].trainIdx);
      from.emplace_back(a.points[2 * qi], a.points[2 * qi + 1]);
      to.emplace_back(b.points[2 * ti], b.points[2 * ti + 1]);
    }
    if (from.size() < kMinPoints) return 0;
    std::vector<uchar> mask;
    cv::Mat h = cv::findHomography(from, to, cv::RANSAC, options.ransac_pixels, mask);
    if (h.empty()) return 0;
    return static_cast<int>(std::count(mask.begin(), mask.end(), uchar{1}));
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace pixseek
