#include "index/storage_kernels.h"

// GCC 12 warns about its own AVX-512 intrinsics (_mm512_undefined_*).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

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

// The squared norm of x's dsub floats.
inline float SquaredNorm(const float* x, size_t dsub) {
  float s = 0;
  for (size_t t = 0; t < dsub; ++t) s += x[t] * x[t];
  return s;
}

void NearestScalar(const float* transposed, const float* norms, size_t dsub, const float* x,
                   size_t stride, size_t n, int64_t* labels, float* distances) {
  float d[256];
  for (size_t i = 0; i < n; ++i) {
    const float* row = x + i * stride;
    for (size_t c = 0; c < 256; ++c) d[c] = norms[c];
    for (size_t t = 0; t < dsub; ++t) {
      const float xt = -2.0f * row[t];
      for (size_t c = 0; c < 256; ++c) d[c] += xt * transposed[t * 256 + c];
    }
    const size_t best = static_cast<size_t>(std::min_element(d, d + 256) - d);
    labels[i] = static_cast<int64_t>(best);
    if (distances != nullptr) distances[i] = std::max(0.0f, d[best] + SquaredNorm(row, dsub));
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
  thread_local std::vector<float> low;  // per sub-space minimum; no allocation per query
  low.resize(m);
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

// Sub-space j's 256 sums 2 <q_j, c> - |c|^2 into acc, which stay in 16
// registers while its dsub coordinates stream past (inlined, and the loops
// unrolled: otherwise GCC keeps acc in memory).
__attribute__((target("avx512f"), always_inline)) inline void SubspaceSumsAvx512(
    const uint16_t* transposed, const float* norms, size_t j, size_t dsub, const float* query,
    __m512* acc) {
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) {
    acc[k] = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(norms + j * 256 + 16 * k));
  }
  for (size_t t = 0; t < dsub; ++t) {
    const __m512 qt = _mm512_set1_ps(2.0f * query[j * dsub + t]);
    const uint16_t* row = transposed + (j * dsub + t) * 256;
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) {
      const __m512 x =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * k)));
      acc[k] = _mm512_fmadd_ps(qt, x, acc[k]);
    }
  }
}

__attribute__((target("avx512f"))) void L2TablesAvx512(const uint16_t* transposed, const float* norms,
                                                      size_t m, size_t dsub, const float* query,
                                                      float* out) {
  for (size_t j = 0; j < m; ++j) {
    __m512 acc[16];
    SubspaceSumsAvx512(transposed, norms, j, dsub, query, acc);
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) _mm512_storeu_ps(out + j * 256 + 16 * k, acc[k]);
  }
}

// The second half of QuantizePqTables: every entry of the float tables to a
// byte, given each sub-space's minimum, the widest range and the sum of the
// minimums.
__attribute__((target("avx512f,avx512bw"))) void QuantizeWithRangesAvx512(
    const float* tables, size_t m, const float* low, float widest, double bias,
    PqByteTables* out) {
  const __m512 inv = _mm512_set1_ps(1.0f / PrepareByteTables(m, widest, bias, out));
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512i top = _mm512_set1_epi32(255);
  for (size_t j = 0; j < m; ++j) {
    const __m512 lo = _mm512_set1_ps(low[j]);
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) {
      const __m512 x = _mm512_loadu_ps(tables + j * 256 + 16 * k);
      const __m512 u = _mm512_fmadd_ps(_mm512_sub_ps(x, lo), inv, half);
      const __m512i q = _mm512_min_epi32(_mm512_cvttps_epi32(u), top);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out->lut.data() + j * 256 + 16 * k),
                       _mm512_cvtusepi32_epi8(q));
    }
  }
}

__attribute__((target("avx512f,avx512bw"))) void QuantizeAvx512(const float* tables, size_t m,
                                                               PqByteTables* out) {
  thread_local std::vector<float> low;  // per sub-space minimum; no allocation per query
  low.resize(m);
  float widest = 0;
  double bias = 0;
  for (size_t j = 0; j < m; ++j) {
    __m512 lo = _mm512_loadu_ps(tables + j * 256), hi = lo;
#pragma GCC unroll 16
    for (int k = 1; k < 16; ++k) {
      const __m512 x = _mm512_loadu_ps(tables + j * 256 + 16 * k);
      lo = _mm512_min_ps(lo, x);
      hi = _mm512_max_ps(hi, x);
    }
    low[j] = _mm512_reduce_min_ps(lo);
    bias += low[j];
    widest = std::max(widest, _mm512_reduce_max_ps(hi) - low[j]);
  }
  QuantizeWithRangesAvx512(tables, m, low.data(), widest, bias, out);
}

