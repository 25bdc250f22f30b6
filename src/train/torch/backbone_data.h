// LabelledImages -> network input for TrainBackbone: decoding on several
// threads, augmentation for training batches, the card's preprocessing,
// labels. Part of the plugin pixseek_train.so.
#ifndef PIXSEEK_TRAIN_TORCH_BACKBONE_DATA_H_
#define PIXSEEK_TRAIN_TORCH_BACKBONE_DATA_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include <torch/torch.h>

#include "pixseek/embedder.h"
#include "pixseek/train.h"

namespace pixseek::train {

// Where the random draws of a training batch come from: row r of batch b of
// epoch e is augmented from a generator seeded with (seed, e, b, r), so the
// same options give the same pictures whatever the number of threads.
struct AugmentSeed {
  uint32_t seed = 0;
  uint32_t epoch = 0;
  uint32_t batch = 0;
};

struct ImageBatch {
  torch::Tensor x;     // [n, 3, input_height, input_width] float, preprocessed
  torch::Tensor y;     // [n] int64 labels
  size_t skipped = 0;  // rows left out: not decoded, or not preprocessable
};

// Decodes images.decode(rows[i]) on `threads` threads and preprocesses each
// as `card` says: with `augment`, a random resized crop to the input size,
// flip and colour jitter (backbone_augment.h) followed by the card's
// normalisation; without, exactly the embedder's preprocessing (resize,
// centre crop, normalisation). Unusable images are skipped, never an
// error. Thread-safe as images.decode is.
ImageBatch LoadBatch(const ModelCard& card, const LabelledImages& images,
                     std::span<const int64_t> rows, const std::optional<AugmentSeed>& augment,
                     int threads);

}  // namespace pixseek::train

#endif  // PIXSEEK_TRAIN_TORCH_BACKBONE_DATA_H_
