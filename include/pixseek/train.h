// Learning the artefacts a database or an index is built with, from a
// sample of its own data (src/train): the SIFT-VLAD codebook and
// PCA(-whitening) that feature extraction applies (pixseek/feature_fit.h),
// and the codebooks of the disk index's product quantizer. Each function
// returns the learned artefact; storing it is the caller's business
// (src/service writes the codebook and PCA files into the database
// directory).
//
// Dependencies: service -> train -> embed, index -> core. FAISS stays inside
// the .cc files of the module.
#ifndef PIXSEEK_TRAIN_H_
#define PIXSEEK_TRAIN_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/feature_fit.h"
#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

// A sample of a collection's images to learn from, decoded on demand so that
// a large sample is never in memory at once.
struct ImageSample {
  size_t size = 0;  // images 0..size-1
  // Decodes image i; nullopt when it is not a usable image (it is skipped).
  // Called from several threads at once, for different i.
  std::function<std::optional<Image>(size_t i)> decode;
};

// ---- SIFT-VLAD codebook ---------------------------------------------------

// Learns the codebook of sift-vlad `card` (dimension / 128 centroids) by
// k-means (FAISS, single-threaded, fixed seed: the same descriptors give the
// same codebook) on `descriptors` (rows of kSiftDimension, as
// RootSiftDescriptors gives them). InvalidArgument for a card that is not
// sift-vlad or invalid, or fewer descriptors than centroids; Internal when
// FAISS fails.
Result<SiftVladCodebook> TrainSiftVladCodebook(const ModelCard& card,
                                               std::span<const float> descriptors,
                                               uint32_t seed = 1234);

// The codebook of `card` learned from the RootSIFT descriptors of `sample`
// (at most about 200,000 in all, evenly spaced within each image), computed
// on `threads` threads. Says what it does on stderr. FailedPrecondition when
// the sample has too few keypoints (its message says so).
Result<SiftVladCodebook> LearnSiftVladCodebook(const ModelCard& card, const ImageSample& sample,
                                               int threads);

// ---- PCA ------------------------------------------------------------------

// Learns a PCA (FAISS PCAMatrix; whitening, if asked, shrunk as
// options.shrinkage says) from n = vectors.size() / input_dimension rows.
// InvalidArgument when the vectors are not whole rows, options.dimension is
// not in 1..input_dimension, n <= options.dimension, or the shrinkage is not
// in 0..1; Internal when FAISS fails.
Result<PcaTransform> TrainPca(std::span<const float> vectors, int input_dimension,
                              const PcaOptions& options);

// Images per output dimension below which whitening is not learned (LearnPca
// learns plain PCA instead). Below it the small eigenvalues are too noisy:
// on PACS photo (1,670 images) whitening to 256-d took MobileNetV2 from mAP
// 0.878 (plain PCA) to 0.305 and SIFT-VLAD from 0.335 to 0.198; shrinking the
// eigenvalues half-way to their mean only recovered 0.482 and 0.225 (see
// bench/RESULTS.md).
inline constexpr size_t kWhitenImagesPerDimension = 10;

// Embeds `sample` with `embedder` (decoding on `threads` threads) and learns
// the PCA of `options` from the vectors. Whitening is skipped, with a note on
// stderr, below kWhitenImagesPerDimension images per output dimension
// (pca.options().whiten says whether it was learned). Errors: Embed's;
// FailedPrecondition when the sample is too small for options.dimension
// (the message says what to do).
Result<PcaTransform> LearnPca(Embedder& embedder, const ImageSample& sample, PcaOptions options,
                              int threads);

// ---- Product quantization -------------------------------------------------

struct PqTrainOptions {
  int m = 0;             // sub-quantizers = bytes per code; must divide the dimension
  uint32_t seed = 1234;  // k-means seed: the same vectors and seed give the same codebooks
};

// The codebooks of a product quantizer, as the index stores them: the bytes
// src/index's ProductQuantizer::Save writes and ProductQuantizer::Load reads.
struct PqCodebooks {
  int dim = 0;  // vector dimension
  int m = 0;    // sub-quantizers = bytes per code
  std::vector<uint8_t> bytes;
};

// Learns the codebooks of a product quantizer (m sub-quantizers of 256
// centroids each, by the index's ProductQuantizer::Train) from the rows of
// `dim` floats in `vectors`. InvalidArgument when `vectors` is not whole rows,
// or as ProductQuantizer::Train: dim or m not positive, m not dividing dim,
// fewer than 256 rows, a non-finite value; Internal when FAISS fails.
Result<PqCodebooks> TrainPq(std::span<const float> vectors, int dim,
                            const PqTrainOptions& options);

}  // namespace pixseek

#endif  // PIXSEEK_TRAIN_H_
