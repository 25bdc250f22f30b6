// `pixseek bench gt`: the exact k nearest neighbours (squared L2) of a query
// set in a base too large for RAM. The base .fbin is streamed in blocks
// (one block in RAM while the next is read); each block's k best per query
// (FAISS's BLAS kernel, multi-threaded) are merged into the running k best.
// Writes the big-ann .ibin layout that ../shared/tools/gen_vectors.py
// writes: i32 nq, i32 k, nq * k i32 ids, nq * k f32 squared L2 distances,
// nearest first (ties: the smaller id first).
#ifndef PIXSEEK_BENCH_ANN_GROUND_TRUTH_H_
#define PIXSEEK_BENCH_ANN_GROUND_TRUTH_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <ostream>

#include "pixseek/status.h"

namespace pixseek {

struct GroundTruthOptions {
  std::filesystem::path base;     // .fbin, required
  std::filesystem::path queries;  // .fbin, required, same dimension
  std::filesystem::path out;      // .ibin, written via "<out>.tmp"
  size_t k = 100;                 // neighbours per query (at most the base's rows)
  int threads = 0;                // 0 = all cores
  // RAM for the base blocks (two are held: one searched, one being read).
  // The queries, the running results (nq * k * 12 bytes) and FAISS's
  // distance tiles come on top.
  uint64_t block_bytes = uint64_t{256} << 20;
  size_t limit_base = 0;             // only the first limit_base rows; 0 = all
  std::ostream* progress = nullptr;  // "bench gt: scan 42% ... ETA" lines
};

// InvalidArgument for bad options (k of 0 or above 100,000, k above the base
// rows, a dimension mismatch); NotFound for a missing input; DataLoss for a
// damaged one; Internal when writing fails.
[[nodiscard]] Status ComputeGroundTruth(const GroundTruthOptions& options);

}  // namespace pixseek

#endif  // PIXSEEK_BENCH_ANN_GROUND_TRUTH_H_
