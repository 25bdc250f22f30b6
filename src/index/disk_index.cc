// The disk index: one immutable base disk graph plus the changes since it
// was built (an in-memory DeltaGraph of inserts and tombstones of deletes),
// persisted by write-ahead logs and merged by compaction.
//
// Files in the directory (docs/index_format.md, "Disk index directory"):
//   index.json       manifest: dimension and the base generation G
//   base-G.pxd       the base disk graph (absent while the index is small)
//   wal-N.log        FlatLog of adds/removes; every N >= G is replayed in order
//   LOCK             flock'ed by the one writer
// Compaction at current log N: start wal-(N+1) for new writes, build
// base-(N+1).pxd from the base and logs <= N, then rewrite index.json with
// G = N+1 and delete the old base and logs. A crash at any point leaves
// either the old manifest (old base + all logs, which still hold every
// change) or the new one (new base + wal-(N+1)); stray files are removed at
// the next writable open.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/files.h"
#include "index/delta_graph.h"
#include "index/disk_graph.h"
#include "index/flat_log.h"
#include "index/inner_product.h"
#include "index/index_kinds.h"
#include "index/rw_mutex.h"
#include "index/vecs_io.h"
#include "pixseek/disk_index.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;

constexpr char kManifest[] = "index.json";
constexpr char kFormat[] = "pixseek-disk-index";
constexpr int kManifestVersion = 1;
constexpr double kUnitTolerance = 1e-3;

fs::path BasePath(const fs::path& dir, uint64_t gen) {
  return dir / ("base-" + std::to_string(gen) + ".pxd");
}
fs::path WalPath(const fs::path& dir, uint64_t gen) {
  return dir / ("wal-" + std::to_string(gen) + ".log");
}

// Parses "<prefix><number><suffix>"; false otherwise.
bool ParseGen(const std::string& name, const std::string& prefix, const std::string& suffix,
              uint64_t* gen) {
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return false;
  *gen = std::stoull(digits);
  return true;
}

struct Manifest {
  int dimension = 0;
  uint64_t base_generation = 0;
  bool has_base = false;
};

Result<Manifest> ReadManifest(const fs::path& dir) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(dir / kManifest));
  const auto j = nlohmann::json::parse(text, nullptr, false);
  Manifest m;
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != kFormat ||
      !j.contains("dimension") || !j["dimension"].is_number_integer() ||
      !j.contains("base_generation") || !j["base_generation"].is_number_unsigned() ||
      !j.contains("has_base") || !j["has_base"].is_boolean()) {
    return Status::DataLoss("disk index manifest " + (dir / kManifest).string() + " is damaged");
  }
  if (j.value("version", 0) != kManifestVersion) {
    return Status::FailedPrecondition("disk index " + dir.string() + " has manifest version " +
                                      std::to_string(j.value("version", 0)));
  }
  m.dimension = j["dimension"].get<int>();
  m.base_generation = j["base_generation"].get<uint64_t>();
  m.has_base = j["has_base"].get<bool>();
  return m;
}

Status WriteManifest(const fs::path& dir, const Manifest& m) {
  nlohmann::json j = {{"format", kFormat},
                      {"version", kManifestVersion},
                      {"dimension", m.dimension},
                      {"base_generation", m.base_generation},
                      {"has_base", m.has_base}};
  return WriteFileAtomic(dir / kManifest, j.dump(2) + "\n");
}

// The log generations >= from present in dir, ascending.
std::vector<uint64_t> ListWals(const fs::path& dir, uint64_t from) {
  std::vector<uint64_t> gens;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    uint64_t g;
    if (ParseGen(e.path().filename().string(), "wal-", ".log", &g) && g >= from) gens.push_back(g);
  }
  std::sort(gens.begin(), gens.end());
  return gens;
}

bool AllFinite(const float* v, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) return false;
  }
  return true;
}

// A filtered search walks the base graph only when the filter keeps at least
// this share of its nodes (its search list grown by 1 / share^2); a smaller
// share ranks the allowed nodes' PQ codes and reads the best. Measured by
// bench/filter_bench.cc (bench/RESULTS.md, "Filtered search"): a filter that
// keeps whole clusters leaves a graph search in the query's neighbourhood
// among nodes it may not return (recall@10 0.72 at a share of 0.7, against
// 0.87 unfiltered), while ranking the codes of the allowed nodes kept 0.99
// at every share below that, at 2-4x the exact index's speed.
constexpr double kFilterGraphMinShare = 0.9;

// Where a live id's vector is.
struct Location {
  enum Where : uint8_t { kBase, kFrozen, kDelta } where;
  uint32_t node;
};

// Inserts not yet in a base: a graph plus the id of each node and whether it
// was deleted since.
struct DeltaSegment {
  DeltaSegment(int dim, const VamanaParams& p) : graph(dim, p) {}
  DeltaGraph graph;
  std::vector<int64_t> ids;
  std::vector<uint8_t> deleted;
  size_t live = 0;
};

class DiskIndexImpl final : public DiskIndex {
 public:
  DiskIndexImpl(fs::path dir, int dim, const DiskIndexOptions& options)
      : dir_(std::move(dir)), dim_(dim), options_(options) {
    graph_params_.max_degree = options.max_degree;
    graph_params_.build_list = options.build_list;
    graph_params_.alpha = options.alpha;
    graph_params_.passes = options.build_passes;
    graph_params_.num_threads = options.num_threads;
    delta_ = std::make_shared<DeltaSegment>(dim, graph_params_);
  }

  ~DiskIndexImpl() override {
    cancel_.store(true);
    std::lock_guard<std::mutex> g(thread_mu_);
    if (compactor_.joinable()) compactor_.join();
    if (lock_fd_ >= 0) ::close(lock_fd_);
  }

