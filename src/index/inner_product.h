// Inner-product kernels shared by the vector indexes.
//
// Each function is dispatched once, at first use, to an AVX2+FMA version when
// the CPU has both (checked with __builtin_cpu_supports), else to a portable
// scalar version. The build itself is not compiled with -mavx2, so the library
// runs on any x86-64 (and builds on other architectures, scalar only).
//
// Determinism: InnerProduct4 computes each of its four lanes with exactly the
// same sequence of operations whatever the other three vectors are, so a
// vector scores bit-identically wherever it falls in a scan. InnerProduct may
// differ from InnerProduct4 in the last bits (different accumulation order).
//
// Thread-safety: all functions are pure and safe to call concurrently.
#ifndef PIXSEEK_INDEX_INNER_PRODUCT_H_
#define PIXSEEK_INDEX_INNER_PRODUCT_H_

#include <cstddef>

namespace pixseek {

// Sum of a[i] * b[i] for i < dim.
float InnerProduct(const float* a, const float* b, size_t dim);

// out[j] = InnerProduct of q with v[j], for j < 4. The four pointers may alias
// (repeat one vector to fill a short group).
void InnerProduct4(const float* q, const float* const v[4], size_t dim, float out[4]);

// "avx2+fma" or "scalar": the version the dispatch picked on this CPU.
const char* InnerProductIsa();

// The portable versions, whatever the CPU; for tests and benchmarks that
// compare them with the dispatched ones.
float InnerProductScalar(const float* a, const float* b, size_t dim);
void InnerProduct4Scalar(const float* q, const float* const v[4], size_t dim, float out[4]);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_INNER_PRODUCT_H_
