#include "bench_ann/ann_bench.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <utility>

#include "bench_ann/candidates.h"
#include "index/disk_graph.h"
#include "index/vecs_io.h"
#include "pixseek/vector_index.h"

namespace pixseek {
namespace {

using Clock = std::chrono::steady_clock;
using Row = nlohmann::ordered_json;

// Far above any sensible machine; guards against a typo starting a million
// threads.
constexpr int kMaxThreads = 1024;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Keeps the rows readable; NaN (a counter the candidate cannot measure)
// stays NaN and is printed as null.
double Round(double x, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(x * scale) / scale;
}

class Registry {
 public:
  static Registry& Get() {
    static Registry* registry = new Registry();  // never destroyed: used at exit
    return *registry;
  }

  void Set(std::string name, CandidateFactory factory) {
    std::lock_guard lock(mu_);
    factories_[std::move(name)] = std::move(factory);
  }

  std::optional<CandidateFactory> Find(const std::string& name) const {
    std::lock_guard lock(mu_);
    auto it = factories_.find(name);
    if (it == factories_.end()) return std::nullopt;
    return it->second;
  }

  std::vector<std::string> Names() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> names;
    for (const auto& [name, factory] : factories_) names.push_back(name);
    return names;
  }

 private:
  Registry() {
    factories_["disk"] = MakeDiskCandidate;
    factories_["exact"] = MakeExactCandidate;
    factories_["hnswlib"] = MakeHnswlibCandidate;
    factories_["faiss-hnsw"] = MakeFaissHnswCandidate;
    factories_["faiss-ivfpq"] = MakeFaissIvfPqCandidate;
  }

