// Building a disk graph file: PQ training and encoding (FAISS), the Vamana
// graph (in RAM, or in overlapping shards under a RAM budget), and writing
// the blocks and sections of docs/index_format.md.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>

#include "core/files.h"
#include "index/disk_format.h"
#include "index/disk_graph.h"
#include "index/inner_product.h"

namespace pixseek {

namespace {

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  return Status::Internal(what + " " + path.string() + ": " + std::strerror(errno));
}

bool Cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

// Reads the given rows (ascending) into out, coalescing runs of consecutive
// rows into one read.
Status ReadRows(const VectorSource& source, const std::vector<uint32_t>& rows, float* out) {
  const size_t d = static_cast<size_t>(source.dimension());
  size_t i = 0;
  while (i < rows.size()) {
    size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1 && j - i < 4096) ++j;
    PIXSEEK_RETURN_IF_ERROR(source.Read(rows[i], j - i, out + i * d));
    i = j;
  }
  return Status::Ok();
}

// A seeded random sample of min(n, count) distinct rows, ascending.
std::vector<uint32_t> SampleRows(size_t n, size_t count, uint32_t seed) {
  std::vector<uint32_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0u);
  if (count < n) {
    std::mt19937 rng(seed);
    for (size_t i = 0; i < count; ++i) {
      std::uniform_int_distribution<size_t> pick(i, n - 1);
      std::swap(rows[i], rows[pick(rng)]);
    }
    rows.resize(count);
    std::sort(rows.begin(), rows.end());
  }
  return rows;
}

// The final graph: n rows of R neighbour slots.
struct Adjacency {
  size_t max_degree = 0;
  std::vector<uint32_t> neighbours;  // n * max_degree
  std::vector<uint32_t> degree;      // n
};

// Bytes one row costs while its shard's graph is built: the vector, the
// adjacency with slack, and per-node bookkeeping.
size_t BuildBytesPerRow(int dim, int max_degree) {
  return size_t(dim) * 4 + size_t(max_degree) * 4 * 2 + 64;
}

// The medoid over a source too large for RAM: the row closest to the
// centroid, in two streaming passes.
Result<uint32_t> StreamingMedoid(const VectorSource& source) {
  const size_t n = source.size(), d = static_cast<size_t>(source.dimension());
  constexpr size_t kChunk = 2048;
  std::vector<float> buf(kChunk * d);
  std::vector<double> sum(d, 0.0);
  for (size_t b = 0; b < n; b += kChunk) {
    const size_t c = std::min(kChunk, n - b);
    PIXSEEK_RETURN_IF_ERROR(source.Read(b, c, buf.data()));
    for (size_t i = 0; i < c; ++i) {
      for (size_t j = 0; j < d; ++j) sum[j] += buf[i * d + j];
    }
  }
  std::vector<float> centroid(d);
  for (size_t j = 0; j < d; ++j) centroid[j] = static_cast<float>(sum[j] / double(n));
  float best = -INFINITY;
  uint32_t medoid = 0;
  for (size_t b = 0; b < n; b += kChunk) {
    const size_t c = std::min(kChunk, n - b);
    PIXSEEK_RETURN_IF_ERROR(source.Read(b, c, buf.data()));
    for (size_t i = 0; i < c; ++i) {
      const float ip = InnerProduct(centroid.data(), buf.data() + i * d, d);
      if (ip > best) {
        best = ip;
        medoid = static_cast<uint32_t>(b + i);
      }
    }
  }
  return medoid;
}

