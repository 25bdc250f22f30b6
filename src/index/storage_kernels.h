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

// PQ scores of `count` codes: out[i] = sum_j tables[j * 256 + code_i[j]] where
// code_i = codes + nodes[i] * m (m bytes each). tables holds m * 256 floats.
void PqScoreBatch(const float* tables, size_t m, const uint8_t* codes, const uint32_t* nodes,
                  size_t count, float* out);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_STORAGE_KERNELS_H_
