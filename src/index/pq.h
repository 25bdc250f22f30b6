// Product quantization (Jegou et al., 2011) of float vectors into compact
// codes, for the disk graph index: the PQ code of every vector stays in RAM
// and the graph search ranks candidates by approximate scores computed from
// the codes, reading full vectors from disk only to re-rank.
//
// Training (k-means per sub-space) and encoding are done by FAISS
// (faiss::ProductQuantizer); FAISS stays an implementation detail of pq.cc.
//
// Every quantizer uses 8-bit sub-quantizers: each vector becomes m bytes, one
// centroid id in [0, 256) per sub-space of dim / m consecutive coordinates.
// m must divide dim (no padding: Train says InvalidArgument otherwise).
//
// Scores are inner products (higher is better), the measure pixseek uses on
// L2-normalised embeddings: ComputeTables(q) fills, for sub-space j and
// centroid c, tables[j * 256 + c] = <q_j, centroid_{j,c}>, and
// Score(tables, code) = sum_j tables[j * 256 + code[j]], which is the inner
// product of q with the decoded vector.
#ifndef PIXSEEK_INDEX_PQ_H_
#define PIXSEEK_INDEX_PQ_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "index/storage_kernels.h"
#include "pixseek/status.h"

namespace pixseek {

// A trained product quantizer.
//
// Thread-safety: immutable once built; every const method may be called
// concurrently from any number of threads. Move-only; owns its codebooks.
class ProductQuantizer {
 public:
  static constexpr int kBits = 8;
  static constexpr int kCentroids = 1 << kBits;  // per sub-space

  // Trains m sub-quantizers of 256 centroids each on n row-major vectors of
  // `dim` floats (k-means by FAISS, seeded with `seed`: the same input and
  // seed give the same codebooks). InvalidArgument when dim or m is not
  // positive, m does not divide dim, n < 256 (FAISS needs at least one
  // training vector per centroid; about 40 per centroid, n >= 10000, gives
  // good codebooks) or a value is not finite. Internal when FAISS fails.
  static Result<ProductQuantizer> Train(int dim, int m, const float* vectors, size_t n,
                                        uint32_t seed);

  // Rebuilds a quantizer from bytes written by Save. DataLoss when they are
  // truncated, overlong, carry another magic or version, or fail the checksum.
  static Result<ProductQuantizer> Load(std::span<const uint8_t> bytes);

  ProductQuantizer(ProductQuantizer&&) noexcept;
  ProductQuantizer& operator=(ProductQuantizer&&) noexcept;
  ~ProductQuantizer();

  int dim() const { return dim_; }
  // Sub-quantizers, which is also the bytes per code.
  int m() const { return m_; }
  size_t code_size() const { return static_cast<size_t>(m_); }
  // RAM the codebooks take (every copy the table kernels read).
  uint64_t ram_bytes() const;
  // Floats ComputeTables writes: m * 256.
  size_t table_size() const { return static_cast<size_t>(m_) * kCentroids; }

  // Writes the codes of n row-major vectors into codes (n * code_size()
  // bytes). Deterministic. InvalidArgument on a null pointer with n > 0 or a
  // non-finite value (codes are then unspecified); Internal if FAISS fails.
  Status Encode(const float* x, size_t n, uint8_t* codes) const;

  // Writes the n vectors the codes stand for (n * dim() floats) into x.
  // Every byte is a valid centroid id, so any input decodes.
  void Decode(const uint8_t* codes, size_t n, float* x) const;

  // Fills tables (table_size() floats) with the inner products of the query's
  // sub-vectors with every centroid; see the file comment.
  void ComputeTables(const float* query, float* tables) const;

  // Fills tables (table_size() floats) so that Score gives minus the squared
  // L2 distance from the query to the decoded vector, up to a constant:
  // tables[j * 256 + c] = 2 <q_j, centroid_{j,c}> - |centroid_{j,c}|^2.
  // For ranking near neighbours this is more faithful than the inner
  // product: its error shrinks with the query-to-vector distance, the inner
  // product's does not.
  void ComputeL2Tables(const float* query, float* tables) const;

  // QuantizePqTables(ComputeL2Tables(query)) in one step (PqL2ByteTables);
  // `scratch` holds table_size() floats.
  void ComputeL2ByteTables(const float* query, float* scratch, PqByteTables* out) const;

  // Approximate inner product of the query whose tables these are with the
  // vector whose code this is (code_size() bytes).
  float Score(const float* tables, const uint8_t* code) const {
    float sum = 0.0f;
    for (int j = 0; j < m_; ++j) sum += tables[j * kCentroids + code[j]];
    return sum;
  }

  // Appends the serialised quantizer to *out (layout in pq.cc). Never fails
  // today; a Status so that a future encoding can.
  Status Save(std::vector<uint8_t>* out) const;

 private:
  struct Impl;  // holds the faiss::ProductQuantizer
  ProductQuantizer(int dim, int m, std::unique_ptr<Impl> impl);

  int dim_ = 0;
  int m_ = 0;
  std::unique_ptr<Impl> impl_;
};

// k-means (FAISS, L2, seeded) of n row-major vectors into k centroids,
// returned row-major (k * dim floats). Used to partition a build that does
// not fit in RAM. InvalidArgument when n < k or k < 1; Internal when FAISS
// fails.
Result<std::vector<float>> TrainKMeans(int dim, size_t k, const float* vectors, size_t n,
                                       uint32_t seed);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_PQ_H_
