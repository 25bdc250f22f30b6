// OpenEmbedder and the ONNX embedder (OpenCV DNN, CPU). OpenCV stays inside
// this file: every cv::Exception is caught here and becomes a Status.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include "pixseek/embedder.h"

namespace pixseek {
namespace {

// Above this many pixels after the shorter-side resize, crop before resizing.
constexpr int64_t kMaxResizedPixels = 16 << 20;

int InterpolationFlag(const std::string& name) {
  if (name == "area") return cv::INTER_AREA;
  if (name == "bicubic") return cv::INTER_CUBIC;
  return cv::INTER_LINEAR;
}

// OpenCV's own description of the error, without its trailing "\n> " noise.
std::string CvMessage(const cv::Exception& e) {
  std::string m = e.err.empty() ? e.msg : e.err;
  while (!m.empty() && (std::isspace(static_cast<unsigned char>(m.back())) || m.back() == '>')) {
    m.pop_back();
  }
  return m;
}

std::string ShapeString(const cv::Mat& m) {
  std::string s = "[";
  for (int i = 0; i < m.dims; ++i) {
    if (i > 0) s += ",";
    s += std::to_string(m.size[i]);
  }
  return s + "]";
}

// An Embedder backed by a cv::dnn::Net.
//
// Thread-safety: not thread-safe (cv::dnn::Net::forward mutates the net); the
// caller serialises calls, as the Embedder contract says. Owns the net and
// the scratch blob.
class OnnxEmbedder final : public Embedder {
 public:
  OnnxEmbedder(ModelCard card, cv::dnn::Net net)
      : card_(std::move(card)), net_(std::move(net)) {}

  const ModelCard& card() const override { return card_; }

  Status Embed(std::span<const Image* const> images, float* out) override {
    if (images.empty()) return Status::Ok();
    if (out == nullptr) return Status::InvalidArgument("Embed: output buffer is null");
    for (size_t i = 0; i < images.size(); ++i) {
      PIXSEEK_RETURN_IF_ERROR(CheckImage(images[i], i));
    }
    const size_t batch = static_cast<size_t>(card_.max_batch);
    for (size_t start = 0; start < images.size(); start += batch) {
      size_t n = std::min(batch, images.size() - start);
      PIXSEEK_RETURN_IF_ERROR(
          RunBatch(images.subspan(start, n), out + start * static_cast<size_t>(card_.dimension)));
    }
    return Status::Ok();
  }

  // Embeds a mid-grey image once, which checks that the net runs and that its
  // output has card.dimension entries.
  Status SelfCheck() {
    Image dummy;
    dummy.width = card_.input_width;
    dummy.height = card_.input_height;
    dummy.rgb.assign(static_cast<size_t>(dummy.width) * dummy.height * 3, 128);
    std::vector<float> vec(static_cast<size_t>(card_.dimension));
    const Image* ptr = &dummy;
    return RunBatch(std::span<const Image* const>(&ptr, 1), vec.data());
  }

