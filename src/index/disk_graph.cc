// Opening, verifying and searching a disk graph file (layout in
// disk_format.h and docs/index_format.md).
//
// Search is DiskANN's beam search run as a state machine per query, so that
// one thread can keep several queries in flight: each query picks the W best
// unexpanded candidates of its list (ranked by PQ scores from RAM), expands
// the cached ones at once, and submits reads for the others to the thread's
// io_uring; when all of a query's reads are back it expands them (exact score
// from the full vector, PQ scores for the unseen neighbours) and picks again.
// The thread waits only when every query it holds is waiting for the disk.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <thread>

#include "core/files.h"
#include "index/disk_format.h"
#include "index/disk_graph.h"
#include "index/graph_search.h"

namespace pixseek {

namespace {

using graph::Candidate;
using graph::Closer;
using graph::NodeSet;
using Clock = std::chrono::steady_clock;

// Sanity limits on header fields, so that a damaged header is an error
// rather than a huge allocation.
constexpr uint32_t kMaxDim = 1u << 16;
constexpr uint32_t kMaxDegree = 4096;
constexpr int kMaxBeamWidth = 64;
constexpr int kMaxInFlight = 64;
constexpr unsigned kRingDepth = 1024;

// A 4 KiB-aligned buffer for O_DIRECT reads.
struct AlignedBuffer {
  explicit AlignedBuffer(size_t bytes)
      : data(static_cast<uint8_t*>(std::aligned_alloc(disk::kSector, disk::AlignUp(bytes)))) {}
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data;
};

// One io_uring per thread, created at its first disk search and kept for the
// thread's life (creating a ring costs system calls and mappings).
struct ThreadRing {
  io_uring ring{};
  int init_error = 1;  // 1 = not tried yet; 0 = ready; < 0 = -errno
  ~ThreadRing() {
    if (init_error == 0) io_uring_queue_exit(&ring);
  }
  Status Get(io_uring** out) {
    if (init_error == 1) init_error = io_uring_queue_init(kRingDepth, &ring, 0);
    if (init_error < 0) {
      return Status::Unavailable(std::string("io_uring unavailable: ") + std::strerror(-init_error));
    }
    *out = &ring;
    return Status::Ok();
  }
};
thread_local ThreadRing t_ring;

}  // namespace

// Per-thread search state: `slots` queries in flight, each a state machine.
class DiskGraph::Searcher {
 public:
  Searcher(const DiskGraph& g, size_t k, const DiskSearchParams& params, const NodeFilter& filter,
           int slots)
      : g_(g), k_(k), params_(params), filter_(filter), slots_(static_cast<size_t>(slots)) {
    float_tables_.resize(g.pq_->table_size());
    for (auto& s : slots_) {
      s.buffers = std::make_unique<AlignedBuffer>(size_t(params.beam_width) * g.block_bytes_);
    }
  }