  Status Open() {
    std::error_code ec;
    if (!options_.read_only) {
      PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(dir_));
      lock_fd_ = ::open((dir_ / "LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
        return Status::Unavailable("disk index " + dir_.string() +
                                   " is locked by another process (a running server?)");
      }
      if (!fs::exists(dir_ / kManifest)) {
        PIXSEEK_RETURN_IF_ERROR(WriteManifest(dir_, {dim_, 0, false}));
      }
    } else if (!fs::exists(dir_ / kManifest)) {
      return Status::NotFound("no disk index in " + dir_.string());
    }
    // A read-only opener can race a compaction that deletes the files it
    // is about to open: start over from the new manifest.
    for (int attempt = 0;; ++attempt) {
      Status s = Load();
      if (s.ok() || !options_.read_only || s.code() != StatusCode::kNotFound || attempt == 3) {
        return s;
      }
      Reset();
    }
  }

  std::string kind() const override { return "disk"; }
  int dimension() const override { return dim_; }

  size_t size() const override {
    std::shared_lock lock(mu_);
    return locations_.size();
  }

  std::vector<int64_t> Ids() const override {
    std::shared_lock lock(mu_);
    std::vector<int64_t> ids;
    ids.reserve(locations_.size());
    for (const auto& [id, loc] : locations_) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  Result<std::vector<float>> Get(int64_t id) const override {
    std::shared_lock lock(mu_);
    auto it = locations_.find(id);
    if (it == locations_.end()) return Status::NotFound("no vector with id " + std::to_string(id));
    const Location loc = it->second;
    if (loc.where == Location::kBase) return base_->ReadVector(loc.node);
    const DeltaSegment& seg = loc.where == Location::kDelta ? *delta_ : *frozen_;
    const float* v = seg.graph.vector(loc.node);
    return std::vector<float>(v, v + dim_);
  }

  Status Add(size_t n, const int64_t* ids, const float* vectors) override {
    if (n == 0) return Status::Ok();
    if (options_.read_only) return Status::FailedPrecondition("disk index opened read-only");
    if (ids == nullptr || vectors == nullptr) return Status::InvalidArgument("null ids or vectors");
    const size_t d = static_cast<size_t>(dim_);
    for (size_t i = 0; i < n; ++i) {
      const float* v = vectors + i * d;
      if (!AllFinite(v, d)) {
        return Status::InvalidArgument("vector for id " + std::to_string(ids[i]) +
                                       " has a non-finite value");
      }
      double norm2 = 0;
      for (size_t j = 0; j < d; ++j) norm2 += double{v[j]} * v[j];
      if (std::abs(norm2 - 1.0) > kUnitTolerance) {
        return Status::InvalidArgument("vector for id " + std::to_string(ids[i]) +
                                       " is not unit length (squared norm " +
                                       std::to_string(norm2) + ")");
      }
    }
    {
      std::unique_lock lock(mu_);
      std::unordered_set<int64_t> batch;
      for (size_t i = 0; i < n; ++i) {
        if (locations_.count(ids[i]) > 0 || !batch.insert(ids[i]).second) {
          return Status::AlreadyExists("id " + std::to_string(ids[i]) + " is already indexed");
        }
      }
      PIXSEEK_RETURN_IF_ERROR(wal_->AppendAdd(n, ids, vectors));
      for (size_t i = 0; i < n; ++i) InsertDelta(ids[i], vectors + i * d);
    }
    MaybeCompactInBackground();
    return Status::Ok();
  }

  Status Remove(std::span<const int64_t> ids) override {
    if (options_.read_only) return Status::FailedPrecondition("disk index opened read-only");
    {
      std::unique_lock lock(mu_);
      std::vector<int64_t> present;
      for (int64_t id : ids) {
        if (locations_.count(id) > 0) present.push_back(id);
      }
      if (present.empty()) return Status::Ok();
      PIXSEEK_RETURN_IF_ERROR(wal_->AppendRemove(present));
      for (int64_t id : present) RemoveLive(id);
    }
    MaybeCompactInBackground();
    return Status::Ok();
  }

  using VectorIndex::Search;
  Status Search(size_t n, const float* queries, size_t k, const SearchParams& params,
                std::vector<std::vector<SearchHit>>* results) const override {
    if (results == nullptr) return Status::InvalidArgument("null results");
    if (queries == nullptr && n > 0) return Status::InvalidArgument("null queries");
    if (!AllFinite(queries, n * static_cast<size_t>(dim_))) {
      return Status::InvalidArgument("query has a non-finite value");
    }
    results->assign(n, {});
    if (k == 0 || n == 0) return Status::Ok();
    std::shared_lock lock(mu_);
    const int configured = params.search_list > 0 ? params.search_list : options_.search_list;
    const int list = configured > 0 ? configured : static_cast<int>(std::max<size_t>(64, 2 * k));
    if (params.filter != nullptr) return SearchFiltered(n, queries, k, list, *params.filter, results);
    std::vector<std::vector<SearchHit>> base_hits;
    if (base_ != nullptr) {
      DiskSearchParams p;
      p.search_list = list;
      p.beam_width = options_.beam_width;
      NodeFilter filter;
      if (base_deleted_count_ > 0) {
        filter = [this](uint32_t node) { return base_deleted_[node] == 0; };
      }
      PIXSEEK_RETURN_IF_ERROR(base_->SearchBatch(queries, n, k, p, 1, filter, &base_hits));
    }
    std::vector<SearchHit> part;
    for (size_t q = 0; q < n; ++q) {
      std::vector<SearchHit>& out = (*results)[q];
      if (!base_hits.empty()) out = std::move(base_hits[q]);
      for (const DeltaSegment* seg : {frozen_.get(), delta_.get()}) {
        if (seg == nullptr || seg->live == 0) continue;
        // The whole search list, not just k: deleted nodes may take places,
        // and ties at the k-th score must be broken by id, not node number.
        const size_t want = std::min(seg->graph.size(),
                                     std::max<size_t>(size_t(list), k + (seg->ids.size() - seg->live)));
        seg->graph.Search(queries + q * size_t(dim_), want, static_cast<int>(want), &part);
        for (const SearchHit& h : part) {
          const auto node = static_cast<uint32_t>(h.id);
          if (!seg->deleted[node]) out.push_back({seg->ids[node], h.score});
        }
      }
      std::sort(out.begin(), out.end(), [](const SearchHit& a, const SearchHit& b) {
        return a.score > b.score || (a.score == b.score && a.id < b.id);
      });
      if (out.size() > k) out.resize(k);
    }
    return Status::Ok();
  }

  // Search with params.filter; the caller holds mu_ shared. The allowed
  // live ids are located first. In the delta segments (RAM, bounded by
  // compaction) they are scored exactly. In the base graph, a filter that
  // keeps at least 90 % of the nodes is met by a graph search whose list
  // grows as the share shrinks (the rejected nodes are traversed, not
  // returned); a smaller share, or a graph search that met fewer than k
  // allowed nodes, is answered by ranking just the allowed nodes' PQ codes
  // and reading the best of them (DiskGraph::SearchNodes). Either way k hits
  // come back when k allowed ids are live.
  Status SearchFiltered(size_t n, const float* queries, size_t k, int list,
                        const IdFilter& filter,
                        std::vector<std::vector<SearchHit>>* results) const {
    std::vector<uint32_t> base_nodes;
    std::vector<std::pair<const DeltaSegment*, uint32_t>> delta_nodes;
    auto locate = [&](const Location& loc) {
      if (loc.where == Location::kBase) {
        base_nodes.push_back(loc.node);
      } else {
        delta_nodes.push_back({loc.where == Location::kDelta ? delta_.get() : frozen_.get(),
                               loc.node});
      }
    };
    if (filter.size() < locations_.size()) {
      for (int64_t id : filter.ids()) {
        if (auto it = locations_.find(id); it != locations_.end()) locate(it->second);
      }
    } else {
      for (const auto& [id, loc] : locations_) {
        if (filter.Contains(id)) locate(loc);
      }
    }
    const size_t base_size = base_ != nullptr ? base_->size() : 0;
    const bool graph = base_nodes.size() >= kFilterGraphMinShare * double(base_size) &&
                       base_nodes.size() > k;
    std::vector<std::vector<SearchHit>> base_hits(n);
    if (graph) {
      DiskSearchParams p;
      const double share = double(base_nodes.size()) / double(base_size);
      p.search_list =
          static_cast<int>(std::min<double>(kMaxSearchList, std::ceil(list / (share * share))));
      p.beam_width = options_.beam_width;
      // A live base node whose id passes: what base_nodes lists, without a
      // per-search table of the graph's size.
      const NodeFilter node_filter = [this, &filter](uint32_t node) {
        return base_deleted_[node] == 0 && filter.Contains(base_->id(node));
      };
      PIXSEEK_RETURN_IF_ERROR(base_->SearchBatch(queries, n, k, p, 1, node_filter, &base_hits));
    }
    const size_t dim = static_cast<size_t>(dim_);
    const size_t want = std::min(k, base_nodes.size());
    for (size_t q = 0; q < n; ++q) {
      const float* query = queries + q * dim;
      std::vector<SearchHit>& out = (*results)[q];
      out = std::move(base_hits[q]);
      if (out.size() < want) {
        PIXSEEK_RETURN_IF_ERROR(
            base_->SearchNodes(query, base_nodes, k, static_cast<size_t>(list), &out));
      }
      for (const auto& [seg, node] : delta_nodes) {
        out.push_back({seg->ids[node], InnerProduct(query, seg->graph.vector(node), dim)});
      }
      std::sort(out.begin(), out.end(), [](const SearchHit& a, const SearchHit& b) {
        return a.score > b.score || (a.score == b.score && a.id < b.id);
      });
      if (out.size() > k) out.resize(k);
    }
    return Status::Ok();
  }

  Status Compact() override {
    if (options_.read_only) return Status::FailedPrecondition("disk index opened read-only");
    std::unique_lock compaction(compaction_mu_);
    return CompactLocked();
  }

  Status CompactIfNeeded() override {
    if (options_.read_only || !NeedsCompaction()) return Status::Ok();
    return Compact();
  }

  std::vector<IndexStat> Stats() const override {
    const DiskIndexStats d = stats();
    auto count = [](uint64_t v) { return static_cast<int64_t>(v); };
    std::vector<IndexStat> out = {{"base_vectors", count(d.base_vectors)},
                                  {"base_deleted", count(d.base_deleted)},
                                  {"delta_vectors", count(d.delta_vectors)},
                                  {"ram_bytes", count(d.ram_bytes)},
                                  {"disk_bytes", count(d.disk_bytes)},
                                  {"generation", count(d.generation)},
                                  {"compacting", d.compacting}};
    if (!d.last_compaction_error.empty()) {
      out.push_back({"last_compaction_error", d.last_compaction_error});
    }
    return out;
  }

  DiskIndexStats stats() const override {
    std::shared_lock lock(mu_);
    DiskIndexStats s;
    s.base_vectors = base_ ? base_->size() : 0;
    s.base_deleted = base_deleted_count_;
    s.delta_vectors = delta_->live + (frozen_ ? frozen_->live : 0);
    s.ram_bytes = (base_ ? base_->ram_bytes() + base_deleted_.size() : 0) +
                  delta_->graph.memory_bytes() + (frozen_ ? frozen_->graph.memory_bytes() : 0) +
                  locations_.size() * 32;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      if (e.is_regular_file(ec)) s.disk_bytes += e.file_size(ec);
    }
    s.generation = base_generation_;
    s.compacting = compacting_.load();
    {
      std::lock_guard<std::mutex> g(error_mu_);
      s.last_compaction_error = last_compaction_error_;
    }
    return s;
  }

