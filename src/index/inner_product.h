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
#include <cstdint>

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

// bfloat16: the top 16 bits of a binary32 (8 exponent bits, 8 significant
// bits), a distinct type so that it is never mistaken for IEEE binary16.
// The graph build scores with it: half the bytes of float to stream, and one
// AVX-512 BF16 instruction (VDPBF16PS) does 32 products.
struct Bfloat16 {
  uint16_t bits;
};
// Round to nearest even (x finite).
Bfloat16 ToBfloat16(float x);
inline float FromBfloat16(Bfloat16 h) {
  const uint32_t u = uint32_t{h.bits} << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
// Converts n floats (finite) to bfloat16.
void ToBfloat16(const float* x, size_t n, Bfloat16* out);

// The inner products above over bfloat16 vectors, accumulated in float.
// InnerProduct4Bf16 keeps InnerProduct4's determinism; InnerProductBf16 may
// differ from it in the last bits.
float InnerProductBf16(const Bfloat16* a, const Bfloat16* b, size_t dim);
void InnerProduct4Bf16(const Bfloat16* q, const Bfloat16* const v[4], size_t dim, float out[4]);
// "avx512bf16", "avx2+fma" or "scalar".
const char* InnerProductBf16Isa();
// The portable versions.
float InnerProductBf16Scalar(const Bfloat16* a, const Bfloat16* b, size_t dim);
void InnerProduct4Bf16Scalar(const Bfloat16* q, const Bfloat16* const v[4], size_t dim,
                             float out[4]);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_INNER_PRODUCT_H_