  mutable std::mutex mu_;
  std::map<std::string, CandidateFactory> factories_;  // GUARDED_BY(mu_)
};

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The candidates to run, in order: "disk" when registered, "exact", then the
// requested peers without repeats.
Result<std::vector<std::string>> CandidateNames(const AnnBenchOptions& options,
                                                std::ostream* progress) {
  const Registry& registry = Registry::Get();
  std::vector<std::string> names;
  for (const char* always : {"disk", "exact"}) {
    if (std::string_view(always) == "exact" && !options.run_exact) continue;
    if (registry.Find(always)) {
      names.push_back(always);
    } else if (progress) {
      *progress << "bench ann: no \"" << always << "\" candidate registered; skipping it\n";
    }
  }
  for (const auto& peer : options.peers) {
    if (!registry.Find(peer)) {
      return Status::InvalidArgument("unknown ANN candidate \"" + peer +
                                     "\"; registered: " + JoinNames(registry.Names()));
    }
    if (std::find(names.begin(), names.end(), peer) == names.end()) names.push_back(peer);
  }
  return names;
}

Status CheckOptions(const AnnBenchOptions& options) {
  if (options.base.empty() || options.queries.empty()) {
    return Status::InvalidArgument("bench ann needs a base and a queries .fbin");
  }
  if (options.k == 0) return Status::InvalidArgument("k must be at least 1");
  if (options.L.empty()) return Status::InvalidArgument("the search list sweep L is empty");
  for (int l : options.L) {
    if (l < 1)
      return Status::InvalidArgument("search list L must be >= 1, got " + std::to_string(l));
  }
  if (options.rounds < 1 || (options.rounds > 1 && !options.interleave)) {
    return Status::InvalidArgument("rounds must be >= 1, and above 1 only with interleave, got " +
                                   std::to_string(options.rounds));
  }
  if (options.threads < 1 || options.threads > kMaxThreads) {
    return Status::InvalidArgument("threads must be in [1, " + std::to_string(kMaxThreads) +
                                   "], got " + std::to_string(options.threads));
  }
  return Status::Ok();
}

// The workdir, and whether we made it (then it is removed at the end).
class WorkDir {
 public:
  static Result<WorkDir> Make(const std::filesystem::path& given) {
    WorkDir dir;
    std::error_code ec;
    if (given.empty()) {
      static std::atomic<int> counter{0};
      const char* tmp = std::getenv("TMPDIR");
      dir.path_ =
          std::filesystem::path(tmp && *tmp ? tmp : "/tmp") /
          ("pixseek-bench-ann-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
      dir.owned_ = true;
    } else {
      dir.path_ = given;
    }
    std::filesystem::create_directories(dir.path_, ec);
    if (ec) {
      return Status::Unavailable("cannot create work directory " + dir.path_.string() + ": " +
                                 ec.message());
    }
    return dir;
  }

  WorkDir() = default;
  WorkDir(WorkDir&& other) noexcept
      : path_(std::move(other.path_)), owned_(std::exchange(other.owned_, false)) {}
  WorkDir& operator=(WorkDir&&) = delete;
  ~WorkDir() {
    if (!owned_) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

  // workdir/<name>, created.
  Result<std::filesystem::path> Sub(const std::string& name) const {
    std::filesystem::path sub = path_ / name;
    std::error_code ec;
    std::filesystem::create_directories(sub, ec);
    if (ec) return Status::Unavailable("cannot create " + sub.string() + ": " + ec.message());
    return sub;
  }

 private:
  std::filesystem::path path_;
  bool owned_ = false;
};

// The k nearest base rows of every query (nq * k row numbers), by pixseek's
// exact flat index over a scratch file in `dir` (removed afterwards).
Result<std::vector<int64_t>> ExactGroundTruth(const FloatMatrix& base, const FloatMatrix& queries,
                                              size_t k, int threads,
                                              const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "vectors.flat";
  std::error_code ec;
  std::filesystem::remove(file, ec);
  std::vector<std::vector<SearchHit>> hits;
  {
    FlatIndexOptions flat_options;
    flat_options.num_threads = threads;
    PIXSEEK_ASSIGN_OR_RETURN(auto flat,
                             OpenFlatIndex(file, static_cast<int>(base.cols), flat_options));
    std::vector<int64_t> row_ids(base.rows);
    for (size_t i = 0; i < base.rows; ++i) row_ids[i] = static_cast<int64_t>(i);
    PIXSEEK_RETURN_IF_ERROR(flat->Add(base.rows, row_ids.data(), base.data.data()));
    PIXSEEK_RETURN_IF_ERROR(flat->Search(queries.rows, queries.data.data(), k, &hits));
  }
  std::filesystem::remove(file, ec);
  std::vector<int64_t> gt(queries.rows * k, -1);
  for (size_t q = 0; q < queries.rows; ++q) {
    for (size_t j = 0; j < hits[q].size() && j < k; ++j) gt[q * k + j] = hits[q][j].id;
  }
  return gt;
}

// The first k ids of each row of a ground-truth file, checked against the
// data set's shape.
Result<std::vector<int64_t>> GroundTruthFromFile(const std::filesystem::path& path, size_t nq,
                                                 size_t n, size_t k) {
  PIXSEEK_ASSIGN_OR_RETURN(GroundTruth file, ReadIbin(path));
  if (file.rows != nq) {
    return Status::InvalidArgument("ground truth " + path.string() + " has " +
                                   std::to_string(file.rows) + " rows for " + std::to_string(nq) +
                                   " queries");
  }
  if (file.k < k) {
    return Status::InvalidArgument("ground truth " + path.string() + " holds " +
                                   std::to_string(file.k) +
                                   " neighbours per query, fewer than k = " + std::to_string(k));
  }
  std::vector<int64_t> gt(nq * k);
  for (size_t q = 0; q < nq; ++q) {
    for (size_t j = 0; j < k; ++j) {
      const int32_t id = file.ids[q * file.k + j];
      if (id < 0 || static_cast<size_t>(id) >= n) {
        return Status::InvalidArgument("ground truth " + path.string() + " names base row " +
                                       std::to_string(id) + " of " + std::to_string(n));
      }
      gt[q * k + j] = id;
    }
  }
  return gt;
}

// Mean over queries of |found top k ∩ true top k| / k.
double RecallAtK(const std::vector<int64_t>& found, const std::vector<int64_t>& truth, size_t nq,
                 size_t k) {
  size_t sum = 0;  // summed as a count, so an exact ratio prints exactly
  for (size_t q = 0; q < nq; ++q) {
    const std::unordered_set<int64_t> want(truth.begin() + q * k, truth.begin() + (q + 1) * k);
    std::unordered_set<int64_t> hit;
    for (size_t j = 0; j < k; ++j) {
      const int64_t id = found[q * k + j];
      if (id >= 0 && want.count(id) != 0) hit.insert(id);
    }
    sum += hit.size();
  }
  return nq == 0 ? 0.0 : static_cast<double>(sum) / static_cast<double>(nq * k);
}

// One search pass of a built candidate, as a row.
Result<Row> MeasureSearch(AnnCandidate& candidate, const FloatMatrix& queries,
                          const std::vector<int64_t>& gt, const AnnBenchOptions& options,
                          std::optional<int> L) {
  const size_t nq = queries.rows;
  const size_t k = options.k;
  std::vector<int64_t> ids;
  std::vector<AnnQueryStats> stats;
  const auto start = Clock::now();
  PIXSEEK_RETURN_IF_ERROR(candidate.SearchAll(queries.data.data(), nq, k, L.value_or(0),
                                              options.threads, &ids, &stats));
  const double wall_s = Since(start);
  if (ids.size() != nq * k || stats.size() != nq) {
    return Status::Internal("SearchAll returned " + std::to_string(ids.size()) + " ids and " +
                            std::to_string(stats.size()) + " stats for " + std::to_string(nq) +
                            " queries");
  }
  std::vector<double> latencies(nq);
  double latency_sum = 0, node_sum = 0, sector_sum = 0;
  for (size_t q = 0; q < nq; ++q) {
    latencies[q] = stats[q].latency_us;
    latency_sum += stats[q].latency_us;
    node_sum += stats[q].node_reads;
    sector_sum += stats[q].sectors_read;
  }
  // Nearest-rank percentile: the smallest latency that 99% of queries meet.
  const size_t p99_rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(nq)));
  std::nth_element(latencies.begin(), latencies.begin() + (p99_rank - 1), latencies.end());
  const double dnq = static_cast<double>(nq);

