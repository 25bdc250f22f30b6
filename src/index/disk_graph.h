// The disk graph: one immutable file holding a Vamana graph with each node's
// full vector beside its neighbour list in 4 KiB-aligned blocks, plus the PQ
// codes, ids and checksums that a searcher keeps in RAM. The byte layout is
// specified in docs/index_format.md ("Disk graph").
//
// BuildDiskGraph writes such a file from a source of vectors, in RAM when the
// data fits the build budget and in overlapping shards merged afterwards
// (DiskANN's method) when it does not. DiskGraph opens one and searches it:
// a beam search that ranks candidates by their PQ codes in RAM, reads the
// nodes it expands through io_uring with O_DIRECT (several queries in flight
// per thread), and ranks the final list by the exact vectors it read.
#ifndef PIXSEEK_INDEX_DISK_GRAPH_H_
#define PIXSEEK_INDEX_DISK_GRAPH_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "index/pq.h"
#include "index/storage_kernels.h"
#include "index/vamana.h"
#include "pixseek/status.h"
#include "pixseek/vector_index.h"

namespace pixseek {

namespace disk {
struct Header;  // disk_format.h
}  // namespace disk

// Rows of vectors a build reads, possibly more than once and in any order.
// Thread-safety: Read may be called from several threads at once.
class VectorSource {
 public:
  virtual ~VectorSource() = default;
  virtual size_t size() const = 0;
  virtual int dimension() const = 0;
  // Copies rows [begin, begin + count) into out (count * dimension floats).
  virtual Status Read(size_t begin, size_t count, float* out) const = 0;
};

// Rows already in memory (borrowed; they must outlive the source).
class MemoryVectorSource final : public VectorSource {
 public:
  MemoryVectorSource(const float* data, size_t n, int dim) : data_(data), n_(n), dim_(dim) {}
  size_t size() const override { return n_; }
  int dimension() const override { return dim_; }
  Status Read(size_t begin, size_t count, float* out) const override;

 private:
  const float* data_;
  size_t n_;
  int dim_;
};

// Rows of a big-ann .fbin file, read with pread as needed (never all at once).
class FbinVectorSource final : public VectorSource {
 public:
  // NotFound when missing, DataLoss when the header disagrees with the size.
  // max_rows takes a prefix of the file.
  static Result<std::unique_ptr<FbinVectorSource>> Open(const std::filesystem::path& path,
                                                        size_t max_rows = SIZE_MAX);
  ~FbinVectorSource() override;
  size_t size() const override { return n_; }
  int dimension() const override { return dim_; }
  Status Read(size_t begin, size_t count, float* out) const override;