  // Answers queries next() hands out (an index, or SIZE_MAX when none are
  // left) until none remain. On an error it stops starting queries, waits
  // for every read already submitted (the kernel writes into this
  // searcher's buffers until they complete), and returns the first error.
  template <typename Next>
  Status Run(const float* queries, Next&& next, std::vector<std::vector<SearchHit>>* results,
             std::vector<DiskSearchStats>* stats) {
    io_uring* ring = nullptr;
    PIXSEEK_RETURN_IF_ERROR(t_ring.Get(&ring));
    const int fd = g_.direct_fd_ >= 0 ? g_.direct_fd_ : g_.fd_;
    Status error;
    size_t in_flight = 0;  // reads submitted and not yet completed
    // Starts queries in an idle slot and advances it until it waits for
    // reads or there is nothing left to do.
    auto feed = [&](Slot& s, size_t slot_index) {
      while (error.ok()) {
        if (!s.busy) {
          const size_t q = next();
          if (q == SIZE_MAX) return;
          Start(s, q, queries + q * size_t(g_.dim_));
        }
        Status st = Advance(s);
        if (!st.ok()) {
          error = st;
          s.busy = false;
          return;
        }
        if (!s.pending.empty()) {
          for (size_t i = 0; i < s.pending.size(); ++i) {
            io_uring_sqe* sqe = io_uring_get_sqe(ring);
            if (sqe == nullptr) {
              io_uring_submit(ring);
              sqe = io_uring_get_sqe(ring);
            }
            const uint64_t block = s.pending[i].node / g_.nodes_per_block_;
            io_uring_prep_read(sqe, fd, s.buffers->data + i * g_.block_bytes_, g_.block_bytes_,
                               g_.blocks_offset_ + block * g_.block_bytes_);
            io_uring_sqe_set_data64(sqe, (uint64_t{slot_index} << 16) | i);
          }
          s.outstanding = s.pending.size();
          in_flight += s.outstanding;
          return;
        }
        Finish(s, results, stats);  // done: take the next query
      }
    };
    for (size_t i = 0; i < slots_.size(); ++i) feed(slots_[i], i);
    std::vector<size_t> ready;
    while (in_flight > 0) {
      const int rc = io_uring_submit_and_wait(ring, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        // Cannot even wait: nothing safe to do with the buffers but keep
        // them, so leak this searcher's slots rather than free them.
        for (auto& s : slots_) s.buffers.release();
        return Status::Internal(std::string("io_uring wait: ") + std::strerror(-rc));
      }
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      ready.clear();
      io_uring_for_each_cqe(ring, head, cqe) {
        ++seen;
        const uint64_t data = io_uring_cqe_get_data64(cqe);
        Slot& s = slots_[data >> 16];
        if (cqe->res != static_cast<int>(g_.block_bytes_) && s.error.ok()) {
          s.error = Status::DataLoss(g_.path_.string() + ": reading a node block failed (" +
                                     (cqe->res < 0 ? std::string(std::strerror(-cqe->res))
                                                   : "short read") + ")");
        }
        --in_flight;
        if (--s.outstanding == 0) ready.push_back(data >> 16);
      }
      io_uring_cq_advance(ring, seen);
      for (size_t i : ready) {
        Slot& s = slots_[i];
        if (!s.error.ok()) {
          if (error.ok()) error = s.error;
          s.busy = false;
          s.pending.clear();
          continue;
        }
        if (!error.ok()) {
          s.busy = false;
          s.pending.clear();
          continue;
        }
        feed(s, i);
      }
    }
    return error;
  }

 private:
  struct Pending {
    uint32_t node;
  };
  struct Slot {
    bool busy = false;
    size_t query_index = 0;
    const float* query = nullptr;
    PqByteTables tables;
    NodeSet seen;
    std::vector<Candidate> list;                      // PQ-ranked candidates
    std::vector<std::pair<float, uint32_t>> exact;    // exact scores, expanded nodes
    std::vector<Pending> pending;                     // reads this step waits for
    size_t outstanding = 0;
    std::unique_ptr<AlignedBuffer> buffers;           // beam_width blocks
    std::vector<uint32_t> fresh;
    std::vector<float> fresh_scores;
    DiskSearchStats stats;
    Clock::time_point start;
    Status error;
  };

  void Start(Slot& s, size_t q, const float* query) {
    s.busy = true;
    s.query_index = q;
    s.query = query;
    s.start = Clock::now();
    s.stats = {};
    s.error = Status::Ok();
    s.outstanding = 0;
    g_.pq_->ComputeL2ByteTables(query, float_tables_.data(), &s.tables);
    s.seen.Clear();
    s.list.clear();
    s.exact.clear();
    s.pending.clear();
    s.fresh.clear();  // a search that failed midway may leave some
    s.seen.Insert(g_.entry_);
    float score;
    PqScoreBatch(s.tables, g_.codes_.data(), &g_.entry_, 1, &score);
    s.list.push_back({score, g_.entry_, false});
  }

  // Visits one node from its record: its exact score, and its unseen
  // neighbours appended to s.fresh with their codes asked into the caches.
  // ScoreFresh then ranks them: the nodes of one beam step read from disk
  // are visited together and their neighbours scored as one batch (the
  // wide PQ kernel works on 64 codes at a time).
  void Visit(Slot& s, uint32_t node, const uint8_t* rec) {
    ++s.stats.hops;
    const size_t d = static_cast<size_t>(g_.dim_);
    const size_t vector_bytes = StoredVectorBytes(g_.storage_, d);
    uint32_t degree;
    std::memcpy(&degree, rec + vector_bytes, 4);
    degree = std::min<uint32_t>(degree, static_cast<uint32_t>(g_.max_degree_));
    const size_t first = s.fresh.size();
    for (uint32_t i = 0; i < degree; ++i) {
      uint32_t nb;
      std::memcpy(&nb, rec + vector_bytes + 4 + 4 * i, 4);
      if (nb < g_.n_ && s.seen.Insert(nb)) s.fresh.push_back(nb);
    }
    // The fresh neighbours' codes sit at random places in a table far larger
    // than the caches: ask for all of them now, so that their cache misses
    // overlap each other and the exact score below instead of stalling the
    // PQ scoring one row at a time.
    PqPrefetch(g_.codes_.data(), g_.pq_->code_size(), s.fresh.data() + first,
               s.fresh.size() - first);
    if (!filter_ || filter_(node)) {
      s.exact.emplace_back(InnerProductStored(g_.storage_, s.query, rec, d), node);
    }
  }

