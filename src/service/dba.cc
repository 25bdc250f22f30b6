#include "service/dba.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <faiss/utils/distances.h>

#include "core/files.h"
#include "core/omp_threads.h"
#include "core/parallel.h"

namespace pixseek {
namespace {

// Queries per exact k-NN call: the results (n floats and ids a row) stay
// small while BLAS gets matrices large enough to be fast.
constexpr size_t kQueryBlock = 4096;

float Dot(const float* a, const float* b, size_t dim) {
  float s = 0;
  for (size_t d = 0; d < dim; ++d) s += a[d] * b[d];
  return s;
}

}  // namespace

void WeightedMean(std::span<const float* const> rows, std::span<const float> sims, float alpha,
                  size_t dim, float* out) {
  std::fill(out, out + dim, 0.0f);
  for (size_t i = 0; i < rows.size(); ++i) {
    // A dissimilar neighbour adds nothing rather than pulling away.
    const float w = std::pow(std::max(sims[i], 0.0f), alpha);
    if (w == 0.0f) continue;
    for (size_t d = 0; d < dim; ++d) out[d] += w * rows[i][d];
  }
  double norm = 0;
  for (size_t d = 0; d < dim; ++d) norm += static_cast<double>(out[d]) * out[d];
  if (norm == 0) {
    std::copy(rows[0], rows[0] + dim, out);
    for (size_t d = 0; d < dim; ++d) norm += static_cast<double>(out[d]) * out[d];
    if (norm == 0) return;
  }
  const auto scale = static_cast<float>(1.0 / std::sqrt(norm));
  for (size_t d = 0; d < dim; ++d) out[d] *= scale;
}

void AugmentRows(const float* x, size_t rows, size_t dim, const DbaOptions& options, int threads,
                 float* out) {
  if (!options.enabled() || rows == 0) {
    std::copy(x, x + rows * dim, out);
    return;
  }
  const size_t k = std::min(static_cast<size_t>(options.n), rows);
  ScopedOmpThreads omp(ThreadCount(threads));
  std::vector<float> sims;
  std::vector<int64_t> ids;
  for (size_t begin = 0; begin < rows; begin += kQueryBlock) {
    const size_t n = std::min(kQueryBlock, rows - begin);
    sims.resize(n * k);
    ids.resize(n * k);
    faiss::knn_inner_product(x + begin * dim, x, dim, n, rows, k, sims.data(), ids.data());
    ParallelFor(n, ThreadCount(threads), [&](size_t q) {
      std::vector<const float*> neighbours;
      std::vector<float> weights;
      for (size_t j = 0; j < k; ++j) {
        const int64_t id = ids[q * k + j];
        if (id < 0) continue;
        neighbours.push_back(x + static_cast<size_t>(id) * dim);
        weights.push_back(sims[q * k + j]);
      }
      if (neighbours.empty()) {  // not possible with k <= rows; kept safe
        std::copy(x + (begin + q) * dim, x + (begin + q + 1) * dim, out + (begin + q) * dim);
        return;
      }
      WeightedMean(neighbours, weights, options.alpha, dim, out + (begin + q) * dim);
    });
  }
}

Result<std::vector<float>> AugmentJoining(const VectorIndex& index, const MetadataStore& store,
                                          const FeatureProjection& projection,
                                          std::span<const float> vector, int64_t self,
                                          const DbaOptions& options) {
  const size_t dim = vector.size();
  std::vector<float> out(vector.begin(), vector.end());
  if (!options.enabled() || options.n < 2 || index.size() == 0) {
    const float* one[] = {vector.data()};
    const float sim[] = {1.0f};
    WeightedMean(one, sim, options.alpha, dim, out.data());
    return out;
  }
  std::vector<std::vector<SearchHit>> found;
  PIXSEEK_RETURN_IF_ERROR(
      index.Search(1, vector.data(), 2 * static_cast<size_t>(options.n), &found));
  // The candidates' original vectors: the index holds their augmented ones.
  struct Neighbour {
    float sim;
    std::vector<float> v;
  };
  std::vector<Neighbour> candidates;
  std::vector<float> original(dim);
  for (const SearchHit& hit : found[0]) {
    if (hit.id == self) continue;
    auto base = store.GetFeature(hit.id);
    if (base.ok() && base->size() == static_cast<size_t>(projection.input_dimension()) &&
        static_cast<size_t>(projection.output_dimension()) == dim) {
      projection.Apply(base->data(), 1, original.data());
    } else {
      PIXSEEK_ASSIGN_OR_RETURN(original, index.Get(hit.id));
      if (original.size() != dim) return Status::DataLoss("index vector of another dimension");
    }
    candidates.push_back({Dot(vector.data(), original.data(), dim), original});
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Neighbour& a, const Neighbour& b) { return a.sim > b.sim; });
  candidates.resize(std::min(candidates.size(), static_cast<size_t>(options.n - 1)));
  std::vector<const float*> rows = {vector.data()};
  std::vector<float> sims = {Dot(vector.data(), vector.data(), dim)};
  for (const Neighbour& c : candidates) {
    rows.push_back(c.v.data());
    sims.push_back(c.sim);
  }
  WeightedMean(rows, sims, options.alpha, dim, out.data());
  return out;
}

Status AugmentIndex(std::unique_ptr<VectorIndex>& index, const VectorIndexSpec& spec,
                    const DbaOptions& options) {
  if (!options.enabled()) return Status::Ok();
  // Its folder is removed below: only a reindex's own gen-N folder may be.
  if (!spec.dir.filename().string().starts_with("gen-")) {
    return Status::FailedPrecondition("DBA rebuilds only a new generation's index (gen-N), not " +
                                      spec.dir.string());
  }
  const std::vector<int64_t> ids = index->Ids();
  const auto dim = static_cast<size_t>(index->dimension());
  std::vector<float> original(ids.size() * dim);
  for (size_t i = 0; i < ids.size(); ++i) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, index->Get(ids[i]));
    if (v.size() != dim) return Status::DataLoss("index vector of another dimension");
    std::copy(v.begin(), v.end(), original.begin() + static_cast<long>(i * dim));
  }
  std::vector<float> augmented(original.size());
  AugmentRows(original.data(), ids.size(), dim, options, spec.threads, augmented.data());
  original = {};
  // A fresh index in the same folder: the original vectors never reach the
  // long-term form (and the disk index keeps no tombstones of them).
  index.reset();
  std::error_code ec;
  std::filesystem::remove_all(spec.dir, ec);
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(spec.dir));
  PIXSEEK_ASSIGN_OR_RETURN(index, OpenVectorIndex(spec));
  constexpr size_t kChunk = 4096;
  for (size_t begin = 0; begin < ids.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, ids.size() - begin);
    PIXSEEK_RETURN_IF_ERROR(index->Add(n, ids.data() + begin, augmented.data() + begin * dim));
  }
  return Status::Ok();
}

Status AugmentAdded(VectorIndex& index, const MetadataStore& store,
                    const FeatureProjection& projection, std::span<const int64_t> ids,
                    const DbaOptions& options) {
  if (!options.enabled()) return Status::Ok();
  for (int64_t id : ids) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, index.Get(id));
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> augmented,
                             AugmentJoining(index, store, projection, v, id, options));
    const int64_t one[] = {id};
    PIXSEEK_RETURN_IF_ERROR(index.Remove(one));
    PIXSEEK_RETURN_IF_ERROR(index.Add(1, &id, augmented.data()));
  }
  return Status::Ok();
}

}  // namespace pixseek
