// Training-time augmentation of decoded images for TrainBackbone: random
// resized crop, horizontal flip and colour jitter, as torchvision's
// RandomResizedCrop(scale=(0.35, 1)), RandomHorizontalFlip and
// ColorJitter(0.2, 0.2, 0.2) do. Part of the plugin pixseek_train.so.
// Thread-safe: no shared state; the caller owns the random generator.
#ifndef PIXSEEK_TRAIN_TORCH_BACKBONE_AUGMENT_H_
#define PIXSEEK_TRAIN_TORCH_BACKBONE_AUGMENT_H_

#include <random>

#include "pixseek/embedder.h"
#include "pixseek/image.h"

namespace pixseek::train {

// A random crop of 35-100% of `image`'s area with aspect ratio 3/4..4/3,
// resized to `width` x `height` with `interpolation`, flipped left-right
// with probability 1/2, then brightness, contrast and saturation each scaled
// by a factor in 0.8..1.2. Every draw comes from `rng`, so the same rng state
// gives the same picture. `image` must be non-empty RGB (CheckEmbedImage).
// May throw cv::Exception.
Image Augment(const Image& image, int width, int height, Interpolation interpolation,
              std::mt19937& rng);

}  // namespace pixseek::train

#endif  // PIXSEEK_TRAIN_TORCH_BACKBONE_AUGMENT_H_