  // PQ scores of s.fresh into the candidate list; empties s.fresh.
  void ScoreFresh(Slot& s) {
    s.fresh_scores.resize(s.fresh.size());
    PqScoreBatch(s.tables, g_.codes_.data(), s.fresh.data(), s.fresh.size(),
                 s.fresh_scores.data());
    const size_t L = static_cast<size_t>(params_.search_list);
    for (size_t i = 0; i < s.fresh.size(); ++i) {
      const Candidate c{s.fresh_scores[i], s.fresh[i], false};
      if (s.list.size() >= L && !Closer(c, s.list.back())) continue;
      s.list.insert(std::upper_bound(s.list.begin(), s.list.end(), c, Closer), c);
      if (s.list.size() > L) s.list.pop_back();
    }
    s.fresh.clear();
  }

  // Expands the reads that came back, then picks the next beam: cached nodes
  // are expanded on the spot, the others left in s.pending to be read. On
  // return s.pending is empty only when the search is over.
  Status Advance(Slot& s) {
    for (size_t i = 0; i < s.pending.size(); ++i) {
      const uint32_t node = s.pending[i].node;
      const uint8_t* block = s.buffers->data + i * g_.block_bytes_;
      PIXSEEK_RETURN_IF_ERROR(g_.VerifyBlock(node / g_.nodes_per_block_, block));
      ++s.stats.node_reads;
      s.stats.sectors_read += g_.block_bytes_ / disk::kSector;
      Visit(s, node, block + (node % g_.nodes_per_block_) * g_.node_bytes_);
    }
    ScoreFresh(s);
    s.pending.clear();
    for (;;) {
      size_t picked = 0;
      for (size_t i = 0; i < s.list.size() && picked < size_t(params_.beam_width); ++i) {
        if (s.list[i].expanded) continue;
        s.list[i].expanded = true;
        ++picked;
        const uint32_t node = s.list[i].id;
        if (const uint8_t* rec = g_.CachedNode(node)) {
          ++s.stats.cache_hits;
          Visit(s, node, rec);
          ScoreFresh(s);  // may reorder the list: rescan from the top
          i = static_cast<size_t>(-1);
        } else {
          s.pending.push_back({node});
        }
      }
      if (!s.pending.empty() || picked == 0) return Status::Ok();
    }
  }

  void Finish(Slot& s, std::vector<std::vector<SearchHit>>* results,
              std::vector<DiskSearchStats>* stats) {
    auto better = [&](const std::pair<float, uint32_t>& a, const std::pair<float, uint32_t>& b) {
      if (a.first != b.first) return a.first > b.first;
      return g_.ids_[a.second] < g_.ids_[b.second];
    };
    const size_t count = std::min(k_, s.exact.size());
    std::partial_sort(s.exact.begin(), s.exact.begin() + count, s.exact.end(), better);
    std::vector<SearchHit>& out = (*results)[s.query_index];
    out.clear();
    for (size_t i = 0; i < count; ++i) out.push_back({g_.ids_[s.exact[i].second], s.exact[i].first});
    s.stats.latency_us = std::chrono::duration<double, std::micro>(Clock::now() - s.start).count();
    if (stats != nullptr) (*stats)[s.query_index] = s.stats;
    s.busy = false;
  }

