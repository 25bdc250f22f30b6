// The ANN benchmark harness behind `pixseek bench ann`: loads a big-ann data
// set (.fbin base and queries, optional .ibin ground truth), builds each
// candidate index once, sweeps the search list L at a fixed k and thread
// count, and prints one JSON row per (candidate, L).
//
// A candidate is anything implementing AnnCandidate; the built-in ones are
// "exact" (pixseek's flat index) and the peers "hnswlib", "faiss-hnsw" and
// "faiss-ivfpq". More (pixseek's disk index, "disk") are added with
// RegisterCandidate, without changing the harness.
//
// Row keys: index, params, L (null for candidates without a search list),
// threads, n, nq, k, qps, mean_latency_us, p99_latency_us, mean_node_reads,
// mean_sectors_read (null where a candidate cannot count them),
// recall_at_<k>, ram_bytes, disk_bytes, build_s, then the candidate's extra()
// keys (e.g. storage, cache_bytes), and ram_budget / within_ram_budget when
// a budget is given.
#ifndef PIXSEEK_BENCH_ANN_ANN_BENCH_H_
#define PIXSEEK_BENCH_ANN_ANN_BENCH_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

// The base vectors a candidate indexes. Borrowed: valid for the candidate's
// Build call only, so a candidate that needs them later keeps a copy.
struct AnnData {
  // n * dim floats, row-major, unit length; null when only the disk
  // candidate runs and the ground truth comes from --gt (it reads
  // base_path itself).
  const float* base = nullptr;
  size_t n = 0;
  int dim = 0;
  // The .fbin the vectors came from. With --limit-base the file holds more
  // rows than n; only its first n rows are the data set.
  std::filesystem::path base_path;
};

// What one query cost. Counters a candidate cannot measure stay NaN and are
// printed as null.
struct AnnQueryStats {
  double latency_us = 0;
  // Graph nodes (or stored vectors) whose data the query fetched.
  double node_reads = 0;
  // 4 KiB disk sectors the query read; 0 for RAM indexes.
  double sectors_read = 0;
};

// One index under test. The harness calls Build once, then SearchAll once per
// search-list value, from one thread; SearchAll itself starts the query
// threads. Owns whatever it builds.
class AnnCandidate {
 public:
  virtual ~AnnCandidate() = default;

  virtual std::string name() const = 0;
  // The build parameters, e.g. {"M":32,"efConstruction":200}.
  virtual nlohmann::json params() const = 0;

  // Builds the index over data. `workdir` exists and belongs to this
  // candidate; it may hold files from an earlier run.
  virtual Status Build(const AnnData& data, const std::filesystem::path& workdir) = 0;

  // Runs all nq queries (nq * dim floats, row-major) with search list L on
  // `threads` threads, each answering one query at a time. Fills ids (nq * k,
  // row-major, best first, -1 where fewer than k were found) and stats (nq).
  virtual Status SearchAll(const float* queries, size_t nq, size_t k, int L, int threads,
                           std::vector<int64_t>* ids, std::vector<AnnQueryStats>* stats) = 0;

  // False for candidates without a search list (the exact scan): the harness
  // then runs them once and prints "L": null.
  virtual bool uses_search_list() const { return true; }

  // The index's own memory (vectors, graph, codes), estimated from its
  // structures after Build.
  virtual uint64_t ram_bytes() const = 0;
  // Bytes of index files searched from disk; 0 for RAM indexes.
  virtual uint64_t disk_bytes() const { return 0; }
  // Merged into every row, e.g. {"storage":"ram"} or {"cache_bytes":...}.
  virtual nlohmann::json extra() const { return nlohmann::json::object(); }
};

