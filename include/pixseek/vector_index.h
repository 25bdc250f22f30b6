// Vector storage and nearest-neighbour search: the VectorIndex interface, the
// registry of index kinds (OpenVectorIndex) and the exact (flat) index that
// every approximate index is measured against.
//
// Vectors are L2-normalised floats; the score is the inner product (cosine
// similarity), higher is better. Ids are caller-assigned 64-bit integers (the
// metadata store's image ids).
#ifndef PIXSEEK_VECTOR_INDEX_H_
#define PIXSEEK_VECTOR_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <variant>

#include "pixseek/index_params.h"
#include "pixseek/status.h"

namespace pixseek {

struct SearchHit {
  int64_t id = 0;
  float score = 0.0f;  // cosine similarity, in [-1, 1]
};

// The largest per-query search list accepted (SearchParams::search_list).
inline constexpr int kMaxSearchList = 100000;

// The ids a filtered search may return (SearchParams::filter), e.g. the
// images whose metadata match a label or a date range. Fixed at
// construction; Contains is O(1) for ids as dense as a metadata store's
// (a bitmap over [0, largest id]) and O(log n) otherwise.
//
// Thread-safety: immutable after construction, so safe to share.
class IdFilter {
 public:
  // Any order; duplicates are ignored.
  explicit IdFilter(std::vector<int64_t> ids);

  bool Contains(int64_t id) const {
    if (id >= 0 && static_cast<uint64_t>(id) < bits_.size() * 64) {
      return (bits_[static_cast<uint64_t>(id) >> 6] >> (id & 63)) & 1;
    }
    return !bits_.empty() ? false : ContainsSparse(id);
  }
  size_t size() const { return ids_.size(); }
  bool empty() const { return ids_.empty(); }
  // The ids, ascending.
  std::span<const int64_t> ids() const { return ids_; }

 private:
  bool ContainsSparse(int64_t id) const;

  std::vector<int64_t> ids_;
  std::vector<uint64_t> bits_;  // empty when the ids are too sparse for a bitmap
};

// Per-query search settings; each 0 means the index's own default (an exact
// index ignores them).
struct SearchParams {
  // Candidate list size of a graph search (DiskANN's L): larger finds more
  // of the true neighbours, slower. 0 = the index's search_list parameter.
  int search_list = 0;
  // When set, only ids in the filter are returned, and every index returns
  // min(k, live ids in the filter) hits: the filter is applied inside the
  // search, not to its k results. Not owned; must outlive the call.
  const IdFilter* filter = nullptr;
};

// One figure of an index's state for `pixseek stats` and /api/v1/stats
// ("delta_vectors": 12).
struct IndexStat {
  std::string name;
  std::variant<int64_t, double, bool, std::string> value;
};

// What `pixseek check` learns about one file of an index (VerifyVectorIndex),
// or what a salvaging open did to a damaged one (VectorIndexSpec::salvaged).
struct IndexFileCheck {
  std::filesystem::path file;
  // What the file holds: "4 records: 12 vectors added, 1 removed".
  std::string summary;
  // Empty when the file is intact; else what is wrong (DataLoss messages).
  std::string damage;
  // Not damage: what the next writable open tidies (a torn last record).
  std::string note;
  // Ids whose vectors the damage makes unreadable, where they are known:
  // those added by intact records after a log's damaged one, or stored in a
  // base graph's failing blocks (all of its ids when only the blocks fail).
  std::vector<int64_t> lost_ids;
  // A salvage: where the damage starts and the bytes dropped from there
  // (a log), and the damaged file as it was, kept beside it.
  uint64_t offset = 0;
  uint64_t bytes_dropped = 0;
  std::filesystem::path damaged_copy;
};

// Every file of one index, as VerifyVectorIndex found it.
struct IndexVerifyReport {
  std::vector<IndexFileCheck> files;
  // The ids whose vectors can be read, ascending: what the index holds once
  // a salvaging open has cut the damage away.
  std::vector<int64_t> ids;
  // Another process had the index open for writing: what it appends now may
  // be half-written.
  bool writer_active = false;

  bool damaged() const {
    for (const IndexFileCheck& f : files) {
      if (!f.damage.empty()) return true;
    }
    return false;
  }
};

// Thread-safety: implementations are safe for concurrent Search calls, and
// Add/Remove may run concurrently with Search (they take a writer lock).
class VectorIndex {
 public:
  virtual ~VectorIndex() = default;

  virtual std::string kind() const = 0;  // "flat", "disk", ...
  virtual int dimension() const = 0;
  virtual size_t size() const = 0;        // live vectors

  // Adds n vectors (row-major, n * dimension() floats) with the given ids. The
  // change is durable when OK is returned. AlreadyExists if an id is present
  // (nothing is added then), InvalidArgument for non-finite values.
  virtual Status Add(size_t n, const int64_t* ids, const float* vectors) = 0;

  // Removes the given ids; unknown ids are ignored. Durable when OK.
  virtual Status Remove(std::span<const int64_t> ids) = 0;

  // Copies the stored vector of `id`. NotFound if absent.
  virtual Result<std::vector<float>> Get(int64_t id) const = 0;

  // All live ids, ascending.
  virtual std::vector<int64_t> Ids() const = 0;

  // For each of the n queries (row-major), the k best hits, best first (ties
  // broken by smaller id). Fewer than k when the index holds fewer vectors.
  virtual Status Search(size_t n, const float* queries, size_t k, const SearchParams& params,
                        std::vector<std::vector<SearchHit>>* results) const = 0;
  Status Search(size_t n, const float* queries, size_t k,
                std::vector<std::vector<SearchHit>>* results) const {
    return Search(n, queries, k, SearchParams{}, results);
  }