 private:
  // Loads the manifest, base and logs into an empty index.
  Status Load() {
    PIXSEEK_ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir_));
    if (m.dimension != dim_) {
      return Status::InvalidArgument("disk index " + dir_.string() + " holds dimension " +
                                     std::to_string(m.dimension) + ", not " + std::to_string(dim_));
    }
    base_generation_ = m.base_generation;
    if (m.has_base) PIXSEEK_RETURN_IF_ERROR(LoadBase(m));
    if (!options_.read_only) RemoveStrayFiles(m);
    std::vector<uint64_t> wals = ListWals(dir_, m.base_generation);
    if (wals.empty() || wals.front() != m.base_generation) {
      if (options_.read_only) {
        return Status::NotFound("disk index " + dir_.string() + ": log " +
                                WalPath(dir_, m.base_generation).string() + " is missing");
      }
      wals.insert(wals.begin(), m.base_generation);  // created empty below
    }
    for (size_t i = 0; i < wals.size(); ++i) {
      FlatLogVisitor visitor;
      visitor.on_add = [this](uint32_t count, const uint8_t* ids, const uint8_t* vectors) {
        std::vector<int64_t> id(count);
        std::vector<float> v(size_t(count) * dim_);
        std::memcpy(id.data(), ids, count * 8);
        std::memcpy(v.data(), vectors, v.size() * 4);
        for (uint32_t j = 0; j < count; ++j) {
          if (locations_.count(id[j]) > 0) {
            return Status::DataLoss("disk index log adds id " + std::to_string(id[j]) + " twice");
          }
          InsertDelta(id[j], v.data() + size_t(j) * dim_);
        }
        return Status::Ok();
      };
      visitor.on_remove = [this](uint32_t count, const uint8_t* ids) {
        std::vector<int64_t> id(count);
        std::memcpy(id.data(), ids, count * 8);
        for (int64_t x : id) {
          if (locations_.count(x) > 0) RemoveLive(x);
        }
        return Status::Ok();
      };
      FlatLogSalvage salvage;
      PIXSEEK_ASSIGN_OR_RETURN(
          std::unique_ptr<FlatLog> log,
          FlatLog::Open(WalPath(dir_, wals[i]), dim_, visitor, options_.read_only,
                        options_.salvaged != nullptr ? &salvage : nullptr));
      if (salvage.salvaged) {
        options_.salvaged->push_back(SalvagedLogCheck(WalPath(dir_, wals[i]), salvage));
      }
      if (i + 1 == wals.size()) {
        wal_ = std::move(log);
        wal_generation_ = wals[i];
      }
    }
    return Status::Ok();
  }

  void Reset() {
    base_.reset();
    base_deleted_.clear();
    base_deleted_count_ = 0;
    delta_ = std::make_shared<DeltaSegment>(dim_, graph_params_);
    frozen_.reset();
    locations_.clear();
    wal_.reset();
  }

  // Opens the manifest's base. A salvaging open (options_.salvaged) also
  // reads every node block, and sets a base that fails any check aside.
  Status LoadBase(Manifest& m) {
    const fs::path path = BasePath(dir_, m.base_generation);
    Status opened = OpenBase(path);
    if (options_.salvaged == nullptr) return opened;
    std::string damage;
    std::vector<int64_t> ids;
    if (!opened.ok()) {
      // A damaged graph, or one gone: the logs still replay without it.
      if (opened.code() != StatusCode::kDataLoss && opened.code() != StatusCode::kNotFound) {
        return opened;
      }
      damage = opened.message();
    } else {
      std::vector<uint64_t> bad;
      PIXSEEK_RETURN_IF_ERROR(base_->VerifyBlocks(&bad));
      if (bad.empty()) return Status::Ok();
      damage = path.string() + ": " + std::to_string(bad.size()) +
               " node blocks fail their checksums (first: block " + std::to_string(bad[0]) + ")";
      for (uint32_t node = 0; node < base_->size(); ++node) ids.push_back(base_->id(node));
      std::sort(ids.begin(), ids.end());
    }
    base_.reset();
    base_deleted_.clear();
    locations_.clear();
    return SetBaseAside(m, damage, std::move(ids));
  }

  // Salvage: renames a damaged base (when it is there) to
  // "<base>.damaged-<unix seconds>" and records that there is no base (the
  // logs from its generation on stay).
  Status SetBaseAside(Manifest& m, const std::string& damage, std::vector<int64_t> ids) {
    IndexFileCheck check;
    check.file = BasePath(dir_, m.base_generation);
    check.damage = damage;
    check.damaged_copy = check.file.string() + ".damaged-" + std::to_string(std::time(nullptr));
    std::error_code ec;
    if (fs::exists(check.file, ec)) {
      fs::rename(check.file, check.damaged_copy, ec);
      if (ec) {
        return Status::Internal("cannot set aside " + check.file.string() + ": " + ec.message());
      }
    } else {
      check.damaged_copy.clear();
    }
    m.has_base = false;
    PIXSEEK_RETURN_IF_ERROR(WriteManifest(dir_, m));
    check.summary = "set aside: the disk graph's " +
                    (ids.empty() ? std::string("vectors are") : std::to_string(ids.size()) +
                                                                    " vectors are") +
                    " lost";
    check.lost_ids = std::move(ids);
    std::fprintf(stderr, "pixseek: %s: %s; the index goes on without it\n", check.file.c_str(),
                 damage.c_str());
    options_.salvaged->push_back(std::move(check));
    return Status::Ok();
  }

  Status OpenBase(const fs::path& path) {
    PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<DiskGraph> g, DiskGraph::Open(path));
    PIXSEEK_RETURN_IF_ERROR(g->FillCacheToBudget(RamBudget(g->size())));
    if (g->dimension() != dim_) return Status::DataLoss(path.string() + ": wrong dimension");
    for (uint32_t node = 0; node < g->size(); ++node) {
      locations_[g->id(node)] = {Location::kBase, node};
    }
    base_deleted_.assign(g->size(), 0);
    base_deleted_count_ = 0;
    base_ = std::move(g);
    return Status::Ok();
  }

  uint64_t RamBudget(size_t n) const {
    if (options_.ram_budget > 0) return options_.ram_budget;
    return std::max<uint64_t>(uint64_t{64} << 20, uint64_t(n) * dim_ * 4 / 10);
  }

  // Deletes files no manifest refers to: bases of other generations, logs
  // older than the base, and temporaries of an interrupted compaction.
  void RemoveStrayFiles(const Manifest& m) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      const std::string name = e.path().filename().string();
      uint64_t g;
      const bool stray =
          name.ends_with(".tmp") || name.ends_with(".fbin") ||
          (ParseGen(name, "base-", ".pxd", &g) && (!m.has_base || g != m.base_generation)) ||
          (ParseGen(name, "wal-", ".log", &g) && g < m.base_generation);
      if (stray) fs::remove(e.path(), ec);
      // The work directory of a compaction's build that did not finish
      // (BuildDiskGraph keeps its parts in base-G.pxd.parts): its scratch
      // input is gone, so its parts can never be reused.
      if (name.ends_with(".pxd.parts")) fs::remove_all(e.path(), ec);
    }
  }

  // Caller holds mu_ exclusively (or is loading).
  void InsertDelta(int64_t id, const float* v) {
    const uint32_t node = delta_->graph.Insert(v);
    delta_->ids.push_back(id);
    delta_->deleted.push_back(0);
    ++delta_->live;
    locations_[id] = {Location::kDelta, node};
  }

  // Caller holds mu_ exclusively (or is loading); id is live.
  void RemoveLive(int64_t id) {
    auto it = locations_.find(id);
    const Location loc = it->second;
    locations_.erase(it);
    if (compacting_.load()) removed_since_freeze_.push_back(id);
    if (loc.where == Location::kBase) {
      base_deleted_[loc.node] = 1;
      ++base_deleted_count_;
      return;
    }
    DeltaSegment& seg = loc.where == Location::kDelta ? *delta_ : *frozen_;
    seg.deleted[loc.node] = 1;
    --seg.live;
  }

  bool NeedsCompaction() const {
    std::shared_lock lock(mu_);
    const size_t base = base_ ? base_->size() : 0;
    const size_t changes = delta_->ids.size() + base_deleted_count_;
    const size_t live = locations_.size();
    if (base == 0) return live >= options_.min_base_vectors;
    return changes >= std::max<size_t>(1, size_t(options_.compact_ratio * double(base)));
  }

  // Starts one background compaction when the changes call for it. At most
  // one is scheduled at a time; the previous thread has finished its work
  // (it clears scheduled_ last) and is only joined here, never while it
  // could be waiting for a lock this thread holds.
  void MaybeCompactInBackground() {
    if (!options_.background_compaction || !NeedsCompaction()) return;
    bool idle = false;
    if (!scheduled_.compare_exchange_strong(idle, true)) return;
    std::lock_guard<std::mutex> g(thread_mu_);
    if (compactor_.joinable()) compactor_.join();
    compactor_ = std::thread([this] {
      {
        std::unique_lock c(compaction_mu_);
        Status s = CompactLocked();
        if (!s.ok() && s.code() != StatusCode::kCancelled) {
          std::fprintf(stderr, "pixseek: background compaction failed: %s\n",
                       s.ToString().c_str());
        }
      }
      scheduled_.store(false);
    });
  }

  // Caller holds compaction_mu_.
  // What a compaction works from once writes have moved to a new log.
  struct Freeze {
    std::shared_ptr<DeltaSegment> frozen;
    std::vector<uint8_t> base_deleted;  // the base's tombstones at the freeze
    uint64_t generation = 0;            // of the new log and the new base
  };

  // Compaction in three steps: freeze, build the new base from the live
  // vectors, swap it in (the new manifest is the commit point). A failure
  // after the freeze merges the frozen inserts back; their log stays, so
  // nothing is lost either way.
  Status CompactLocked() {
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<Freeze> freeze, FreezeChanges());
    if (!freeze) return Status::Ok();
    struct Done {
      std::atomic<bool>* flag;
      ~Done() { flag->store(false); }
    } done{&compacting_};
    const fs::path new_path = BasePath(dir_, freeze->generation);
    auto built = BuildBase(*freeze, new_path);
    if (!built.ok() || *built == nullptr) {
      return AbandonCompaction(built.ok() ? Status::Ok() : built.status(), new_path);
    }
    PIXSEEK_RETURN_IF_ERROR(SwapInBase(std::move(*built), freeze->generation));
    std::lock_guard<std::mutex> g(error_mu_);
    last_compaction_error_.clear();
    return Status::Ok();
  }

  // 1. New writes go to a new log and a new delta; the old delta is frozen.
  // Nothing (nullopt) when there are no changes, or too few vectors for a base.
  Result<std::optional<Freeze>> FreezeChanges() {
    std::unique_lock lock(mu_);
    const size_t changes = delta_->ids.size() + base_deleted_count_;
    if (changes == 0) return std::optional<Freeze>();
    if (locations_.size() < options_.min_base_vectors && base_ == nullptr) {
      return std::optional<Freeze>();
    }
    Freeze freeze;
    freeze.generation = wal_generation_ + 1;
    FlatLogVisitor none;
    none.on_add = [](uint32_t, const uint8_t*, const uint8_t*) { return Status::Ok(); };
    none.on_remove = [](uint32_t, const uint8_t*) { return Status::Ok(); };
    PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<FlatLog> next,
                             FlatLog::Open(WalPath(dir_, freeze.generation), dim_, none, false));
    wal_ = std::move(next);
    wal_generation_ = freeze.generation;
    frozen_ = delta_;
    delta_ = std::make_shared<DeltaSegment>(dim_, graph_params_);
    for (auto& [id, loc] : locations_) {
      if (loc.where == Location::kDelta) loc.where = Location::kFrozen;
    }
    freeze.frozen = frozen_;
    freeze.base_deleted = base_deleted_;
    removed_since_freeze_.clear();
    compacting_.store(true);
    return std::optional<Freeze>(std::move(freeze));
  }

  // 2. The live vectors of the base and the frozen delta go to a scratch file
  // (they need not fit in RAM), and the new base is built from it at
  // new_path and opened. Null when too few live vectors are left for a base:
  // they stay in the delta, and only the deletions could have been dropped.
  Result<std::shared_ptr<DiskGraph>> BuildBase(const Freeze& freeze, const fs::path& new_path) {
    const fs::path scratch = dir_ / ("compact-" + std::to_string(freeze.generation) + ".fbin");
    struct RemoveScratch {
      fs::path p;
      ~RemoveScratch() {
        std::error_code ec;
        fs::remove(p, ec);
      }
    } remove_scratch{scratch};
    std::vector<int64_t> ids;
    PIXSEEK_RETURN_IF_ERROR(WriteLiveVectors(scratch, freeze.base_deleted, *freeze.frozen, &ids));
    if (ids.size() < std::max<size_t>(256, options_.min_base_vectors)) {
      return std::shared_ptr<DiskGraph>();
    }
    PIXSEEK_ASSIGN_OR_RETURN(auto source, FbinVectorSource::Open(scratch));
    DiskBuildParams p;
    p.graph = graph_params_;
    auto storage = ParseStorage(options_.storage);
    p.storage = storage.ok() ? *storage : VectorStorage::kFloat16;
    p.pq_bytes = options_.pq_bytes;
    p.ram_budget = RamBudget(ids.size());
    p.build_ram_budget = options_.build_ram_budget;
    PIXSEEK_RETURN_IF_ERROR(
        BuildDiskGraph(*source, ids, new_path, p, nullptr, &cancel_, options_.compaction_progress));
    PIXSEEK_ASSIGN_OR_RETURN(auto graph, DiskGraph::Open(new_path));
    PIXSEEK_RETURN_IF_ERROR(graph->FillCacheToBudget(RamBudget(graph->size())));
    return std::shared_ptr<DiskGraph>(std::move(graph));
  }

  // Undoes a freeze: the frozen inserts return to the live delta's search
  // set, the new base file goes. `cause` (OK when there was simply nothing to
  // build) is kept for stats and returned.
  Status AbandonCompaction(Status cause, const fs::path& new_path) {
    std::unique_lock lock(mu_);
    MergeFrozenBack();
    std::error_code ec;
    fs::remove(new_path, ec);
    if (!cause.ok()) {
      std::lock_guard<std::mutex> g(error_mu_);
      last_compaction_error_ = cause.ToString();
    }
    return cause;
  }

  // 3. Writes the new manifest (the commit point), then points every id at
  // its new place and deletes the old base and logs.
  Status SwapInBase(std::shared_ptr<DiskGraph> new_base, uint64_t new_gen) {
    std::unique_lock lock(mu_);
    Status w = WriteManifest(dir_, Manifest{dim_, new_gen, true});
    if (!w.ok()) {
      MergeFrozenBack();
      std::error_code ec;
      fs::remove(BasePath(dir_, new_gen), ec);
      return w;
    }
    const uint64_t old_gen = base_generation_;
    const bool had_base = base_ != nullptr;
    base_ = std::move(new_base);
    base_generation_ = new_gen;
    base_deleted_.assign(base_->size(), 0);
    base_deleted_count_ = 0;
    for (auto it = locations_.begin(); it != locations_.end();) {
      if (it->second.where != Location::kDelta) {
        it = locations_.erase(it);
      } else {
        ++it;
      }
    }
    for (uint32_t node = 0; node < base_->size(); ++node) {
      locations_[base_->id(node)] = {Location::kBase, node};
    }
    // Deletes that happened while building apply to the new base.
    for (int64_t id : removed_since_freeze_) {
      const int64_t node = base_->FindNode(id);
      if (node >= 0 && !base_deleted_[node]) {
        base_deleted_[node] = 1;
        ++base_deleted_count_;
        locations_.erase(id);
      }
    }
    // A delete and re-add of the same id while building: the delta's copy
    // is the live one.
    for (uint32_t node = 0; node < delta_->ids.size(); ++node) {
      if (!delta_->deleted[node]) locations_[delta_->ids[node]] = {Location::kDelta, node};
    }
    removed_since_freeze_.clear();
    frozen_.reset();
    std::error_code ec;
    if (had_base) fs::remove(BasePath(dir_, old_gen), ec);
    for (uint64_t g : ListWals(dir_, 0)) {
      if (g < new_gen) fs::remove(WalPath(dir_, g), ec);
    }
    (void)SyncDirectory(dir_);
    return Status::Ok();
  }

  // Puts a frozen delta back in front of the live one after a failed
  // compaction. Caller holds mu_ exclusively.
  void MergeFrozenBack() {
    if (frozen_ == nullptr) return;
    std::shared_ptr<DeltaSegment> live = delta_;
    delta_ = frozen_;
    frozen_.reset();
    for (auto& [id, loc] : locations_) {
      if (loc.where == Location::kFrozen) loc.where = Location::kDelta;
    }
    for (uint32_t node = 0; node < live->ids.size(); ++node) {
      if (!live->deleted[node]) InsertDelta(live->ids[node], live->graph.vector(node));
    }
  }

  // Writes every live vector of the base (by the frozen deletion map) and of
  // the frozen delta to an .fbin file, renormalised, and their ids to *ids.
  Status WriteLiveVectors(const fs::path& path, const std::vector<uint8_t>& base_deleted,
                          const DeltaSegment& frozen, std::vector<int64_t>* ids) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Status::Internal("cannot create " + path.string());
    struct Close {
      int fd;
      ~Close() { ::close(fd); }
    } close_fd{fd};
    std::vector<float> buf;
    buf.reserve(4096 * size_t(dim_));
    uint64_t offset = 8;
    auto flush = [&]() -> Status {
      const size_t bytes = buf.size() * 4;
      if (::pwrite(fd, buf.data(), bytes, static_cast<off_t>(offset)) != ssize_t(bytes)) {
        return Status::Internal("cannot write " + path.string() + ": " + std::strerror(errno));
      }
      offset += bytes;
      buf.clear();
      return Status::Ok();
    };
    auto add = [&](int64_t id, const float* v) -> Status {
      if (cancel_.load()) return Status::Cancelled("compaction cancelled");
      double norm2 = 0;
      for (int j = 0; j < dim_; ++j) norm2 += double{v[j]} * v[j];
      const float inv = norm2 > 0 ? static_cast<float>(1.0 / std::sqrt(norm2)) : 1.0f;
      for (int j = 0; j < dim_; ++j) buf.push_back(v[j] * inv);
      ids->push_back(id);
      if (buf.size() >= 4096 * size_t(dim_)) return flush();
      return Status::Ok();
    };
    if (base_ != nullptr) {
      std::shared_ptr<DiskGraph> base;
      {
        std::shared_lock lock(mu_);
        base = base_;
      }
      PIXSEEK_RETURN_IF_ERROR(base->ForEachVector([&](uint32_t node, const float* v) -> Status {
        if (base_deleted[node]) return Status::Ok();
        return add(base->id(node), v);
      }));
    }
    {
      // The frozen delta is immutable but for its deleted flags.
      std::shared_lock lock(mu_);
      for (uint32_t node = 0; node < frozen.ids.size(); ++node) {
        if (!frozen.deleted[node]) PIXSEEK_RETURN_IF_ERROR(add(frozen.ids[node], frozen.graph.vector(node)));
      }
    }
    PIXSEEK_RETURN_IF_ERROR(flush());
    const int32_t header[2] = {static_cast<int32_t>(ids->size()), dim_};
    if (::pwrite(fd, header, 8, 0) != 8) return Status::Internal("cannot write " + path.string());
    return Status::Ok();
  }

  const fs::path dir_;
  const int dim_;
  const DiskIndexOptions options_;
  VamanaParams graph_params_;
  int lock_fd_ = -1;

  // mu_ guards everything below but the atomics.
  mutable WriterPriorityMutex mu_;
  std::shared_ptr<DiskGraph> base_;
  uint64_t base_generation_ = 0;
  std::vector<uint8_t> base_deleted_;
  size_t base_deleted_count_ = 0;
  std::shared_ptr<DeltaSegment> delta_;
  std::shared_ptr<DeltaSegment> frozen_;  // being merged by a compaction
  std::unordered_map<int64_t, Location> locations_;  // live ids only
  std::unique_ptr<FlatLog> wal_;
  uint64_t wal_generation_ = 0;
  std::vector<int64_t> removed_since_freeze_;

  std::mutex compaction_mu_;  // one compaction at a time
  std::mutex thread_mu_;      // guards compactor_
  std::thread compactor_;
  std::atomic<bool> scheduled_{false};  // a background compaction is queued or running
  std::atomic<bool> compacting_{false};
  std::atomic<bool> cancel_{false};
  mutable std::mutex error_mu_;
  std::string last_compaction_error_;
};

}  // namespace