 private:
  FbinVectorSource(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::filesystem::path path_;
  int fd_;
  size_t n_ = 0;
  int dim_ = 0;
};

struct DiskBuildParams {
  // Graph: R, L, alpha (defaults 64, 100, 1.2), passes, build threads, seed.
  VamanaParams graph;
  VectorStorage storage = VectorStorage::kFloat16;
  // Bytes per PQ code (sub-quantizers); must divide the dimension. 0 = the
  // largest divisor of the dimension that fits ram_budget (see
  // ChoosePqBytes).
  int pq_bytes = 0;
  // The searcher's RAM budget that pq_bytes = 0 sizes the codes for; 0 = 10%
  // of the raw vector bytes.
  uint64_t ram_budget = 0;
  // Peak RAM the build may use. 0 = 4 GiB. When the graph of all rows needs
  // more (BuildBytesPerRow: 2 * dim + 8 * R + 320 bytes a row for the
  // bfloat16 vectors, the adjacency with slack and bookkeeping), the rows are split
  // into overlapping shards that each fit, built one at a time and merged
  // from disk. What counts against it: the PQ training sample (at most a
  // quarter of it), one shard's vectors and graph, and the partition's
  // k-means sample; every other step streams (codes, partition lists, the
  // merge and the file are written through buffers of a few MiB per shard).
  // Not counted: the caller's ids (8 bytes a row) and the source's own
  // memory (nothing for an .fbin, all rows for a MemoryVectorSource).
  uint64_t build_ram_budget = 0;
  // Rows used to train the quantizer (a seeded random sample); about 40
  // per centroid, the least FAISS recommends. Training costs rows * 256 *
  // dim per k-means iteration.
  size_t pq_train_rows = 10000;
  // Where finished parts are kept so that an interrupted build resumes
  // (docs/index_format.md, "Disk graph build work directory"); empty =
  // `<out>.parts` beside the output. Removed once the file is in place.
  std::filesystem::path work_dir;
};

struct DiskBuildReport {
  double build_s = 0;
  int shards = 1;
  int pq_bytes = 0;
  uint64_t file_bytes = 0;
  // Largest number of float vectors held in RAM at once (one shard).
  size_t max_rows_in_ram = 0;
  // Seconds per step of this run: PQ training and encoding, the partition,
  // the graph (all shards), and the merge / file write.
  double pq_s = 0, partition_s = 0, graph_s = 0, write_s = 0;
  // What this run found done by an earlier one and reused.
  bool reused_pq = false;
  bool reused_partition = false;
  int reused_shards = 0;
  // The line logged when parts were reused ("resuming the disk index build
  // in DIR: PQ codes, the partition and 5 of 17 shard graphs are already
  // done"); empty for a fresh build.
  std::string resumed;
  // Why an existing work directory was emptied (other inputs or
  // parameters); empty when none was.
  std::string discarded;
  // Why a finished partition and its shard graphs were cut again while the
  // codes were kept (the same inputs planned into another number of shards,
  // by another pixseek version); empty when they were not.
  std::string replanned;
  // Parts that failed their checks and were rebuilt (file names).
  std::vector<std::string> damaged_parts;
};

// Progress: the phase and its units done / total. Phases, in order:
// "pq-train" (training rows), "pq-encode" (rows), then either "graph" and
// "write" (rows; the graph in RAM) or "partition" (two passes over the
// rows, 2n), "shard I/K graph" (rows of all shards, 2n in total: done
// carries over from shard to shard, reused shards included) and "merge"
// (rows written). A phase an earlier run finished is not reported.
using BuildProgress = std::function<void(const char* phase, size_t done, size_t total)>;

// Bytes of build RAM one row costs while its shard's graph is built: the
// bfloat16 vector the graph links on (VamanaGraph::BuildLinks), the
// adjacency (a vector that grows to twice R with the pruning slack), and
// 320 bytes of bookkeeping: the node's lock and vector header, its row, and
// what malloc adds to many small growing blocks. Measured: 200,000 x 768-d,
// R = 64, in 4 shards of up to 103,894 rows, the process grew by 2,311
// bytes a row (this gives 2,368). build_ram_budget over it is a shard's
// row limit.
size_t BuildBytesPerRow(int dim, int max_degree);

// The largest divisor of dim that is at most `target` bytes (at least 1), and
// at most dim / 2 so that every sub-space has two or more coordinates when
// dim allows it.
int ChoosePqBytes(int dim, size_t target);
// pq_bytes for n vectors of dim under ram_budget: up to 80% of the budget per
// vector, less 24 bytes of ids and checksums, goes to its code; the rest
// (at least the rounding down to a divisor of dim) to the node cache.
int ChoosePqBytesForBudget(int dim, size_t n, uint64_t ram_budget);

// Builds the disk graph of source's rows, node i having id ids[i], and writes
// it to `out` (via out + ".tmp", fsynced and renamed: a crash leaves either
// no file or a complete one). Vectors must be unit length.
//
// Resumable: each finished step (the PQ codes, the partition, each shard's
// graph) is kept in params.work_dir as a checksummed part; a later call with
// the same inputs and parameters reuses the parts that verify, logs one
// "resuming ..." line to stderr (also in report->resumed) and builds the
// rest. Parts of other inputs or parameters are discarded, damaged parts
// rebuilt. The work directory is removed once `out` is in place.
//
// InvalidArgument for bad parameters, fewer than 256 rows (the quantizer
// needs them), ids of the wrong count or a vector that is not unit length;
// Cancelled when *cancel becomes true (the finished parts stay for the next
// call; `out` is not touched).
Status BuildDiskGraph(const VectorSource& source, std::span<const int64_t> ids,
                      const std::filesystem::path& out, const DiskBuildParams& params,
                      DiskBuildReport* report = nullptr, const std::atomic<bool>* cancel = nullptr,
                      const BuildProgress& progress = nullptr);

struct DiskGraphOptions {
  // RAM for the cache of nodes nearest the entry point (breadth-first
  // levels), its node-to-slot table (4 bytes per node) included. (A cache
  // of the nodes that 1,000 sample searches expanded most was measured no
  // better on 100k x 2048-d: 17.3 disk reads per query against 16.7.)
  uint64_t cache_bytes = 0;
  // Read nodes with O_DIRECT, bypassing the page cache (falls back to
  // buffered reads where the file system refuses O_DIRECT, e.g. tmpfs).
  bool direct_io = true;
};

struct DiskSearchParams {
  int search_list = 100;  // L
  int beam_width = 4;     // W: nodes read together per step of one query
  // Queries each thread keeps in flight (their reads overlap in one
  // io_uring); used by SearchBatch. Once the PQ tables and codes cost little
  // CPU, a search thread mostly waits for its reads: on 100k x 2048-d (2
  // threads, virtio disk) 16 gave 1.2-1.5x the QPS of 4 at L = 16-25, 32 a
  // little more at twice the latency (bench/RESULTS.md). Each slot holds
  // beam_width node blocks and m * 256 bytes of tables.
  int queries_in_flight = 16;
};

struct DiskSearchStats {
  uint64_t node_reads = 0;    // nodes read from disk
  uint64_t sectors_read = 0;  // 4 KiB sectors read
  uint64_t cache_hits = 0;    // nodes expanded from the RAM cache
  uint64_t hops = 0;          // nodes expanded
  double latency_us = 0;      // time from the query's start to its results
};

// Decides whether a node may be returned (false = deleted). Nodes it rejects
// are still traversed: a deleted node keeps the graph connected.
using NodeFilter = std::function<bool(uint32_t node)>;

// Thread-safety: after Open, every method is const and safe to call from any
// number of threads. Owns its file descriptors and RAM structures.
class DiskGraph {
 public:
  // Opens and verifies a disk graph file: magic, version, header checksum,
  // the size the header promises, and the checksums of the PQ codebook, the
  // codes, the ids and the block checksum table. DataLoss names the file and
  // what is wrong. Node blocks are checked as they are read (see Search).
  static Result<std::unique_ptr<DiskGraph>> Open(const std::filesystem::path& path,
                                                 const DiskGraphOptions& options = {});
  ~DiskGraph();
  DiskGraph(const DiskGraph&) = delete;
  DiskGraph& operator=(const DiskGraph&) = delete;

