// Learning a new database's per-collection parts (SIFT-VLAD codebook, PCA)
// from a sample of the folder being built, and reopening them.
#include "service/fit.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <optional>
#include <thread>

#include "core/parallel.h"
#include "service/indexing.h"

namespace pixseek {
namespace {

// Rows of descriptors kept per image for k-means: FAISS trains on at most
// 256 per centroid anyway, so a few hundred thousand in all are plenty and
// keep the memory of a 2,000-image sample small.
constexpr size_t kDescriptorBudget = 200000;

// Whitening is learned only from at least this many images per output
// dimension. Below it, the small eigenvalues are too noisy: on PACS photo
// (1,670 images) whitening to 256-d took MobileNetV2 from mAP 0.878 (plain
// PCA) to 0.305 and SIFT-VLAD from 0.335 to 0.198; shrinking the
// eigenvalues half-way to their mean only recovered 0.482 and 0.225 (see
// bench/RESULTS.md). Plain PCA is used instead, with a note.
constexpr size_t kWhitenImagesPerDimension = 10;

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

Result<std::string> LearnCodebook(const ModelCard& card,
                                  const std::vector<std::filesystem::path>& sample,
                                  const DecodeOptions& decode, int threads) {
  std::fprintf(stderr, "pixseek: learning the %s codebook from %zu images...\n",
               card.name.c_str(), sample.size());
  const size_t per_image = std::max<size_t>(16, kDescriptorBudget / sample.size());
  std::vector<std::vector<float>> kept(sample.size());
  ParallelFor(sample.size(), threads, [&](size_t i) {
    auto image = DecodeFile(sample[i], decode);
    if (!image) return;
    auto desc = RootSiftDescriptors(card, *image);
    if (!desc.ok()) return;
    const size_t rows = desc->size() / kSiftDimension;
    const size_t take = std::min(rows, per_image);
    kept[i].reserve(take * kSiftDimension);
    // Evenly spaced rows: deterministic, and spread over the keypoints.
    for (size_t r = 0; r < take; ++r) {
      const float* row = desc->data() + (r * rows / take) * kSiftDimension;
      kept[i].insert(kept[i].end(), row, row + kSiftDimension);
    }
  });
  std::vector<float> all;
  for (const auto& k : kept) all.insert(all.end(), k.begin(), k.end());
  auto codebook = TrainSiftVladCodebook(card, all);
  if (!codebook.ok() && codebook.status().code() == StatusCode::kInvalidArgument) {
    return Status::FailedPrecondition(codebook.status().message());
  }
  return codebook;
}

Result<PcaTransform> LearnPca(Embedder& embedder, const std::vector<std::filesystem::path>& sample,
                              const DecodeOptions& decode, int threads, PcaOptions pca) {
  if (pca.whiten && sample.size() < kWhitenImagesPerDimension * static_cast<size_t>(pca.dimension)) {
    std::fprintf(stderr,
                 "pixseek: note: %zu images are too few to learn whitening to %d dimensions "
                 "(it needs %zu); using plain PCA, which is better on so small a sample\n",
                 sample.size(), pca.dimension,
                 kWhitenImagesPerDimension * static_cast<size_t>(pca.dimension));
    pca.whiten = false;
  }
  std::fprintf(stderr, "pixseek: learning PCA%s to %d dimensions from %zu images...\n",
               pca.whiten ? "-whitening" : "", pca.dimension, sample.size());
  const size_t dim = static_cast<size_t>(embedder.dimension());
  const size_t chunk = static_cast<size_t>(std::max(1, embedder.card().max_batch)) *
                       static_cast<size_t>(std::max(1, threads));
  std::vector<float> vectors;
  std::vector<std::optional<Image>> images;
  std::vector<float> out;
  for (size_t begin = 0; begin < sample.size(); begin += chunk) {
    const size_t n = std::min(chunk, sample.size() - begin);
    images.assign(n, std::nullopt);
    ParallelFor(n, threads, [&](size_t i) { images[i] = DecodeFile(sample[begin + i], decode); });
    std::vector<const Image*> batch;
    for (const auto& image : images) {
      if (image) batch.push_back(&*image);
    }
    if (batch.empty()) continue;
    out.resize(batch.size() * dim);
    PIXSEEK_RETURN_IF_ERROR(embedder.Embed(batch, out.data()));
    vectors.insert(vectors.end(), out.begin(), out.end());
  }
  auto fitted = PcaTransform::Fit(vectors, static_cast<int>(dim), pca);
  if (!fitted.ok() && fitted.status().code() == StatusCode::kInvalidArgument) {
    return Status::FailedPrecondition(fitted.status().message() +
                                      " (choose a smaller --pca, or build from more images)");
  }
  return fitted;
}

}  // namespace

DecodeOptions DecodeOptionsFor(const ModelCard& card, const DecodeLimits& limits) {
  DecodeOptions o;
  o.limits = limits;
  int need = std::min(card.input_width, card.input_height);
  if (card.crop == "center") need = std::max(need, card.resize_shorter);
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
  const std::vector<std::filesystem::path> sample =
      Sample(files, std::max<size_t>(1, inputs.max_images));
  const DecodeOptions decode = DecodeOptionsFor(card, inputs.limits);
  const int threads = ThreadCount(inputs.threads);

  FittedEmbedder result;
  if (LearnsPerCollection(card)) {
    PIXSEEK_ASSIGN_OR_RETURN(std::string codebook, LearnCodebook(card, sample, decode, threads));
    PIXSEEK_ASSIGN_OR_RETURN(result.embedder, OpenSiftVlad(card, codebook, "new codebook"));
    result.files.emplace_back(card.file, std::move(codebook));
  } else {
    PIXSEEK_ASSIGN_OR_RETURN(result.embedder, OpenEmbedder(card, model.model_file));
  }
  if (inputs.pca.dimension > 0) {
    PIXSEEK_ASSIGN_OR_RETURN(PcaTransform pca,
                             LearnPca(*result.embedder, sample, decode, threads, inputs.pca));
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