Result<std::unique_ptr<DiskIndex>> OpenDiskIndex(const fs::path& dir, int dimension,
                                                 const DiskIndexOptions& options) {
  if (dimension < 1) return Status::InvalidArgument("disk index dimension must be >= 1");
  // The same checks as the parameter table's, for callers that fill
  // DiskIndexOptions themselves (tests, bench ann).
  const IndexParams params = DiskIndexParamsOf(options);
  for (const IndexParamSpec& spec : DiskIndexParamSpecs()) {
    if (const auto* entry = params.Find(spec.name)) {
      PIXSEEK_RETURN_IF_ERROR(ValidateParam(spec, entry->value).WithContext("disk index"));
    }
  }
  if (options.pq_bytes < 0 || (options.pq_bytes > 0 && dimension % options.pq_bytes != 0)) {
    return Status::InvalidArgument("disk index: pq_bytes must divide the dimension " +
                                   std::to_string(dimension));
  }
  auto index = std::make_unique<DiskIndexImpl>(dir, dimension, options);
  PIXSEEK_RETURN_IF_ERROR(index->Open());
  return std::unique_ptr<DiskIndex>(std::move(index));
}

Result<std::unique_ptr<VectorIndex>> OpenDiskIndexFromSpec(const VectorIndexSpec& spec) {
  DiskIndexOptions options = DiskIndexOptionsFrom(spec.params);
  options.read_only = spec.read_only;
  options.num_threads = spec.threads;
  options.background_compaction = spec.background_compaction;
  options.compaction_progress = spec.compaction_progress;
  options.salvaged = spec.salvaged;
  PIXSEEK_ASSIGN_OR_RETURN(auto index, OpenDiskIndex(spec.dir / "index", spec.dimension, options));
  return std::unique_ptr<VectorIndex>(std::move(index));
}