  Row row;
  row["index"] = candidate.name();
  row["params"] = candidate.params();
  row["L"] = L ? Row(*L) : Row(nullptr);
  row["threads"] = options.threads;
  row["qps"] = Round(dnq / wall_s, 1);
  row["mean_latency_us"] = Round(latency_sum / dnq, 1);
  row["p99_latency_us"] = Round(latencies[p99_rank - 1], 1);
  row["mean_node_reads"] = Round(node_sum / dnq, 2);
  row["mean_sectors_read"] = Round(sector_sum / dnq, 2);
  row["recall_at_" + std::to_string(k)] = RecallAtK(ids, gt, nq, k);
  return row;
}

}  // namespace

Status RunQueriesOnThreads(size_t nq, int threads,
                           const std::function<Status(size_t i, AnnQueryStats* stats)>& fn,
                           std::vector<AnnQueryStats>* stats, double* wall_s) {
  if (stats == nullptr) return Status::InvalidArgument("RunQueriesOnThreads: null stats");
  if (threads < 1) {
    return Status::InvalidArgument("RunQueriesOnThreads: threads must be >= 1, got " +
                                   std::to_string(threads));
  }
  stats->assign(nq, AnnQueryStats{});
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  Status error;  // GUARDED_BY(error_mu)
  auto fail = [&](Status s) {
    std::lock_guard lock(error_mu);
    if (error.ok()) error = std::move(s);
    failed = true;
  };
  auto worker = [&] {
    for (size_t i = next++; i < nq && !failed; i = next++) {
      AnnQueryStats& st = (*stats)[i];
      const auto start = Clock::now();
      Status s;
      try {
        s = fn(i, &st);
      } catch (const std::exception& e) {
        s = Status::Internal(std::string("query threw: ") + e.what());
      }
      st.latency_us = Since(start) * 1e6;
      if (!s.ok()) fail(s.WithContext("query " + std::to_string(i)));
    }
  };
  const size_t n_threads = std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(nq, 1));
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  pool.reserve(n_threads);
  for (size_t t = 0; t < n_threads; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error& e) {
      fail(Status::ResourceExhausted(std::string("cannot start a thread: ") + e.what()));
      break;
    }
  }
  for (auto& t : pool) t.join();
  if (wall_s) *wall_s = Since(start);
  return error;
}

void RegisterCandidate(std::string name, CandidateFactory factory) {
  Registry::Get().Set(std::move(name), std::move(factory));
}


