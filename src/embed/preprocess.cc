// Card-driven preprocessing (OpenCV resize, crop, normalise) and output
// pooling, shared by the embedders; see preprocess.h.
#include "embed/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace pixseek {
namespace {

// Above this many pixels after the shorter-side resize, crop before resizing.
constexpr int64_t kMaxResizedPixels = 16 << 20;

int InterpolationFlag(Interpolation interpolation) {
  switch (interpolation) {
    case Interpolation::kArea: return cv::INTER_AREA;
    case Interpolation::kBicubic: return cv::INTER_CUBIC;
    case Interpolation::kBilinear: break;
  }
  return cv::INTER_LINEAR;
}

}  // namespace

Status CheckEmbedImage(const Image* image, size_t index) {
  if (image == nullptr) {
    return Status::InvalidArgument("Embed: image " + std::to_string(index) + " is null");
  }
  if (image->empty() || image->width < 0 || image->height < 0) {
    return Status::InvalidArgument("Embed: image " + std::to_string(index) + " is empty");
  }
  size_t expected = static_cast<size_t>(image->width) * static_cast<size_t>(image->height) * 3;
  if (image->rgb.size() != expected) {
    return Status::InvalidArgument("Embed: image " + std::to_string(index) + " is " +
                                   std::to_string(image->width) + "x" +
                                   std::to_string(image->height) + " but holds " +
                                   std::to_string(image->rgb.size()) + " bytes, not " +
                                   std::to_string(expected));
  }
  return Status::Ok();
}

void PreprocessImage(const PreprocessSpec& spec, const Image& image, float* dst) {
  // Image is RGB interleaved with packed rows: wrap it without copying.
  // OpenCV only reads from it, so the const_cast is safe.
  cv::Mat src(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
  const int iw = spec.input_width;
  const int ih = spec.input_height;
  const int interp = InterpolationFlag(spec.interpolation);

  cv::Mat resized;
  cv::Mat cropped;
  if (spec.crop == Crop::kNone) {
    if (src.cols == iw && src.rows == ih) {
      cropped = src;
    } else {
      cv::resize(src, resized, cv::Size(iw, ih), 0, 0, interp);
      cropped = resized;
    }
  } else {
    // Shorter side to resize_shorter, the other in proportion (truncated,
    // like torchvision's Resize), never below the crop size.
    const int64_t s = spec.resize_shorter;
    int rw, rh;
    if (src.cols <= src.rows) {
      rw = static_cast<int>(s);
      rh = static_cast<int>(s * src.rows / src.cols);
    } else {
      rh = static_cast<int>(s);
      rw = static_cast<int>(s * src.cols / src.rows);
    }
    rw = std::max(rw, iw);
    rh = std::max(rh, ih);
    if (static_cast<int64_t>(rw) * rh > kMaxResizedPixels) {
      // A very long, thin image: resizing all of it would take gigabytes.
      // Cut the part that becomes the crop out of the source first.
      const double f = static_cast<double>(s) / std::min(src.cols, src.rows);
      int cw = std::clamp(static_cast<int>(std::lround(iw / f)), 1, src.cols);
      int ch = std::clamp(static_cast<int>(std::lround(ih / f)), 1, src.rows);
      cv::Rect roi((src.cols - cw) / 2, (src.rows - ch) / 2, cw, ch);
      cv::resize(src(roi), resized, cv::Size(iw, ih), 0, 0, interp);
      cropped = resized;
    } else if (rw == src.cols && rh == src.rows) {
      resized = src;
    } else {
      cv::resize(src, resized, cv::Size(rw, rh), 0, 0, interp);
    }
    if (cropped.empty()) {
      int x0 = static_cast<int>(std::lround((rw - iw) / 2.0));
      int y0 = static_cast<int>(std::lround((rh - ih) / 2.0));
      cropped = resized(cv::Rect(x0, y0, iw, ih));
    }
  }

  cv::Mat channels[3];
  cv::split(cropped, channels);  // R, G, B
  const bool bgr = spec.channel_order == ChannelOrder::kBgr;
  const size_t plane = static_cast<size_t>(iw) * ih;
  for (int c = 0; c < 3; ++c) {
    // Model channel c; mean[c] and std[c] are in the model's channel order.
    const cv::Mat& from = channels[bgr ? 2 - c : c];
    cv::Mat to(ih, iw, CV_32F, dst + c * plane);
    const double alpha = static_cast<double>(spec.scale) / spec.std[c];
    const double beta = -static_cast<double>(spec.mean[c]) / spec.std[c];
    from.convertTo(to, CV_32F, alpha, beta);
  }
}

std::string ShapeToString(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Status PoolFeatures(const ModelCard& card, const float* data, std::span<const int64_t> shape,
                    int n, float* out) {
  if (shape.size() < 2 || shape[0] != n) {
    return Status::InvalidArgument("model output has shape " + ShapeToString(shape) +
                                   ", expected a batch of " + std::to_string(n));
  }
  int64_t channels = 0;
  size_t spatial = 1;
  const Pooling pooling = card.output.pooling;
  if (pooling == Pooling::kNone) {
    for (size_t d = 2; d < shape.size(); ++d) spatial *= static_cast<size_t>(shape[d]);
    if (spatial != 1) {
      return Status::InvalidArgument("pooling \"none\" needs an [N,D] output, got " +
                                     ShapeToString(shape));
    }
    channels = shape[1];
  } else {
    if (shape.size() != 4) {
      return Status::InvalidArgument("pooling \"" + std::string(ToString(pooling)) +
                                     "\" needs an [N,C,H,W] output, got " + ShapeToString(shape));
    }
    channels = shape[1];
    spatial = static_cast<size_t>(shape[2]) * static_cast<size_t>(shape[3]);
    if (spatial == 0) {
      return Status::InvalidArgument("model output has an empty spatial size " +
                                     ShapeToString(shape));
    }
  }
  if (channels != card.dimension) {
    return Status::InvalidArgument("model output dimension is " + std::to_string(channels) +
                                   " but the card says dimension " +
                                   std::to_string(card.dimension));
  }
  const size_t d = static_cast<size_t>(channels);
  for (int i = 0; i < n; ++i) {
    float* row = out + i * d;
    for (size_t c = 0; c < d; ++c) {
      const float* v = data + (i * d + c) * spatial;
      if (pooling == Pooling::kGmp) {
        row[c] = *std::max_element(v, v + spatial);
      } else {
        double sum = 0.0;
        for (size_t k = 0; k < spatial; ++k) sum += v[k];
        row[c] = static_cast<float>(sum / static_cast<double>(spatial));
      }
    }
    if (card.output.l2_normalize) {
      double norm = 0.0;
      for (size_t c = 0; c < d; ++c) norm += static_cast<double>(row[c]) * row[c];
      norm = std::sqrt(norm);
      // An all-zero vector stays zero rather than becoming NaN.
      if (norm > 0.0) {
        const float inv = static_cast<float>(1.0 / norm);
        for (size_t c = 0; c < d; ++c) row[c] *= inv;
      }
    }
  }
  return Status::Ok();
}

}  // namespace pixseek