  size_t size() const { return n_; }
  int dimension() const { return dim_; }
  int max_degree() const { return max_degree_; }
  VectorStorage storage() const { return storage_; }
  int pq_bytes() const { return pq_->m(); }
  uint64_t file_bytes() const { return file_bytes_; }

  // Gives the node cache whatever of `ram_budget` ram_bytes() leaves, for a
  // graph opened without a cache (its size is known only once open). Call
  // before sharing the graph with other threads; no-op when nothing is left.
  Status FillCacheToBudget(uint64_t ram_budget) {
    if (!cache_slot_.empty() || ram_budget <= ram_bytes()) return Status::Ok();
    return LoadCache(ram_budget - ram_bytes());
  }
  size_t cached_nodes() const { return cached_nodes_; }
  // RAM held: codes, codebook, ids, checksums and the node cache.
  uint64_t ram_bytes() const;
  int64_t id(uint32_t node) const { return ids_[node]; }
  // The node holding `id`, or -1.
  int64_t FindNode(int64_t id) const;

  // The k best results for one query (dim floats), best first by exact score
  // (ties by smaller id); hit ids are the stored ids. Nodes the filter
  // rejects are skipped. DataLoss when a block read fails its checksum or
  // the read fails; InvalidArgument for a non-finite query.
  Status Search(const float* query, size_t k, const DiskSearchParams& params,
                const NodeFilter& filter, std::vector<SearchHit>* out,
                DiskSearchStats* stats = nullptr) const;

