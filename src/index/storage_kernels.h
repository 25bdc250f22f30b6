// Kernels of the disk index's hot loop: encoding a vector in its on-disk
// storage type (fp32, fp16, int8), the inner product of a float query with a
// stored vector, and the batch PQ scoring of a node's neighbours.
//
// Dispatch as in inner_product.h: the AVX-512 or AVX2+F16C versions are picked
// once, at first use, with __builtin_cpu_supports; the portable versions run
// everywhere else. Pure functions, safe to call concurrently.
#ifndef PIXSEEK_INDEX_STORAGE_KERNELS_H_
#define PIXSEEK_INDEX_STORAGE_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

// How a node's full vector is stored on disk.
//   kFloat32: dim little-endian f32.
//   kFloat16: dim IEEE binary16 (round to nearest even).
//   kInt8:    f32 scale, then dim i8; value[i] = scale * q[i], with
//             scale = max |x| / 127 (0 for the zero vector).
enum class VectorStorage : uint32_t { kFloat32 = 0, kFloat16 = 1, kInt8 = 2 };

std::string_view StorageName(VectorStorage storage);  // "fp32", "fp16", "int8"
Result<VectorStorage> ParseStorage(std::string_view name);
// Bytes one stored vector of `dim` floats takes.
size_t StoredVectorBytes(VectorStorage storage, size_t dim);

// Writes x (dim floats) in `storage` encoding to out (StoredVectorBytes bytes).
void EncodeStored(VectorStorage storage, const float* x, size_t dim, uint8_t* out);
// Decodes a stored vector into x (dim floats).
void DecodeStored(VectorStorage storage, const uint8_t* in, size_t dim, float* x);
// Inner product of q (dim floats) with the stored vector, without decoding it
// into memory first.
float InnerProductStored(VectorStorage storage, const float* q, const uint8_t* in, size_t dim);

// One query's PQ tables in bytes, for ranking candidates by their codes:
//   score(code) = bias + scale * sum_j lut[j * 256 + code[j]]
// approximates sum_j tables[j * 256 + code[j]] of the float tables it came
// from, each entry off by at most scale / 2. A byte per entry keeps the m *
// 256 entries in a quarter of the float tables' space, so that they stay in
// the L2 cache beside the codes being scored, and the sums are exact
// integers.
struct PqByteTables {
  size_t m = 0;
  float bias = 0;
  float scale = 1;
  std::vector<uint8_t> lut;  // m * 256 entries: sub-space j, centroid c at j * 256 + c
};

// Fills out->lut and bias, scale from float tables (m * 256 floats, e.g.
// ProductQuantizer::ComputeL2Tables): every sub-space is shifted by its
// minimum and all share one step, the largest sub-space range / 255, so that
// sums stay comparable across sub-spaces.
void QuantizePqTables(const float* tables, size_t m, PqByteTables* out);

// PQ scores of `count` codes: out[i] = score of code_i = codes + nodes[i] *
// tables.m (tables.m bytes each), as defined above.
void PqScoreBatch(const PqByteTables& tables, const uint8_t* codes, const uint32_t* nodes,
                  size_t count, float* out);

// The L2 tables of ProductQuantizer::ComputeL2Tables from its transposed
// binary16 codebook (sub-space j, coordinate t, centroid c at (j * dsub + t)
// * 256 + c) and centroid norms (j * 256 + c): out[j * 256 + c] = 2 <q_j, c>
// - |c|^2.
void PqL2Tables(const uint16_t* transposed_half, const float* norms, size_t m, size_t dsub,
                const float* query, float* out);

// The nearest of 256 centroids to each of n rows, by squared L2 distance:
// the assignment step of PQ training and encoding. Row i is x + i * stride
// (dsub floats); the centroids are transposed (coordinate t, centroid c at
// t * 256 + c) with norms[c] = |c|^2. labels[i] is the nearest centroid (the
// smallest index among equals) and distances[i] (when not null) its squared
// distance, clamped at 0.
void NearestOf256(const float* transposed, const float* norms, size_t dsub, const float* x,
                  size_t stride, size_t n, int64_t* labels, float* distances);

// QuantizePqTables(PqL2Tables(query)) in one step, the same bytes: each
// sub-space's minimum and range are taken while its sums are in registers,
// which saves QuantizePqTables' first pass over the float tables. `tables`
// is scratch for m * 256 floats (it ends up holding PqL2Tables' output).
void PqL2ByteTables(const uint16_t* transposed_half, const float* norms, size_t m, size_t dsub,
                    const float* query, float* tables, PqByteTables* out);

// IEEE binary16 conversions (round to nearest even), as the fp16 storage
// uses.
uint16_t FloatToHalf(float x);
float HalfToFloat(uint16_t bits);

// Starts loading the codes of nodes[0, count) into the caches (m bytes each,
// as PqScoreBatch reads them) without waiting for them.
void PqPrefetch(const uint8_t* codes, size_t m, const uint32_t* nodes, size_t count);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_STORAGE_KERNELS_H_
