// The disk-resident graph index (DiskANN-style): the VectorIndex that lets one
// machine search far more vectors than its RAM holds.
//
// A directory holds one immutable disk graph (the "base": a Vamana graph whose
// nodes carry their full vectors, read from SSD with io_uring; PQ codes in
// RAM), plus the changes since it was built: fresh inserts in an in-memory
// graph searched together with the base, deletes as tombstones, both
// persisted in a write-ahead log. Compaction merges them into a new base and
// swaps it in while searches continue. Layout: docs/index_format.md.
#ifndef PIXSEEK_DISK_INDEX_H_
#define PIXSEEK_DISK_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pixseek/status.h"
#include "pixseek/vector_index.h"

namespace pixseek {

struct DiskIndexOptions {
  // Read-only: no lock, no log repair, no compaction; Add/Remove fail with
  // FailedPrecondition. For one-shot readers while a server writes.
  bool read_only = false;
  // Threads for builds (0 = all cores).
  int num_threads = 0;

  // Graph: max degree R, build list L, pruning alpha, insertion passes (1,
  // as DiskANN builds today; 2, the paper's alpha = 1 pass first, doubles the
  // build time for a slightly better graph).
  int max_degree = 64;
  int build_list = 100;
  float alpha = 1.2f;
  int build_passes = 1;
  // Full-vector storage in the node blocks: "fp32", "fp16" or "int8".
  std::string storage = "fp16";
  // PQ code bytes per vector; 0 = sized from ram_budget.
  int pq_bytes = 0;
  // RAM for PQ codes plus the node cache; 0 = 10% of the raw vector bytes,
  // at least 64 MiB.
  uint64_t ram_budget = 0;
  // Peak RAM for building a base; larger data is built in shards. 0 = 4 GiB.
  uint64_t build_ram_budget = 0;

  // Search: list size L (0 = max(64, 2k)) and beam width W.
  int search_list = 0;
  int beam_width = 4;

  // Compaction: fewer live vectors than this stay in memory only (no base).
  size_t min_base_vectors = 1000;
  // Compact when inserts or deletes since the base exceed this fraction of
  // it (and min_base_vectors).
  double compact_ratio = 0.1;
  // Run that compaction on a background thread after a write; otherwise the
  // owner calls Compact() (or CompactIfNeeded()).
  bool background_compaction = false;
  // Hears of each compaction's build: its phases ("pq-train", "graph",
  // "write", ...) with done and total, from the compacting thread. May be
  // empty.
  std::function<void(const char* phase, size_t done, size_t total)> compaction_progress;
  // A writable open salvages damaged logs and sets a damaged base graph
  // aside instead of failing, as VectorIndexSpec::salvaged describes. Not
  // owned.
  std::vector<IndexFileCheck>* salvaged = nullptr;
};

struct DiskIndexStats {
  size_t base_vectors = 0;      // nodes in the disk graph (deleted included)
  size_t base_deleted = 0;      // tombstoned base nodes
  size_t delta_vectors = 0;     // live vectors in the in-memory graph
  uint64_t ram_bytes = 0;       // base structures + node cache + delta
  uint64_t disk_bytes = 0;      // base file + logs
  uint64_t generation = 0;      // base generation
  bool compacting = false;
  std::string last_compaction_error;
};

// Compact() merges the in-memory changes into a new base (a full rebuild of
// the live vectors, under build_ram_budget) and swaps it in; searches and
// writes go on meanwhile. No-op when there is nothing to merge. Waits for a
// background compaction that is already running instead of starting one.
// CompactIfNeeded() compacts when the changes exceed compact_ratio.
class DiskIndex : public VectorIndex {
 public:
  virtual DiskIndexStats stats() const = 0;
};

// The user-settable parameters (include/pixseek/index_params.h) and the
// options they set, over `defaults`.
std::span<const IndexParamSpec> DiskIndexParamSpecs();
DiskIndexOptions DiskIndexOptionsFrom(const IndexParams& params, DiskIndexOptions defaults = {});

// Opens (creating when absent and writable) the disk index in `dir`.
// NotFound when absent and read-only; InvalidArgument when it holds another
// dimension; Unavailable when another writer holds it; DataLoss when a file is
// damaged (the message names it).
Result<std::unique_ptr<DiskIndex>> OpenDiskIndex(const std::filesystem::path& dir, int dimension,
                                                 const DiskIndexOptions& options = {});

}  // namespace pixseek

#endif  // PIXSEEK_DISK_INDEX_H_
