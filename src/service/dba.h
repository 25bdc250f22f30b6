// The arithmetic of alpha-query expansion and database-side augmentation
// (Radenovic, Tolias & Chum, "Fine-tuning CNN image retrieval with no human
// annotation", TPAMI 2018): a vector replaced by the L2-normalised mean of
// itself and its nearest neighbours, each weighted by similarity^alpha.
// QE applies it to a query at search time (src/service/rerank.h); DBA to
// every stored vector when a reindex asks for it (Database::Reindex) and to
// each image inserted afterwards (Database::Insert). Internal to the service
// module. Thread-safety: pure functions, safe to call concurrently.
#ifndef PIXSEEK_SERVICE_DBA_H_
#define PIXSEEK_SERVICE_DBA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/metadata_store.h"
#include "pixseek/status.h"
#include "pixseek/vector_index.h"
#include "service/projection.h"

namespace pixseek {

// out (dim floats) = L2-normalise(sum_i w_i * rows[i]), w_i =
// max(sims[i], 0)^alpha (0^0 = 1, so alpha = 0 is the plain mean). A
// zero sum (every weight 0) leaves rows[0] normalised. rows and sims have
// the same length, at least 1.
void WeightedMean(std::span<const float* const> rows, std::span<const float> sims, float alpha,
                  size_t dim, float* out);

// DBA of a matrix: row i of `out` = WeightedMean of the options.n rows of `x`
// nearest to row i by inner product (itself included: its similarity is
// its own norm, 1 for normalised rows), exact. Multi-threaded (`threads`,
// 0 = all cores); memory beyond `out` is bounded (queries in blocks of
// 4,096 rows x n neighbours). `out` may not alias `x`. Does nothing but copy
// when !options.enabled().
void AugmentRows(const float* x, size_t rows, size_t dim, const DbaOptions& options, int threads,
                 float* out);

// DBA of one vector joining an augmented index (an insert): its neighbours
// are found in `index` (searched with `vector`, 2 x n candidates, `self`
// excluded), then re-scored with their original vectors (their stored base
// features through `projection`, or, without one, their index vector) and
// the n - 1 nearest are averaged with `vector` as AugmentRows does. The
// neighbours' own augmented vectors are not updated (they would need their
// own neighbour searches): an image's DBA sees the images stored before it
// was augmented, until the next `pixseek reindex --dba`. Errors are the
// index's and the store's.
Result<std::vector<float>> AugmentJoining(const VectorIndex& index, const MetadataStore& store,
                                          const FeatureProjection& projection,
                                          std::span<const float> vector, int64_t self,
                                          const DbaOptions& options);

// Replaces every vector of `index` (just filled by a reindex, with the
// original vectors) by its DBA: reads them, augments them with AugmentRows,
// and re-creates the index empty in spec.dir (its files removed) before
// adding the augmented ones. `index` is replaced. FailedPrecondition unless
// spec.dir is a generation folder (gen-N); else errors are the index's.
Status AugmentIndex(std::unique_ptr<VectorIndex>& index, const VectorIndexSpec& spec,
                    const DbaOptions& options);

// Re-augments the vectors of `ids` in `index` (added to it with their
// original vectors, e.g. by a reindex's catch-up) with AugmentJoining.
Status AugmentAdded(VectorIndex& index, const MetadataStore& store,
                    const FeatureProjection& projection, std::span<const int64_t> ids,
                    const DbaOptions& options);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_DBA_H_
