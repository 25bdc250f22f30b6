// "disk": pixseek's disk graph (src/index/disk_graph.h) as a benchmark
// candidate. Built from the .fbin itself (streamed, so the build honours its
// RAM budget), searched with O_DIRECT reads through io_uring, several
// queries in flight per thread.
#include <cmath>
#include <filesystem>
#include <numeric>

#include "bench_ann/candidates.h"
#include "core/phase_progress.h"
#include "index/disk_graph.h"

namespace pixseek {
namespace {

class DiskCandidate final : public AnnCandidate {
 public:
  explicit DiskCandidate(const AnnBenchOptions& o) : options_(o), disk_(o.disk) {}

  std::string name() const override { return "disk"; }

  nlohmann::json params() const override {
    return {{"R", disk_.max_degree},        {"L_build", disk_.build_list},
            {"alpha", disk_.alpha},         {"passes", disk_.passes},
            {"pq_bytes", pq_bytes_},        {"W", disk_.beam_width},
            {"queries_in_flight", disk_.queries_in_flight}};
  }

  Status Build(const AnnData& data, const std::filesystem::path& workdir) override {
    raw_bytes_ = uint64_t(data.n) * data.dim * 4;
    budget_ = options_.ram_budget > 0 ? options_.ram_budget : raw_bytes_ / 10;
    DiskBuildParams p;
    p.graph.max_degree = disk_.max_degree;
    p.graph.build_list = disk_.build_list;
    p.graph.alpha = disk_.alpha;
    p.graph.passes = disk_.passes;
    p.graph.num_threads = options_.threads;
    PIXSEEK_ASSIGN_OR_RETURN(p.storage, ParseStorage(disk_.storage));
    p.pq_bytes = disk_.pq_bytes;
    p.ram_budget = budget_;
    p.build_ram_budget = disk_.build_ram_budget;
    const std::filesystem::path file =
        workdir / ("disk-" + std::to_string(data.n) + "-" + disk_.storage + ".pxd");
    if (!(disk_.reuse && std::filesystem::exists(file))) {
      PIXSEEK_ASSIGN_OR_RETURN(auto source, FbinVectorSource::Open(data.base_path, data.n));
      std::vector<int64_t> ids(data.n);
      std::iota(ids.begin(), ids.end(), int64_t{0});
      // Phase, percentage and ETA lines; an interrupted build resumes from
      // the parts in <file>.parts when the benchmark is run again.
      PhaseProgress lines("bench ann: disk build", options_.progress);
      DiskBuildReport report;
      PIXSEEK_RETURN_IF_ERROR(BuildDiskGraph(
          *source, ids, file, p, &report, nullptr,
          [&lines](const char* phase, size_t done, size_t total) { lines.Update(phase, done, total); }));
      shards_ = report.shards;
      const nlohmann::json summary = {{"build_shards_reused", report.reused_shards},
                       {"build_resumed", !report.resumed.empty()},
                       {"build_max_rows_in_ram", report.max_rows_in_ram},
                       {"build_phase_s",
                        {{"pq", report.pq_s},
                         {"partition", report.partition_s},
                         {"graph", report.graph_s},
                         {"write", report.write_s}}}};
      if (options_.progress) *options_.progress << "bench ann: disk build " << summary.dump() << "\n";
    }
    // The node cache gets what the budget leaves after codes, ids and
    // checksums.
    PIXSEEK_ASSIGN_OR_RETURN(graph_, DiskGraph::Open(file));
    const uint64_t without_cache = graph_->ram_bytes();
    PIXSEEK_RETURN_IF_ERROR(graph_->FillCacheToBudget(budget_));
    pq_bytes_ = graph_->pq_bytes();
    cache_bytes_ = budget_ > without_cache ? budget_ - without_cache : 0;
    return Status::Ok();
  }

  Status SearchAll(const float* queries, size_t nq, size_t k, int L, int threads,
                   std::vector<int64_t>* ids, std::vector<AnnQueryStats>* stats) override {
    DiskSearchParams sp;
    sp.search_list = L;
    sp.beam_width = disk_.beam_width;
    sp.queries_in_flight = disk_.queries_in_flight;
    std::vector<std::vector<SearchHit>> results;
    std::vector<DiskSearchStats> disk_stats;
    PIXSEEK_RETURN_IF_ERROR(
        graph_->SearchBatch(queries, nq, k, sp, threads, nullptr, &results, &disk_stats));
    ids->assign(nq * k, -1);
    stats->assign(nq, {});
    for (size_t q = 0; q < nq; ++q) {
      for (size_t i = 0; i < results[q].size() && i < k; ++i) (*ids)[q * k + i] = results[q][i].id;
      (*stats)[q].latency_us = disk_stats[q].latency_us;
      (*stats)[q].node_reads = double(disk_stats[q].node_reads + disk_stats[q].cache_hits);
      (*stats)[q].sectors_read = double(disk_stats[q].sectors_read);
    }
    return Status::Ok();
  }

  uint64_t ram_bytes() const override { return graph_ ? graph_->ram_bytes() : 0; }
  uint64_t disk_bytes() const override { return graph_ ? graph_->file_bytes() : 0; }

  nlohmann::json extra() const override {
    return {{"storage", "ssd-odirect-" + disk_.storage},
            {"cache_bytes", cache_bytes_},
            {"cached_nodes", graph_ ? graph_->cached_nodes() : 0},
            {"ram_fraction_of_raw", raw_bytes_ ? double(ram_bytes()) / double(raw_bytes_) : 0.0},
            {"build_shards", shards_}};
  }

 private:
  const AnnBenchOptions options_;
  const AnnBenchOptions::Disk disk_;
  std::unique_ptr<DiskGraph> graph_;
  uint64_t raw_bytes_ = 0, budget_ = 0, cache_bytes_ = 0;
  int pq_bytes_ = 0;
  int shards_ = 1;
};

}  // namespace

std::unique_ptr<AnnCandidate> MakeDiskCandidate(const AnnBenchOptions& options) {
  return std::make_unique<DiskCandidate>(options);
}

}  // namespace pixseek
