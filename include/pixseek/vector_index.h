// Vector storage and nearest-neighbour search: the VectorIndex interface and
// the exact (flat) index that every approximate index is measured against.
//
// Vectors are L2-normalised floats; the score is the inner product (cosine
// similarity), higher is better. Ids are caller-assigned 64-bit integers (the
// metadata store's image ids).
#ifndef PIXSEEK_VECTOR_INDEX_H_
#define PIXSEEK_VECTOR_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

struct SearchHit {
  int64_t id = 0;
  float score = 0.0f;  // cosine similarity, in [-1, 1]
};

// Thread-safety: implementations are safe for concurrent Search calls, and
// Add/Remove may run concurrently with Search (they take a writer lock).
class VectorIndex {
 public:
  virtual ~VectorIndex() = default;

  virtual std::string kind() const = 0;  // "flat", "disk", ...
  virtual int dimension() const = 0;
  virtual size_t size() const = 0;        // live vectors

  // Adds n vectors (row-major, n * dimension() floats) with the given ids. The
  // change is durable when OK is returned. AlreadyExists if an id is present
  // (nothing is added then), InvalidArgument for non-finite values.
  virtual Status Add(size_t n, const int64_t* ids, const float* vectors) = 0;

  // Removes the given ids; unknown ids are ignored. Durable when OK.
  virtual Status Remove(std::span<const int64_t> ids) = 0;

  virtual bool Contains(int64_t id) const = 0;

  // Copies the stored vector of `id`. NotFound if absent.
  virtual Result<std::vector<float>> Get(int64_t id) const = 0;

  // All live ids, ascending.
  virtual std::vector<int64_t> Ids() const = 0;

  // For each of the n queries (row-major), the k best hits, best first (ties
  // broken by smaller id). Fewer than k when the index holds fewer vectors.
  virtual Status Search(size_t n, const float* queries, size_t k,
                        std::vector<std::vector<SearchHit>>* results) const = 0;
};

struct FlatIndexOptions {
  // Threads used to scan the vectors for one batch of queries; 0 = all cores.
  int num_threads = 0;
  // Read-only: the file is neither created, locked, truncated nor compacted,
  // and Add/Remove fail with FailedPrecondition. Lets one-shot readers (CLI
  // query, eval) open an index that a server is writing: a record the writer
  // is appending at that moment is simply not seen.
  bool read_only = false;
};

// The exact index: SIMD inner products over every stored vector, kept in RAM
// and persisted in `file` as a checksummed append-only log of add/remove
// records (see docs/index_format.md). Opening replays the log; a torn last
// record (crash while writing) is dropped, any other damage is DataLoss.
// Creates the file when absent (NotFound instead when read-only).
// InvalidArgument when the file holds another dimension. Unavailable when
// another writer holds the file.
Result<std::unique_ptr<VectorIndex>> OpenFlatIndex(
    const std::filesystem::path& file, int dimension,
    const FlatIndexOptions& options = {});

}  // namespace pixseek

#endif  // PIXSEEK_VECTOR_INDEX_H_