  // Folds pending changes into the index's long-term form (the disk index
  // merges its in-memory inserts and tombstones into a new disk graph).
  // Searches and writes go on meanwhile. OK and nothing to do for indexes
  // that have no such step. FailedPrecondition when opened read-only.
  virtual Status Compact() { return Status::Ok(); }
  // Compact() only when the pending changes are large enough to be worth it.
  virtual Status CompactIfNeeded() { return Status::Ok(); }

  // The index's state as named figures (sizes, RAM and disk bytes, ...).
  virtual std::vector<IndexStat> Stats() const { return {}; }
};

// What OpenVectorIndex needs to open (or create) one database's index.
struct VectorIndexSpec {
  std::string kind;                // a VectorIndexKinds() name: "disk", "flat"
  std::filesystem::path dir;       // the database directory; the kind names its files
  // Kinds that live on a server: the URL they talk to. "milvus":
  // milvus://[USER:PASSWORD@]HOST[:PORT]/[DATABASE/]COLLECTION[?token=TOKEN]
  // (port 19530 by default; USER:PASSWORD or the token is sent as the Bearer
  // credential and never shown). Empty for the kinds kept in `dir`.
  std::string url;
  int dimension = 0;
  // Read-only: nothing is created, locked or repaired; Add/Remove fail with
  // FailedPrecondition. For one-shot readers while a server writes.
  bool read_only = false;
  int threads = 0;  // 0 = all cores
  // Run compaction on a background thread after writes (a server), rather
  // than when the owner calls Compact/CompactIfNeeded.
  bool background_compaction = false;
  // Hears of a compaction's build (phase, done, total), from the thread
  // running it, when the kind has one (the disk index); may be empty.
  std::function<void(const char* phase, size_t done, size_t total)> compaction_progress;
  // Every parameter of the kind (MergeParams fills the defaults).
  IndexParams params;
  // Writable opens only (`pixseek check --repair`): when set, damage that
  // can be cut away is not DataLoss. A log is replayed up to its first
  // damaged record and cut there (the records after it are lost); a disk
  // graph that fails its checks is set aside (its vectors are lost). Each
  // damaged file is first kept as "<file>.damaged-<unix seconds>" and
  // described here. Not owned; must outlive the open.
  std::vector<IndexFileCheck>* salvaged = nullptr;
};

// One kind of vector index: its name, its parameter table and how to open it.
// Adding a backend is one new file and one line in the registry
// (src/index/index_registry.cc).
struct VectorIndexKind {
  const char* name;
  const char* summary;  // one line for --help
  std::span<const IndexParamSpec> params;
  Result<std::unique_ptr<VectorIndex>> (*open)(const VectorIndexSpec& spec);
  // The files or directories the kind keeps in the database directory;
  // empty for a kind that keeps none there (milvus: its data is on the server).
  const char* files;
  // Reads the kind's files in spec.dir without changing them (see
  // VerifyVectorIndex).
  Result<IndexVerifyReport> (*verify)(const VectorIndexSpec& spec);
};

// Every registered kind; the first is the default for new databases.
std::span<const VectorIndexKind> VectorIndexKinds();
// The kind named `name`; InvalidArgument listing the known kinds otherwise.
Result<const VectorIndexKind*> FindVectorIndexKind(std::string_view name);
// Every parameter of every kind (a name shared by two kinds appears once:
// its first spec).
std::vector<IndexParamSpec> AllIndexParams();

// Opens spec.kind's index in spec.dir (creating it when absent and
// writable). The kind's own errors: NotFound when absent and read-only,
// InvalidArgument for another dimension or bad parameters, Unavailable when
// another writer holds it, DataLoss when a file is damaged.
Result<std::unique_ptr<VectorIndex>> OpenVectorIndex(const VectorIndexSpec& spec);

// Reads every file of spec.kind's index in spec.dir (`pixseek check`),
// without changing them or taking the writer's lock: each log record by
// record, a disk graph's header, sections and every node block, and which
// ids can be read. Damage is described in the report, not returned as an
// error. InvalidArgument for an unknown kind or another dimension; NotFound
// when the kind's files are missing.
Result<IndexVerifyReport> VerifyVectorIndex(const VectorIndexSpec& spec);

struct FlatIndexOptions {
  // Threads used to scan the vectors for one batch of queries; 0 = all cores.
  int num_threads = 0;
  // Read-only: the file is neither created, locked, truncated nor compacted,
  // and Add/Remove fail with FailedPrecondition. Lets one-shot readers (CLI
  // query, eval) open an index that a server is writing: a record the writer
  // is appending at that moment is simply not seen.
  bool read_only = false;
  // A writable open salvages a damaged log instead of failing, as
  // VectorIndexSpec::salvaged describes. Not owned.
  std::vector<IndexFileCheck>* salvaged = nullptr;
};

// The exact index: SIMD inner products over every stored vector, kept in RAM
// and persisted in `file` as a checksummed append-only log of add/remove
// records (see docs/index_format.md). Opening replays the log; a torn last
// record (crash while writing) is dropped, any other damage is DataLoss.
// Creates the file when absent (NotFound instead when read-only).
// InvalidArgument when the file holds another dimension. Unavailable when
// another writer holds the file.
Result<std::unique_ptr<VectorIndex>> OpenFlatIndex(
    const std::filesystem::path& file, int dimension,
    const FlatIndexOptions& options = {});

}  // namespace pixseek

#endif  // PIXSEEK_VECTOR_INDEX_H_
