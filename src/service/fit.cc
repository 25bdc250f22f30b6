// A new database's per-collection parts (SIFT-VLAD codebook, PCA): the
// sample of the folder being built, learned from by src/train, and the
// files that reopen them.
#include "service/fit.h"

#include <algorithm>

#include "core/files.h"
#include "core/hash.h"
#include "core/parallel.h"
#include "pixseek/train.h"
#include "service/indexing.h"

namespace pixseek {
namespace {

// Up to `max` files spread evenly over the sorted list, so that every folder
// (label) of the collection is represented.
std::vector<std::filesystem::path> Sample(const std::vector<std::filesystem::path>& files,
                                          size_t max) {
  if (files.size() <= max) return files;
  std::vector<std::filesystem::path> out;
  out.reserve(max);
  for (size_t i = 0; i < max; ++i) out.push_back(files[i * files.size() / max]);
  return out;
}

}  // namespace

DecodeOptions DecodeOptionsFor(const ModelCard& card, const DecodeLimits& limits) {
  DecodeOptions o;
  o.limits = limits;
  const PreprocessSpec& pre = card.preprocess;
  int need = std::min(pre.input_width, pre.input_height);
  if (pre.crop == Crop::kCenter) need = std::max(need, pre.resize_shorter);
  o.min_short_side = need;
  return o;
}

bool NeedsFit(const ModelCard& card, const PcaOptions& pca) {
  return LearnsPerCollection(card) || pca.dimension > 0;
}

Result<FittedEmbedder> FitEmbedder(const InstalledModel& model, const FitInputs& inputs) {
  const ModelCard& card = model.card;
  const std::string what = LearnsPerCollection(card) && inputs.pca.dimension > 0
                               ? "its codebook and PCA"
                           : LearnsPerCollection(card) ? "its codebook"
                                                       : "its PCA";
  if (inputs.root.empty()) {
    return Status::FailedPrecondition("a new database with model '" + card.name +
                                      "' learns " + what +
                                      " from its images: create it with `pixseek build DIR`");
  }
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> files, ListImages(inputs.root));
  if (files.empty()) {
    return Status::FailedPrecondition("no images under " + inputs.root.string() + " to learn " +
                                      what + " from (model '" + card.name + "')");
  }
  const std::vector<std::filesystem::path> paths =
      Sample(files, std::max<size_t>(1, inputs.max_images));
  const DecodeOptions decode = DecodeOptionsFor(card, inputs.limits);
  ImageSample sample;
  sample.size = paths.size();
  sample.decode = [&](size_t i) {
    std::optional<Image> image = DecodeFile(paths[i], decode);
    // An image the filters cannot take is left out like an unreadable one.
    if (image && !ApplyPreprocessing(inputs.preprocessing, &*image).ok()) image.reset();
    return image;
  };
  const int threads = ThreadCount(inputs.threads);

  FittedEmbedder result;
  if (LearnsPerCollection(card)) {
    PIXSEEK_ASSIGN_OR_RETURN(SiftVladCodebook learned,
                             LearnSiftVladCodebook(card, sample, threads));
    std::string codebook = learned.Serialize();
    PIXSEEK_ASSIGN_OR_RETURN(result.embedder, OpenSiftVlad(card, codebook, "new codebook"));
    result.files.emplace_back(card.file, std::move(codebook));
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(result.embedder, OpenEmbedder(card, model.model_file));
  }
  result.projection = FeatureProjection(result.embedder->dimension());
  if (inputs.pca.dimension > 0) {
    if (!model.card.trained.head.empty()) {
      return Status::InvalidArgument("model '" + card.name +
                                     "' has a trained head, which takes the place of PCA; "
                                     "leave PCA out");
    }
    PIXSEEK_ASSIGN_OR_RETURN(PcaTransform pca,
                             LearnPca(*result.embedder, sample, inputs.pca, threads));
    result.whitened = pca.options().whiten;
    result.files.emplace_back(kPcaFileName, pca.Serialize());
    result.projection = FeatureProjection(std::move(pca));
  }
  return result;
}

Result<std::optional<TrainedHead>> LoadTrainedHead(const InstalledModel& model,
                                                   int network_dimension) {
  if (model.card.trained.head.empty()) return std::optional<TrainedHead>();
  const std::filesystem::path file = model.head_file();
  PIXSEEK_ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(file));
  if (!model.card.trained.head_sha256.empty()) {
    const std::string sum =
        Sha256Hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    if (sum != model.card.trained.head_sha256) {
      return Status::DataLoss("the head of model '" + model.card.name + "' (" + file.string() +
                              ") is not the file its card records (sha256 differs); train "
                              "the model again");
    }
  }
  PIXSEEK_ASSIGN_OR_RETURN(TrainedHead head,
                           TrainedHead::Parse(bytes, "the head of model '" + model.card.name +
                                                         "' (" + file.string() + ")"));
  if (head.input_dimension() != network_dimension) {
    return Status::FailedPrecondition(
        "the head of model '" + model.card.name + "' takes " +
        std::to_string(head.input_dimension()) + "-d features but its network '" +
        model.card.trained.base + "' gives " + std::to_string(network_dimension) +
        "-d; it was trained on another network: train it again");
  }
  return std::optional<TrainedHead>(std::move(head));
}

Result<FittedEmbedder> OpenFittedEmbedder(const InstalledModel& model,
                                          const std::filesystem::path& dir, int pca_dimension) {
  FittedEmbedder result;
  PIXSEEK_ASSIGN_OR_RETURN(result.embedder, OpenEmbedder(model.card, model.model_file));
  const int network_dimension = result.embedder->dimension();
  result.projection = FeatureProjection(network_dimension);
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<TrainedHead> head,
                           LoadTrainedHead(model, network_dimension));
  if (head) result.projection = FeatureProjection(std::move(*head));
  if (pca_dimension <= 0) return result;
  PIXSEEK_ASSIGN_OR_RETURN(PcaTransform pca, PcaTransform::Load(dir / kPcaFileName));
  if (pca.output_dimension() != pca_dimension || pca.input_dimension() != network_dimension) {
    return Status::DataLoss("PCA file " + (dir / kPcaFileName).string() + " maps " +
                            std::to_string(pca.input_dimension()) + "-d to " +
                            std::to_string(pca.output_dimension()) +
                            "-d vectors but the database records " +
                            std::to_string(pca_dimension) + "-d from a " +
                            std::to_string(network_dimension) + "-d network");
  }
  result.projection = FeatureProjection(std::move(pca));
  return result;
}

}  // namespace pixseek
