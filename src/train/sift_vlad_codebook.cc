// Learning the SIFT-VLAD codebook: k-means (FAISS) on RootSIFT descriptors,
// and the sampling of descriptors from a collection. FAISS stays inside this
// file.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>

#include "core/omp_threads.h"
#include "core/parallel.h"
#include "pixseek/train.h"

namespace pixseek {
namespace {

// Rows of descriptors kept per image for k-means: FAISS trains on at most
// 256 per centroid anyway, so a few hundred thousand in all are plenty and
// keep the memory of a 2,000-image sample small.
constexpr size_t kDescriptorBudget = 200000;


}  // namespace

Result<SiftVladCodebook> TrainSiftVladCodebook(const ModelCard& card,
                                               std::span<const float> descriptors,
                                               uint32_t seed) {
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  if (!LearnsPerCollection(card)) {
    return Status::InvalidArgument("model card: runtime " + std::string(ToString(card.runtime)) +
                                   " has no codebook");
  }
  const int k = card.dimension / kSiftDimension;
  const size_t n = descriptors.size() / kSiftDimension;
  if (descriptors.size() % kSiftDimension != 0) {
    return Status::InvalidArgument("descriptors: size is not a multiple of 128");
  }
  if (n < static_cast<size_t>(k)) {
    return Status::InvalidArgument(
        "too few SIFT keypoints to learn a " + std::to_string(k) + "-word codebook: found " +
        std::to_string(n) + " in the sample (the images are too small, too few or too plain)");
  }
  SiftVladCodebook codebook;
  try {
    ScopedOmpThreads one(1);
    faiss::ClusteringParameters cp;
    cp.seed = static_cast<int>(seed);
    cp.niter = 20;
    // FAISS samples k * 256 points itself; below 39 per centroid it would
    // print a warning on stderr, which says nothing useful to a user here.
    cp.min_points_per_centroid = 1;
    faiss::Clustering clustering(kSiftDimension, k, cp);
    faiss::IndexFlatL2 index(kSiftDimension);
    clustering.train(static_cast<faiss::Index::idx_t>(n), descriptors.data(), index);
    codebook.centroids = std::move(clustering.centroids);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("k-means (faiss): ") + e.what());
  }
  return codebook;
}

Result<SiftVladCodebook> LearnSiftVladCodebook(const ModelCard& card, const ImageSample& sample,
                                               int threads) {
  std::fprintf(stderr, "pixseek: learning the %s codebook from %zu images...\n",
               card.name.c_str(), sample.size);
  const size_t per_image = std::max<size_t>(16, kDescriptorBudget / std::max<size_t>(1, sample.size));
  std::vector<std::vector<float>> kept(sample.size);
  ParallelFor(sample.size, threads, [&](size_t i) {
    auto image = sample.decode(i);
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

}  // namespace pixseek
