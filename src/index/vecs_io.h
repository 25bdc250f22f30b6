// Readers and writers for the big-ann-benchmarks binary formats, used to load
// benchmark data sets and their ground truth.
//
//   .fbin  i32 n, i32 d, then n * d f32, row-major.
//   .ibin  (ground truth) i32 n, i32 k, then n * k i32 neighbour ids, row
//          by row, then n * k f32 distances in the same order.
//
// All values little-endian. Every function is thread-safe (no shared state);
// concurrent writers of one path are the caller's problem.
#ifndef PIXSEEK_INDEX_VECS_IO_H_
#define PIXSEEK_INDEX_VECS_IO_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

// A dense row-major matrix: row r is data[r * cols, (r + 1) * cols).
struct FloatMatrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<float> data;  // rows * cols
};

// k nearest neighbours of each of `rows` queries, best first.
struct GroundTruth {
  size_t rows = 0;
  size_t k = 0;
  std::vector<int32_t> ids;      // rows * k
  std::vector<float> distances;  // rows * k
};

// Reads the first min(n, max_rows) rows of an .fbin file. NotFound when the
// file is missing. DataLoss (naming the sizes) when d <= 0, n < 0, or the
// file size disagrees with the header: reading every row needs the exact
// size; reading a prefix (max_rows < n) needs at least the prefix's bytes and
// at most the full size, so a file cut short on purpose (the usual way to
// take a slice of a billion-vector set) still reads.
[[nodiscard]] Result<FloatMatrix> ReadFbin(const std::filesystem::path& path,
                                           size_t max_rows = std::numeric_limits<size_t>::max());

// Writes m as .fbin, via "<path>.tmp" renamed over path. InvalidArgument when
// cols is 0, rows or cols exceed int32, or data.size() != rows * cols.
[[nodiscard]] Status WriteFbin(const std::filesystem::path& path, const FloatMatrix& m);

// Reads a whole .ibin ground-truth file. NotFound when missing; DataLoss when
// k <= 0, n < 0 or the file size is not exactly 8 + n * k * 8.
[[nodiscard]] Result<GroundTruth> ReadIbin(const std::filesystem::path& path);

// Writes gt as .ibin, via "<path>.tmp". InvalidArgument when k is 0, rows or
// k exceed int32, or ids/distances do not hold rows * k values.
[[nodiscard]] Status WriteIbin(const std::filesystem::path& path, const GroundTruth& gt);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_VECS_IO_H_
