// Near-duplicate grouping (pixseek::FindDuplicates, services.h): every pair
// of rows with cosine >= a threshold, found exactly, joined transitively.
//
// Rows are scored in chunks against the rows after them (the upper triangle
// of the n x n similarity matrix), one BLAS sgemm per chunk, so memory is
// bounded by chunk x n floats; each chunk's rows are scanned on all cores
// and the pairs they find are joined with union-find on the calling thread.
// Exact: no index, no sampling; O(n^2 dim) work, 100,000 x 1,280 is about
// 6.4e12 multiply-adds.
//
// Thread-safety: a pure function of its arguments; the rows are borrowed.
#ifndef PIXSEEK_SERVICE_DUPLICATES_H_
#define PIXSEEK_SERVICE_DUPLICATES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pixseek {

// Groups of rows (n rows of `dim` floats, each L2-normalised so that the
// dot product is the cosine) that are connected by pairs with
// cosine >= threshold. Only groups of two or more rows are returned; each
// group's rows ascending, groups ordered by their first row. `chunk`: rows
// scored at once (0 = at most 256, fewer when chunk x n floats would pass
// 128 MiB); `threads`: 0 = one per core. The groups do not depend on either.
std::vector<std::vector<uint32_t>> GroupNearDuplicates(const float* rows, size_t n, size_t dim,
                                                       float threshold, int threads,
                                                       size_t chunk = 0);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_DUPLICATES_H_
