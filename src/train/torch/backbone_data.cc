// Decoding, augmentation and preprocessing of training and validation
// batches (see backbone_data.h).
#include "train/torch/backbone_data.h"

#include <exception>
#include <random>
#include <vector>

#include "core/parallel.h"
#include "embed/preprocess.h"
#include "train/torch/backbone_augment.h"

namespace pixseek::train {
namespace {

// Writes row `slot`'s input to `dst`; false when the image is unusable.
// Exceptions (OpenCV's, the caller's decode) count as unusable: one bad
// file must not end a training run.
bool LoadRow(const ModelCard& card, const LabelledImages& images, int64_t row, size_t slot,
             const std::optional<AugmentSeed>& augment, float* dst) {
  try {
    std::optional<Image> image = images.decode(static_cast<size_t>(row));
    if (!image || !CheckEmbedImage(&*image, slot).ok()) return false;
    if (!augment) {
      PreprocessImage(card.preprocess, *image, dst);
      return true;
    }
    std::seed_seq seq{augment->seed, augment->epoch, augment->batch,
                      static_cast<uint32_t>(slot)};
    std::mt19937 rng(seq);
    const PreprocessSpec& spec = card.preprocess;
    Image crop = Augment(*image, spec.input_width, spec.input_height, spec.interpolation, rng);
    PreprocessSpec as_is = spec;  // the crop already has the input size
    as_is.crop = Crop::kNone;
    PreprocessImage(as_is, crop, dst);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

ImageBatch LoadBatch(const ModelCard& card, const LabelledImages& images,
                     std::span<const int64_t> rows, const std::optional<AugmentSeed>& augment,
                     int threads) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t h = card.preprocess.input_height;
  const int64_t w = card.preprocess.input_width;
  torch::Tensor x = torch::empty({n, 3, h, w}, torch::kFloat);
  float* data = x.data_ptr<float>();
  std::vector<char> ok(rows.size(), 0);
  ParallelFor(rows.size(), threads, [&](size_t i) {
    ok[i] = LoadRow(card, images, rows[i], i, augment, data + i * 3 * h * w) ? 1 : 0;
  });
  std::vector<int64_t> kept;
  std::vector<int64_t> labels;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!ok[i]) continue;
    kept.push_back(static_cast<int64_t>(i));
    labels.push_back(images.labels[static_cast<size_t>(rows[i])]);
  }
  ImageBatch batch;
  batch.skipped = rows.size() - kept.size();
  batch.x = batch.skipped == 0 ? x : x.index_select(0, torch::tensor(kept, torch::kLong));
  batch.y = torch::tensor(labels, torch::kLong);
  return batch;
}

}  // namespace pixseek::train