// NearestScalar with the 256 sums |c|^2 - 2 <x, c> of a row in sixteen
// registers.
__attribute__((target("avx512f"))) void NearestAvx512(const float* transposed, const float* norms,
                                                      size_t dsub, const float* x, size_t stride,
                                                      size_t n, int64_t* labels,
                                                      float* distances) {
  for (size_t i = 0; i < n; ++i) {
    const float* row = x + i * stride;
    __m512 acc[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) acc[k] = _mm512_loadu_ps(norms + 16 * k);
    for (size_t t = 0; t < dsub; ++t) {
      const __m512 xt = _mm512_set1_ps(-2.0f * row[t]);
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
        acc[k] = _mm512_fmadd_ps(xt, _mm512_loadu_ps(transposed + t * 256 + 16 * k), acc[k]);
      }
    }
    __m512 low = acc[0];
#pragma GCC unroll 16
    for (int k = 1; k < 16; ++k) low = _mm512_min_ps(low, acc[k]);
    const float best = _mm512_reduce_min_ps(low);
    const __m512 target = _mm512_set1_ps(best);
    int64_t label = 0;
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) {
      const __mmask16 hit = _mm512_cmp_ps_mask(acc[k], target, _CMP_EQ_OQ);
      if (hit != 0) {
        label = 16 * k + __builtin_ctz(hit);
        break;
      }
    }
    labels[i] = label;
    if (distances != nullptr) distances[i] = std::max(0.0f, best + SquaredNorm(row, dsub));
  }
}

// PqL2ByteTables in one kernel: L2TablesAvx512's sums (the same
// operations, so the same floats) with each sub-space's minimum and range
// taken while they are in registers, then the second half of
// QuantizeAvx512.
__attribute__((target("avx512f,avx512bw"))) void L2ByteTablesAvx512(
    const uint16_t* transposed, const float* norms, size_t m, size_t dsub, const float* query,
    float* tables, PqByteTables* out) {
  thread_local std::vector<float> low;  // per sub-space minimum; no allocation per query
  low.resize(m);
  float widest = 0;
  double bias = 0;
  for (size_t j = 0; j < m; ++j) {
    __m512 acc[16];
    SubspaceSumsAvx512(transposed, norms, j, dsub, query, acc);
    __m512 lo = acc[0], hi = acc[0];
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) {
      lo = _mm512_min_ps(lo, acc[k]);
      hi = _mm512_max_ps(hi, acc[k]);
      _mm512_storeu_ps(tables + j * 256 + 16 * k, acc[k]);
    }
    low[j] = _mm512_reduce_min_ps(lo);
    bias += low[j];
    widest = std::max(widest, _mm512_reduce_max_ps(hi) - low[j]);
  }
  QuantizeWithRangesAvx512(tables, m, low.data(), widest, bias, out);
}

// Transposes 8 x 8 64-bit words: out[k] word i = in[i] word k.
__attribute__((target("avx512f"))) inline void Transpose8x8Words(const __m512i* in, __m512i* out) {
  const __m512i even1 = _mm512_setr_epi64(0, 8, 2, 10, 4, 12, 6, 14);
  const __m512i odd1 = _mm512_setr_epi64(1, 9, 3, 11, 5, 13, 7, 15);
  const __m512i even2 = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
  const __m512i odd2 = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  const __m512i even4 = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11);
  const __m512i odd4 = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
  __m512i b[8], c[8];
  for (int p = 0; p < 8; p += 2) {
    b[p] = _mm512_permutex2var_epi64(in[p], even1, in[p + 1]);
    b[p + 1] = _mm512_permutex2var_epi64(in[p], odd1, in[p + 1]);
  }
  for (int p : {0, 1, 4, 5}) {
    c[p] = _mm512_permutex2var_epi64(b[p], even2, b[p + 2]);
    c[p + 2] = _mm512_permutex2var_epi64(b[p], odd2, b[p + 2]);
  }
  for (int p = 0; p < 4; ++p) {
    out[p] = _mm512_permutex2var_epi64(c[p], even4, c[p + 4]);
    out[p + 4] = _mm512_permutex2var_epi64(c[p], odd4, c[p + 4]);
  }
}

