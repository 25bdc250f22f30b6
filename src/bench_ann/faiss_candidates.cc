// The FAISS peers: "faiss-hnsw" (IndexHNSWFlat) and "faiss-ivfpq"
// (IndexIVFPQ), both on the inner product.
//
// FAISS parallelises with OpenMP. Builds use options.threads OpenMP threads;
// each query thread sets its own OpenMP thread count to 1 so that a
// one-query search does not start (and busy-wait on) a team of its own.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFPQ.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <type_traits>

#include "bench_ann/candidates.h"
#include "core/omp_threads.h"

namespace pixseek {
namespace {

static_assert(std::is_same_v<faiss::Index::idx_t, int64_t>,
              "FAISS labels are written straight into the id rows");

constexpr int kHnswM = 32;
constexpr int kHnswEfConstruction = 200;
// Code bytes per vector for IVFPQ (8-bit codes), when the dimension allows.
constexpr int kIvfPqMaxCodeBytes = 128;
// Vectors per IndexIVFPQ::add call (see Build).
constexpr size_t kIvfPqAddBatch = 4096;

// Runs `body`, turning a FAISS exception into Internal.
template <typename F>
Status CatchFaiss(const char* what, F&& body) {
  try {
    body();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Internal(std::string(what) + ": " + e.what());
  }
}

// The shared search loop: one index->search(1, ...) per query with the given
// parameters.
Status SearchEach(const faiss::Index& index, const faiss::SearchParameters& params,
                  const float* queries, size_t nq, size_t k, int threads, std::vector<int64_t>* ids,
                  std::vector<AnnQueryStats>* stats) {
  ids->assign(nq * k, -1);
  const size_t dim = static_cast<size_t>(index.d);
  Status s = RunQueriesOnThreads(
      nq, threads,
      [&](size_t q, AnnQueryStats* st) {
        omp_set_num_threads(1);
        std::vector<float> distances(k);
        // FAISS counts visits in process-wide, unsynchronised stats; not
        // per query.
        st->node_reads = std::numeric_limits<double>::quiet_NaN();
        return CatchFaiss("faiss search", [&] {
          index.search(1, queries + q * dim, static_cast<faiss::Index::idx_t>(k), distances.data(),
                       ids->data() + q * k, &params);
        });
      },
      stats);
  return s;
}

// Thread-safety: as AnnCandidate; FAISS search is const and safe to call
// concurrently, with efSearch passed per call.
class FaissHnswCandidate final : public AnnCandidate {
 public:
  explicit FaissHnswCandidate(int build_threads) : build_threads_(build_threads) {}

  std::string name() const override { return "faiss-hnsw"; }
  nlohmann::json params() const override {
    return {{"M", kHnswM}, {"efConstruction", kHnswEfConstruction}};
  }

  Status Build(const AnnData& data, const std::filesystem::path&) override {
    ScopedOmpThreads omp(build_threads_);
    return CatchFaiss("faiss-hnsw build", [&] {
      index_ =
          std::make_unique<faiss::IndexHNSWFlat>(data.dim, kHnswM, faiss::METRIC_INNER_PRODUCT);
      index_->hnsw.efConstruction = kHnswEfConstruction;
      index_->add(static_cast<faiss::Index::idx_t>(data.n), data.base);
    });
  }

  Status SearchAll(const float* queries, size_t nq, size_t k, int L, int threads,
                   std::vector<int64_t>* ids, std::vector<AnnQueryStats>* stats) override {
    if (index_ == nullptr) return Status::FailedPrecondition("faiss-hnsw: SearchAll before Build");
    faiss::SearchParametersHNSW params;
    params.efSearch = L;
    // Also the index's own efSearch: FAISS 1.7.3 did not seem to honour the
    // per-call value above its default of 16 (recall and QPS stopped changing
    // from L = 20 on at 100k). Set before the search threads start.
    index_->hnsw.efSearch = L;
    return SearchEach(*index_, params, queries, nq, k, threads, ids, stats);
  }

  // The stored vectors plus the graph's neighbour table, offsets and levels.
  uint64_t ram_bytes() const override {
    if (index_ == nullptr) return 0;
    const faiss::HNSW& g = index_->hnsw;
    return static_cast<uint64_t>(index_->ntotal) * index_->d * sizeof(float) +
           g.neighbors.size() * sizeof(g.neighbors[0]) + g.offsets.size() * sizeof(g.offsets[0]) +
           g.levels.size() * sizeof(g.levels[0]);
  }
  nlohmann::json extra() const override { return {{"storage", "ram"}}; }

