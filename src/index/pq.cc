#include "index/pq.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/ProductQuantizer.h>
#include <omp.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "core/omp_threads.h"
#include "index/storage_kernels.h"

namespace pixseek {

// Serialised layout, all little-endian:
//   offset  size              field
//   0       4                 magic "PXPQ"
//   4       4   u32           format version (1)
//   8       4   u32           dim
//   12      4   u32           m (sub-quantizers)
//   16      4   u32           bits per sub-quantizer (8)
//   20      dim * 256 * 4     centroids, f32: sub-space j, centroid c,
//                             coordinate t at ((j * 256 + c) * (dim / m) + t)
//   end-4   4   u32           crc32 (zlib) of every byte before it
namespace {

static_assert(std::endian::native == std::endian::little,
              "the PQ format is written with memcpy on a little-endian host");

constexpr size_t kCentroids = ProductQuantizer::kCentroids;
constexpr char kMagic[4] = {'P', 'X', 'P', 'Q'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 20;
constexpr size_t kTrailerSize = 4;
// Guards the size arithmetic on untrusted headers; far above any embedding.
constexpr uint32_t kMaxDim = 1u << 16;

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  uint8_t b[4];
  std::memcpy(b, &v, 4);
  out->insert(out->end(), b, b + 4);
}

uint32_t GetU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// zlib's crc32 takes 32-bit lengths; feed it in chunks.
uint32_t Crc32(const uint8_t* data, size_t n) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = ::crc32(crc, data, chunk);
    data += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

bool AllFinite(const float* x, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

Status CheckShape(int dim, int m) {
  if (dim <= 0 || m <= 0) {
    return Status::InvalidArgument("product quantizer needs dim > 0 and m > 0, got dim " +
                                   std::to_string(dim) + ", m " + std::to_string(m));
  }
  if (static_cast<uint32_t>(dim) > kMaxDim) {
    return Status::InvalidArgument("product quantizer dim " + std::to_string(dim) + " exceeds " +
                                   std::to_string(kMaxDim));
  }
  if (dim % m != 0) {
    return Status::InvalidArgument("product quantizer m " + std::to_string(m) +
                                   " does not divide dim " + std::to_string(dim));
  }
  return Status::Ok();
}

// pixseek runs FAISS single-threaded on slices of the sub-spaces, one slice
// per std::thread (core/omp_threads.h says why).

// Runs fn(slice) for slice in [0, slices) on one thread each; the first
// exception (if any) is rethrown.
template <typename Fn>
void ForEachSlice(int slices, Fn&& fn) {
  std::vector<std::exception_ptr> errors(slices);
  std::vector<std::thread> pool;
  for (int t = 0; t < slices; ++t) {
    pool.emplace_back([&, t] {
      try {
        ScopedOmpThreads one(1);
        fn(t);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

int SliceCount(int m) {
  return std::max(1, std::min<int>(m, static_cast<int>(std::thread::hardware_concurrency())));
}

// Sub-space j of a FAISS centroid table (centroid c, coordinate t at (j * 256
// + c) * dsub + t), transposed for NearestOf256 (t * 256 + c), with the
// centroids' squared norms.
void TransposeSubspace(const float* centroids, size_t j, size_t dsub, float* transposed,
                       float* norms) {
  for (size_t c = 0; c < kCentroids; ++c) {
    const float* centroid = centroids + (j * kCentroids + c) * dsub;
    float norm = 0;
    for (size_t t = 0; t < dsub; ++t) {
      transposed[t * kCentroids + c] = centroid[t];
      norm += centroid[t] * centroid[t];
    }
    norms[c] = norm;
  }
}

// The assignment step of FAISS's k-means for one sub-space: FAISS's
// Clustering keeps the iterations (initialisation, centroid updates, empty
// cluster splits) and asks this index for each training row's nearest
// centroid. FAISS's IndexFlatL2 answers through BLAS, which for 4-float
// sub-spaces spends its time on a 4-deep matrix product and the n x 256
// distance matrix; NearestOf256 keeps one row's 256 distances in registers
// (10x faster on 2048-d data split in 512 sub-spaces).
class SubspaceAssigner final : public faiss::Index {
 public:
  explicit SubspaceAssigner(size_t dsub)
      : faiss::Index(static_cast<idx_t>(dsub)), transposed_(dsub * kCentroids), norms_(kCentroids) {}

  void add(idx_t n, const float* x) override {
    if (ntotal != 0 || n != static_cast<idx_t>(kCentroids)) {
      throw std::invalid_argument("sub-space assigner holds exactly 256 centroids");
    }
    TransposeSubspace(x, 0, static_cast<size_t>(d), transposed_.data(), norms_.data());
    ntotal = n;
  }

  void search(idx_t n, const float* x, idx_t k, float* distances, idx_t* labels,
              const faiss::SearchParameters* /*params*/) const override {
    if (k != 1 || ntotal != static_cast<idx_t>(kCentroids)) {
      throw std::invalid_argument("sub-space assigner answers k = 1 over 256 centroids");
    }
    NearestOf256(transposed_.data(), norms_.data(), static_cast<size_t>(d), x,
                 static_cast<size_t>(d), static_cast<size_t>(n), labels, distances);
  }

  void reset() override { ntotal = 0; }

 private:
  std::vector<float> transposed_;
  std::vector<float> norms_;
};

}  // namespace

struct ProductQuantizer::Impl {
  Impl(int dim, int m) : pq(dim, m, kBits) {}
  // The copy of the centroids that ComputeL2Tables reads once per search:
  // transposed (sub-space j, coordinate t, centroid c at (j * dsub + t) *
  // 256 + c, so that the loop over c vectorises) and in binary16, half the
  // bytes to stream. Their rounding (about 1e-3 relative) is far below the
  // byte step the disk search quantizes the tables to.
  void Transpose() {
    const size_t dsub = pq.dsub;
    transposed_half.resize(pq.centroids.size());
    norms.assign(pq.M * kCentroids, 0.0f);
    for (size_t j = 0; j < pq.M; ++j) {
      for (size_t c = 0; c < kCentroids; ++c) {
        for (size_t t = 0; t < dsub; ++t) {
          const uint16_t h = FloatToHalf(pq.centroids[(j * kCentroids + c) * dsub + t]);
          transposed_half[(j * dsub + t) * kCentroids + c] = h;
          const float x = HalfToFloat(h);
          norms[j * kCentroids + c] += x * x;
        }
      }
    }
  }
  faiss::ProductQuantizer pq;
  std::vector<uint16_t> transposed_half;
  std::vector<float> norms;  // |centroid_{j,c}|^2 at j * 256 + c, of the rounded centroids
};

ProductQuantizer::ProductQuantizer(int dim, int m, std::unique_ptr<Impl> impl)
    : dim_(dim), m_(m), impl_(std::move(impl)) {}
ProductQuantizer::ProductQuantizer(ProductQuantizer&&) noexcept = default;
ProductQuantizer& ProductQuantizer::operator=(ProductQuantizer&&) noexcept = default;
ProductQuantizer::~ProductQuantizer() = default;

Result<ProductQuantizer> ProductQuantizer::Train(int dim, int m, const float* vectors, size_t n,
                                                 uint32_t seed) {
  PIXSEEK_RETURN_IF_ERROR(CheckShape(dim, m));
  if (n < static_cast<size_t>(kCentroids)) {
    return Status::InvalidArgument("product quantizer training needs at least " +
                                   std::to_string(kCentroids) +
                                   " vectors (one per centroid), got " + std::to_string(n));
  }
  if (vectors == nullptr) return Status::InvalidArgument("product quantizer: null training data");
  if (!AllFinite(vectors, n * static_cast<size_t>(dim))) {
    return Status::InvalidArgument("product quantizer training data holds a non-finite value");
  }
  try {
    auto impl = std::make_unique<Impl>(dim, m);
    faiss::ProductQuantizer& pq = impl->pq;
    pq.verbose = false;
    pq.cp.verbose = false;
    pq.cp.seed = static_cast<int>(seed);
    // FAISS prints a warning below 39 points per centroid; Train's contract
    // already documents that, so keep stderr quiet for small samples.
    pq.cp.min_points_per_centroid = 1;
    // k-means costs n * 256 * dim per iteration whatever m is; 15 iterations
    // reach within a fraction of a percent of FAISS's default 25's error.
    pq.cp.niter = 15;
    // Each slice of sub-spaces is an independent PQ over its columns; their
    // centroid tables concatenate into this one's (sub-space major).
    const size_t dsub = static_cast<size_t>(dim / m);
    const int slices = SliceCount(m);
    std::vector<std::vector<float>> slice_centroids(slices);
    ForEachSlice(slices, [&](int t) {
      const size_t j0 = size_t(m) * t / slices, j1 = size_t(m) * (t + 1) / slices;
      const size_t cols = (j1 - j0) * dsub;
      std::vector<float> x(n * cols);
      for (size_t i = 0; i < n; ++i) {
        std::memcpy(x.data() + i * cols, vectors + i * size_t(dim) + j0 * dsub, cols * sizeof(float));
      }
      faiss::ProductQuantizer part(cols, j1 - j0, kBits);
      part.verbose = false;
      part.cp = pq.cp;
      SubspaceAssigner assigner(dsub);
      part.assign_index = &assigner;
      part.train(n, x.data());
      slice_centroids[t] = std::move(part.centroids);
    });
    pq.centroids.clear();
    for (auto& c : slice_centroids) pq.centroids.insert(pq.centroids.end(), c.begin(), c.end());
    impl->Transpose();
    if (!AllFinite(pq.centroids.data(), pq.centroids.size())) {
      return Status::Internal("product quantizer training produced non-finite centroids");
    }
    return ProductQuantizer(dim, m, std::move(impl));
  } catch (const faiss::FaissException& e) {
    return Status::Internal(std::string("FAISS product quantizer training failed: ") + e.what());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("product quantizer training failed: ") + e.what());
  }
}

Status ProductQuantizer::Encode(const float* x, size_t n, uint8_t* codes) const {
  if (n == 0) return Status::Ok();
  if (x == nullptr || codes == nullptr) {
    return Status::InvalidArgument("product quantizer Encode: null pointer");
  }
  if (!AllFinite(x, n * static_cast<size_t>(dim_))) {
    return Status::InvalidArgument("product quantizer Encode: input holds a non-finite value");
  }
  // A row's code is, per sub-space, its nearest centroid (NearestOf256).
  // Rows go in blocks that stay in the L2 cache while every sub-space's
  // centroids pass over them; rows split over threads.
  try {
    const size_t dsub = static_cast<size_t>(dim_ / m_);
    const float* centroids = impl_->pq.centroids.data();
    const int slices = static_cast<int>(std::min<size_t>(n, size_t(SliceCount(m_))));
    ForEachSlice(slices, [&](int s) {
      constexpr size_t kBlock = 64;
      const size_t i0 = n * s / slices, i1 = n * (s + 1) / slices;
      std::vector<float> transposed(dsub * kCentroids), norms(kCentroids);
      std::vector<int64_t> labels(kBlock);
      for (size_t b0 = i0; b0 < i1; b0 += kBlock) {
        const size_t rows = std::min(kBlock, i1 - b0);
        for (size_t j = 0; j < size_t(m_); ++j) {
          TransposeSubspace(centroids, j, dsub, transposed.data(), norms.data());
          NearestOf256(transposed.data(), norms.data(), dsub, x + b0 * size_t(dim_) + j * dsub,
                       size_t(dim_), rows, labels.data(), nullptr);
          for (size_t r = 0; r < rows; ++r) {
            codes[(b0 + r) * code_size() + j] = static_cast<uint8_t>(labels[r]);
          }
        }
      }
    });
  } catch (const std::exception& e) {
    return Status::Internal(std::string("product quantizer encode failed: ") + e.what());
  }
  return Status::Ok();
}

void ProductQuantizer::Decode(const uint8_t* codes, size_t n, float* x) const {
  // Plain table look-ups (what faiss's decode does), kept here so that no
  // FAISS exception path is involved.
  const size_t dsub = static_cast<size_t>(dim_ / m_);
  const float* centroids = impl_->pq.centroids.data();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * code_size();
    float* out = x + i * static_cast<size_t>(dim_);
    for (int j = 0; j < m_; ++j) {
      const float* c = centroids + (static_cast<size_t>(j) * kCentroids + code[j]) * dsub;
      std::memcpy(out + j * dsub, c, dsub * sizeof(float));
    }
  }
}

uint64_t ProductQuantizer::ram_bytes() const {
  return impl_->pq.centroids.size() * sizeof(float) + impl_->transposed_half.size() * 2 +
         impl_->norms.size() * sizeof(float);
}

void ProductQuantizer::ComputeTables(const float* query, float* tables) const {
  const size_t dsub = static_cast<size_t>(dim_ / m_);
  const float* centroids = impl_->pq.centroids.data();
  for (size_t j = 0; j < size_t(m_); ++j) {
    const float* q = query + j * dsub;
    for (size_t c = 0; c < kCentroids; ++c) {
      const float* x = centroids + (j * kCentroids + c) * dsub;
      float ip = 0;
      for (size_t t = 0; t < dsub; ++t) ip += q[t] * x[t];
      tables[j * kCentroids + c] = ip;
    }
  }
}

void ProductQuantizer::ComputeL2Tables(const float* query, float* tables) const {
  // This runs once per disk search and reads the whole codebook: a SIMD
  // kernel (storage_kernels.h) keeps each sub-space's 256 sums in registers.
  PqL2Tables(impl_->transposed_half.data(), impl_->norms.data(), static_cast<size_t>(m_),
             static_cast<size_t>(dim_ / m_), query, tables);
}

void ProductQuantizer::ComputeL2ByteTables(const float* query, float* scratch,
                                           PqByteTables* out) const {
  PqL2ByteTables(impl_->transposed_half.data(), impl_->norms.data(), static_cast<size_t>(m_),
                 static_cast<size_t>(dim_ / m_), query, scratch, out);
}

Status ProductQuantizer::Save(std::vector<uint8_t>* out) const {
  const size_t start = out->size();
  out->insert(out->end(), kMagic, kMagic + 4);
  PutU32(out, kVersion);
  PutU32(out, static_cast<uint32_t>(dim_));
  PutU32(out, static_cast<uint32_t>(m_));
  PutU32(out, kBits);
  const std::vector<float>& centroids = impl_->pq.centroids;
  const auto* bytes = reinterpret_cast<const uint8_t*>(centroids.data());
  out->insert(out->end(), bytes, bytes + centroids.size() * sizeof(float));
  PutU32(out, Crc32(out->data() + start, out->size() - start));
  return Status::Ok();
}

Result<ProductQuantizer> ProductQuantizer::Load(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderSize + kTrailerSize) {
    return Status::DataLoss(
        "product quantizer: " + std::to_string(bytes.size()) + " bytes, shorter than the " +
        std::to_string(kHeaderSize + kTrailerSize) + "-byte header and trailer");
  }
  const uint8_t* p = bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0) return Status::DataLoss("product quantizer: bad magic");
  const uint32_t version = GetU32(p + 4);
  if (version != kVersion) {
    return Status::DataLoss("product quantizer: unsupported format version " +
                            std::to_string(version));
  }
  const uint32_t dim = GetU32(p + 8);
  const uint32_t m = GetU32(p + 12);
  const uint32_t bits = GetU32(p + 16);
  if (dim == 0 || dim > kMaxDim || m == 0 || dim % m != 0 || bits != kBits) {
    return Status::DataLoss("product quantizer: bad header (dim " + std::to_string(dim) + ", m " +
                            std::to_string(m) + ", bits " + std::to_string(bits) + ")");
  }
  const size_t centroid_bytes = static_cast<size_t>(dim) * kCentroids * sizeof(float);
  const size_t expected = kHeaderSize + centroid_bytes + kTrailerSize;
  if (bytes.size() != expected) {
    return Status::DataLoss("product quantizer: " + std::to_string(bytes.size()) +
                            " bytes, header says " + std::to_string(expected));
  }
  const uint32_t stored_crc = GetU32(p + expected - kTrailerSize);
  if (Crc32(p, expected - kTrailerSize) != stored_crc) {
    return Status::DataLoss("product quantizer: checksum mismatch");
  }
  try {
    auto impl = std::make_unique<Impl>(static_cast<int>(dim), static_cast<int>(m));
    std::vector<float>& centroids = impl->pq.centroids;
    if (centroids.size() * sizeof(float) != centroid_bytes) {
      return Status::Internal("product quantizer: unexpected FAISS centroid table size");
    }
    std::memcpy(centroids.data(), p + kHeaderSize, centroid_bytes);
    if (!AllFinite(centroids.data(), centroids.size())) {
      return Status::DataLoss("product quantizer: non-finite centroid");
    }
    impl->Transpose();
    return ProductQuantizer(static_cast<int>(dim), static_cast<int>(m), std::move(impl));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("product quantizer load failed: ") + e.what());
  }
}

Result<std::vector<float>> TrainKMeans(int dim, size_t k, const float* vectors, size_t n,
                                       uint32_t seed) {
  if (dim < 1 || k < 1 || n < k || vectors == nullptr) {
    return Status::InvalidArgument("k-means: need dim >= 1, k >= 1 and at least k vectors (k=" +
                                   std::to_string(k) + ", n=" + std::to_string(n) + ")");
  }
  try {
    faiss::ClusteringParameters cp;
    cp.seed = static_cast<int>(seed);
    cp.niter = 20;
    cp.max_points_per_centroid = 1 << 30;  // the caller already sampled
    faiss::Clustering clustering(dim, static_cast<int>(k), cp);
    faiss::IndexFlatL2 index(dim);
    clustering.train(static_cast<faiss::Index::idx_t>(n), vectors, index);
    return std::move(clustering.centroids);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("k-means (faiss): ") + e.what());
  }
}

}  // namespace pixseek