// Byte-table PQ scores with the tables in registers ("fast scan"): 64 codes
// at a time are transposed so that one register holds the 64 codes' bytes
// of one sub-space; its 256-byte table is four registers, read for all 64
// lanes by two 128-entry byte permutes (VPERMI2B) and a blend on the top
// bit. Sums gather in 16-bit lanes, widened every 256 sub-spaces (256 * 255
// fits). Needs m % 64 == 0. On Zen 4 this takes about half the time of
// PqScores for full batches of 64 and about the same for 35, so the disk
// search scores a whole beam step's neighbours as one batch.
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void PqScoresVbmi(
    const uint8_t* lut, size_t m, const uint8_t* codes, const uint32_t* nodes, size_t count,
    float bias, float scale, float* out) {
  // Within one register, 8 x 8 bytes: out byte 8s + r = in byte 8r + s.
  alignas(64) uint8_t transpose_bytes[64];
  for (int s = 0; s < 8; ++s) {
    for (int r = 0; r < 8; ++r) transpose_bytes[s * 8 + r] = static_cast<uint8_t>(r * 8 + s);
  }
  const __m512i byte_transpose = _mm512_load_si512(transpose_bytes);
  const __m512i zero = _mm512_setzero_si512();
  __m512i stage[64];  // group g (codes 8g .. 8g + 7), word q: at q * 8 + g
  for (size_t first = 0; first < count; first += 64) {
    const size_t n = std::min<size_t>(64, count - first);
    const size_t groups = (n + 7) / 8;
    const uint8_t* rows[64];
    for (size_t i = 0; i < groups * 8; ++i) {
      rows[i] = codes + size_t{nodes[first + std::min(i, n - 1)]} * m;  // pad with the last
    }
    __m512i sums[4] = {zero, zero, zero, zero};  // 32-bit, lane order as below
    __m512i low = zero, high = zero;             // 16-bit partial sums
    for (size_t block = 0; block < m; block += 64) {
      // 1. For each group of 8 codes, the 8 x 8 bytes of sub-spaces
      //    block + 8q .. + 7: after the word and byte transposes, word s of
      //    stage[q * 8 + g] holds codes 8g .. 8g + 7 at sub-space 8q + s.
      for (size_t g = 0; g < groups; ++g) {
        __m512i in[8], words[8];
        for (int r = 0; r < 8; ++r) in[r] = _mm512_loadu_si512(rows[8 * g + r] + block);
        Transpose8x8Words(in, words);
        for (int q = 0; q < 8; ++q) {
          stage[q * 8 + g] = _mm512_permutexvar_epi8(byte_transpose, words[q]);
        }
      }
      for (size_t g = groups; g < 8; ++g) {
        for (int q = 0; q < 8; ++q) stage[q * 8 + g] = zero;
      }
      // 2. Per 8 sub-spaces, one more word transpose gives each sub-space's
      //    64 code bytes in code order; look them up and add.
      for (int q = 0; q < 8; ++q) {
        __m512i columns[8];
        Transpose8x8Words(stage + q * 8, columns);
        for (int s = 0; s < 8; ++s) {
          const __m512i column = columns[s];
          const uint8_t* t = lut + (block + 8 * q + s) * 256;
          const __m512i t0 = _mm512_loadu_si512(t), t1 = _mm512_loadu_si512(t + 64);
          const __m512i t2 = _mm512_loadu_si512(t + 128), t3 = _mm512_loadu_si512(t + 192);
          const __m512i below = _mm512_permutex2var_epi8(t0, column, t1);  // entries 0-127
          const __m512i above = _mm512_permutex2var_epi8(t2, column, t3);  // 128-255
          const __m512i entry = _mm512_mask_blend_epi8(_mm512_movepi8_mask(column), below, above);
          low = _mm512_add_epi16(low, _mm512_unpacklo_epi8(entry, zero));
          high = _mm512_add_epi16(high, _mm512_unpackhi_epi8(entry, zero));
        }
      }
      if ((block / 64) % 4 == 3 || block + 64 >= m) {
        sums[0] = _mm512_add_epi32(sums[0], _mm512_unpacklo_epi16(low, zero));
        sums[1] = _mm512_add_epi32(sums[1], _mm512_unpackhi_epi16(low, zero));
        sums[2] = _mm512_add_epi32(sums[2], _mm512_unpacklo_epi16(high, zero));
        sums[3] = _mm512_add_epi32(sums[3], _mm512_unpackhi_epi16(high, zero));
        low = high = zero;
      }
    }
    // Code i is byte k = i % 16 of 128-bit lane l = i / 16; the unpacks put
    // bytes 0-3 of each lane in sums[0], 4-7 in sums[1], 8-11 in sums[2] and
    // 12-15 in sums[3], each at 32-bit position 4l + k % 4.
    alignas(64) uint32_t lanes[4][16];
    for (int x = 0; x < 4; ++x) _mm512_store_si512(lanes[x], sums[x]);
    for (size_t i = 0; i < n; ++i) {
      const size_t l = i / 16, k = i % 16;
      out[first + i] = bias + scale * static_cast<float>(lanes[k / 4][4 * l + k % 4]);
    }
  }
}