namespace {

// VerifyDiskIndexFromSpec's reading of the base graph: its ids go to *live,
// except those in blocks that fail their checksums (the file check's lost
// ids).
IndexFileCheck VerifyBase(const fs::path& path, int dimension, std::unordered_set<int64_t>* live) {
  IndexFileCheck check;
  check.file = path;
  DiskGraphOptions options;
  options.direct_io = false;
  auto graph = DiskGraph::Open(path, options);
  if (!graph.ok()) {
    check.damage = graph.status().message();
    return check;
  }
  const DiskGraph& g = **graph;
  if (g.dimension() != dimension) {
    check.damage = path.string() + " holds dimension " + std::to_string(g.dimension()) + ", not " +
                   std::to_string(dimension);
    return check;
  }
  std::vector<uint64_t> bad;
  if (Status s = g.VerifyBlocks(&bad); !s.ok()) check.damage = s.message();
  const uint64_t blocks = (g.size() + g.nodes_per_block() - 1) / g.nodes_per_block();
  check.summary = std::to_string(g.size()) + " nodes in " + std::to_string(blocks) + " blocks";
  std::vector<uint8_t> bad_block(blocks, 0);
  for (uint64_t b : bad) bad_block[b] = 1;
  for (uint32_t node = 0; node < g.size(); ++node) {
    if (bad_block[node / g.nodes_per_block()]) {
      check.lost_ids.push_back(g.id(node));
    } else {
      live->insert(g.id(node));
    }
  }
  if (!bad.empty()) {
    std::string list;
    for (size_t i = 0; i < bad.size() && i < 5; ++i) {
      list += (i ? ", " : "") + std::to_string(bad[i]);
    }
    check.damage = path.string() + ": " + std::to_string(bad.size()) +
                   " node blocks fail their checksums (" + list + (bad.size() > 5 ? ", ..." : "") +
                   "): " + std::to_string(check.lost_ids.size()) + " vectors cannot be read";
  }
  std::sort(check.lost_ids.begin(), check.lost_ids.end());
  return check;
}

// One log of the disk index, replayed onto *live (the readable ids) and
// *unreadable (ids in the base's failing blocks).
Result<IndexFileCheck> VerifyLog(const fs::path& path, int dimension,
                                 std::unordered_set<int64_t>* live,
                                 std::unordered_set<int64_t>* unreadable) {
  std::unordered_set<int64_t> added_after_damage;
  auto ids_of = [](uint32_t count, const uint8_t* ids) {
    std::vector<int64_t> id(count);
    std::memcpy(id.data(), ids, count * sizeof(int64_t));
    return id;
  };
  FlatLogVisitor visitor;
  visitor.on_add = [&](uint32_t count, const uint8_t* ids, const uint8_t*) -> Status {
    for (int64_t x : ids_of(count, ids)) {
      if (unreadable->count(x) > 0 || !live->insert(x).second) {
        return Status::DataLoss("disk index log adds id " + std::to_string(x) + " twice");
      }
    }
    return Status::Ok();
  };
  visitor.on_remove = [&](uint32_t count, const uint8_t* ids) {
    for (int64_t x : ids_of(count, ids)) {
      live->erase(x);
      unreadable->erase(x);
    }
    return Status::Ok();
  };
  FlatLogVisitor after;
  after.on_add = [&](uint32_t count, const uint8_t* ids, const uint8_t*) {
    for (int64_t x : ids_of(count, ids)) added_after_damage.insert(x);
    return Status::Ok();
  };
  after.on_remove = [&](uint32_t count, const uint8_t* ids) {
    for (int64_t x : ids_of(count, ids)) added_after_damage.erase(x);
    return Status::Ok();
  };
  PIXSEEK_ASSIGN_OR_RETURN(FlatLogInspection inspection,
                           FlatLog::Inspect(path, dimension, visitor, after));
  std::vector<int64_t> lost;
  for (int64_t x : added_after_damage) {
    if (live->count(x) == 0) lost.push_back(x);
  }
  std::sort(lost.begin(), lost.end());
  return LogFileCheck(path, inspection, std::move(lost));
}

}  // namespace

