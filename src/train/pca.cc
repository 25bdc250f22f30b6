// Learning PCA(-whitening): TrainPca on vectors (FAISS PCAMatrix, with the
// whitening folded in and shrunk here), and LearnPca on a sample of images.
// FAISS stays inside this file.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <faiss/VectorTransform.h>

#include "core/parallel.h"
#include "pixseek/train.h"

namespace pixseek {

Result<PcaTransform> TrainPca(std::span<const float> vectors, int input_dimension,
                              const PcaOptions& options) {
  if (input_dimension < 1 || vectors.size() % static_cast<size_t>(input_dimension) != 0) {
    return Status::InvalidArgument("PCA: the vectors do not hold whole rows of " +
                                   std::to_string(input_dimension));
  }
  const size_t n = vectors.size() / static_cast<size_t>(input_dimension);
  const int d_out = options.dimension;
  if (d_out < 1 || d_out > input_dimension) {
    return Status::InvalidArgument("PCA dimension must be in 1.." + std::to_string(input_dimension) +
                                   ", got " + std::to_string(d_out));
  }
  // n rows span at most n - 1 directions around their mean.
  if (n <= static_cast<size_t>(d_out)) {
    return Status::InvalidArgument("PCA to " + std::to_string(d_out) + " dimensions needs more than " +
                                   std::to_string(d_out) + " images to learn from, got " +
                                   std::to_string(n));
  }
  if (!(options.shrinkage >= 0.0f && options.shrinkage <= 1.0f)) {
    return Status::InvalidArgument("PCA whitening shrinkage must be in 0..1");
  }
  PcaParameters p;
  p.options = options;
  p.input_dimension = input_dimension;
  p.trained_on = n;
  try {
    // Plain PCA (eigen_power 0); whitening is folded in below so that it can
    // be shrunk, which FAISS's eigen_power alone cannot do.
    faiss::PCAMatrix pca(input_dimension, d_out, /*eigen_power=*/0.0f, /*random_rotation=*/false);
    pca.max_points_per_d = std::max<size_t>(pca.max_points_per_d, n / input_dimension + 1);
    pca.train(static_cast<faiss::Index::idx_t>(n), vectors.data());
    if (pca.A.size() != static_cast<size_t>(d_out) * input_dimension ||
        pca.b.size() != static_cast<size_t>(d_out) || pca.eigenvalues.size() < static_cast<size_t>(d_out)) {
      return Status::Internal("PCA (faiss): unexpected matrix sizes");
    }
    p.eigenvalues.assign(pca.eigenvalues.begin(), pca.eigenvalues.begin() + d_out);
    p.a = pca.A;
    p.b = pca.b;
  } catch (const std::exception& e) {
    return Status::Internal(std::string("PCA (faiss): ") + e.what());
  }
  if (options.whiten) {
    double mean = 0;
    for (float e : p.eigenvalues) mean += std::max(0.0f, e);
    mean /= d_out;
    const double s = options.shrinkage;
    for (int i = 0; i < d_out; ++i) {
      double lambda = (1.0 - s) * std::max(0.0f, p.eigenvalues[i]) + s * mean;
      lambda = std::max(lambda, 1e-6 * mean + 1e-30);  // a flat direction is not inflated
      const float scale = static_cast<float>(1.0 / std::sqrt(lambda));
      for (int j = 0; j < input_dimension; ++j) p.a[static_cast<size_t>(i) * input_dimension + j] *= scale;
      p.b[i] *= scale;
    }
  }
  return PcaTransform::FromParameters(std::move(p));
}

Result<PcaTransform> LearnPca(Embedder& embedder, const ImageSample& sample, PcaOptions pca,
                              int threads) {
  if (pca.whiten && sample.size < kWhitenImagesPerDimension * static_cast<size_t>(pca.dimension)) {
    std::fprintf(stderr,
                 "pixseek: note: %zu images are too few to learn whitening to %d dimensions "
                 "(it needs %zu); using plain PCA, which is better on so small a sample\n",
                 sample.size, pca.dimension,
                 kWhitenImagesPerDimension * static_cast<size_t>(pca.dimension));
    pca.whiten = false;
  }
  std::fprintf(stderr, "pixseek: learning PCA%s to %d dimensions from %zu images...\n",
               pca.whiten ? "-whitening" : "", pca.dimension, sample.size);
  const size_t dim = static_cast<size_t>(embedder.dimension());
  const size_t chunk = static_cast<size_t>(std::max(1, embedder.card().max_batch)) *
                       static_cast<size_t>(std::max(1, threads));
  std::vector<float> vectors;
  std::vector<std::optional<Image>> images;
  std::vector<float> out;
  for (size_t begin = 0; begin < sample.size; begin += chunk) {
    const size_t n = std::min(chunk, sample.size - begin);
    images.assign(n, std::nullopt);
    ParallelFor(n, threads, [&](size_t i) { images[i] = sample.decode(begin + i); });
    std::vector<const Image*> batch;
    for (const auto& image : images) {
      if (image) batch.push_back(&*image);
    }
    if (batch.empty()) continue;
    out.resize(batch.size() * dim);
    PIXSEEK_RETURN_IF_ERROR(embedder.Embed(batch, out.data()));
    vectors.insert(vectors.end(), out.begin(), out.end());
  }
  auto fitted = TrainPca(vectors, static_cast<int>(dim), pca);
  if (!fitted.ok() && fitted.status().code() == StatusCode::kInvalidArgument) {
    return Status::FailedPrecondition(fitted.status().message() +
                                      " (choose a smaller --pca, or build from more images)");
  }
  return fitted;
}

}  // namespace pixseek