namespace {

// The base (up to --limit-base rows) and the queries, checked against each
// other and k. Without load_base only the base's shape is read (its data
// stays empty): the disk candidate streams the file itself, so a base larger
// than RAM can be benchmarked when no other candidate needs it in memory.
Result<std::pair<FloatMatrix, FloatMatrix>> ReadData(const AnnBenchOptions& options,
                                                     bool load_base) {
  const size_t max_rows =
      options.limit_base > 0 ? options.limit_base : std::numeric_limits<size_t>::max();
  Result<FloatMatrix> base = FloatMatrix{};
  if (load_base) {
    base = ReadFbin(options.base, max_rows);
  } else if (auto source = FbinVectorSource::Open(options.base, max_rows); source.ok()) {
    base->rows = (*source)->size();
    base->cols = static_cast<size_t>((*source)->dimension());
  } else {
    base = source.status();
  }
  if (!base.ok()) return base.status().WithContext("base " + options.base.string());
  auto queries = ReadFbin(options.queries);
  if (!queries.ok()) return queries.status().WithContext("queries " + options.queries.string());
  if (base->cols != queries->cols) {
    return Status::InvalidArgument(
        "base " + options.base.string() + " has dimension " + std::to_string(base->cols) +
        " but queries " + options.queries.string() + " have " + std::to_string(queries->cols));
  }
  if (base->rows == 0 || queries->rows == 0) {
    return Status::InvalidArgument("bench ann needs at least one base vector and one query");
  }
  if (options.k > base->rows) {
    return Status::InvalidArgument("k = " + std::to_string(options.k) + " exceeds the " +
                                   std::to_string(base->rows) + " base vectors");
  }
  return std::make_pair(std::move(*base), std::move(*queries));
}

// The true k nearest ids per query: from --gt, or computed exactly (always
// when --limit-base cuts the base, whose ids --gt does not know).
Result<std::vector<int64_t>> TrueNeighbours(const AnnBenchOptions& options,
                                            const FloatMatrix& base, const FloatMatrix& queries,
                                            WorkDir& workdir) {
  std::ostream* progress = options.progress;
  if (!options.gt.empty() && options.limit_base == 0) {
    return GroundTruthFromFile(options.gt, queries.rows, base.rows, options.k);
  }
  if (!options.gt.empty() && progress) {
    *progress << "bench ann: ignoring " << options.gt.string()
              << " (its ids refer to the full base; --limit-base is set)\n";
  }
  const auto start = Clock::now();
  PIXSEEK_ASSIGN_OR_RETURN(auto gt_dir, workdir.Sub("ground_truth"));
  PIXSEEK_ASSIGN_OR_RETURN(auto gt,
                           ExactGroundTruth(base, queries, options.k, options.threads, gt_dir));
  if (progress) *progress << "bench ann: exact ground truth in " << Since(start) << " s\n";
  return gt;
}

// Builds one candidate; returns its build time in seconds.
Result<double> BuildCandidate(AnnCandidate& candidate, const std::string& name,
                              const AnnData& data, const AnnBenchOptions& options,
                              WorkDir& workdir) {
  std::ostream* progress = options.progress;
  PIXSEEK_ASSIGN_OR_RETURN(auto dir, workdir.Sub(name));
  if (progress) *progress << "bench ann: building " << name << "\n";
  const auto start = Clock::now();
  Status built = candidate.Build(data, dir);
  if (!built.ok()) return built.WithContext(name + " build");
  const double build_s = Since(start);
  if (progress) {
    *progress << "bench ann: built " << name << " " << candidate.params().dump() << " in "
              << build_s << " s\n";
  }
  return build_s;
}

// The search lists a candidate is measured at: the sweep, or one run for a
// candidate without a search list.
std::vector<std::optional<int>> Sweep(const AnnCandidate& candidate,
                                      const AnnBenchOptions& options) {
  std::vector<std::optional<int>> sweep;
  if (candidate.uses_search_list()) {
    for (int l : options.L) sweep.push_back(l);
  } else {
    sweep.push_back(std::nullopt);
  }
  return sweep;
}

// Measures a built candidate at one search list and prints its row (with
// `round` when >= 0).
Status MeasureRow(AnnCandidate& candidate, const std::string& name, double build_s,
                  std::optional<int> L, int round, const AnnData& data,
                  const FloatMatrix& queries, const std::vector<int64_t>& gt,
                  const AnnBenchOptions& options, std::ostream& rows) {
  auto measured = MeasureSearch(candidate, queries, gt, options, L);
  if (!measured.ok()) {
    return measured.status().WithContext(name + " search" + (L ? " L=" + std::to_string(*L) : ""));
  }
  Row row = std::move(measured).value();
  row["n"] = data.n;
  row["nq"] = queries.rows;
  row["k"] = options.k;
  row["ram_bytes"] = candidate.ram_bytes();
  row["disk_bytes"] = candidate.disk_bytes();
  row["build_s"] = Round(build_s, 3);
  if (round >= 0) row["round"] = round;
  const nlohmann::json extra = candidate.extra();
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) row[key] = value;
  }
  if (options.ram_budget > 0) {
    row["ram_budget"] = options.ram_budget;
    row["within_ram_budget"] = candidate.ram_bytes() <= options.ram_budget;
  }
  rows << row.dump() << std::endl;
  return Status::Ok();
}

}  // namespace

