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

#include "embed/kserve_embedder.h"
#include "embed/preprocess.h"
#include "embed/sift_vlad.h"
#include "embed/torch_embedder.h"
#include "pixseek/embedder.h"

namespace pixseek {
namespace {

// OpenCV's own description of the error, without its trailing "\n> " noise.
std::string CvMessage(const cv::Exception& e) {
  std::string m = e.err.empty() ? e.msg : e.err;
  while (!m.empty() && (std::isspace(static_cast<unsigned char>(m.back())) || m.back() == '>')) {
    m.pop_back();
  }
  return m;
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
    return EmbedInBatches(*this, images, out, input_);
  }

  size_t preprocessed_size() const override {
    return 3 * static_cast<size_t>(card_.input_width) * static_cast<size_t>(card_.input_height);
  }

  Status Preprocess(const Image& image, float* dst) const override {
    PIXSEEK_RETURN_IF_ERROR(CheckEmbedImage(&image, 0));
    try {
      PreprocessImage(card_, image, dst);
    } catch (const cv::Exception& e) {
      return Status::Internal("preprocessing failed: " + CvMessage(e));
    }
    return Status::Ok();
  }

  Status EmbedPreprocessed(const float* input, size_t n, float* out) override {
    if (input == nullptr || out == nullptr) {
      return Status::InvalidArgument("EmbedPreprocessed: null buffer");
    }
    const size_t batch = static_cast<size_t>(card_.max_batch);
    for (size_t start = 0; start < n; start += batch) {
      const int m = static_cast<int>(std::min(batch, n - start));
      const int shape[4] = {m, 3, card_.input_height, card_.input_width};
      // The net only reads its input, so wrapping the caller's floats is safe.
      cv::Mat blob(4, shape, CV_32F, const_cast<float*>(input + start * preprocessed_size()));
      PIXSEEK_RETURN_IF_ERROR(
          Forward(blob, m, out + start * static_cast<size_t>(card_.dimension)));
    }
    return Status::Ok();
  }

  // cv::setNumThreads is process-wide; the last caller wins.
  void SetThreads(int threads) override { cv::setNumThreads(threads > 0 ? threads : -1); }

  // Embeds a mid-grey image once, which checks that the net runs and that its
  // output has card.dimension entries.
  Status SelfCheck() {
    Image dummy;
    dummy.width = card_.input_width;
    dummy.height = card_.input_height;
    dummy.rgb.assign(static_cast<size_t>(dummy.width) * dummy.height * 3, 128);
    std::vector<float> vec(static_cast<size_t>(card_.dimension));
    const Image* ptr = &dummy;
    return Embed(std::span<const Image* const>(&ptr, 1), vec.data());
  }

 private:
  // One forward pass over the n images in `blob` and the pooling.
  Status Forward(const cv::Mat& blob, int n, float* out) {
    try {
      net_.setInput(blob);
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
    std::vector<int64_t> shape(result.size.p, result.size.p + result.dims);
    return PoolFeatures(card_, result.ptr<float>(), shape, n, out);
  }

  const ModelCard card_;
  cv::dnn::Net net_;
  std::vector<float> input_;  // Embed's preprocessed batch
};

Result<std::unique_ptr<Embedder>> OpenOnnx(const ModelCard& card,
                                           const std::filesystem::path& model_file) {
  // The token and GeM poolings are implemented by the TorchScript embedder
  // only; pooling them here as "gap" would give wrong vectors silently.
  if (card.pooling != "gap" && card.pooling != "gmp" && card.pooling != "none") {
    return Status::Unsupported("pooling \"" + card.pooling +
                               "\" is not available for runtime onnx (use gap, gmp or none)");
  }
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
  ModelCard resolved = card;
  resolved.engine = "opencv";
  resolved.precision = "fp32";  // OpenCV's engine has no bf16 path
  auto embedder = std::make_unique<OnnxEmbedder>(std::move(resolved), std::move(net));
  Status check = embedder->SelfCheck();
  if (!check.ok()) return check.WithContext("model " + model_file.filename().string());
  return std::unique_ptr<Embedder>(std::move(embedder));
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenEmbedder(const ModelCard& card,
                                               const std::filesystem::path& model_file) {
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  // A remote model has no local file to open (model_file is not read).
  if (card.runtime == "kserve") return OpenKServeEmbedder(card);
  if (card.runtime != "onnx" && card.runtime != "torchscript" && card.runtime != "sift-vlad") {
    return Status::Unsupported("runtime " + card.runtime + " is not available in this build");
  }
  std::error_code ec;
  if (!std::filesystem::exists(model_file, ec)) {
    return Status::NotFound("model file " + model_file.string() + " does not exist");
  }
  if (!std::filesystem::is_regular_file(model_file, ec)) {
    return Status::InvalidArgument("model file " + model_file.string() + " is not a regular file");
  }
  if (card.runtime == "torchscript") return OpenTorchScript(card, model_file);
  if (card.runtime == "sift-vlad") return OpenSiftVladEmbedder(card, model_file);
  if (card.engine == "libtorch") return OpenOnnxOnTorch(card, model_file);
  if (card.engine == "auto") {
    // Anything the libtorch engine cannot run (no plugin in this build, an
    // operator it lacks) runs on OpenCV, whose error a broken file gives.
    auto on_torch = OpenOnnxOnTorch(card, model_file);
    if (on_torch.ok()) return on_torch;
  }
  return OpenOnnx(card, model_file);
}

}  // namespace pixseek