// DiskANN's partitioned build: k-means on a sample into k centres, each row
// assigned to its two nearest centres (so neighbouring shards overlap), a
// Vamana graph per shard, and per row the union of its shard lists,
// interleaved and cut to R.
Status BuildSharded(const VectorSource& source, const VamanaParams& graph_params,
                    size_t rows_per_shard, Adjacency* adj, uint32_t* entry,
                    DiskBuildReport* report, const std::atomic<bool>* cancel,
                    const BuildProgress& progress) {
  const size_t n = source.size(), d = static_cast<size_t>(source.dimension());
  const size_t k = std::max<size_t>(2, (2 * n + rows_per_shard - 1) / rows_per_shard);
  // Train the centres on a sample that fits the shard budget.
  const std::vector<uint32_t> sample = SampleRows(n, std::min(n, std::max(rows_per_shard, 40 * k)),
                                                  graph_params.seed);
  std::vector<float> centres;
  {
    std::vector<float> x(sample.size() * d);
    PIXSEEK_RETURN_IF_ERROR(ReadRows(source, sample, x.data()));
    PIXSEEK_ASSIGN_OR_RETURN(centres, TrainKMeans(static_cast<int>(d), k, x.data(), sample.size(),
                                                  graph_params.seed));
  }
  // Assign each row to its two nearest centres (largest inner product; the
  // rows are unit length, the centres need not be, so use L2).
  std::vector<std::vector<uint32_t>> shards(k);
  {
    constexpr size_t kChunk = 2048;
    std::vector<float> buf(kChunk * d);
    std::vector<float> centre_norm(k);
    for (size_t c = 0; c < k; ++c) {
      centre_norm[c] = InnerProduct(centres.data() + c * d, centres.data() + c * d, d);
    }
    for (size_t b = 0; b < n; b += kChunk) {
      const size_t c = std::min(kChunk, n - b);
      PIXSEEK_RETURN_IF_ERROR(source.Read(b, c, buf.data()));
      for (size_t i = 0; i < c; ++i) {
        float best[2] = {INFINITY, INFINITY};
        size_t which[2] = {0, 0};
        for (size_t s = 0; s < k; ++s) {
          // |x - c|^2 = 1 - 2<x,c> + |c|^2 for unit x.
          const float dist =
              centre_norm[s] - 2 * InnerProduct(buf.data() + i * d, centres.data() + s * d, d);
          if (dist < best[0]) {
            best[1] = best[0];
            which[1] = which[0];
            best[0] = dist;
            which[0] = s;
          } else if (dist < best[1]) {
            best[1] = dist;
            which[1] = s;
          }
        }
        shards[which[0]].push_back(static_cast<uint32_t>(b + i));
        shards[which[1]].push_back(static_cast<uint32_t>(b + i));
      }
    }
  }
  report->shards = static_cast<int>(k);

  const size_t R = adj->max_degree;
  size_t done = 0;
  for (size_t s = 0; s < k; ++s) {
    if (Cancelled(cancel)) return Status::Cancelled("disk index build cancelled");
    const std::vector<uint32_t>& rows = shards[s];
    if (rows.empty()) continue;
    report->max_rows_in_ram = std::max(report->max_rows_in_ram, rows.size());
    std::vector<std::vector<uint32_t>> lists(rows.size());
    if (rows.size() == 1) {
      // A lone row has no neighbours in its shard.
    } else {
      std::vector<float> x(rows.size() * d);
      PIXSEEK_RETURN_IF_ERROR(ReadRows(source, rows, x.data()));
      PIXSEEK_ASSIGN_OR_RETURN(VamanaGraph g, VamanaGraph::Build(std::move(x), rows.size(),
                                                                 static_cast<int>(d), graph_params));
      for (size_t i = 0; i < rows.size(); ++i) {
        for (uint32_t local : g.neighbours(static_cast<uint32_t>(i))) {
          lists[i].push_back(rows[local]);
        }
      }
    }
    // Merge into the global rows: the existing list and this shard's,
    // interleaved, without duplicates, cut to R.
    for (size_t i = 0; i < rows.size(); ++i) {
      const uint32_t node = rows[i];
      uint32_t* slot = adj->neighbours.data() + size_t{node} * R;
      const std::vector<uint32_t> old(slot, slot + adj->degree[node]);
      std::vector<uint32_t> merged;
      merged.reserve(R);
      for (size_t t = 0; merged.size() < R && (t < old.size() || t < lists[i].size()); ++t) {
        const std::vector<uint32_t>* sources[2] = {&old, &lists[i]};
        for (const std::vector<uint32_t>* from : sources) {
          if (t < from->size() && merged.size() < R &&
              std::find(merged.begin(), merged.end(), (*from)[t]) == merged.end()) {
            merged.push_back((*from)[t]);
          }
        }
      }
      std::copy(merged.begin(), merged.end(), slot);
      adj->degree[node] = static_cast<uint32_t>(merged.size());
    }
    done += rows.size();
    if (progress) progress("graph", done, 2 * n);
  }
  PIXSEEK_ASSIGN_OR_RETURN(*entry, StreamingMedoid(source));
  return Status::Ok();
}

}  // namespace

