// The re-ranking stage between the index and the answer (RerankMethod in
// pixseek/services.h): alpha-query expansion, the DBA index, and spatial
// verification. QueryService and the evaluation both rank through it, so
// that what `pixseek eval --rerank` measures is what a search answers.
// Internal to the service module.
#ifndef PIXSEEK_SERVICE_RERANK_H_
#define PIXSEEK_SERVICE_RERANK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <span>
#include <unordered_map>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/feature_fit.h"
#include "pixseek/services.h"
#include "pixseek/status.h"

namespace pixseek {

// One query as the stage sees it.
struct RerankQuery {
  const float* vector = nullptr;  // its vector in the index's space (dimension() floats)
  int64_t self = -1;              // its id when it is a stored image, else -1
  // Spatial only: its pixels; nullptr = read `file`, or without one the
  // file of `self`.
  const Image* image = nullptr;
  std::string file;
};

// The first pass: out[i] = the best `k` stored images for row i of the n
// rows at `vectors`, best first (the index's search, or the evaluation's
// exact ranking).
using RankFn = std::function<Status(const float* vectors, size_t n, size_t k,
                                    std::vector<std::vector<SearchHit>>* out)>;

// Borrows a Database, which must outlive it. Thread-safety: Apply may be
// called concurrently (the local-feature cache has its own mutex).
class RerankStage {
 public:
  // InvalidArgument for options out of range; FailedPrecondition for kDba
  // or kDbaQe on a database without DBA (`pixseek reindex --dba N` makes it).
  static Result<std::unique_ptr<RerankStage>> Make(Database& db, const RerankOptions& options);

  // How deep the first pass ranks for `k` results to come out.
  size_t Depth(size_t k) const;

  // Re-ranks in place: rankings[i] is the first pass of queries[i], at least
  // Depth(k) deep (or all stored images); it becomes the final ranking, at
  // most k deep (kQe searches again through `rank`). Errors are rank's and,
  // for kSpatial, the query image's (unreadable: DataLoss); a stored result
  // whose file cannot be read any more keeps its place unverified.
  Status Apply(std::span<const RerankQuery> queries, size_t k, const RankFn& rank,
               std::vector<std::vector<SearchHit>>* rankings) const;

  // For an evaluation that ranks exactly by itself, the two halves of
  // Apply. QueryVectors: the vectors to rank `queries` with (kQe, kDbaQe:
  // expanded with their top results from the index; otherwise as they are),
  // n rows of dimension(). ReorderTop (kSpatial; nothing otherwise): `ids`,
  // a ranking's top (best first, at least Depth(k) of them where there are),
  // re-ordered as Apply would.
  Status QueryVectors(std::span<const RerankQuery> queries, std::vector<float>* out) const;
  Status ReorderTop(const RerankQuery& query, std::vector<int64_t>* ids) const;

  // Keeps stored images' local features between Apply calls (an
  // evaluation sees each image many times); off by default (a search sees
  // each once).
  void CacheLocalFeatures() { cache_features_ = true; }

 private:
  RerankStage(Database& db, const RerankOptions& options) : db_(db), options_(options) {}
  // Row i of `out` = queries[i] expanded with its first-pass rankings[i].
  void Expand(std::span<const RerankQuery> queries,
              const std::vector<std::vector<SearchHit>>& rankings, std::vector<float>* out) const;
  Status Verify(const RerankQuery& query, std::vector<SearchHit>* ranking) const;
  // The local features of stored image `id` (empty when its file cannot be
  // read: it stays unverified).
  std::shared_ptr<const LocalFeatures> StoredFeatures(int64_t id) const;

  Database& db_;
  const RerankOptions options_;
  SpatialOptions spatial_;
  bool cache_features_ = false;
  mutable std::mutex cache_mu_;
  // Guarded by cache_mu_.
  mutable std::unordered_map<int64_t, std::shared_ptr<const LocalFeatures>> cache_;
};

// Matches with the query below this many RANSAC inliers do not verify a
// result: unrelated pictures reach a few by chance.
inline constexpr int kMinInliers = 12;

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_RERANK_H_
