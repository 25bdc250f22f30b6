// The ONNX embedder (OpenCV DNN, CPU) and the choice of engine for runtime
// "onnx". OpenCV stays inside this file: every cv::Exception is caught here
// and becomes a Status.
#include "embed/onnx_embedder.h"

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "embed/cv_error.h"
#include "embed/network_embedder.h"
#include "embed/preprocess.h"
#include "embed/torch_embedder.h"

namespace pixseek {
namespace {

// An Embedder backed by a cv::dnn::Net.
//
// Thread-safety: as NetworkEmbedder; cv::dnn::Net::forward mutates the net.
// Owns the net.
class OnnxEmbedder final : public NetworkEmbedder {
 public:
  OnnxEmbedder(ModelCard card, cv::dnn::Net net)
      : NetworkEmbedder(std::move(card)), net_(std::move(net)) {}

  // cv::setNumThreads is process-wide; the last caller wins.
  void SetThreads(int threads) override { cv::setNumThreads(threads > 0 ? threads : -1); }

 private:
  // One forward pass over n preprocessed images and the pooling.
  Status RunBatch(const float* input, size_t n, float* out) override {
    const int m = static_cast<int>(n);
    const int shape[4] = {m, 3, card().preprocess.input_height, card().preprocess.input_width};
    try {
      // The net only reads its input, so wrapping the caller's floats is safe.
      cv::Mat blob(4, shape, CV_32F, const_cast<float*>(input));
      net_.setInput(blob);
      const std::string& layer = card().onnx.output_layer;
      cv::Mat result = layer.empty() ? net_.forward() : net_.forward(layer);
      return Pool(result, m, out);
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
    return PoolFeatures(card(), result.ptr<float>(), shape, n, out);
  }

  cv::dnn::Net net_;
};

Result<std::unique_ptr<Embedder>> OpenOnOpenCv(const ModelCard& card,
                                               const std::filesystem::path& model_file) {
  // The token and GeM poolings are implemented by the libtorch embedders
  // only; pooling them here as "gap" would give wrong vectors silently.
  const Pooling pooling = card.output.pooling;
  if (pooling != Pooling::kGap && pooling != Pooling::kGmp && pooling != Pooling::kNone) {
    return Status::Unsupported("pooling \"" + std::string(ToString(pooling)) +
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
  const std::string& layer = card.onnx.output_layer;
  if (!layer.empty()) {
    bool found = false;
    try {
      found = net.getLayerId(layer) >= 0;
    } catch (const cv::Exception&) {
      found = false;
    }
    if (!found) {
      return Status::InvalidArgument("model card: output_layer \"" + layer +
                                     "\" is not a layer of " + model_file.filename().string());
    }
  }
  ModelCard resolved = card;
  resolved.onnx.engine = Engine::kOpenCv;
  resolved.precision = Precision::kFp32;  // OpenCV's engine has no bf16 path
  auto embedder = std::make_unique<OnnxEmbedder>(std::move(resolved), std::move(net));
  Status check = embedder->SelfCheck();
  if (!check.ok()) return check.WithContext("model " + model_file.filename().string());
  return std::unique_ptr<Embedder>(std::move(embedder));
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenOnnxEmbedder(const ModelCard& card,
                                                   const std::filesystem::path& model_file) {
  switch (card.onnx.engine) {
    case Engine::kLibtorch:
      return OpenOnnxOnTorch(card, model_file);
    case Engine::kAuto: {
      // Anything the libtorch engine cannot run (no plugin in this build, an
      // operator it lacks) runs on OpenCV, whose error a broken file gives.
      auto on_torch = OpenOnnxOnTorch(card, model_file);
      if (on_torch.ok()) return on_torch;
      break;
    }
    case Engine::kOpenCv:
      break;
  }
  return OpenOnOpenCv(card, model_file);
}

}  // namespace pixseek