  // Searches nq queries on `threads` threads, each keeping
  // params.queries_in_flight queries in flight. results[i] and stats[i]
  // (when given) belong to query i.
  Status SearchBatch(const float* queries, size_t nq, size_t k, const DiskSearchParams& params,
                     int threads, const NodeFilter& filter,
                     std::vector<std::vector<SearchHit>>* results,
                     std::vector<DiskSearchStats>* stats = nullptr) const;

  // The k best of `nodes` (distinct node numbers) for one query, best first
  // by exact score, for a filter that leaves too few nodes for a graph
  // search to meet: every node is ranked by its PQ code (in RAM), and the
  // best max(k, rerank) of those are read and scored exactly. Same errors as
  // Search.
  Status SearchNodes(const float* query, std::span<const uint32_t> nodes, size_t k,
                     size_t rerank, std::vector<SearchHit>* out) const;

  // The stored (decoded) vector of a node, read from disk and checked.
  Result<std::vector<float>> ReadVector(uint32_t node) const;

  // Streams every node's decoded vector in node order to fn(node, vector);
  // used by compaction. Sequential reads; checks every block.
  Status ForEachVector(const std::function<Status(uint32_t, const float*)>& fn) const;

  // Reads every node block and checks it against its checksum (pixseek
  // check): the blocks that fail go to *bad, ascending. A read that fails is
  // returned as an error. Node i lives in block i / nodes_per_block().
  Status VerifyBlocks(std::vector<uint64_t>* bad) const;
  uint32_t nodes_per_block() const { return nodes_per_block_; }

 private:
  class Searcher;
  DiskGraph() = default;
  Status LoadCache(uint64_t cache_bytes);
  // Reads the PQ codebook, codes, ids and block checksums the header points
  // at, each checked against its hash.
  Status LoadSections(const disk::Header& header);
  // Reads and verifies block b into buf (block_bytes_, aligned).
  Status ReadBlock(uint64_t block, uint8_t* buf, bool direct) const;
  Status VerifyBlock(uint64_t block, const uint8_t* buf) const;
  const uint8_t* CachedNode(uint32_t node) const {
    if (cache_slot_.empty()) return nullptr;
    const int32_t s = cache_slot_[node];
    return s < 0 ? nullptr : cache_.data() + size_t(s) * node_bytes_;
  }

  std::filesystem::path path_;
  int fd_ = -1;         // buffered reads
  int direct_fd_ = -1;  // O_DIRECT reads, or -1
  size_t n_ = 0;
  int dim_ = 0;
  int max_degree_ = 0;
  VectorStorage storage_ = VectorStorage::kFloat32;
  uint32_t entry_ = 0;
  uint32_t node_bytes_ = 0;
  uint32_t nodes_per_block_ = 1;
  uint32_t block_bytes_ = 0;
  uint64_t blocks_offset_ = 0;
  uint64_t file_bytes_ = 0;
  std::unique_ptr<ProductQuantizer> pq_;
  std::vector<uint8_t> codes_;                        // n * m
  std::vector<int64_t> ids_;                          // n
  std::vector<std::pair<int64_t, uint32_t>> by_id_;  // sorted (id, node)
  std::vector<uint64_t> block_hashes_;
  std::vector<int32_t> cache_slot_;  // n, or empty without a cache
  std::vector<uint8_t> cache_;       // cached node records
  size_t cached_nodes_ = 0;
};

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_DISK_GRAPH_H_
