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

// Byte-table PQ scores (see PqByteTables). The table is m * 256 bytes, far
// more than the L1 cache, and every entry a code reads is on a random line:
// scoring one code after the other would miss L1 on nearly every read. So
// the loops run sub-spaces outside and a batch of codes inside: the 2 KiB of
// table that 8 sub-spaces span stays in L1 while every code of the batch
// reads it. Plain loads beat AVX-512/AVX2 gathers here (measured on Zen 4:
// 290 against 470 ns per 512-byte code with the codes in cache).
void PqScores(const uint8_t* lut, size_t m, const uint8_t* codes, const uint32_t* nodes,
              size_t count, float bias, float scale, float* out) {
  constexpr size_t kBatch = 64;
  uint32_t sums[kBatch];
  const uint8_t* rows[kBatch];
  for (size_t first = 0; first < count; first += kBatch) {
    const size_t n = std::min(kBatch, count - first);
    for (size_t i = 0; i < n; ++i) {
      sums[i] = 0;
      rows[i] = codes + size_t{nodes[first + i]} * m;
    }
    size_t j = 0;
    for (; j + 8 <= m; j += 8) {
      const uint8_t* t = lut + j * 256;  // sub-space j + s at t + s * 256
      for (size_t i = 0; i < n; ++i) {
        uint64_t c;  // the codes of sub-spaces j .. j + 7, little-endian
        std::memcpy(&c, rows[i] + j, 8);
        sums[i] += (t[c & 0xFF] + t[1024 + ((c >> 32) & 0xFF)]) +
                   (t[256 + ((c >> 8) & 0xFF)] + t[1280 + ((c >> 40) & 0xFF)]) +
                   (t[512 + ((c >> 16) & 0xFF)] + t[1536 + ((c >> 48) & 0xFF)]) +
                   (t[768 + ((c >> 24) & 0xFF)] + t[1792 + (c >> 56)]);
      }
    }
    for (size_t i = 0; i < n; ++i) {
      for (size_t t = j; t < m; ++t) sums[i] += lut[t * 256 + rows[i][t]];
      out[first + i] = bias + scale * static_cast<float>(sums[i]);
    }
  }
}

void L2TablesScalar(const uint16_t* transposed, const float* norms, size_t m, size_t dsub,
                    const float* query, float* out) {
  for (size_t j = 0; j < m; ++j) {
    float* __restrict row_out = out + j * 256;
    for (size_t c = 0; c < 256; ++c) row_out[c] = -norms[j * 256 + c];
    for (size_t t = 0; t < dsub; ++t) {
      const float qt = 2.0f * query[j * dsub + t];
      const uint16_t* row = transposed + (j * dsub + t) * 256;
      for (size_t c = 0; c < 256; ++c) row_out[c] += qt * FromHalf(row[c]);
    }
  }
}

// The step shared by every sub-space (see QuantizePqTables) from the
// sub-spaces' ranges, with out's size and bias set.
float PrepareByteTables(size_t m, float widest, double bias, PqByteTables* out) {
  float step = widest / 255.0f;
  if (!(step > 0)) step = 1;  // every table constant: any step ranks alike
  out->m = m;
  out->scale = step;
  out->bias = static_cast<float>(bias);
  out->lut.resize(m * 256);
  return step;
}

void QuantizeScalar(const float* tables, size_t m, PqByteTables* out) {
  std::vector<float> low(m);
  float widest = 0;
  double bias = 0;
  for (size_t j = 0; j < m; ++j) {
    const auto [lo, hi] = std::minmax_element(tables + j * 256, tables + (j + 1) * 256);
    low[j] = *lo;
    bias += *lo;
    widest = std::max(widest, *hi - *lo);
  }
  const float inv = 1.0f / PrepareByteTables(m, widest, bias, out);
  for (size_t j = 0; j < m; ++j) {
    for (size_t c = 0; c < 256; ++c) {
      const float u = (tables[j * 256 + c] - low[j]) * inv + 0.5f;
      out->lut[j * 256 + c] = static_cast<uint8_t>(std::min(u, 255.0f));
    }
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

// The 256 entries of one sub-space stay in 16 registers while its dsub
// coordinates stream past.
__attribute__((target("avx512f"))) void L2TablesAvx512(const uint16_t* transposed, const float* norms,
                                                      size_t m, size_t dsub, const float* query,
                                                      float* out) {
  for (size_t j = 0; j < m; ++j) {
    __m512 acc[16];
    for (int k = 0; k < 16; ++k) {
      acc[k] = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(norms + j * 256 + 16 * k));
    }
    for (size_t t = 0; t < dsub; ++t) {
      const __m512 qt = _mm512_set1_ps(2.0f * query[j * dsub + t]);
      const uint16_t* row = transposed + (j * dsub + t) * 256;
      for (int k = 0; k < 16; ++k) {
        const __m512 x =
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * k)));
        acc[k] = _mm512_fmadd_ps(qt, x, acc[k]);
      }
    }
    for (int k = 0; k < 16; ++k) _mm512_storeu_ps(out + j * 256 + 16 * k, acc[k]);
  }
}