#endif  // PIXSEEK_HAVE_X86

struct Kernels {
  float (*f16)(const float*, const uint8_t*, size_t);
  float (*i8)(const float*, const uint8_t*, size_t);
  void (*l2_tables)(const uint16_t*, const float*, size_t, size_t, const float*, float*);
  void (*quantize)(const float*, size_t, PqByteTables*);
  // PqL2ByteTables in one kernel, or null: l2_tables then quantize.
  void (*l2_byte_tables)(const uint16_t*, const float*, size_t, size_t, const float*, float*,
                         PqByteTables*);
  void (*nearest)(const float*, const float*, size_t, const float*, size_t, size_t, int64_t*,
                  float*);
  // Byte-table PQ scores for m % 64 == 0 and batches of at least 16, or null.
  void (*pq_wide)(const uint8_t*, size_t, const uint8_t*, const uint32_t*, size_t, float, float,
                  float*);
};

Kernels Pick() {
#ifdef PIXSEEK_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    const bool vbmi = __builtin_cpu_supports("avx512vbmi");
    return {F16Avx512, I8Avx512, L2TablesAvx512, QuantizeAvx512, L2ByteTablesAvx512,
            NearestAvx512, vbmi ? PqScoresVbmi : nullptr};
  }
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
    return {F16Avx2, I8Avx2, L2TablesScalar, QuantizeScalar, nullptr, NearestScalar, nullptr};
  }
#endif
  return {F16Scalar, I8Scalar, L2TablesScalar, QuantizeScalar, nullptr, NearestScalar, nullptr};
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
  const Kernels& k = Get();
  if (k.pq_wide != nullptr && tables.m % 64 == 0 && count >= 16) {
    return k.pq_wide(tables.lut.data(), tables.m, codes, nodes, count, tables.bias, tables.scale,
                     out);
  }
  PqScores(tables.lut.data(), tables.m, codes, nodes, count, tables.bias, tables.scale, out);
}

void PqL2Tables(const uint16_t* transposed_half, const float* norms, size_t m, size_t dsub,
                const float* query, float* out) {
  Get().l2_tables(transposed_half, norms, m, dsub, query, out);
}

void PqL2ByteTables(const uint16_t* transposed_half, const float* norms, size_t m, size_t dsub,
                    const float* query, float* tables, PqByteTables* out) {
  const Kernels& k = Get();
  if (k.l2_byte_tables != nullptr) {
    return k.l2_byte_tables(transposed_half, norms, m, dsub, query, tables, out);
  }
  k.l2_tables(transposed_half, norms, m, dsub, query, tables);
  k.quantize(tables, m, out);
}

void NearestOf256(const float* transposed, const float* norms, size_t dsub, const float* x,
                  size_t stride, size_t n, int64_t* labels, float* distances) {
  Get().nearest(transposed, norms, dsub, x, stride, n, labels, distances);
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