 private:
  const int build_threads_;
  std::unique_ptr<faiss::IndexHNSWFlat> index_;
};

// Thread-safety: as FaissHnswCandidate, with nprobe passed per call.
class FaissIvfPqCandidate final : public AnnCandidate {
 public:
  explicit FaissIvfPqCandidate(int build_threads) : build_threads_(build_threads) {}

  std::string name() const override { return "faiss-ivfpq"; }
  nlohmann::json params() const override {
    return {{"nlist", nlist_}, {"m", m_}, {"nbits", nbits_}};
  }

  Status Build(const AnnData& data, const std::filesystem::path&) override {
    nlist_ = std::clamp<size_t>(
        static_cast<size_t>(std::lround(4.0 * std::sqrt(static_cast<double>(data.n)))), 1, data.n);
    m_ = 1;
    for (int m = std::min(data.dim, kIvfPqMaxCodeBytes); m >= 1; --m) {
      if (data.dim % m == 0) {
        m_ = m;
        break;
      }
    }
    // k-means needs at least as many points as centroids (2^nbits); only
    // tiny data sets get fewer than 8 bits.
    nbits_ = 8;
    while (nbits_ > 1 && (size_t{1} << nbits_) > data.n) --nbits_;
    ScopedOmpThreads omp(build_threads_);
    return CatchFaiss("faiss-ivfpq build", [&] {
      index_.reset();
      quantizer_ = std::make_unique<faiss::IndexFlatIP>(data.dim);
      index_ = std::make_unique<faiss::IndexIVFPQ>(quantizer_.get(), data.dim, nlist_, m_, nbits_,
                                                   faiss::METRIC_INNER_PRODUCT);
      // Unit-length centroids, so the inner-product assignment does not
      // favour long ones.
      index_->cp.spherical = true;
      index_->train(static_cast<faiss::Index::idx_t>(data.n), data.base);
      // Encoding with 16-d or wider sub-spaces builds an n x 256 x m float
      // table (128 KiB a vector at m = 128); batches bound it.
      for (size_t i = 0; i < data.n; i += kIvfPqAddBatch) {
        const size_t batch = std::min(kIvfPqAddBatch, data.n - i);
        index_->add(static_cast<faiss::Index::idx_t>(batch), data.base + i * data.dim);
      }
    });
  }

  Status SearchAll(const float* queries, size_t nq, size_t k, int L, int threads,
                   std::vector<int64_t>* ids, std::vector<AnnQueryStats>* stats) override {
    if (index_ == nullptr) return Status::FailedPrecondition("faiss-ivfpq: SearchAll before Build");
    faiss::SearchParametersIVF params;
    params.nprobe = std::min<size_t>(static_cast<size_t>(L), nlist_);
    return SearchEach(*index_, params, queries, nq, k, threads, ids, stats);
  }

  // Coarse centroids, PQ codebooks, the inverted lists' codes and ids, and
  // the precomputed tables (empty for the inner product).
  uint64_t ram_bytes() const override {
    if (index_ == nullptr) return 0;
    uint64_t bytes = static_cast<uint64_t>(nlist_) * index_->d * sizeof(float) +
                     index_->pq.centroids.size() * sizeof(float) +
                     index_->precomputed_table.size() * sizeof(float);
    for (size_t l = 0; l < index_->nlist; ++l) {
      bytes += index_->invlists->list_size(l) * (index_->code_size + sizeof(faiss::Index::idx_t));
    }
    return bytes;
  }
  nlohmann::json extra() const override { return {{"storage", "ram"}}; }

 private:
  const int build_threads_;
  size_t nlist_ = 0;
  int m_ = 0;
  int nbits_ = 8;
  // Declared before index_, which borrows it.
  std::unique_ptr<faiss::IndexFlatIP> quantizer_;
  std::unique_ptr<faiss::IndexIVFPQ> index_;
};

}  // namespace

std::unique_ptr<AnnCandidate> MakeFaissHnswCandidate(const AnnBenchOptions& options) {
  return std::make_unique<FaissHnswCandidate>(options.threads);
}

std::unique_ptr<AnnCandidate> MakeFaissIvfPqCandidate(const AnnBenchOptions& options) {
  return std::make_unique<FaissIvfPqCandidate>(options.threads);
}

}  // namespace pixseek