  const DiskGraph& g_;
  const size_t k_;
  const DiskSearchParams& params_;
  const NodeFilter& filter_;
  std::vector<Slot> slots_;
  std::vector<float> float_tables_;  // scratch for a slot's byte tables' making
};

namespace {

Status Damaged(const std::filesystem::path& path, const std::string& what) {
  return Status::DataLoss("disk index " + path.string() + " is damaged: " + what);
}

// Reads and checks the header: magic, version, checksum, size, field ranges
// and the node layout they imply.
Result<disk::Header> ReadHeader(int fd, const std::filesystem::path& path, uint64_t file_size) {
  if (file_size < disk::kSector) return Damaged(path, "shorter than its header");
  disk::Header h;
  std::vector<uint8_t> sector(disk::kSector);
  PIXSEEK_RETURN_IF_ERROR(ReadFullAt(fd, sector.data(), sector.size(), 0, path));
  std::memcpy(&h, sector.data(), sizeof(h));
  if (std::memcmp(h.magic, disk::kMagic, 8) != 0) {
    return Damaged(path, "not a pixseek disk index (bad magic)");
  }
  if (h.version != disk::kVersion) {
    return Status::FailedPrecondition("disk index " + path.string() + " has format version " +
                                      std::to_string(h.version) + "; this pixseek reads version " +
                                      std::to_string(disk::kVersion));
  }
  if (XXH3_64bits(&h, offsetof(disk::Header, header_hash)) != h.header_hash) {
    return Damaged(path, "header checksum mismatch");
  }
  if (h.file_bytes != file_size) {
    return Damaged(path, "the header promises " + std::to_string(h.file_bytes) +
                             " bytes, the file has " + std::to_string(file_size) +
                             " (truncated?)");
  }
  if (h.dim < 1 || h.dim > kMaxDim || h.max_degree < 1 || h.max_degree > kMaxDegree ||
      h.storage > 2 || h.n < 1 || h.n >= UINT32_MAX || h.entry_node >= h.n || h.pq_bytes < 1 ||
      h.dim % h.pq_bytes != 0) {
    return Damaged(path, "header fields out of range");
  }
  const auto storage = static_cast<VectorStorage>(h.storage);
  const disk::NodeLayout layout = disk::NodeLayout::Make(storage, h.dim, h.max_degree);
  if (layout.node_bytes != h.node_bytes || layout.nodes_per_block != h.nodes_per_block ||
      layout.sectors_per_block != h.sectors_per_block || layout.blocks(h.n) != h.num_blocks ||
      h.blocks_offset != disk::kSector) {
    return Damaged(path, "node layout disagrees with the header");
  }
  if (h.blocks_offset + h.num_blocks * layout.block_bytes() > h.file_bytes) {
    return Damaged(path, "node blocks run past the end of the file");
  }
  return h;
}

// One section of the file into `out`, bounds and hash checked
// (expected_bytes 0 = any size).
Status ReadSection(int fd, const std::filesystem::path& path, const disk::Header& h,
                   const disk::Section& s, uint64_t expected_bytes, const char* what,
                   std::vector<uint8_t>* out) {
  if ((expected_bytes != 0 && s.bytes != expected_bytes) || s.offset < disk::kSector ||
      s.offset > h.file_bytes || s.bytes > h.file_bytes - s.offset) {
    return Damaged(path, std::string(what) + " section out of bounds");
  }
  out->resize(s.bytes);
  PIXSEEK_RETURN_IF_ERROR(ReadFullAt(fd, out->data(), s.bytes, s.offset, path));
  if (XXH3_64bits(out->data(), out->size()) != s.hash) {
    return Damaged(path, std::string(what) + " checksum mismatch");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<DiskGraph>> DiskGraph::Open(const std::filesystem::path& path,
                                                   const DiskGraphOptions& options) {
  std::unique_ptr<DiskGraph> g(new DiskGraph());
  g->path_ = path;
  const std::string name = path.string();
  g->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (g->fd_ < 0) {
    if (errno == ENOENT) return Status::NotFound("no disk index at " + name);
    return Status::Internal("cannot open " + name + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(g->fd_, &st) != 0) return Status::Internal("cannot stat " + name);
  PIXSEEK_ASSIGN_OR_RETURN(disk::Header h, ReadHeader(g->fd_, path, uint64_t(st.st_size)));
  const auto storage = static_cast<VectorStorage>(h.storage);
  g->n_ = h.n;
  g->dim_ = static_cast<int>(h.dim);
  g->max_degree_ = static_cast<int>(h.max_degree);
  g->storage_ = storage;
  g->entry_ = h.entry_node;
  g->node_bytes_ = h.node_bytes;
  g->nodes_per_block_ = h.nodes_per_block;
  g->block_bytes_ =
      static_cast<uint32_t>(disk::NodeLayout::Make(storage, h.dim, h.max_degree).block_bytes());
  g->blocks_offset_ = h.blocks_offset;
  g->file_bytes_ = h.file_bytes;
  PIXSEEK_RETURN_IF_ERROR(g->LoadSections(h));
  if (options.direct_io) {
    g->direct_fd_ = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    // Some file systems (tmpfs) refuse O_DIRECT: fall back to the page cache.
  }
  PIXSEEK_RETURN_IF_ERROR(g->LoadCache(options.cache_bytes));
  return g;
}

Status DiskGraph::LoadSections(const disk::Header& h) {
  std::vector<uint8_t> bytes;
  PIXSEEK_RETURN_IF_ERROR(ReadSection(fd_, path_, h, h.pq, 0, "PQ codebook", &bytes));
  auto pq = ProductQuantizer::Load(bytes);
  if (!pq.ok()) return Damaged(path_, pq.status().message());
  if (pq->dim() != dim_ || pq->m() != int(h.pq_bytes)) return Damaged(path_, "PQ codebook shape");
  pq_ = std::make_unique<ProductQuantizer>(std::move(*pq));
  PIXSEEK_RETURN_IF_ERROR(
      ReadSection(fd_, path_, h, h.codes, h.n * h.pq_bytes, "PQ codes", &codes_));
  PIXSEEK_RETURN_IF_ERROR(ReadSection(fd_, path_, h, h.ids, h.n * 8, "ids", &bytes));
  ids_.resize(h.n);
  std::memcpy(ids_.data(), bytes.data(), bytes.size());
  PIXSEEK_RETURN_IF_ERROR(
      ReadSection(fd_, path_, h, h.block_hashes, h.num_blocks * 8, "block checksums", &bytes));
  block_hashes_.resize(h.num_blocks);
  std::memcpy(block_hashes_.data(), bytes.data(), bytes.size());
  by_id_.reserve(h.n);
  for (uint32_t i = 0; i < h.n; ++i) by_id_.emplace_back(ids_[i], i);
  std::sort(by_id_.begin(), by_id_.end());
  for (size_t i = 1; i < by_id_.size(); ++i) {
    if (by_id_[i].first == by_id_[i - 1].first) return Damaged(path_, "duplicate id");
  }
  return Status::Ok();
}

DiskGraph::~DiskGraph() {
  if (fd_ >= 0) ::close(fd_);
  if (direct_fd_ >= 0) ::close(direct_fd_);
}

uint64_t DiskGraph::ram_bytes() const {
  return codes_.size() + pq_->ram_bytes() + ids_.size() * 8 +
         by_id_.size() * sizeof(by_id_[0]) + block_hashes_.size() * 8 + cache_.size() +
         cache_slot_.size() * 4;
}

int64_t DiskGraph::FindNode(int64_t id) const {
  auto it = std::lower_bound(by_id_.begin(), by_id_.end(), std::make_pair(id, uint32_t{0}));
  return it != by_id_.end() && it->first == id ? int64_t{it->second} : -1;
}

Status DiskGraph::VerifyBlock(uint64_t block, const uint8_t* buf) const {
  if (XXH3_64bits(buf, block_bytes_) != block_hashes_[block]) {
    return Status::DataLoss("disk index " + path_.string() + " is damaged: block " +
                            std::to_string(block) + " fails its checksum");
  }
  return Status::Ok();
}

Status DiskGraph::ReadBlock(uint64_t block, uint8_t* buf, bool direct) const {
  const int fd = direct && direct_fd_ >= 0 ? direct_fd_ : fd_;
  PIXSEEK_RETURN_IF_ERROR(ReadFullAt(fd, buf, block_bytes_, blocks_offset_ + block * block_bytes_, path_));
  return VerifyBlock(block, buf);
}

Status DiskGraph::LoadCache(uint64_t cache_bytes) {
  const uint64_t slot_table = uint64_t(n_) * sizeof(int32_t);
  if (cache_bytes <= slot_table) return Status::Ok();
  const size_t want = std::min<uint64_t>(n_, (cache_bytes - slot_table) / node_bytes_);
  if (want == 0) return Status::Ok();
  cache_slot_.assign(n_, -1);
  cache_.resize(want * node_bytes_);
  AlignedBuffer buf(block_bytes_);
  const size_t vector_bytes = StoredVectorBytes(storage_, size_t(dim_));
  // Breadth-first from the entry point: the nodes every search passes.
  std::deque<uint32_t> queue{entry_};
  cache_slot_[entry_] = -2;  // queued
  while (!queue.empty() && cached_nodes_ < want) {
    const uint32_t node = queue.front();
    queue.pop_front();
    PIXSEEK_RETURN_IF_ERROR(ReadBlock(node / nodes_per_block_, buf.data, false));
    uint8_t* slot = cache_.data() + cached_nodes_ * node_bytes_;
    std::memcpy(slot, buf.data + (node % nodes_per_block_) * node_bytes_, node_bytes_);
    cache_slot_[node] = static_cast<int32_t>(cached_nodes_++);
    uint32_t degree;
    std::memcpy(&degree, slot + vector_bytes, 4);
    degree = std::min<uint32_t>(degree, uint32_t(max_degree_));
    for (uint32_t i = 0; i < degree; ++i) {
      uint32_t nb;
      std::memcpy(&nb, slot + vector_bytes + 4 + 4 * i, 4);
      if (nb < n_ && cache_slot_[nb] == -1) {
        cache_slot_[nb] = -2;
        queue.push_back(nb);
      }
    }
  }
  for (int32_t& s : cache_slot_) {
    if (s == -2) s = -1;
  }
  cache_.resize(cached_nodes_ * node_bytes_);
  cache_.shrink_to_fit();
  return Status::Ok();
}

Status DiskGraph::SearchNodes(const float* query, std::span<const uint32_t> nodes, size_t k,
                              size_t rerank, std::vector<SearchHit>* out) const {
  out->clear();
  if (k == 0 || nodes.empty()) return Status::Ok();
  std::vector<float> float_tables(pq_->table_size());
  PqByteTables tables;
  pq_->ComputeL2ByteTables(query, float_tables.data(), &tables);
  std::vector<float> pq_scores(nodes.size());
  PqScoreBatch(tables, codes_.data(), nodes.data(), nodes.size(), pq_scores.data());
  std::vector<Candidate> ranked(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) ranked[i] = {pq_scores[i], nodes[i], false};
  const size_t depth = std::min(nodes.size(), std::max(k, rerank));
  std::partial_sort(ranked.begin(), ranked.begin() + depth, ranked.end(), Closer);
  const size_t d = static_cast<size_t>(dim_);
  AlignedBuffer buf(block_bytes_);
  for (size_t i = 0; i < depth; ++i) {
    const uint32_t node = ranked[i].id;
    const uint8_t* rec = CachedNode(node);
    if (rec == nullptr) {
      PIXSEEK_RETURN_IF_ERROR(ReadBlock(node / nodes_per_block_, buf.data, false));
      rec = buf.data + (node % nodes_per_block_) * node_bytes_;
    }
    out->push_back({ids_[node], InnerProductStored(storage_, query, rec, d)});
  }
  std::sort(out->begin(), out->end(), [](const SearchHit& a, const SearchHit& b) {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
  });
  if (out->size() > k) out->resize(k);
  return Status::Ok();
}

Result<std::vector<float>> DiskGraph::ReadVector(uint32_t node) const {
  if (node >= n_) return Status::NotFound("no node " + std::to_string(node));
  std::vector<float> v(static_cast<size_t>(dim_));
  if (const uint8_t* rec = CachedNode(node)) {
    DecodeStored(storage_, rec, v.size(), v.data());
    return v;
  }
  AlignedBuffer buf(block_bytes_);
  PIXSEEK_RETURN_IF_ERROR(ReadBlock(node / nodes_per_block_, buf.data, false));
  DecodeStored(storage_, buf.data + (node % nodes_per_block_) * node_bytes_, v.size(), v.data());
  return v;
}

Status DiskGraph::ForEachVector(const std::function<Status(uint32_t, const float*)>& fn) const {
  const uint64_t blocks = (n_ + nodes_per_block_ - 1) / nodes_per_block_;
  constexpr uint64_t kBlocksPerRead = 256;
  AlignedBuffer buf(kBlocksPerRead * block_bytes_);
  std::vector<float> v(static_cast<size_t>(dim_));
  for (uint64_t b0 = 0; b0 < blocks; b0 += kBlocksPerRead) {
    const uint64_t nb = std::min(kBlocksPerRead, blocks - b0);
    PIXSEEK_RETURN_IF_ERROR(
        ReadFullAt(fd_, buf.data, nb * block_bytes_, blocks_offset_ + b0 * block_bytes_, path_));
    for (uint64_t b = 0; b < nb; ++b) {
      const uint8_t* block = buf.data + b * block_bytes_;
      PIXSEEK_RETURN_IF_ERROR(VerifyBlock(b0 + b, block));
      for (uint32_t i = 0; i < nodes_per_block_; ++i) {
        const uint64_t node = (b0 + b) * nodes_per_block_ + i;
        if (node >= n_) break;
        DecodeStored(storage_, block + i * node_bytes_, v.size(), v.data());
        PIXSEEK_RETURN_IF_ERROR(fn(static_cast<uint32_t>(node), v.data()));
      }
    }
  }
  return Status::Ok();
}

Status DiskGraph::VerifyBlocks(std::vector<uint64_t>* bad) const {
  const uint64_t blocks = (n_ + nodes_per_block_ - 1) / nodes_per_block_;
  constexpr uint64_t kBlocksPerRead = 256;
  AlignedBuffer buf(kBlocksPerRead * block_bytes_);
  for (uint64_t b0 = 0; b0 < blocks; b0 += kBlocksPerRead) {
    const uint64_t nb = std::min(kBlocksPerRead, blocks - b0);
    PIXSEEK_RETURN_IF_ERROR(
        ReadFullAt(fd_, buf.data, nb * block_bytes_, blocks_offset_ + b0 * block_bytes_, path_));
    for (uint64_t b = 0; b < nb; ++b) {
      if (!VerifyBlock(b0 + b, buf.data + b * block_bytes_).ok()) bad->push_back(b0 + b);
    }
  }
  return Status::Ok();
}

Status DiskGraph::Search(const float* query, size_t k, const DiskSearchParams& params,
                         const NodeFilter& filter, std::vector<SearchHit>* out,
                         DiskSearchStats* stats) const {
  std::vector<std::vector<SearchHit>> results(1);
  std::vector<DiskSearchStats> all_stats(1);
  DiskSearchParams one = params;
  one.queries_in_flight = 1;
  PIXSEEK_RETURN_IF_ERROR(SearchBatch(query, 1, k, one, 1, filter, &results, &all_stats));
  *out = std::move(results[0]);
  if (stats != nullptr) *stats = all_stats[0];
  return Status::Ok();
}

Status DiskGraph::SearchBatch(const float* queries, size_t nq, size_t k,
                              const DiskSearchParams& params, int threads,
                              const NodeFilter& filter,
                              std::vector<std::vector<SearchHit>>* results,
                              std::vector<DiskSearchStats>* stats) const {
  if (queries == nullptr && nq > 0) return Status::InvalidArgument("disk search: null queries");
  if (params.search_list < 1 || params.beam_width < 1 || params.beam_width > kMaxBeamWidth ||
      params.queries_in_flight < 1 || params.queries_in_flight > kMaxInFlight) {
    return Status::InvalidArgument("disk search: need search_list >= 1, beam_width in [1, 64] "
                                   "and queries_in_flight in [1, 64]");
  }
  for (size_t i = 0; i < nq * size_t(dim_); ++i) {
    if (!std::isfinite(queries[i])) {
      return Status::InvalidArgument("disk search: query has a non-finite value");
    }
  }
  results->assign(nq, {});
  if (stats != nullptr) stats->assign(nq, {});
  if (nq == 0 || k == 0) return Status::Ok();
  DiskSearchParams p = params;
  p.search_list = std::max<int>(p.search_list, static_cast<int>(std::min<size_t>(k, n_)));
  const int t = std::max(1, std::min<int>(threads, static_cast<int>(nq)));
  std::atomic<size_t> next{0};
  auto take = [&]() -> size_t {
    const size_t q = next.fetch_add(1);
    return q < nq ? q : SIZE_MAX;
  };
  const int slots = std::min<int>(p.queries_in_flight, static_cast<int>((nq + t - 1) / t));
  if (t == 1) {
    Searcher s(*this, k, p, filter, slots);
    return s.Run(queries, take, results, stats);
  }
  std::vector<Status> status(t);
  std::vector<std::thread> pool;
  for (int i = 0; i < t; ++i) {
    pool.emplace_back([&, i] {
      Searcher s(*this, k, p, filter, slots);
      status[i] = s.Run(queries, take, results, stats);
    });
  }
  for (auto& th : pool) th.join();
  for (auto& s : status) PIXSEEK_RETURN_IF_ERROR(s);
  return Status::Ok();
}

}  // namespace pixseek