Status MemoryVectorSource::Read(size_t begin, size_t count, float* out) const {
  if (begin > n_ || count > n_ - begin) return Status::InvalidArgument("vector source: rows past the end");
  std::memcpy(out, data_ + begin * size_t(dim_), count * size_t(dim_) * sizeof(float));
  return Status::Ok();
}

Result<std::unique_ptr<FbinVectorSource>> FbinVectorSource::Open(const std::filesystem::path& path,
                                                                 size_t max_rows) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no such file: " + path.string());
    return ErrnoStatus("cannot open", path);
  }
  std::unique_ptr<FbinVectorSource> source(new FbinVectorSource(path, fd));
  int32_t header[2];
  if (!ReadFullAt(fd, header, 8, 0, path).ok()) {
    return Status::DataLoss(path.string() + ": shorter than the 8-byte .fbin header");
  }
  struct stat st {};
  ::fstat(fd, &st);
  if (header[0] < 0 || header[1] <= 0 ||
      uint64_t(st.st_size) != 8 + uint64_t(header[0]) * uint64_t(header[1]) * 4) {
    return Status::DataLoss(path.string() + ": header says " + std::to_string(header[0]) + " x " +
                            std::to_string(header[1]) + " but the file has " +
                            std::to_string(st.st_size) + " bytes");
  }
  source->n_ = std::min<size_t>(size_t(header[0]), max_rows);
  source->dim_ = header[1];
  return source;
}

FbinVectorSource::~FbinVectorSource() { ::close(fd_); }

Status FbinVectorSource::Read(size_t begin, size_t count, float* out) const {
  if (begin > n_ || count > n_ - begin) return Status::InvalidArgument("vector source: rows past the end");
  const size_t row = size_t(dim_) * 4;
  return ReadFullAt(fd_, out, count * row, 8 + begin * row, path_);
}

int ChoosePqBytes(int dim, size_t target) {
  const size_t cap = std::max<size_t>(1, std::min<size_t>(target, dim >= 2 ? dim / 2 : 1));
  for (size_t m = cap; m >= 1; --m) {
    if (dim % m == 0) return static_cast<int>(m);
  }
  return 1;
}

int ChoosePqBytesForBudget(int dim, size_t n, uint64_t ram_budget) {
  const double per_row = 0.8 * double(ram_budget) / double(std::max<size_t>(n, 1)) - 24;
  return ChoosePqBytes(dim, static_cast<size_t>(std::max(1.0, per_row)));
}

namespace {

// Step 1: the product quantizer, trained on a sample that fits the build
// budget, and every vector's code.
struct PqResult {
  std::unique_ptr<ProductQuantizer> pq;
  std::vector<uint8_t> codes;  // n * m
};

Result<PqResult> TrainAndEncode(const VectorSource& source, int m, uint64_t build_budget,
                                const DiskBuildParams& params, const std::atomic<bool>* cancel,
                                const BuildProgress& progress) {
  const size_t n = source.size();
  const int dim = source.dimension();
  const size_t d = static_cast<size_t>(dim);
  const size_t train_rows = std::max<size_t>(
      256, std::min({n, params.pq_train_rows, size_t(build_budget / 4 / (d * 4))}));
  PqResult out;
  {
    const std::vector<uint32_t> rows = SampleRows(n, train_rows, params.graph.seed);
    std::vector<float> x(rows.size() * d);
    PIXSEEK_RETURN_IF_ERROR(ReadRows(source, rows, x.data()));
    if (progress) progress("pq", 0, n);
    PIXSEEK_ASSIGN_OR_RETURN(ProductQuantizer trained,
                             ProductQuantizer::Train(dim, m, x.data(), rows.size(), params.graph.seed));
    out.pq = std::make_unique<ProductQuantizer>(std::move(trained));
  }
  out.codes.resize(n * size_t(m));
  constexpr size_t kChunk = 4096;
  std::vector<float> buf(kChunk * d);
  for (size_t b = 0; b < n; b += kChunk) {
    if (Cancelled(cancel)) return Status::Cancelled("disk index build cancelled");
    const size_t c = std::min(kChunk, n - b);
    PIXSEEK_RETURN_IF_ERROR(source.Read(b, c, buf.data()));
    PIXSEEK_RETURN_IF_ERROR(out.pq->Encode(buf.data(), c, out.codes.data() + b * size_t(m)));
    if (progress) progress("pq", b + c, n);
  }
  return out;
}

// Step 2: the graph, in RAM when the data fits the build budget (the graph
// then keeps the vectors for writing), else in shards.
struct GraphResult {
  Adjacency adj;
  uint32_t entry = 0;
  std::unique_ptr<VamanaGraph> in_ram;

