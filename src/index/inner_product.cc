#include "index/inner_product.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PIXSEEK_HAVE_X86 1
#endif

namespace pixseek {

// Portable versions. Four accumulators give the compiler independent chains
// even without vectorization (no -ffast-math, so it cannot reassociate).
float InnerProductScalar(const float* a, const float* b, size_t dim) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < dim; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void InnerProduct4Scalar(const float* q, const float* const v[4], size_t dim, float out[4]) {
  for (int j = 0; j < 4; ++j) out[j] = InnerProductScalar(q, v[j], dim);
}

namespace {

#ifdef PIXSEEK_HAVE_X86

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Mask selecting the first `rest` (< 8) lanes, for the tail loads.
__attribute__((target("avx2,fma"))) inline __m256i TailMask(size_t rest) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rest)), lanes);
}

// Four independent 8-wide accumulators: 32 floats per iteration, enough to
// hide the FMA latency (4 cycles) at two FMAs per cycle.
__attribute__((target("avx2,fma"))) float InnerProductAvx2(const float* a, const float* b,
                                                           size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + 8 <= dim; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  if (i < dim) {
    __m256i mask = TailMask(dim - i);
    acc1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, mask), _mm256_maskload_ps(b + i, mask), acc1);
  }
  return HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

// One query against four vectors: each query load is reused four times and
// the loop keeps eight independent accumulators (two per vector).
__attribute__((target("avx2,fma"))) void InnerProduct4Avx2(const float* q,
                                                           const float* const v[4], size_t dim,
                                                           float out[4]) {
  const float* v0 = v[0];
  const float* v1 = v[1];
  const float* v2 = v[2];
  const float* v3 = v[3];
  __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
  __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps();
  __m256 a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m256 qa = _mm256_loadu_ps(q + i);
    __m256 qb = _mm256_loadu_ps(q + i + 8);
    a0 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v0 + i), a0);
    b0 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(v0 + i + 8), b0);
    a1 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v1 + i), a1);
    b1 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(v1 + i + 8), b1);
    a2 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v2 + i), a2);
    b2 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(v2 + i + 8), b2);
    a3 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v3 + i), a3);
    b3 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(v3 + i + 8), b3);
  }
  if (i + 8 <= dim) {
    __m256 qa = _mm256_loadu_ps(q + i);
    a0 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v0 + i), a0);
    a1 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v1 + i), a1);
    a2 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v2 + i), a2);
    a3 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(v3 + i), a3);
    i += 8;
  }
  if (i < dim) {
    __m256i mask = TailMask(dim - i);
    __m256 qt = _mm256_maskload_ps(q + i, mask);
    b0 = _mm256_fmadd_ps(qt, _mm256_maskload_ps(v0 + i, mask), b0);
    b1 = _mm256_fmadd_ps(qt, _mm256_maskload_ps(v1 + i, mask), b1);
    b2 = _mm256_fmadd_ps(qt, _mm256_maskload_ps(v2 + i, mask), b2);
    b3 = _mm256_fmadd_ps(qt, _mm256_maskload_ps(v3 + i, mask), b3);
  }
  out[0] = HorizontalSum(_mm256_add_ps(a0, b0));
  out[1] = HorizontalSum(_mm256_add_ps(a1, b1));
  out[2] = HorizontalSum(_mm256_add_ps(a2, b2));
  out[3] = HorizontalSum(_mm256_add_ps(a3, b3));
}

bool HasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#else
bool HasAvx2Fma() { return false; }
#endif  // PIXSEEK_HAVE_X86

struct Kernels {
  float (*inner_product)(const float*, const float*, size_t);
  void (*inner_product4)(const float*, const float* const[4], size_t, float[4]);
  const char* isa;
};

const Kernels& Dispatch() {
  static const Kernels kernels = [] {
#ifdef PIXSEEK_HAVE_X86
    if (HasAvx2Fma()) return Kernels{InnerProductAvx2, InnerProduct4Avx2, "avx2+fma"};
#endif
    return Kernels{InnerProductScalar, InnerProduct4Scalar, "scalar"};
  }();
  return kernels;
}

}  // namespace

float InnerProduct(const float* a, const float* b, size_t dim) {
  return Dispatch().inner_product(a, b, dim);
}

void InnerProduct4(const float* q, const float* const v[4], size_t dim, float out[4]) {
  Dispatch().inner_product4(q, v, dim, out);
}

const char* InnerProductIsa() { return Dispatch().isa; }

}  // namespace pixseek
