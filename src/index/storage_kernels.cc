#include "index/storage_kernels.h"

// GCC 12 warns about its own AVX-512 intrinsics (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "index/inner_product.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define PIXSEEK_HAVE_X86 1
#endif

namespace pixseek {

std::string_view StorageName(VectorStorage storage) {
  switch (storage) {
    case VectorStorage::kFloat32: return "fp32";
    case VectorStorage::kFloat16: return "fp16";
    case VectorStorage::kInt8: return "int8";
  }
  return "unknown";
}

Result<VectorStorage> ParseStorage(std::string_view name) {
  if (name == "fp32") return VectorStorage::kFloat32;
  if (name == "fp16") return VectorStorage::kFloat16;
  if (name == "int8") return VectorStorage::kInt8;
  return Status::InvalidArgument("unknown vector storage '" + std::string(name) +
                                 "' (expected fp32, fp16 or int8)");
}

size_t StoredVectorBytes(VectorStorage storage, size_t dim) {
  switch (storage) {
    case VectorStorage::kFloat32: return 4 * dim;
    case VectorStorage::kFloat16: return 2 * dim;
    case VectorStorage::kInt8: return 4 + dim;
  }
  return 0;
}

namespace {

// IEEE binary16 conversions through GCC's _Float16 (software on CPUs without
// F16C; only the portable path and encoding use them).
inline uint16_t ToHalf(float x) {
  _Float16 h = static_cast<_Float16>(x);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
inline float FromHalf(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

float Int8Scale(const uint8_t* in) {
  float scale;
  std::memcpy(&scale, in, 4);
  return scale;
}

float F16Scalar(const float* q, const uint8_t* in, size_t dim) {
  float s = 0;
  for (size_t i = 0; i < dim; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    s += q[i] * FromHalf(h);
  }
  return s;
}

float I8Scalar(const float* q, const uint8_t* in, size_t dim) {
  const auto* v = reinterpret_cast<const int8_t*>(in + 4);
  float s = 0;
  for (size_t i = 0; i < dim; ++i) s += q[i] * static_cast<float>(v[i]);
  return s * Int8Scale(in);
}

void PqScalar(const float* tables, size_t m, const uint8_t* codes, const uint32_t* nodes,
              size_t count, float* out) {
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* code = codes + size_t{nodes[i]} * m;
    float s = 0;
    for (size_t j = 0; j < m; ++j) s += tables[j * 256 + code[j]];
    out[i] = s;
  }
}

#ifdef PIXSEEK_HAVE_X86

__attribute__((target("avx2,fma,f16c"))) float HSum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma,f16c"))) float F16Avx2(const float* q, const uint8_t* in,
                                                       size_t dim) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i + 16));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(h0), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_cvtph_ps(h1), a1);
  }
  float s = HSum256(_mm256_add_ps(a0, a1));
  return s + F16Scalar(q + i, in + 2 * i, dim - i);
}

__attribute__((target("avx2,fma,f16c"))) float I8Avx2(const float* q, const uint8_t* in,
                                                      size_t dim) {
  const uint8_t* v = in + 4;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i));
    __m256 x0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    __m256 x1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), x0, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), x1, a1);
  }
  float s = HSum256(_mm256_add_ps(a0, a1));
  const auto* t = reinterpret_cast<const int8_t*>(v);
  for (; i < dim; ++i) s += q[i] * static_cast<float>(t[i]);
  return s * Int8Scale(in);
}

__attribute__((target("avx2,fma"))) void PqAvx2(const float* tables, size_t m,
                                                const uint8_t* codes, const uint32_t* nodes,
                                                size_t count, float* out) {
  const __m256i lane = _mm256_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* code = codes + size_t{nodes[i]} * m;
    __m256 acc = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= m; j += 8) {
      __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + j)));
      idx = _mm256_add_epi32(idx, lane);
      acc = _mm256_add_ps(acc, _mm256_i32gather_ps(tables + j * 256, idx, 4));
    }
    float s = HSum256(acc);
    for (; j < m; ++j) s += tables[j * 256 + code[j]];
    out[i] = s;
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) float F16Avx512(const float* q,
                                                                    const uint8_t* in,
                                                                    size_t dim) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    __m256i h0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + 2 * i));
    __m256i h1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + 2 * i + 32));
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_cvtph_ps(h0), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), _mm512_cvtph_ps(h1), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  return s + F16Scalar(q + i, in + 2 * i, dim - i);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) float I8Avx512(const float* q,
                                                                   const uint8_t* in,
                                                                   size_t dim) {
  const uint8_t* v = in + 4;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i));
    __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i + 16));
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b0)), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16),
                         _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b1)), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  const auto* t = reinterpret_cast<const int8_t*>(v);
  for (; i < dim; ++i) s += q[i] * static_cast<float>(t[i]);
  return s * Int8Scale(in);
}