  std::span<const uint32_t> neighbours(size_t node) const {
    if (in_ram) return in_ram->neighbours(static_cast<uint32_t>(node));
    return {adj.neighbours.data() + node * adj.max_degree, adj.degree[node]};
  }
};

Result<GraphResult> BuildGraph(const VectorSource& source, uint64_t build_budget,
                               const DiskBuildParams& params, DiskBuildReport* report,
                               const std::atomic<bool>* cancel, const BuildProgress& progress) {
  const size_t n = source.size();
  const int dim = source.dimension();
  GraphResult g;
  g.adj.max_degree = static_cast<size_t>(params.graph.max_degree);
  const size_t rows_per_shard =
      std::max<size_t>(1024, build_budget / BuildBytesPerRow(dim, params.graph.max_degree));
  if (n <= rows_per_shard) {
    std::vector<float> x(n * static_cast<size_t>(dim));
    PIXSEEK_RETURN_IF_ERROR(source.Read(0, n, x.data()));
    report->max_rows_in_ram = n;
    if (progress) progress("graph", 0, n);
    PIXSEEK_ASSIGN_OR_RETURN(VamanaGraph built,
                             VamanaGraph::Build(std::move(x), n, dim, params.graph));
    g.in_ram = std::make_unique<VamanaGraph>(std::move(built));
    g.entry = g.in_ram->entry_point();
    if (progress) progress("graph", n, n);
  } else {
    g.adj.neighbours.assign(n * g.adj.max_degree, 0);
    g.adj.degree.assign(n, 0);
    PIXSEEK_RETURN_IF_ERROR(BuildSharded(source, params.graph, rows_per_shard, &g.adj, &g.entry,
                                         report, cancel, progress));
  }
  if (Cancelled(cancel)) return Status::Cancelled("disk index build cancelled");
  return g;
}

// The header's fixed fields (the sections and checksums come later).
disk::Header MakeHeader(const DiskBuildParams& params, int dim, size_t n, int m, uint32_t entry) {
  const size_t R = static_cast<size_t>(params.graph.max_degree);
  const disk::NodeLayout layout =
      disk::NodeLayout::Make(params.storage, static_cast<size_t>(dim), R);
  disk::Header h{};
  std::memcpy(h.magic, disk::kMagic, 8);
  h.version = disk::kVersion;
  h.dim = static_cast<uint32_t>(dim);
  h.n = n;
  h.max_degree = static_cast<uint32_t>(R);
  h.storage = static_cast<uint32_t>(params.storage);
  h.node_bytes = layout.node_bytes;
  h.nodes_per_block = layout.nodes_per_block;
  h.sectors_per_block = layout.sectors_per_block;
  h.entry_node = entry;
  h.build_list = static_cast<uint32_t>(params.graph.build_list);
  h.alpha = params.graph.alpha;
  h.pq_bytes = static_cast<uint32_t>(m);
  h.blocks_offset = disk::kSector;
  h.num_blocks = layout.blocks(n);
  return h;
}

// Step 3a: the node blocks (each node's stored vector and neighbour list),
// returning each block's checksum.
Result<std::vector<uint64_t>> WriteNodeBlocks(int fd, const std::filesystem::path& tmp,
                                              const VectorSource& source, const disk::Header& h,
                                              const GraphResult& graph,
                                              const DiskBuildParams& params,
                                              const std::atomic<bool>* cancel,
                                              const BuildProgress& progress) {
  const size_t n = source.size();
  const size_t d = static_cast<size_t>(source.dimension());
  const disk::NodeLayout layout = disk::NodeLayout::Make(params.storage, d, h.max_degree);
  std::vector<uint64_t> block_hashes(h.num_blocks);
  const size_t block_bytes = layout.block_bytes();
  constexpr size_t kBlocksPerWrite = 512;
  std::vector<uint8_t> buf(kBlocksPerWrite * block_bytes);
  std::vector<float> rows(kBlocksPerWrite * layout.nodes_per_block * d);
  for (uint64_t b0 = 0; b0 < h.num_blocks; b0 += kBlocksPerWrite) {
    if (Cancelled(cancel)) return Status::Cancelled("disk index build cancelled");
    const uint64_t nb = std::min<uint64_t>(kBlocksPerWrite, h.num_blocks - b0);
    const size_t first = b0 * layout.nodes_per_block;
    const size_t count = std::min<size_t>(n - first, nb * layout.nodes_per_block);
    if (!graph.in_ram) PIXSEEK_RETURN_IF_ERROR(source.Read(first, count, rows.data()));
    std::fill(buf.begin(), buf.begin() + nb * block_bytes, 0);
    for (size_t i = 0; i < count; ++i) {
      const size_t node = first + i;
      uint8_t* rec = buf.data() + (i / layout.nodes_per_block) * block_bytes +
                     (i % layout.nodes_per_block) * layout.node_bytes;
      const float* v = graph.in_ram ? graph.in_ram->vector(static_cast<uint32_t>(node))
                                    : rows.data() + i * d;
      EncodeStored(params.storage, v, d, rec);
      const std::span<const uint32_t> nbs = graph.neighbours(node);
      const uint32_t degree = static_cast<uint32_t>(nbs.size());
      std::memcpy(rec + layout.vector_bytes, &degree, 4);
      std::memcpy(rec + layout.vector_bytes + 4, nbs.data(), nbs.size() * 4);
    }
    for (uint64_t b = 0; b < nb; ++b) {
      block_hashes[b0 + b] = XXH3_64bits(buf.data() + b * block_bytes, block_bytes);
    }
    PIXSEEK_RETURN_IF_ERROR(
        WriteFullAt(fd, buf.data(), nb * block_bytes, h.blocks_offset + b0 * block_bytes, tmp));
    if (progress) progress("write", first + count, n);
  }
  return block_hashes;
}

// Step 3b: the sections after the node blocks, then the header. Sections
// start on sector boundaries; the last one ends the file, so that every byte
// after the node blocks belongs to a checksummed section. Returns the file's
// size.
Result<uint64_t> WriteSectionsAndHeader(int fd, const std::filesystem::path& tmp,
                                        disk::Header& h, const PqResult& pq,
                                        std::span<const int64_t> ids,
                                        const std::vector<uint64_t>& block_hashes,
                                        uint64_t block_bytes) {
  uint64_t offset = h.blocks_offset + h.num_blocks * block_bytes;
  auto write_section = [&](disk::Section* s, const uint8_t* data, size_t bytes) -> Status {
    offset = disk::AlignUp(offset);
    s->offset = offset;
    s->bytes = bytes;
    s->hash = XXH3_64bits(data, bytes);
    PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd, data, bytes, offset, tmp));
    offset += bytes;
    return Status::Ok();
  };
  std::vector<uint8_t> pq_bytes;
  PIXSEEK_RETURN_IF_ERROR(pq.pq->Save(&pq_bytes));
  PIXSEEK_RETURN_IF_ERROR(write_section(&h.pq, pq_bytes.data(), pq_bytes.size()));
  PIXSEEK_RETURN_IF_ERROR(write_section(&h.codes, pq.codes.data(), pq.codes.size()));
  PIXSEEK_RETURN_IF_ERROR(write_section(&h.ids, reinterpret_cast<const uint8_t*>(ids.data()),
                                        ids.size() * 8));
  PIXSEEK_RETURN_IF_ERROR(write_section(&h.block_hashes,
                                        reinterpret_cast<const uint8_t*>(block_hashes.data()),
                                        block_hashes.size() * 8));
  h.file_bytes = offset;
  h.header_hash = XXH3_64bits(&h, offsetof(disk::Header, header_hash));
  std::vector<uint8_t> sector(disk::kSector, 0);
  std::memcpy(sector.data(), &h, sizeof(h));
  PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd, sector.data(), sector.size(), 0, tmp));
  if (::ftruncate(fd, static_cast<off_t>(offset)) != 0) return ErrnoStatus("cannot size", tmp);
  return offset;
}

}  // namespace

