// NetworkEmbedder: preprocessing, batching and the self-check shared by the
// ONNX, TorchScript and KServe embedders; see network_embedder.h.
#include "embed/network_embedder.h"

#include <algorithm>
#include <exception>
#include <string>

#include "embed/cv_error.h"
#include "embed/preprocess.h"

namespace pixseek {

size_t NetworkEmbedder::preprocessed_size() const {
  return 3 * static_cast<size_t>(card_.preprocess.input_width) *
         static_cast<size_t>(card_.preprocess.input_height);
}

size_t NetworkEmbedder::batch_size() const {
  return static_cast<size_t>(std::max(1, card_.max_batch));
}

Status NetworkEmbedder::Preprocess(const Image& image, float* dst) const {
  PIXSEEK_RETURN_IF_ERROR(CheckEmbedImage(&image, 0));
  try {
    PreprocessImage(card_.preprocess, image, dst);
  } catch (const cv::Exception& e) {
    return Status::Internal("preprocessing failed: " + CvMessage(e));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("preprocessing failed: ") + e.what());
  }
  return Status::Ok();
}

Status NetworkEmbedder::Embed(std::span<const Image* const> images, float* out) {
  if (images.empty()) return Status::Ok();
  if (out == nullptr) return Status::InvalidArgument("Embed: output buffer is null");
  for (size_t i = 0; i < images.size(); ++i) {
    PIXSEEK_RETURN_IF_ERROR(CheckEmbedImage(images[i], i));
  }
  const size_t per_image = preprocessed_size();
  const size_t dim = static_cast<size_t>(dimension());
  const size_t batch = static_cast<size_t>(std::max(1, card_.max_batch));
  for (size_t start = 0; start < images.size(); start += batch) {
    const size_t n = std::min(batch, images.size() - start);
    scratch_.resize(n * per_image);
    for (size_t i = 0; i < n; ++i) {
      PIXSEEK_RETURN_IF_ERROR(Preprocess(*images[start + i], scratch_.data() + i * per_image));
    }
    PIXSEEK_RETURN_IF_ERROR(EmbedPreprocessed(scratch_.data(), n, out + start * dim));
  }
  return Status::Ok();
}

Status NetworkEmbedder::EmbedPreprocessed(const float* input, size_t n, float* out) {
  if (n == 0) return Status::Ok();
  if (input == nullptr || out == nullptr) {
    return Status::InvalidArgument("EmbedPreprocessed: null buffer");
  }
  const size_t batch = batch_size();
  const size_t per_image = preprocessed_size();
  const size_t dim = static_cast<size_t>(dimension());
  for (size_t start = 0; start < n; start += batch) {
    const size_t m = std::min(batch, n - start);
    PIXSEEK_RETURN_IF_ERROR(RunBatch(input + start * per_image, m, out + start * dim));
  }
  return Status::Ok();
}

Status NetworkEmbedder::SelfCheck() {
  Image dummy;
  dummy.width = card_.preprocess.input_width;
  dummy.height = card_.preprocess.input_height;
  dummy.rgb.assign(static_cast<size_t>(dummy.width) * dummy.height * 3, 128);
  std::vector<float> vec(static_cast<size_t>(card_.dimension));
  const Image* ptr = &dummy;
  return Embed(std::span<const Image* const>(&ptr, 1), vec.data());
}

}  // namespace pixseek
