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

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
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

// ---- Metric learning (libtorch, in the plugin pixseek_train.so) ------------
//
// The losses, with z the L2-normalised outputs and y the labels
// (src/train/torch/losses.h has the exact definitions):
//   kTriplet          [ ||z_q - z_p|| - ||z_q - z_n|| + margin ]_+ averaged over
//                     the violating triplets of the batch (batch-all);
//   kTripletPerQuery  the same averaged over each query's violating triplets,
//                     then over the queries (one noisy triplet cannot dominate);
//   kContrastive      (1/N) sum_i [ sum_{j != i, y_j = y_i} (1 - z_i.z_j)
//                                 + sum_{y_j != y_i} [z_i.z_j - margin]_+ ].
// A cross-batch memory (XBM) of the last `xbm` embeddings adds pairs between
// the batch and the memory; KoLeo adds koleo * -(1/N) sum_i log(min_j ||z_i - z_j||).
enum class MetricLoss { kTriplet, kTripletPerQuery, kContrastive };
// "triplet", "triplet-per-query", "contrastive"; InvalidArgument otherwise.
Result<MetricLoss> ParseMetricLoss(std::string_view name);
std::string_view ToString(MetricLoss loss);
// The margin a loss uses when none is given: 0.1 (triplet), 0.5 (contrastive).
float DefaultMargin(MetricLoss loss);

// Labelled rows to learn from or validate on.
struct LabelledFeatures {
  int dimension = 0;             // floats per row
  std::vector<float> features;   // rows, each L2-normalised
  std::vector<int32_t> labels;   // class per row: an index into the class list
  size_t rows() const { return dimension > 0 ? features.size() / static_cast<size_t>(dimension) : 0; }
};

// One epoch's figures, reported as training goes.
struct EpochReport {
  int epoch = 0;   // 1-based; 0 = before training (the starting point)
  int epochs = 0;  // the most that will run
  double loss = 0;             // mean batch loss of the epoch
  double validation_map = 0;   // leave-one-out mAP among the validation rows
  double best_validation_map = 0;
  double seconds = 0;          // since training started
  double rows_per_second = 0;  // training rows (or images) per second
  double eta_s = 0;            // at this rate, for the epochs left
};

struct MetricTrainOptions {
  MetricLoss loss = MetricLoss::kContrastive;
  float margin = 0;     // 0 = DefaultMargin(loss)
  int xbm = 0;          // cross-batch memory size in rows; 0 = off
  float koleo = 0;      // weight of the KoLeo regulariser; 0 = off
  int dimension = 0;    // output dimension of the head; 0 = the input's
  int epochs = 30;      // at most
  int batch_classes = 16;  // P classes per batch
  int per_class = 4;       // K rows of each
  float learning_rate = 1e-3f;
  // Epochs without a better validation mAP before training stops.
  int patience = 5;
  uint32_t seed = 1234;  // the same data and seed give the same result
  int threads = 0;       // 0 = all cores
  // Set from another thread or a signal handler: training stops after the
  // current batch and returns the best result so far (cancelled = true).
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(const EpochReport&)> on_epoch;
};

// A learned head on top of the base features: projection y = normalise(A x + b)
// and a linear classifier softmax(W x + c) over the classes.
struct HeadTrainResult {
  int input_dimension = 0;
  int output_dimension = 0;  // 0 when keeps_base
  std::vector<float> a;      // output_dimension x input_dimension, row-major
  std::vector<float> b;      // output_dimension
  // Validation never beat the base features: no projection is kept (the
  // base features are used as they are); the classifier still is.
  bool keeps_base = false;
  int classes = 0;
  std::vector<float> classifier_w;  // classes x input_dimension, row-major
  std::vector<float> classifier_b;  // classes
  double classifier_accuracy = 0;   // on the validation rows whose class it knows
  int epochs_run = 0;
  int best_epoch = 0;  // 0 = the starting point was best
  double validation_map_base = 0;  // base features
  double validation_map_best = 0;  // what is kept
  // The lower end of a one-sided 95 % confidence interval of the best
  // epoch's gain over the base, per validation class (paired t over the
  // classes); the projection is kept only when it is above 0.
  double validation_gain_lower_bound = 0;
  bool cancelled = false;
  double seconds = 0;
  std::vector<EpochReport> history;
};

// Trains a projection head with `options.loss` on `train` (P x K batches),
// validating after every epoch on `validation` (leave-one-out mAP among its
// rows) and keeping the best epoch; stops after `patience` epochs without
// improvement. Also fits the classifier on `train` (cross-entropy).
// The head starts as the identity (dimension kept) or the uncentred PCA of
// the training rows, so that epoch 0 ranks about as the base features do.
// The same data, seed and threads give bit-identical weights.
// InvalidArgument for inconsistent sets or options (rows not whole, label
// count, negative label, non-finite value, dimension out of range, P or K
// < 1, fewer than 2 training classes with 2+ rows, no validation class with
// 2+ rows); Unsupported when the plugin (libtorch) is not available;
// Internal when libtorch fails.
Result<HeadTrainResult> TrainHead(const LabelledFeatures& train, const LabelledFeatures& validation,
                                  const MetricTrainOptions& options);

// Labelled images for fine-tuning a network end to end.
struct LabelledImages {
  size_t size = 0;
  std::vector<int32_t> labels;  // size entries
  // Decodes image i; nullopt when it is unusable (skipped). Thread-safe.
  std::function<std::optional<Image>(size_t i)> decode;
};

struct BackboneTrainOptions {
  MetricTrainOptions metric;  // loss, batches, epochs, validation, ...
  // Blocks at the end of the network that are trained (the rest is frozen).
  int trainable_blocks = 2;
  // Adam's step size for the trained blocks. Trained weights need far
  // smaller steps than a head learned from scratch, so metric.learning_rate
  // (the head's) is not used here.
  float learning_rate = 1e-5f;
  // Called once before training with the measured seconds one epoch will
  // take (from timing a few batches), so that the caller can say it.
  std::function<void(double epoch_seconds, double images_per_second)> on_estimate;
};

struct BackboneTrainResult {
  std::filesystem::path model_file;  // the fine-tuned TorchScript module written
  int epochs_run = 0;
  int best_epoch = 0;
  double validation_map_base = 0;
  double validation_map_best = 0;
  double images_per_second = 0;  // training throughput
  double epoch_seconds = 0;
  bool keeps_base = false;  // no epoch beat the base network: nothing written
  bool cancelled = false;
  double seconds = 0;
  std::vector<EpochReport> history;
};

// Fine-tunes the last blocks of the network of `card` (runtime torchscript,
// or an ONNX model translated to TorchScript) at `model_file` end to end on
// `train`, with augmentation (random resized crop, flip, colour jitter),
// validating on `validation` after every epoch; writes the best network as
// TorchScript to `out_file`. Unsupported without libtorch or for a model it
// cannot train (the message says why).
Result<BackboneTrainResult> TrainBackbone(const ModelCard& card,
                                          const std::filesystem::path& model_file,
                                          const LabelledImages& train,
                                          const LabelledImages& validation,
                                          const BackboneTrainOptions& options,
                                          const std::filesystem::path& out_file);

}  // namespace pixseek

#endif  // PIXSEEK_TRAIN_H_
