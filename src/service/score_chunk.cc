#include "service/score_chunk.h"

// The BLAS's Fortran entry point (OpenBLAS or the reference BLAS; both
// export it), declared here so that no CBLAS header is needed.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace pixseek {

// In the BLAS's column-major terms, scores^T (n x nq) = rows^T^T * queries^T:
// row-major `rows` is rows^T to it, hence "T", and `queries` is queries^T.
void ScoreChunk(const float* rows, size_t n, size_t dim, const float* queries, size_t nq,
                float* scores) {
  const int m = static_cast<int>(n), cols = static_cast<int>(nq), k = static_cast<int>(dim);
  const float one = 1, zero = 0;
  sgemm_("T", "N", &m, &cols, &k, &one, rows, &k, queries, &k, &zero, scores, &m);
}

}  // namespace pixseek
