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

std::string_view PoolingShapes(Pooling pooling) {
  switch (pooling) {
    case Pooling::kNone: return "[N,D]";
    case Pooling::kGap:
    case Pooling::kGmp: return "[N,C,H,W]";
    case Pooling::kGem: return "[N,C,H,W] or [N,T,D]";
    case Pooling::kCls:
    case Pooling::kMeanTokens: return "[N,T,D]";
  }
  return "?";
}

bool PoolingAcceptsRank(Pooling pooling, size_t rank) {
  switch (pooling) {
    case Pooling::kNone: return rank >= 2;  // [N,D], or [N,D,1,1] from a conv head
    case Pooling::kGap:
    case Pooling::kGmp: return rank == 4;
    case Pooling::kGem: return rank == 4 || rank == 3;
    case Pooling::kCls:
    case Pooling::kMeanTokens: return rank == 3;
  }
  return false;
}

namespace {

// GeM: the generalised mean of `count` values `stride` apart, inputs clamped
// to kGemEps (as the libtorch embedder does).
constexpr double kGemEps = 1e-6;
float GeneralisedMean(const float* v, size_t count, size_t stride, double p) {
  double sum = 0.0;
  for (size_t k = 0; k < count; ++k) sum += std::pow(std::max<double>(v[k * stride], kGemEps), p);
  return static_cast<float>(std::pow(sum / static_cast<double>(count), 1.0 / p));
}

float Mean(const float* v, size_t count, size_t stride) {
  double sum = 0.0;
  for (size_t k = 0; k < count; ++k) sum += v[k * stride];
  return static_cast<float>(sum / static_cast<double>(count));
}

void NormalizeRow(float* row, size_t d) {
  double norm = 0.0;
  for (size_t c = 0; c < d; ++c) norm += static_cast<double>(row[c]) * row[c];
  norm = std::sqrt(norm);
  // An all-zero vector stays zero rather than becoming NaN.
  if (norm > 0.0) {
    const float inv = static_cast<float>(1.0 / norm);
    for (size_t c = 0; c < d; ++c) row[c] *= inv;
  }
}

}  // namespace

Status PoolFeatures(const ModelCard& card, const float* data, std::span<const int64_t> shape,
                    int n, float* out) {
  if (shape.size() < 2 || shape[0] != n) {
    return Status::InvalidArgument("model output has shape " + ShapeToString(shape) +
                                   ", expected a batch of " + std::to_string(n));
  }
  const Pooling pooling = card.output.pooling;
  const auto wrong_shape = [&] {
    return Status::InvalidArgument("pooling \"" + std::string(ToString(pooling)) + "\" needs an " +
                                   std::string(PoolingShapes(pooling)) + " output, got " +
                                   ShapeToString(shape));
  };
  if (!PoolingAcceptsRank(pooling, shape.size())) return wrong_shape();
  // The output as [N, D, spatial] (feature-major) or [N, tokens, D].
  const bool tokens = shape.size() == 3 && pooling != Pooling::kNone;
  const int64_t channels = tokens ? shape[2] : shape[1];
  size_t positions = 1;  // spatial cells or tokens
  for (size_t axis = tokens ? 1 : 2; axis < (tokens ? 2 : shape.size()); ++axis) {
    positions *= static_cast<size_t>(shape[axis]);
  }
  if (pooling == Pooling::kNone && positions != 1) return wrong_shape();
  const size_t first = pooling == Pooling::kCls ? 0 : (tokens ? 1 : 0);  // token 0 is the class
  if (positions <= first) {
    return Status::InvalidArgument("model output has no " +
                                   std::string(tokens ? "patch tokens" : "spatial cells") + ": " +
                                   ShapeToString(shape));
  }
  if (channels != card.dimension) {
    return Status::InvalidArgument("model output dimension is " + std::to_string(channels) +
                                   " but the card says dimension " +
                                   std::to_string(card.dimension));
  }
  const size_t d = static_cast<size_t>(channels);
  const size_t count = positions - first;
  for (int i = 0; i < n; ++i) {
    const float* sample = data + static_cast<size_t>(i) * d * positions;
    float* row = out + static_cast<size_t>(i) * d;
    for (size_t c = 0; c < d; ++c) {
      // Feature c's values: contiguous per channel, or one per token row.
      const float* v = tokens ? sample + first * d + c : sample + c * positions;
      const size_t stride = tokens ? d : 1;
      switch (pooling) {
        case Pooling::kGmp: {
          float best = v[0];
          for (size_t k = 1; k < count; ++k) best = std::max(best, v[k * stride]);
          row[c] = best;
          break;
        }
        case Pooling::kGem: row[c] = GeneralisedMean(v, count, stride, card.output.gem_p); break;
        case Pooling::kCls: row[c] = v[0]; break;
        default: row[c] = Mean(v, count, stride); break;  // gap, mean_tokens, none
      }
    }
    if (card.output.l2_normalize) NormalizeRow(row, d);
  }
  return Status::Ok();
}

}  // namespace pixseek