Result<IndexVerifyReport> VerifyDiskIndexFromSpec(const VectorIndexSpec& spec) {
  const fs::path dir = spec.dir / "index";
  IndexVerifyReport report;
  report.writer_active = HeldByWriter(dir / "LOCK");
  IndexFileCheck manifest;
  manifest.file = dir / kManifest;
  auto m = ReadManifest(dir);
  if (m.ok() && m->dimension != spec.dimension) {
    m = Status::DataLoss("disk index " + dir.string() + " holds dimension " +
                         std::to_string(m->dimension) + ", the database " +
                         std::to_string(spec.dimension));
  }
  if (!m.ok()) {
    // Without it nothing says which base and logs are current.
    manifest.damage = m.status().message();
    report.files.push_back(std::move(manifest));
    return report;
  }
  manifest.summary = "generation " + std::to_string(m->base_generation) +
                     (m->has_base ? ", with a disk graph" : ", no disk graph yet");
  report.files.push_back(std::move(manifest));
  std::unordered_set<int64_t> live, unreadable;
  if (m->has_base) {
    report.files.push_back(VerifyBase(BasePath(dir, m->base_generation), spec.dimension, &live));
    unreadable.insert(report.files[1].lost_ids.begin(), report.files[1].lost_ids.end());
  }
  for (uint64_t g : ListWals(dir, m->base_generation)) {
    PIXSEEK_ASSIGN_OR_RETURN(IndexFileCheck log,
                             VerifyLog(WalPath(dir, g), spec.dimension, &live, &unreadable));
    report.files.push_back(std::move(log));
  }
  // Base ids in failing blocks that a log removed afterwards are not lost.
  if (m->has_base) {
    std::erase_if(report.files[1].lost_ids,
                  [&](int64_t id) { return unreadable.count(id) == 0; });
  }
  report.ids.assign(live.begin(), live.end());
  std::sort(report.ids.begin(), report.ids.end());
  return report;
}

}  // namespace pixseek
