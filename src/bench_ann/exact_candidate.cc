// The "exact" candidate: pixseek's flat index, the reference the approximate
// indexes are measured against.
#include <system_error>

#include "bench_ann/candidates.h"
#include "pixseek/vector_index.h"

namespace pixseek {
namespace {

// Thread-safety: as AnnCandidate; SearchAll's query threads share the flat
// index, whose Search is safe for concurrent use.
class ExactCandidate final : public AnnCandidate {
 public:
  std::string name() const override { return "exact"; }
  nlohmann::json params() const override { return {{"kind", "flat"}}; }
  bool uses_search_list() const override { return false; }

  Status Build(const AnnData& data, const std::filesystem::path& workdir) override {
    // A file left by an earlier run would already hold these ids.
    const std::filesystem::path file = workdir / "vectors.flat";
    std::error_code ec;
    std::filesystem::remove(file, ec);
    FlatIndexOptions options;
    options.num_threads = 1;  // one query per thread, as for the other candidates
    PIXSEEK_ASSIGN_OR_RETURN(index_, OpenFlatIndex(file, data.dim, options));
    std::vector<int64_t> row_ids(data.n);
    for (size_t i = 0; i < data.n; ++i) row_ids[i] = static_cast<int64_t>(i);
    PIXSEEK_RETURN_IF_ERROR(index_->Add(data.n, row_ids.data(), data.base));
    n_ = data.n;
    dim_ = static_cast<size_t>(data.dim);
    return Status::Ok();
  }

  Status SearchAll(const float* queries, size_t nq, size_t k, int L, int threads,
                   std::vector<int64_t>* ids, std::vector<AnnQueryStats>* stats) override {
    if (index_ == nullptr) return Status::FailedPrecondition("exact: SearchAll before Build");
    ids->assign(nq * k, -1);
    return RunQueriesOnThreads(
        nq, threads,
        [&](size_t q, AnnQueryStats* st) -> Status {
          std::vector<std::vector<SearchHit>> hits;
          PIXSEEK_RETURN_IF_ERROR(index_->Search(1, queries + q * dim_, k, &hits));
          for (size_t j = 0; j < hits[0].size() && j < k; ++j) (*ids)[q * k + j] = hits[0][j].id;
          st->node_reads = static_cast<double>(n_);  // every stored vector is scored
          return Status::Ok();
        },
        stats);
  }

  // The vectors and their ids; the id-to-slot hash map is left out.
  uint64_t ram_bytes() const override { return n_ * (dim_ * sizeof(float) + sizeof(int64_t)); }
  nlohmann::json extra() const override { return {{"storage", "ram"}}; }

 private:
  std::unique_ptr<VectorIndex> index_;
  size_t n_ = 0;
  size_t dim_ = 0;
};

}  // namespace

std::unique_ptr<AnnCandidate> MakeExactCandidate(const AnnBenchOptions&) {
  return std::make_unique<ExactCandidate>();
}

}  // namespace pixseek
