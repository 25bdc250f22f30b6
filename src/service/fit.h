// The parts of a new database learned from its own images before it is
// created (the SIFT-VLAD codebook, PCA), and opening them again for an
// existing database, so that build, add, query and serve embed alike. The
// learning itself is src/train's (include/pixseek/train.h); this is the part that
// knows the database: which files to sample, and the files it writes.
#ifndef PIXSEEK_SERVICE_FIT_H_
#define PIXSEEK_SERVICE_FIT_H_

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/feature_fit.h"
#include "pixseek/image.h"
#include "pixseek/model_registry.h"
#include "pixseek/status.h"
#include "service/projection.h"

namespace pixseek {

// The PCA file in the database directory.
inline constexpr char kPcaFileName[] = "pca.bin";

// Decoding suited to a model (DCT downscaling towards its input size).
DecodeOptions DecodeOptionsFor(const ModelCard& card, const DecodeLimits& limits);

// Whether a new database with this model and PCA has anything to learn.
bool NeedsFit(const ModelCard& card, const PcaOptions& pca);

struct FitInputs {
  std::filesystem::path root;  // the images to learn from (a sample of them)
  size_t max_images = 2000;    // size of the sample, spread evenly over root
  DecodeLimits limits;
  int threads = 0;  // 0 = all cores
  PcaOptions pca;   // dimension 0 = no PCA
  // The new database's filters, applied to the sample as to every image
  // embedded later.
  ImagePreprocessing preprocessing;
};

struct FittedEmbedder {
  std::unique_ptr<Embedder> embedder;  // the network: its vectors are the base features
  // What follows the network: the PCA learned (when asked for) or a trained
  // model's head; the identity otherwise.
  FeatureProjection projection{0};
  // Files to write into the database directory: name, bytes.
  std::vector<std::pair<std::string, std::string>> files;
  bool whitened = false;  // whitening asked for and learned (not skipped)
};

// Learns what `model` and inputs.pca need from a sample of inputs.root and
// returns the embedder and projection that apply it. Whitening is skipped (plain PCA, with a
// note on stderr) when the sample has fewer than kWhitenImagesPerDimension
// (10) images per output dimension, where it was measured to hurt. FailedPrecondition when there is no
// root or too little to learn from (the message says what to do).
Result<FittedEmbedder> FitEmbedder(const InstalledModel& model, const FitInputs& inputs);

// The embedder of an existing database in `dir`: the model (whose file, for a
// model learned per collection, is in dir), then the PCA stored there when
// pca_dimension > 0, or the model's trained head. DataLoss when a stored file
// is damaged; FailedPrecondition when a head does not fit its network.
Result<FittedEmbedder> OpenFittedEmbedder(const InstalledModel& model,
                                          const std::filesystem::path& dir, int pca_dimension);

// The trained head of `model` (model.head_file()), checked against the
// network's dimension; nullopt when the model has none.
Result<std::optional<TrainedHead>> LoadTrainedHead(const InstalledModel& model,
                                                   int network_dimension);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_FIT_H_