Status RunAnnBench(const AnnBenchOptions& options, std::ostream& rows) {
  PIXSEEK_RETURN_IF_ERROR(CheckOptions(options));
  std::ostream* progress = options.progress;
  PIXSEEK_ASSIGN_OR_RETURN(const std::vector<std::string> names, CandidateNames(options, progress));
  // Only the disk candidate reads the base from its file; the others, and
  // an exact ground truth, need it in RAM.
  const bool computes_gt = options.gt.empty() || options.limit_base > 0;
  const bool load_base = computes_gt || std::any_of(names.begin(), names.end(), [](const auto& n) {
                           return n != "disk";
                         });
  PIXSEEK_ASSIGN_OR_RETURN(auto read, ReadData(options, load_base));
  const FloatMatrix& base = read.first;
  const FloatMatrix& queries = read.second;
  if (progress) {
    *progress << "bench ann: " << base.rows << " base and " << queries.rows << " query vectors of "
              << base.cols << " dimensions\n";
  }
  PIXSEEK_ASSIGN_OR_RETURN(WorkDir workdir, WorkDir::Make(options.workdir));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> gt,
                           TrueNeighbours(options, base, queries, workdir));

  AnnData data;
  data.base = base.data.empty() ? nullptr : base.data.data();
  data.n = base.rows;
  data.dim = static_cast<int>(base.cols);
  data.base_path = options.base;
  struct Built {
    std::string name;
    std::unique_ptr<AnnCandidate> candidate;
    double build_s = 0;
  };
  auto make = [&](const std::string& name) -> Result<Built> {
    Built b{name, (*Registry::Get().Find(name))(options), 0};
    if (b.candidate == nullptr) {
      if (progress) *progress << "bench ann: " << name << " is not available; skipping it\n";
      return b;
    }
    PIXSEEK_ASSIGN_OR_RETURN(b.build_s, BuildCandidate(*b.candidate, name, data, options, workdir));
    return b;
  };
  if (!options.interleave) {
    // One candidate at a time, each freed before the next: each holds a
    // copy of the vectors.
    for (const std::string& name : names) {
      PIXSEEK_ASSIGN_OR_RETURN(Built b, make(name));
      if (b.candidate == nullptr) continue;
      for (const auto& L : Sweep(*b.candidate, options)) {
        PIXSEEK_RETURN_IF_ERROR(
            MeasureRow(*b.candidate, name, b.build_s, L, -1, data, queries, gt, options, rows));
      }
    }
    return Status::Ok();
  }
  std::vector<Built> built;
  for (const std::string& name : names) {
    PIXSEEK_ASSIGN_OR_RETURN(Built b, make(name));
    if (b.candidate != nullptr) built.push_back(std::move(b));
  }
  for (int round = 0; round < options.rounds; ++round) {
    for (size_t step = 0; step < options.L.size(); ++step) {
      for (Built& b : built) {
        const std::vector<std::optional<int>> sweep = Sweep(*b.candidate, options);
        if (step >= sweep.size()) continue;  // a candidate without L runs once a round
        PIXSEEK_RETURN_IF_ERROR(MeasureRow(*b.candidate, b.name, b.build_s, sweep[step], round,
                                           data, queries, gt, options, rows));
      }
    }
  }
  return Status::Ok();
}

}  // namespace pixseek
