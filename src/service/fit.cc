// A new database's per-collection parts (SIFT-VLAD codebook, PCA): the
// sample of the folder being built, learned from by src/train, and the
// files that reopen them.
#include "service/fit.h"

#include <algorithm>

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
  sample.decode = [&](size_t i) { return DecodeFile(paths[i], decode); };
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
  if (inputs.pca.dimension > 0) {
    PIXSEEK_ASSIGN_OR_RETURN(PcaTransform pca,
                             LearnPca(*result.embedder, sample, inputs.pca, threads));
    result.whitened = pca.options().whiten;
    result.files.emplace_back(kPcaFileName, pca.Serialize());
    PIXSEEK_ASSIGN_OR_RETURN(result.embedder, WithPca(std::move(result.embedder), std::move(pca)));
  }
  return result;
}

Result<std::unique_ptr<Embedder>> OpenFittedEmbedder(const InstalledModel& model,
                                                     const std::filesystem::path& dir,
                                                     int pca_dimension) {
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<Embedder> embedder,
                           OpenEmbedder(model.card, model.model_file));
  if (pca_dimension <= 0) return embedder;
  PIXSEEK_ASSIGN_OR_RETURN(PcaTransform pca, PcaTransform::Load(dir / kPcaFileName));
  if (pca.output_dimension() != pca_dimension) {
    return Status::DataLoss("PCA file " + (dir / kPcaFileName).string() + " gives " +
                            std::to_string(pca.output_dimension()) +
                            "-d vectors but the database records " +
                            std::to_string(pca_dimension));
  }
  return WithPca(std::move(embedder), std::move(pca));
}

}  // namespace pixseek