// For candidates that answer one query per call: runs fn(i, &stats[i]) for
// every i in [0, nq) over `threads` std::threads that take the next query
// from a shared counter, and sets stats[i].latency_us to the call's wall
// time. *wall_s (optional) gets the time from the first start to the last
// finish. Stops at the first error and returns it; an exception thrown by fn
// becomes Internal.
[[nodiscard]] Status RunQueriesOnThreads(
    size_t nq, int threads, const std::function<Status(size_t i, AnnQueryStats* stats)>& fn,
    std::vector<AnnQueryStats>* stats, double* wall_s = nullptr);

// The peers run when the options name none.
inline const std::vector<std::string>& DefaultAnnPeers() {
  static const std::vector<std::string> peers = {"hnswlib", "faiss-hnsw", "faiss-ivfpq"};
  return peers;
}

struct AnnBenchOptions {
  std::filesystem::path base;     // .fbin, required
  std::filesystem::path queries;  // .fbin, required, same dimension as base
  // .ibin whose ids are row numbers of base; empty = compute the ground truth
  // by exact search. Ignored with limit_base (its ids refer to the full set).
  std::filesystem::path gt;
  size_t k = 10;
  std::vector<int> L = {10, 20, 30, 40, 50, 100};  // search list sweep, each >= 1
  int threads = 1;  // search threads, and build threads for the peers
  // Peers to run besides "disk" (when registered) and "exact", which always
  // run; any registered name is accepted.
  std::vector<std::string> peers = DefaultAnnPeers();
  // false skips the "exact" candidate (a full scan per query), for search
  // sweeps of the other candidates when --gt already gives the truth.
  bool run_exact = true;
  uint64_t ram_budget = 0;  // bytes; 0 = none. For candidates that size a cache.
  // Candidates' files go in workdir/<name>. Empty = a fresh directory under
  // $TMPDIR, removed at the end; a given one is kept.
  std::filesystem::path workdir;
  size_t limit_base = 0;             // use only the first limit_base base rows; 0 = all
  // Build every candidate first and keep them all, then measure them in
  // turn at each L (disk at L, the peers at L, the next L...), `rounds`
  // times over: a slow spell of the machine then hits every candidate alike
  // instead of whichever ran during it. Every row carries its "round".
  // Without it (the default) candidates run one after the other, each freed
  // before the next is built, which needs the RAM of one at a time.
  bool interleave = false;
  int rounds = 1;  // >= 1; above 1 needs interleave
  // pixseek's disk index ("disk"): its parameters (R, L, alpha, passes,
  // storage, PQ bytes, build budget) and search settings. ram_budget above
  // sizes its PQ codes and node cache (0 = 10% of the raw vectors).
  struct Disk {
    int max_degree = 64;
    int build_list = 100;
    float alpha = 1.2f;
    int passes = 1;
    std::string storage = "fp16";
    int pq_bytes = 0;
    uint64_t build_ram_budget = 0;
    int beam_width = 4;
    int queries_in_flight = 16;  // DiskSearchParams says why
    bool reuse = false;  // reuse an index file already in the workdir
  } disk;
  std::ostream* progress = nullptr;  // progress lines; null = none
};

// Makes a candidate for one run; may read the options (e.g. ram_budget).
// Returning null skips the candidate (not available in this build or for
// these options) with a progress note.
using CandidateFactory = std::function<std::unique_ptr<AnnCandidate>(const AnnBenchOptions&)>;

// Registers (or replaces) a candidate under `name`. Thread-safe. The built-in
// candidates are registered from the start.
void RegisterCandidate(std::string name, CandidateFactory factory);

// Runs the benchmark and writes one JSON object per line to `rows`.
// InvalidArgument for bad options (k, L, threads, unknown candidate names, a
// dimension mismatch between base and queries, ground truth that does not fit
// the queries), NotFound for a missing input file, DataLoss for a damaged one;
// a candidate's failure is returned with its name as context.
[[nodiscard]] Status RunAnnBench(const AnnBenchOptions& options, std::ostream& rows);

}  // namespace pixseek

#endif  // PIXSEEK_BENCH_ANN_ANN_BENCH_H_