 private:
  static Status CheckImage(const Image* image, size_t index) {
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

  // Resizes and crops `image` as the card says and writes the normalised
  // channels, in the model's channel order, to the three planes at `dst`
  // (each input_height x input_width floats).
  void Preprocess(const Image& image, float* dst) const {
    // Image is RGB interleaved with packed rows: wrap it without copying.
    // OpenCV only reads from it, so the const_cast is safe.
    cv::Mat src(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
    const int iw = card_.input_width;
    const int ih = card_.input_height;
    const int interp = InterpolationFlag(card_.interpolation);

    cv::Mat resized;
    cv::Mat cropped;
    if (card_.crop == "none") {
      if (src.cols == iw && src.rows == ih) {
        cropped = src;
      } else {
        cv::resize(src, resized, cv::Size(iw, ih), 0, 0, interp);
        cropped = resized;
      }
    } else {
      // Shorter side to resize_shorter, the other in proportion (truncated,
      // like torchvision's Resize), never below the crop size.
      const int64_t s = card_.resize_shorter;
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
    const bool bgr = card_.channel_order == "BGR";
    const size_t plane = static_cast<size_t>(iw) * ih;
    for (int c = 0; c < 3; ++c) {
      // Model channel c; mean[c] and std[c] are in the model's channel order.
      const cv::Mat& from = channels[bgr ? 2 - c : c];
      cv::Mat to(ih, iw, CV_32F, dst + c * plane);
      const double alpha = static_cast<double>(card_.scale) / card_.std[c];
      const double beta = -static_cast<double>(card_.mean[c]) / card_.std[c];
      from.convertTo(to, CV_32F, alpha, beta);
    }
  }

  // Runs one forward pass over images.size() <= max_batch checked images and
  // writes images.size() * dimension floats to `out`.
  Status RunBatch(std::span<const Image* const> images, float* out) {
    const int n = static_cast<int>(images.size());
    const int iw = card_.input_width;
    const int ih = card_.input_height;
    try {
      const int shape[4] = {n, 3, ih, iw};
      blob_.create(4, shape, CV_32F);
      const size_t per_image = 3 * static_cast<size_t>(iw) * ih;
      for (int i = 0; i < n; ++i) {
        Preprocess(*images[i], blob_.ptr<float>() + i * per_image);
      }
      net_.setInput(blob_);
      cv::Mat result =
          card_.output_layer.empty() ? net_.forward() : net_.forward(card_.output_layer);
      return Pool(result, n, out);
    } catch (const cv::Exception& e) {
      return Status::Internal("OpenCV DNN forward failed: " + CvMessage(e));
    } catch (const std::exception& e) {
      return Status::Internal(std::string("forward failed: ") + e.what());
    }
  }

  // Pools `result` ([N,C,H,W] or [N,D]) into n rows of `dimension` floats.
  Status Pool(cv::Mat result, int n, float* out) const {
    if (result.depth() != CV_32F) result.convertTo(result, CV_32F);
    if (!result.isContinuous()) result = result.clone();
    if (result.dims < 2 || result.size[0] != n) {
      return Status::InvalidArgument("model output has shape " + ShapeString(result) +
                                     ", expected a batch of " + std::to_string(n));
    }
    int channels = 0;
    size_t spatial = 1;
    if (card_.pooling == "none") {
      for (int d = 2; d < result.dims; ++d) spatial *= static_cast<size_t>(result.size[d]);
      if (spatial != 1) {
        return Status::InvalidArgument("pooling \"none\" needs an [N,D] output, got " +
                                       ShapeString(result));
      }
      channels = result.size[1];
    } else {
      if (result.dims != 4) {
        return Status::InvalidArgument("pooling \"" + card_.pooling +
                                       "\" needs an [N,C,H,W] output, got " +
                                       ShapeString(result));
      }
      channels = result.size[1];
      spatial = static_cast<size_t>(result.size[2]) * result.size[3];
      if (spatial == 0) {
        return Status::InvalidArgument("model output has an empty spatial size " +
                                       ShapeString(result));
      }
    }
    if (channels != card_.dimension) {
      return Status::InvalidArgument("model output dimension is " + std::to_string(channels) +
                                     " but the card says dimension " +
                                     std::to_string(card_.dimension));
    }
    const float* data = result.ptr<float>();
    const size_t d = static_cast<size_t>(channels);
    for (int i = 0; i < n; ++i) {
      float* row = out + i * d;
      for (size_t c = 0; c < d; ++c) {
        const float* v = data + (i * d + c) * spatial;
        if (card_.pooling == "gmp") {
          row[c] = *std::max_element(v, v + spatial);
        } else {
          double sum = 0.0;
          for (size_t k = 0; k < spatial; ++k) sum += v[k];
          row[c] = static_cast<float>(sum / static_cast<double>(spatial));
        }
      }
      if (card_.l2_normalize) {
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

  const ModelCard card_;
  cv::dnn::Net net_;
  cv::Mat blob_;  // reused input blob
};

Result<std::unique_ptr<Embedder>> OpenOnnx(const ModelCard& card,
                                           const std::filesystem::path& model_file) {
  cv::dnn::Net net;
  try {
    net = cv::dnn::readNetFromONNX(model_file.string());
    if (net.empty()) {
      return Status::Internal("OpenCV DNN could not load " + model_file.string());
    }
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  } catch (const cv::Exception& e) {
    return Status::Internal("OpenCV DNN cannot load model " + model_file.string() + ": " + CvMessage(e));
  } catch (const std::exception& e) {
    return Status::Internal("cannot load model " + model_file.string() + ": " + e.what());
  }
  if (!card.output_layer.empty()) {
    bool found = false;
    try {
      found = net.getLayerId(card.output_layer) >= 0;
    } catch (const cv::Exception&) {
      found = false;
    }
    if (!found) {
      return Status::InvalidArgument("model card: output_layer \"" + card.output_layer +
                                     "\" is not a layer of " + model_file.filename().string());
    }
  }
  auto embedder = std::make_unique<OnnxEmbedder>(card, std::move(net));
  Status check = embedder->SelfCheck();
  if (!check.ok()) return check.WithContext("model " + model_file.filename().string());
  return std::unique_ptr<Embedder>(std::move(embedder));
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenEmbedder(const ModelCard& card,
                                               const std::filesystem::path& model_file) {
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  if (card.runtime != "onnx") {
    return Status::Unsupported("runtime " + card.runtime + " is not available in this build");
  }
  std::error_code ec;
  if (!std::filesystem::exists(model_file, ec)) {
    return Status::NotFound("model file " + model_file.string() + " does not exist");
  }
  if (!std::filesystem::is_regular_file(model_file, ec)) {
    return Status::InvalidArgument("model file " + model_file.string() + " is not a regular file");
  }
  return OpenOnnx(card, model_file);
}

}  // namespace pixseek
