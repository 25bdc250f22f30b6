#include "index/inner_product.h"

// GCC 12 warns about its own AVX-512 intrinsics (_mm512_reduce_add_ps).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

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

Bfloat16 ToBfloat16(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round half to even (x is finite)
  return Bfloat16{static_cast<uint16_t>(u >> 16)};
}

void ToBfloat16(const float* x, size_t n, Bfloat16* out) {
  for (size_t i = 0; i < n; ++i) out[i] = ToBfloat16(x[i]);
}

float InnerProductBf16Scalar(const Bfloat16* a, const Bfloat16* b, size_t dim) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    s0 += FromBfloat16(a[i]) * FromBfloat16(b[i]);
    s1 += FromBfloat16(a[i + 1]) * FromBfloat16(b[i + 1]);
    s2 += FromBfloat16(a[i + 2]) * FromBfloat16(b[i + 2]);
    s3 += FromBfloat16(a[i + 3]) * FromBfloat16(b[i + 3]);
  }
  for (; i < dim; ++i) s0 += FromBfloat16(a[i]) * FromBfloat16(b[i]);
  return (s0 + s1) + (s2 + s3);
}

void InnerProduct4Bf16Scalar(const Bfloat16* q, const Bfloat16* const v[4], size_t dim,
                             float out[4]) {
  for (int j = 0; j < 4; ++j) out[j] = InnerProductBf16Scalar(q, v[j], dim);
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

// bfloat16 with AVX-512 BF16: VDPBF16PS multiplies 32 pairs and adds each
// neighbouring pair's products into one of 16 float lanes.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline __m512bh LoadBf16(
    const Bfloat16* p, __mmask32 mask) {
  return (__m512bh)_mm512_maskz_loadu_epi16(mask, p);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) float InnerProductBf16Avx512(
    const Bfloat16* a, const Bfloat16* b, size_t dim) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    acc0 = _mm512_dpbf16_ps(acc0, LoadBf16(a + i, ~0u), LoadBf16(b + i, ~0u));
    acc1 = _mm512_dpbf16_ps(acc1, LoadBf16(a + i + 32, ~0u), LoadBf16(b + i + 32, ~0u));
  }
  for (; i < dim; i += 32) {
    const __mmask32 mask = dim - i >= 32 ? ~0u : (1u << (dim - i)) - 1;
    acc0 = _mm512_dpbf16_ps(acc0, LoadBf16(a + i, mask), LoadBf16(b + i, mask));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

// One query against four vectors, 32 dimensions a step; every lane runs the
// same operations whatever the other vectors are. The four sums are named
// registers: an array of them was kept in memory by GCC, each step loading
// and storing its sum (half the graph build's time went there).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void InnerProduct4Bf16Avx512(
    const Bfloat16* q, const Bfloat16* const v[4], size_t dim, float out[4]) {
  const Bfloat16* v0 = v[0];
  const Bfloat16* v1 = v[1];
  const Bfloat16* v2 = v[2];
  const Bfloat16* v3 = v[3];
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    const __m512bh qi = LoadBf16(q + i, ~0u);
    a0 = _mm512_dpbf16_ps(a0, qi, LoadBf16(v0 + i, ~0u));
    a1 = _mm512_dpbf16_ps(a1, qi, LoadBf16(v1 + i, ~0u));
    a2 = _mm512_dpbf16_ps(a2, qi, LoadBf16(v2 + i, ~0u));
    a3 = _mm512_dpbf16_ps(a3, qi, LoadBf16(v3 + i, ~0u));
  }
  if (i < dim) {
    const __mmask32 mask = (1u << (dim - i)) - 1;
    const __m512bh qi = LoadBf16(q + i, mask);
    a0 = _mm512_dpbf16_ps(a0, qi, LoadBf16(v0 + i, mask));
    a1 = _mm512_dpbf16_ps(a1, qi, LoadBf16(v1 + i, mask));
    a2 = _mm512_dpbf16_ps(a2, qi, LoadBf16(v2 + i, mask));
    a3 = _mm512_dpbf16_ps(a3, qi, LoadBf16(v3 + i, mask));
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

// bfloat16 on AVX2: 8 values widen to floats with a 16-bit shift.
__attribute__((target("avx2,fma"))) inline __m256 LoadBf16x8(const Bfloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma"))) void InnerProduct4Bf16Avx2(const Bfloat16* q,
                                                               const Bfloat16* const v[4],
                                                               size_t dim, float out[4]) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 qi = LoadBf16x8(q + i);
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_fmadd_ps(qi, LoadBf16x8(v[j] + i), acc[j]);
  }
  for (int j = 0; j < 4; ++j) {
    float s = HorizontalSum(acc[j]);
    for (size_t t = i; t < dim; ++t) s += FromBfloat16(q[t]) * FromBfloat16(v[j][t]);
    out[j] = s;
  }
}

__attribute__((target("avx2,fma"))) float InnerProductBf16Avx2(const Bfloat16* a,
                                                               const Bfloat16* b, size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    acc0 = _mm256_fmadd_ps(LoadBf16x8(a + i), LoadBf16x8(b + i), acc0);
    acc1 = _mm256_fmadd_ps(LoadBf16x8(a + i + 8), LoadBf16x8(b + i + 8), acc1);
  }
  float s = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < dim; ++i) s += FromBfloat16(a[i]) * FromBfloat16(b[i]);
  return s;
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

namespace {

struct Bf16Kernels {
  float (*inner_product)(const Bfloat16*, const Bfloat16*, size_t);
  void (*inner_product4)(const Bfloat16*, const Bfloat16* const[4], size_t, float[4]);
  const char* isa;
};

const Bf16Kernels& DispatchBf16() {
  static const Bf16Kernels kernels = [] {
#ifdef PIXSEEK_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512bf16")) {
      return Bf16Kernels{InnerProductBf16Avx512, InnerProduct4Bf16Avx512, "avx512bf16"};
    }
    if (HasAvx2Fma()) return Bf16Kernels{InnerProductBf16Avx2, InnerProduct4Bf16Avx2, "avx2+fma"};
#endif
    return Bf16Kernels{InnerProductBf16Scalar, InnerProduct4Bf16Scalar, "scalar"};
  }();
  return kernels;
}

}  // namespace

float InnerProductBf16(const Bfloat16* a, const Bfloat16* b, size_t dim) {
  return DispatchBf16().inner_product(a, b, dim);
}

void InnerProduct4Bf16(const Bfloat16* q, const Bfloat16* const v[4], size_t dim, float out[4]) {
  DispatchBf16().inner_product4(q, v, dim, out);
}

const char* InnerProductBf16Isa() { return DispatchBf16().isa; }

}  // namespace pixseek
