// Inner products of a chunk of queries with every row of a matrix, by one
// BLAS sgemm: the exact scoring that evaluation (eval_ranking.cc) and
// near-duplicate search (duplicates.cc) share. Internal to the service module.
#ifndef PIXSEEK_SERVICE_SCORE_CHUNK_H_
#define PIXSEEK_SERVICE_SCORE_CHUNK_H_

#include <cstddef>

namespace pixseek {

// scores (nq x n, row-major) = queries (nq x dim) times rows (n x dim)
// transposed. The caller bounds nq x n (the memory of one chunk).
void ScoreChunk(const float* rows, size_t n, size_t dim, const float* queries, size_t nq,
                float* scores);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_SCORE_CHUNK_H_