__attribute__((target("avx512f,avx512bw"))) void QuantizeAvx512(const float* tables, size_t m,
                                                               PqByteTables* out) {
  std::vector<float> low(m);
  float widest = 0;
  double bias = 0;
  for (size_t j = 0; j < m; ++j) {
    __m512 lo = _mm512_loadu_ps(tables + j * 256), hi = lo;
    for (int k = 1; k < 16; ++k) {
      const __m512 x = _mm512_loadu_ps(tables + j * 256 + 16 * k);
      lo = _mm512_min_ps(lo, x);
      hi = _mm512_max_ps(hi, x);
    }
    low[j] = _mm512_reduce_min_ps(lo);
    bias += low[j];
    widest = std::max(widest, _mm512_reduce_max_ps(hi) - low[j]);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / PrepareByteTables(m, widest, bias, out));
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512i top = _mm512_set1_epi32(255);
  for (size_t j = 0; j < m; ++j) {
    const __m512 lo = _mm512_set1_ps(low[j]);
    for (int k = 0; k < 16; ++k) {
      const __m512 x = _mm512_loadu_ps(tables + j * 256 + 16 * k);
      const __m512 u = _mm512_fmadd_ps(_mm512_sub_ps(x, lo), inv, half);
      const __m512i q = _mm512_min_epi32(_mm512_cvttps_epi32(u), top);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out->lut.data() + j * 256 + 16 * k),
                       _mm512_cvtusepi32_epi8(q));
    }
  }
}

#endif  // PIXSEEK_HAVE_X86

struct Kernels {
  float (*f16)(const float*, const uint8_t*, size_t);
  float (*i8)(const float*, const uint8_t*, size_t);
  void (*l2_tables)(const uint16_t*, const float*, size_t, size_t, const float*, float*);
  void (*quantize)(const float*, size_t, PqByteTables*);
  const char* isa;
};

Kernels Pick() {
#ifdef PIXSEEK_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return {F16Avx512, I8Avx512, L2TablesAvx512, QuantizeAvx512, "avx512"};
  }
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
    return {F16Avx2, I8Avx2, L2TablesScalar, QuantizeScalar, "avx2+f16c"};
  }
#endif
  return {F16Scalar, I8Scalar, L2TablesScalar, QuantizeScalar, "scalar"};
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

void QuantizePqTables(const float* tables, size_t m, PqByteTables* out) {
  Get().quantize(tables, m, out);
}

void PqScoreBatch(const PqByteTables& tables, const uint8_t* codes, const uint32_t* nodes,
                  size_t count, float* out) {
  PqScores(tables.lut.data(), tables.m, codes, nodes, count, tables.bias, tables.scale, out);
}

void PqL2Tables(const uint16_t* transposed_half, const float* norms, size_t m, size_t dsub,
                const float* query, float* out) {
  Get().l2_tables(transposed_half, norms, m, dsub, query, out);
}

uint16_t FloatToHalf(float x) { return ToHalf(x); }
float HalfToFloat(uint16_t bits) { return FromHalf(bits); }

void PqPrefetch(const uint8_t* codes, size_t m, const uint32_t* nodes, size_t count) {
  constexpr size_t kLine = 64;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* row = codes + size_t{nodes[i]} * m;
    // Every line the row touches, the last one included when it is unaligned.
    const auto first = reinterpret_cast<uintptr_t>(row) & ~uintptr_t{kLine - 1};
    const auto last = reinterpret_cast<uintptr_t>(row + m - 1);
    for (uintptr_t line = first; line <= last; line += kLine) {
      __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 1);
    }
  }
}


}  // namespace pixseek
