// The "hnswlib" peer: hnswlib's HierarchicalNSW over the inner-product space.
//
// Built with the project's compile flags (no -mavx2), so hnswlib's distance
// kernels are its SSE versions; pixseek's own kernels pick AVX2 at run time.
#include <hnswlib/hnswlib.h>

#include <atomic>
#include <exception>
#include <mutex>

#include "bench_ann/candidates.h"

namespace pixseek {
namespace {

constexpr size_t kM = 32;
constexpr size_t kEfConstruction = 200;

// Thread-safety: as AnnCandidate. hnswlib's addPoint and searchKnn are safe
// to call concurrently; setEf is called only between SearchAll passes.
class HnswlibCandidate final : public AnnCandidate {
 public:
  explicit HnswlibCandidate(int build_threads) : build_threads_(build_threads) {}

  std::string name() const override { return "hnswlib"; }
  nlohmann::json params() const override {
    return {{"M", kM}, {"efConstruction", kEfConstruction}};
  }

  Status Build(const AnnData& data, const std::filesystem::path&) override {
    dim_ = static_cast<size_t>(data.dim);
    try {
      space_ = std::make_unique<hnswlib::InnerProductSpace>(dim_);
      index_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(space_.get(), data.n, kM,
                                                                 kEfConstruction);
    } catch (const std::exception& e) {
      return Status::Internal(std::string("hnswlib: ") + e.what());
    }
    // Labels are row numbers; RunQueriesOnThreads turns a throw into Internal.
    std::vector<AnnQueryStats> unused;
    return RunQueriesOnThreads(
        data.n, build_threads_,
        [&](size_t i, AnnQueryStats*) {
          index_->addPoint(data.base + i * dim_, i);
          return Status::Ok();
        },
        &unused);
  }

  Status SearchAll(const float* queries, size_t nq, size_t k, int L, int threads,
                   std::vector<int64_t>* ids, std::vector<AnnQueryStats>* stats) override {
    if (index_ == nullptr) return Status::FailedPrecondition("hnswlib: SearchAll before Build");
    index_->setEf(static_cast<size_t>(L));
    ids->assign(nq * k, -1);
    const long hops_before = index_->metric_hops.load();
    Status s = RunQueriesOnThreads(
        nq, threads,
        [&](size_t q, AnnQueryStats*) {
          // A max-heap on distance (1 - inner product): the worst comes first.
          auto found = index_->searchKnn(queries + q * dim_, k);
          for (size_t j = found.size(); j > 0; --j) {
            (*ids)[q * k + j - 1] = static_cast<int64_t>(found.top().second);
            found.pop();
          }
          return Status::Ok();
        },
        stats);
    PIXSEEK_RETURN_IF_ERROR(s);
    // hnswlib counts the nodes whose neighbour lists a search read in one
    // shared counter, so each query is given the mean.
    const double hops =
        static_cast<double>(index_->metric_hops.load() - hops_before) / static_cast<double>(nq);
    for (auto& st : *stats) st.node_reads = hops;
    return Status::Ok();
  }

  // Level-0 blocks (links, vector, label), upper-level links, and the
  // per-element pointer, level and lock; the label hash map is left out.
  uint64_t ram_bytes() const override {
    if (index_ == nullptr) return 0;
    uint64_t bytes = static_cast<uint64_t>(index_->max_elements_) * index_->size_data_per_element_;
    for (size_t i = 0; i < index_->cur_element_count; ++i) {
      bytes += static_cast<uint64_t>(index_->element_levels_[i]) * index_->size_links_per_element_;
    }
    bytes += static_cast<uint64_t>(index_->max_elements_) *
             (sizeof(void*) + sizeof(int) + sizeof(std::mutex));
    return bytes;
  }
  nlohmann::json extra() const override { return {{"storage", "ram"}}; }

 private:
  const int build_threads_;
  size_t dim_ = 0;
  // Declared before index_, which keeps a pointer into it.
  std::unique_ptr<hnswlib::InnerProductSpace> space_;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> index_;
};

}  // namespace

std::unique_ptr<AnnCandidate> MakeHnswlibCandidate(const AnnBenchOptions& options) {
  return std::make_unique<HnswlibCandidate>(options.threads);
}

}  // namespace pixseek