// 16 sub-quantizers per gather; two accumulators hide the gather latency.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void PqAvx512(const float* tables, size_t m,
                                                                  const uint8_t* codes,
                                                                  const uint32_t* nodes,
                                                                  size_t count, float* out) {
  const __m512i lane = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(256));
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* code = codes + size_t{nodes[i]} * m;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= m; j += 32) {
      __m512i i0 = _mm512_add_epi32(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + j))), lane);
      __m512i i1 = _mm512_add_epi32(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + j + 16))),
          lane);
      a0 = _mm512_add_ps(a0, _mm512_i32gather_ps(i0, tables + j * 256, 4));
      a1 = _mm512_add_ps(a1, _mm512_i32gather_ps(i1, tables + (j + 16) * 256, 4));
    }
    for (; j + 16 <= m; j += 16) {
      __m512i i0 = _mm512_add_epi32(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + j))), lane);
      a0 = _mm512_add_ps(a0, _mm512_i32gather_ps(i0, tables + j * 256, 4));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; j < m; ++j) s += tables[j * 256 + code[j]];
    out[i] = s;
  }
}

#endif  // PIXSEEK_HAVE_X86

struct Kernels {
  float (*f16)(const float*, const uint8_t*, size_t);
  float (*i8)(const float*, const uint8_t*, size_t);
  void (*pq)(const float*, size_t, const uint8_t*, const uint32_t*, size_t, float*);
  const char* isa;
};

Kernels Pick() {
#ifdef PIXSEEK_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return {F16Avx512, I8Avx512, PqAvx512, "avx512"};
  }
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
    return {F16Avx2, I8Avx2, PqAvx2, "avx2+f16c"};
  }
#endif
  return {F16Scalar, I8Scalar, PqScalar, "scalar"};
}

const Kernels& Get() {
  static const Kernels kernels = Pick();
  return kernels;
}

}  // namespace

void EncodeStored(VectorStorage storage, const float* x, size_t dim, uint8_t* out) {
  switch (storage) {
    case VectorStorage::kFloat32:
      std::memcpy(out, x, 4 * dim);
      return;
    case VectorStorage::kFloat16:
      for (size_t i = 0; i < dim; ++i) {
        const uint16_t h = ToHalf(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case VectorStorage::kInt8: {
      float max_abs = 0;
      for (size_t i = 0; i < dim; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
      const float scale = max_abs / 127.0f;
      std::memcpy(out, &scale, 4);
      auto* q = reinterpret_cast<int8_t*>(out + 4);
      for (size_t i = 0; i < dim; ++i) {
        q[i] = scale == 0 ? 0 : static_cast<int8_t>(std::clamp(std::lround(x[i] / scale), -127L, 127L));
      }
      return;
    }
  }
}

void DecodeStored(VectorStorage storage, const uint8_t* in, size_t dim, float* x) {
  switch (storage) {
    case VectorStorage::kFloat32:
      std::memcpy(x, in, 4 * dim);
      return;
    case VectorStorage::kFloat16:
      for (size_t i = 0; i < dim; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        x[i] = FromHalf(h);
      }
      return;
    case VectorStorage::kInt8: {
      const float scale = Int8Scale(in);
      const auto* q = reinterpret_cast<const int8_t*>(in + 4);
      for (size_t i = 0; i < dim; ++i) x[i] = scale * static_cast<float>(q[i]);
      return;
    }
  }
}

float InnerProductStored(VectorStorage storage, const float* q, const uint8_t* in, size_t dim) {
  switch (storage) {
    case VectorStorage::kFloat32: {
      // The record is not float-aligned in general; InnerProduct uses
      // unaligned loads.
      return InnerProduct(q, reinterpret_cast<const float*>(in), dim);
    }
    case VectorStorage::kFloat16: return Get().f16(q, in, dim);
    case VectorStorage::kInt8: return Get().i8(q, in, dim);
  }
  return 0;
}

void PqScoreBatch(const float* tables, size_t m, const uint8_t* codes, const uint32_t* nodes,
                  size_t count, float* out) {
  Get().pq(tables, m, codes, nodes, count, out);
}


}  // namespace pixseek