Status BuildDiskGraph(const VectorSource& source, std::span<const int64_t> ids,
                      const std::filesystem::path& out, const DiskBuildParams& params,
                      DiskBuildReport* report_out, const std::atomic<bool>* cancel,
                      const BuildProgress& progress) {
  const auto start = std::chrono::steady_clock::now();
  DiskBuildReport report;
  const size_t n = source.size();
  const int dim = source.dimension();
  if (ids.size() != n) {
    return Status::InvalidArgument("disk build: " + std::to_string(ids.size()) + " ids for " +
                                   std::to_string(n) + " vectors");
  }
  if (n < size_t{ProductQuantizer::kCentroids}) {
    return Status::InvalidArgument("disk build: needs at least 256 vectors, got " +
                                   std::to_string(n));
  }
  if (n >= UINT32_MAX) return Status::InvalidArgument("disk build: too many vectors");
  const uint64_t raw_bytes = uint64_t(n) * static_cast<size_t>(dim) * 4;
  const uint64_t ram_budget = params.ram_budget ? params.ram_budget : raw_bytes / 10;
  const int m = params.pq_bytes > 0 ? params.pq_bytes : ChoosePqBytesForBudget(dim, n, ram_budget);
  if (dim % m != 0) {
    return Status::InvalidArgument("disk build: pq_bytes " + std::to_string(m) +
                                   " does not divide the dimension " + std::to_string(dim));
  }
  report.pq_bytes = m;
  const uint64_t build_budget =
      params.build_ram_budget ? params.build_ram_budget : uint64_t{4} << 30;

  PIXSEEK_ASSIGN_OR_RETURN(PqResult pq,
                           TrainAndEncode(source, m, build_budget, params, cancel, progress));
  PIXSEEK_ASSIGN_OR_RETURN(GraphResult graph,
                           BuildGraph(source, build_budget, params, &report, cancel, progress));

  // 3. The file, written to a temporary and renamed when complete.
  disk::Header h = MakeHeader(params, dim, n, m, graph.entry);
  const std::filesystem::path tmp = out.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  struct Closer {
    int fd;
    std::filesystem::path tmp;
    bool keep = false;
    ~Closer() {
      ::close(fd);
      if (!keep) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
      }
    }
  } closer{fd, tmp};
  PIXSEEK_ASSIGN_OR_RETURN(
      std::vector<uint64_t> block_hashes,
      WriteNodeBlocks(fd, tmp, source, h, graph, params, cancel, progress));
  const uint64_t block_bytes =
      disk::NodeLayout::Make(params.storage, static_cast<size_t>(dim), h.max_degree).block_bytes();
  PIXSEEK_ASSIGN_OR_RETURN(uint64_t file_bytes,
                           WriteSectionsAndHeader(fd, tmp, h, pq, ids, block_hashes, block_bytes));
  if (::fsync(fd) != 0) return ErrnoStatus("cannot fsync", tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, out, ec);
  if (ec) return Status::Internal("cannot rename " + tmp.string() + ": " + ec.message());
  closer.keep = true;
  PIXSEEK_RETURN_IF_ERROR(SyncDirectory(out.parent_path().empty() ? "." : out.parent_path()));

  report.file_bytes = file_bytes;
  report.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report_out != nullptr) *report_out = report;
  return Status::Ok();
}

}  // namespace pixseek
