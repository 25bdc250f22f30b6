// Building a disk graph file: PQ training and encoding (FAISS), the Vamana
// graph (in RAM, or in overlapping shards under a RAM budget), and writing
// the blocks and sections of docs/index_format.md.
//
// Every finished step is kept in a work directory beside the output
// (build_parts.h): the PQ codebook and codes, the partition into shards, and
// each shard's graph. A build run again with the same inputs and parameters
// reuses the parts that verify and builds only the rest; the final file is
// then written by streaming the parts (the shard graphs merged in node
// order), so that no step holds more than the build budget.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <queue>
#include <random>
#include <span>
#include <string>
#include <utility>

#include "core/files.h"
#include "index/build_parts.h"
#include "index/disk_format.h"
#include "index/disk_graph.h"
#include "index/inner_product.h"

namespace pixseek {

namespace {

using build_parts::PartKind;
using build_parts::PartReader;
using build_parts::PartWriter;
using build_parts::WorkDir;

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  return Status::Internal(what + " " + path.string() + ": " + std::strerror(errno));
}

bool Cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

// Reads the given rows (ascending) into out, coalescing runs of consecutive
// rows into one read.
Status ReadRows(const VectorSource& source, std::span<const uint32_t> rows, float* out) {
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

// `count` rows into bfloat16 (the graph build's copy), a few hundred rows of
// floats at a time: read(i, n, buffer) reads rows i .. i + n - 1 of the ones
// wanted as floats into buffer.
template <typename Read>
Status ReadBf16(size_t count, size_t d, Bfloat16* out, Read&& read) {
  constexpr size_t kChunk = 256;
  std::vector<float> buffer(std::min(count, kChunk) * d);
  for (size_t i = 0; i < count; i += kChunk) {
    const size_t n = std::min(kChunk, count - i);
    PIXSEEK_RETURN_IF_ERROR(read(i, n, buffer.data()));
    ToBfloat16(buffer.data(), n * d, out + i * d);
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

Status CancelledStatus() {
  return Status::Cancelled(
      "disk index build cancelled; its finished parts are kept for the next run");
}

std::string Hex(uint64_t x) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, x);
  return buf;
}

// What the build is: resolved from the parameters and the data, and the
// same on every run over the same inputs.
struct BuildPlan {
  size_t n = 0;
  size_t d = 0;
  int m = 0;                  // PQ bytes
  uint64_t build_budget = 0;  // bytes
  size_t shard_capacity = 0;  // rows a shard may hold within the budget
  size_t shards = 1;          // 1: the whole graph in RAM
};

BuildPlan MakePlan(size_t n, int dim, int m, uint64_t build_budget, int max_degree) {
  BuildPlan plan;
  plan.n = n;
  plan.d = static_cast<size_t>(dim);
  plan.m = m;
  plan.build_budget = build_budget;
  plan.shard_capacity = std::max<size_t>(1024, build_budget / BuildBytesPerRow(dim, max_degree));
  if (n > plan.shard_capacity) {
    // Every row goes to two shards; 10% slack keeps the capped assignment
    // (NearestTwo) from pushing many rows past their two nearest centres.
    plan.shards =
        std::max<size_t>(2, (20 * n + 9 * plan.shard_capacity - 1) / (9 * plan.shard_capacity));
  }
  return plan;
}

// Everything the result depends on, as the JSON object the work directory's
// fingerprint is made from. The source is identified by its shape and a
// hash of 256 rows spread over it (first and last included): a source that
// changes elsewhere is not noticed. Thread counts are left out: they change
// no part's validity.
Result<std::string> InputsJson(const VectorSource& source, std::span<const int64_t> ids,
                               const DiskBuildParams& params, const BuildPlan& plan) {
  const size_t samples = std::min<size_t>(plan.n, 256);
  std::vector<uint32_t> rows(samples);
  for (size_t i = 0; i < samples; ++i) {
    rows[i] = static_cast<uint32_t>(samples == 1 ? 0 : i * (plan.n - 1) / (samples - 1));
  }
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  std::vector<float> x(rows.size() * plan.d);
  PIXSEEK_RETURN_IF_ERROR(ReadRows(source, rows, x.data()));
  const nlohmann::json inputs = {
      {"parts_version", build_parts::kPartVersion},
      {"n", plan.n},
      {"dim", plan.d},
      {"source_sample_xxh3", Hex(XXH3_64bits(x.data(), x.size() * sizeof(float)))},
      {"ids_xxh3", Hex(XXH3_64bits(ids.data(), ids.size() * sizeof(int64_t)))},
      {"max_degree", params.graph.max_degree},
      {"build_list", params.graph.build_list},
      {"alpha", params.graph.alpha},
      {"passes", params.graph.passes},
      {"seed", params.graph.seed},
      {"storage", std::string(StorageName(params.storage))},
      {"pq_bytes", plan.m},
      {"pq_train_rows", params.pq_train_rows},
      {"build_ram_budget", plan.build_budget},
  };
  return inputs.dump();
}

// Everything a step needs. Borrowed for the length of one BuildDiskGraph.
struct BuildContext {
  const VectorSource& source;
  const DiskBuildParams& params;
  const BuildPlan& plan;
  const WorkDir& work;
  const std::atomic<bool>* cancel;
  const BuildProgress& progress;
  DiskBuildReport* report;

  void Progress(const char* phase, size_t done, size_t total) const {
    if (progress) progress(phase, done, total);
  }
};

// Opens a part that checks out. Null when it is missing or damaged: a
// damaged part is reported (stderr and the report), removed and so rebuilt,
// never trusted.
Result<std::unique_ptr<PartReader>> OpenValidPart(const BuildContext& ctx,
                                                  const std::filesystem::path& path,
                                                  PartKind kind) {
  auto reader = PartReader::Open(path, kind, ctx.work.fingerprint());
  if (reader.ok()) return std::move(*reader);
  if (reader.status().code() == StatusCode::kNotFound) return std::unique_ptr<PartReader>();
  if (reader.status().code() != StatusCode::kDataLoss) return reader.status();
  std::fprintf(stderr, "disk index build: %s; rebuilding it\n",
               std::string(reader.status().message()).c_str());
  ctx.report->damaged_parts.push_back(path.filename().string());
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return std::unique_ptr<PartReader>();
}

// ---------------------------------------------------------------------------
// Step 1: the product quantizer, trained on a sample that fits the build
// budget, and every row's code, streamed into pq.part:
//   u32 dim, u32 m, u64 n, u64 codebook bytes, the codebook
//   (ProductQuantizer::Save), then n * m code bytes in row order.

struct PqPart {
  std::unique_ptr<ProductQuantizer> pq;
  std::vector<uint8_t> codebook;  // Save bytes
  std::unique_ptr<PartReader> reader;
  uint64_t codes_offset = 0;  // payload offset of row 0's code
};

constexpr uint64_t kPqPartFixedBytes = 24;

Status WritePqPart(const BuildContext& ctx) {
  if (Cancelled(ctx.cancel)) return CancelledStatus();
  const size_t n = ctx.plan.n, d = ctx.plan.d;
  const int m = ctx.plan.m;
  const size_t train_rows = std::max<size_t>(
      256, std::min({n, ctx.params.pq_train_rows, size_t(ctx.plan.build_budget / 4 / (d * 4))}));
  std::unique_ptr<ProductQuantizer> pq;
  {
    const std::vector<uint32_t> rows = SampleRows(n, train_rows, ctx.params.graph.seed);
    std::vector<float> x(rows.size() * d);
    PIXSEEK_RETURN_IF_ERROR(ReadRows(ctx.source, rows, x.data()));
    ctx.Progress("pq-train", 0, rows.size());
    PIXSEEK_ASSIGN_OR_RETURN(ProductQuantizer trained,
                             ProductQuantizer::Train(static_cast<int>(d), m, x.data(), rows.size(),
                                                     ctx.params.graph.seed));
    pq = std::make_unique<ProductQuantizer>(std::move(trained));
    ctx.Progress("pq-train", rows.size(), rows.size());
  }
  std::vector<uint8_t> codebook;
  PIXSEEK_RETURN_IF_ERROR(pq->Save(&codebook));
  PIXSEEK_ASSIGN_OR_RETURN(
      auto w, PartWriter::Create(ctx.work.PqPart(), PartKind::kPq, ctx.work.fingerprint()));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(d)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(m)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint64_t>(n)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint64_t>(codebook.size())));
  PIXSEEK_RETURN_IF_ERROR(w->Append(codebook.data(), codebook.size()));
  constexpr size_t kChunk = 4096;
  std::vector<float> buf(kChunk * d);
  std::vector<uint8_t> codes(kChunk * size_t(m));
  for (size_t b = 0; b < n; b += kChunk) {
    if (Cancelled(ctx.cancel)) return CancelledStatus();
    const size_t c = std::min(kChunk, n - b);
    PIXSEEK_RETURN_IF_ERROR(ctx.source.Read(b, c, buf.data()));
    PIXSEEK_RETURN_IF_ERROR(pq->Encode(buf.data(), c, codes.data()));
    PIXSEEK_RETURN_IF_ERROR(w->Append(codes.data(), c * size_t(m)));
    ctx.Progress("pq-encode", b + c, n);
  }
  return w->Commit();
}

Result<PqPart> LoadPqPart(const BuildContext& ctx, std::unique_ptr<PartReader> reader) {
  uint32_t dim = 0, m = 0;
  uint64_t n = 0, codebook_bytes = 0;
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&dim));
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&m));
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&n));
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&codebook_bytes));
  if (dim != ctx.plan.d || m != uint32_t(ctx.plan.m) || n != ctx.plan.n ||
      codebook_bytes > reader->payload_bytes() ||
      reader->payload_bytes() != kPqPartFixedBytes + codebook_bytes + n * m) {
    return Status::DataLoss("build part " + reader->path().string() +
                            ": its shape does not match the build");
  }
  PqPart out;
  out.codebook.resize(codebook_bytes);
  PIXSEEK_RETURN_IF_ERROR(reader->Read(out.codebook.data(), codebook_bytes));
  PIXSEEK_ASSIGN_OR_RETURN(ProductQuantizer pq, ProductQuantizer::Load(out.codebook));
  out.pq = std::make_unique<ProductQuantizer>(std::move(pq));
  out.codes_offset = kPqPartFixedBytes + codebook_bytes;
  out.reader = std::move(reader);
  return out;
}

// ---------------------------------------------------------------------------
// Step 2 (sharded): DiskANN's partition. k-means on a sample into k centres;
// each row goes to its two nearest centres that still have room (so
// neighbouring shards overlap and none outgrows the budget); the entry node
// is the medoid, the row closest to the mean. partition.part:
//   u32 k, u32 dim, u32 entry node, u32 0, k * dim f32 centres,
//   k u64 row counts, then each shard's rows (u32, ascending), shard order.

struct Partition {
  size_t k = 0;
  uint32_t entry = 0;
  std::vector<uint64_t> counts;
  std::vector<uint64_t> offsets;  // payload offset of each shard's row list
  std::unique_ptr<PartReader> reader;

  Result<std::vector<uint32_t>> Rows(size_t shard) const {
    std::vector<uint32_t> rows(counts[shard]);
    PIXSEEK_RETURN_IF_ERROR(reader->ReadAt(offsets[shard], rows.data(), rows.size() * 4));
    return rows;
  }
};

// Appends rows of one shard to its spill file through a small buffer, so the
// partition step holds k buffers, not 2n row numbers.
class ShardSpill {
 public:
  explicit ShardSpill(std::filesystem::path path) : path_(std::move(path)) {}
  ~ShardSpill() {
    if (fd_ >= 0) ::close(fd_);
  }
  ShardSpill(ShardSpill&& o) noexcept
      : path_(std::move(o.path_)), fd_(o.fd_), rows_(std::move(o.rows_)) {
    o.fd_ = -1;
  }
  Status Add(uint32_t row) {
    rows_.push_back(row);
    return rows_.size() == kRows ? Flush() : Status::Ok();
  }
  Status Flush() {
    if (fd_ < 0) {
      fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd_ < 0) return ErrnoStatus("cannot create", path_);
    }
    PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd_, rows_.data(), rows_.size() * 4, written_, path_));
    written_ += rows_.size() * 4;
    rows_.clear();
    return Status::Ok();
  }
  // Appends the spilled rows to the part and deletes the spill file.
  Status CopyTo(PartWriter* w) {
    PIXSEEK_RETURN_IF_ERROR(Flush());
    std::vector<uint8_t> buf(size_t{1} << 20);
    for (uint64_t at = 0; at < written_;) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(buf.size(), written_ - at));
      PIXSEEK_RETURN_IF_ERROR(ReadFullAt(fd_, buf.data(), take, at, path_));
      PIXSEEK_RETURN_IF_ERROR(w->Append(buf.data(), take));
      at += take;
    }
    ::close(fd_);
    fd_ = -1;
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    return Status::Ok();
  }

 private:
  static constexpr size_t kRows = 16384;  // 64 KiB per shard
  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t written_ = 0;
  std::vector<uint32_t> rows_;
};

// The two nearest centres with room, by |x - c|^2 = 1 - 2<x,c> + |c|^2 for
// unit x (the centres need not be unit length). When fewer than two have
// room (possible only for the last rows), the nearest regardless.
std::array<size_t, 2> NearestTwo(const float* x, const std::vector<float>& centres,
                                 const std::vector<float>& centre_norm,
                                 const std::vector<uint64_t>& counts, size_t capacity, size_t d) {
  const size_t k = centre_norm.size();
  float best[2] = {INFINITY, INFINITY};
  size_t which[2] = {k, k};
  float any_best[2] = {INFINITY, INFINITY};
  size_t any_which[2] = {0, 1};
  for (size_t s = 0; s < k; ++s) {
    const float dist = centre_norm[s] - 2 * InnerProduct(x, centres.data() + s * d, d);
    auto offer = [&](float* b, size_t* w) {
      if (dist < b[0]) {
        b[1] = b[0];
        w[1] = w[0];
        b[0] = dist;
        w[0] = s;
      } else if (dist < b[1]) {
        b[1] = dist;
        w[1] = s;
      }
    };
    offer(any_best, any_which);
    if (counts[s] < capacity) offer(best, which);
  }
  if (which[1] == k) return {any_which[0], any_which[1]};
  return {which[0], which[1]};
}

Status WritePartitionPart(const BuildContext& ctx) {
  if (Cancelled(ctx.cancel)) return CancelledStatus();
  const size_t n = ctx.plan.n, d = ctx.plan.d, k = ctx.plan.shards;
  const size_t capacity = ctx.plan.shard_capacity;
  ctx.Progress("partition", 0, 2 * n);
  // Train the centres on a sample of float rows that takes at most half the
  // budget (FAISS's k-means needs a little beside it), and at least the 40
  // rows per centre FAISS asks for.
  std::vector<float> centres;
  {
    const size_t budget_rows = ctx.plan.build_budget / 2 / (d * sizeof(float));
    const std::vector<uint32_t> sample =
        SampleRows(n, std::min(n, std::max(budget_rows, 40 * k)), ctx.params.graph.seed);
    std::vector<float> x(sample.size() * d);
    PIXSEEK_RETURN_IF_ERROR(ReadRows(ctx.source, sample, x.data()));
    PIXSEEK_ASSIGN_OR_RETURN(centres, TrainKMeans(static_cast<int>(d), k, x.data(), sample.size(),
                                                  ctx.params.graph.seed));
  }
  std::vector<float> centre_norm(k);
  for (size_t c = 0; c < k; ++c) {
    centre_norm[c] = InnerProduct(centres.data() + c * d, centres.data() + c * d, d);
  }
  // Pass 1: assign every row (spilled per shard) and sum the rows.
  std::vector<ShardSpill> spills;
  for (size_t s = 0; s < k; ++s) spills.emplace_back(ctx.work.SpillFile(s));
  std::vector<uint64_t> counts(k, 0);
  std::vector<double> sum(d, 0.0);
  constexpr size_t kChunk = 2048;
  std::vector<float> buf(kChunk * d);
  for (size_t b = 0; b < n; b += kChunk) {
    if (Cancelled(ctx.cancel)) return CancelledStatus();
    const size_t c = std::min(kChunk, n - b);
    PIXSEEK_RETURN_IF_ERROR(ctx.source.Read(b, c, buf.data()));
    for (size_t i = 0; i < c; ++i) {
      const float* x = buf.data() + i * d;
      for (size_t j = 0; j < d; ++j) sum[j] += x[j];
      for (size_t s : NearestTwo(x, centres, centre_norm, counts, capacity, d)) {
        ++counts[s];
        PIXSEEK_RETURN_IF_ERROR(spills[s].Add(static_cast<uint32_t>(b + i)));
      }
    }
    ctx.Progress("partition", b + c, 2 * n);
  }
  // Pass 2: the medoid.
  std::vector<float> mean(d);
  for (size_t j = 0; j < d; ++j) mean[j] = static_cast<float>(sum[j] / double(n));
  float best = -INFINITY;
  uint32_t entry = 0;
  for (size_t b = 0; b < n; b += kChunk) {
    if (Cancelled(ctx.cancel)) return CancelledStatus();
    const size_t c = std::min(kChunk, n - b);
    PIXSEEK_RETURN_IF_ERROR(ctx.source.Read(b, c, buf.data()));
    for (size_t i = 0; i < c; ++i) {
      const float ip = InnerProduct(mean.data(), buf.data() + i * d, d);
      if (ip > best) {
        best = ip;
        entry = static_cast<uint32_t>(b + i);
      }
    }
    ctx.Progress("partition", n + b + c, 2 * n);
  }
  PIXSEEK_ASSIGN_OR_RETURN(
      auto w,
      PartWriter::Create(ctx.work.PartitionPart(), PartKind::kPartition, ctx.work.fingerprint()));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(k)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(d)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(entry));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(uint32_t{0}));
  PIXSEEK_RETURN_IF_ERROR(w->Append(centres.data(), centres.size() * sizeof(float)));
  PIXSEEK_RETURN_IF_ERROR(w->Append(counts.data(), counts.size() * sizeof(uint64_t)));
  for (ShardSpill& spill : spills) PIXSEEK_RETURN_IF_ERROR(spill.CopyTo(w.get()));
  return w->Commit();
}

Result<Partition> LoadPartition(const BuildContext& ctx, std::unique_ptr<PartReader> reader) {
  uint32_t k = 0, dim = 0, entry = 0, zero = 0;
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&k));
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&dim));
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&entry));
  PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&zero));
  auto wrong = [&](const std::string& what) {
    return Status::DataLoss("build part " + reader->path().string() + ": " + what);
  };
  if (k != ctx.plan.shards || dim != ctx.plan.d || entry >= ctx.plan.n) {
    return wrong("its shape does not match the build");
  }
  Partition p;
  p.k = k;
  p.entry = entry;
  p.counts.resize(k);
  uint64_t offset = 16 + uint64_t{k} * dim * 4;
  PIXSEEK_RETURN_IF_ERROR(reader->ReadAt(offset, p.counts.data(), k * sizeof(uint64_t)));
  offset += uint64_t{k} * 8;
  uint64_t total = 0;
  for (uint64_t c : p.counts) {
    p.offsets.push_back(offset + total * 4);
    total += c;
  }
  if (total != 2 * ctx.plan.n || reader->payload_bytes() != offset + total * 4) {
    return wrong("its row lists do not add up to two per row");
  }
  p.reader = std::move(reader);
  return p;
}

// ---------------------------------------------------------------------------
// Step 3 (sharded): one shard's Vamana graph, in global rows.
// shard-NNNN.part: u32 shard, u32 R, u64 rows, then per row (ascending):
//   u32 global row, u32 degree, degree u32 global neighbour rows.

// `progress` hears of the graph's insertions (VamanaGraph::Build).
Status WriteShardPart(const BuildContext& ctx, const Partition& partition, size_t shard,
                      const VamanaGraph::Progress& progress) {
  const size_t d = ctx.plan.d;
  PIXSEEK_ASSIGN_OR_RETURN(const std::vector<uint32_t> rows, partition.Rows(shard));
  ctx.report->max_rows_in_ram = std::max(ctx.report->max_rows_in_ram, rows.size());
  std::unique_ptr<VamanaGraph> g;
  if (rows.size() > 1) {  // a lone row has no neighbours in its shard
    std::vector<Bfloat16> x(rows.size() * d);
    PIXSEEK_RETURN_IF_ERROR(ReadBf16(rows.size(), d, x.data(), [&](size_t i, size_t n, float* buf) {
      return ReadRows(ctx.source, std::span<const uint32_t>(rows).subspan(i, n), buf);
    }));
    PIXSEEK_ASSIGN_OR_RETURN(
        VamanaGraph built,
        VamanaGraph::BuildLinks(std::move(x), rows.size(), static_cast<int>(d), ctx.params.graph,
                                progress));
    g = std::make_unique<VamanaGraph>(std::move(built));
  }
  PIXSEEK_ASSIGN_OR_RETURN(
      auto w,
      PartWriter::Create(ctx.work.ShardPart(shard), PartKind::kShardGraph, ctx.work.fingerprint()));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(shard)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(ctx.params.graph.max_degree)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint64_t>(rows.size())));
  std::vector<uint32_t> record;
  for (size_t i = 0; i < rows.size(); ++i) {
    record.assign({rows[i], 0u});
    if (g) {
      for (uint32_t local : g->neighbours(static_cast<uint32_t>(i))) record.push_back(rows[local]);
    }
    record[1] = static_cast<uint32_t>(record.size() - 2);
    PIXSEEK_RETURN_IF_ERROR(w->Append(record.data(), record.size() * 4));
  }
  return w->Commit();
}

// ---------------------------------------------------------------------------
// Step 4: the file. Neighbour lists come in node order from the in-RAM graph
// or from the shard parts, merged.

class NeighbourLists {
 public:
  virtual ~NeighbourLists() = default;
  // Node `node`'s list (called for node 0, 1, ... n - 1 in turn).
  virtual Status Next(uint32_t node, std::vector<uint32_t>* out) = 0;
};

class InRamLists final : public NeighbourLists {
 public:
  explicit InRamLists(const VamanaGraph& g) : g_(g) {}
  Status Next(uint32_t node, std::vector<uint32_t>* out) override {
    const std::span<const uint32_t> nbs = g_.neighbours(node);
    out->assign(nbs.begin(), nbs.end());
    return Status::Ok();
  }

 private:
  const VamanaGraph& g_;
};

// A k-way merge of the shard parts, all sorted by global row. A row's lists
// (one per shard holding it) are folded in shard order: the list so far and
// the next shard's, interleaved, without duplicates, cut to R. Holds one
// read buffer per shard.
class MergedShardLists final : public NeighbourLists {
 public:
  static Result<std::unique_ptr<MergedShardLists>> Open(const BuildContext& ctx,
                                                        const Partition& partition) {
    std::unique_ptr<MergedShardLists> m(new MergedShardLists);
    m->max_degree_ = static_cast<size_t>(ctx.params.graph.max_degree);
    m->n_ = ctx.plan.n;
    for (size_t s = 0; s < partition.k; ++s) {
      if (partition.counts[s] == 0) continue;
      PIXSEEK_ASSIGN_OR_RETURN(
          auto reader,
          PartReader::Open(ctx.work.ShardPart(s), PartKind::kShardGraph, ctx.work.fingerprint()));
      uint32_t shard = 0, r = 0;
      uint64_t rows = 0;
      PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&shard));
      PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&r));
      PIXSEEK_RETURN_IF_ERROR(reader->ReadValue(&rows));
      if (shard != s || r != m->max_degree_ || rows != partition.counts[s]) {
        return Status::DataLoss("build part " + reader->path().string() +
                                ": its shape does not match the partition");
      }
      m->cursors_.push_back({std::move(reader), rows, 0, {}});
      PIXSEEK_RETURN_IF_ERROR(m->Advance(m->cursors_.size() - 1));
    }
    return m;
  }

  Status Next(uint32_t node, std::vector<uint32_t>* out) override {
    out->clear();
    while (!heads_.empty() && heads_.top().first == node) {
      const size_t c = heads_.top().second;
      heads_.pop();
      Fold(cursors_[c].list, out);
      PIXSEEK_RETURN_IF_ERROR(Advance(c));
    }
    if (!heads_.empty() && heads_.top().first < node) {
      return Status::DataLoss("build part " +
                              cursors_[heads_.top().second].reader->path().string() +
                              ": rows out of order");
    }
    return Status::Ok();
  }

 private:
  struct Cursor {
    std::unique_ptr<PartReader> reader;
    uint64_t rows_left;
    uint32_t row;
    std::vector<uint32_t> list;
  };

  // Reads cursor c's next record and queues its row.
  Status Advance(size_t c) {
    Cursor& cur = cursors_[c];
    if (cur.rows_left == 0) return Status::Ok();
    --cur.rows_left;
    uint32_t degree = 0;
    PIXSEEK_RETURN_IF_ERROR(cur.reader->ReadValue(&cur.row));
    PIXSEEK_RETURN_IF_ERROR(cur.reader->ReadValue(&degree));
    if (degree > max_degree_) {
      return Status::DataLoss("build part " + cur.reader->path().string() + ": a degree above R");
    }
    cur.list.resize(degree);
    PIXSEEK_RETURN_IF_ERROR(cur.reader->Read(cur.list.data(), degree * 4));
    if (cur.row >= n_ ||
        std::any_of(cur.list.begin(), cur.list.end(), [this](uint32_t row) { return row >= n_; })) {
      return Status::DataLoss("build part " + cur.reader->path().string() +
                              ": a row number past the end");
    }
    heads_.push({cur.row, c});
    return Status::Ok();
  }

  void Fold(const std::vector<uint32_t>& next, std::vector<uint32_t>* merged) const {
    const std::vector<uint32_t> old = *merged;
    merged->clear();
    for (size_t t = 0; merged->size() < max_degree_ && (t < old.size() || t < next.size()); ++t) {
      for (const std::vector<uint32_t>* from : {&old, &next}) {
        if (t < from->size() && merged->size() < max_degree_ &&
            std::find(merged->begin(), merged->end(), (*from)[t]) == merged->end()) {
          merged->push_back((*from)[t]);
        }
      }
    }
  }

  MergedShardLists() = default;
  size_t max_degree_ = 0;
  size_t n_ = 0;
  std::vector<Cursor> cursors_;
  // (row, cursor), smallest row first, then the lower shard.
  std::priority_queue<std::pair<uint32_t, size_t>, std::vector<std::pair<uint32_t, size_t>>,
                      std::greater<>>
      heads_;
};

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

// Places the sections after the node blocks, each on a sector boundary, in
// the order pq, codes, ids, block_hashes; the last one ends the file, so
// that every byte after the blocks belongs to a checksummed section. Their
// sizes are known before anything is written, which lets the block
// checksums go to their section as the blocks are written.
void PlaceSections(disk::Header* h, uint64_t block_bytes, uint64_t codebook_bytes, int m) {
  uint64_t offset = h->blocks_offset + h->num_blocks * block_bytes;
  auto place = [&](disk::Section* s, uint64_t bytes) {
    offset = disk::AlignUp(offset);
    s->offset = offset;
    s->bytes = bytes;
    offset += bytes;
  };
  place(&h->pq, codebook_bytes);
  place(&h->codes, h->n * uint64_t(m));
  place(&h->ids, h->n * 8);
  place(&h->block_hashes, h->num_blocks * 8);
  h->file_bytes = offset;
}

// Streams the file: node blocks (vectors read from the source in batches,
// lists from `lists`) with their checksums, the codebook, the codes copied
// from pq.part, the ids, then the header. Holds one batch of blocks.
Status WriteGraphFile(const BuildContext& ctx, int fd, const std::filesystem::path& tmp,
                      disk::Header& h, const PqPart& pq, NeighbourLists& lists,
                      std::span<const int64_t> ids, const char* phase) {
  const size_t n = ctx.plan.n, d = ctx.plan.d;
  const disk::NodeLayout layout = disk::NodeLayout::Make(ctx.params.storage, d, h.max_degree);
  const size_t block_bytes = layout.block_bytes();
  PlaceSections(&h, block_bytes, pq.codebook.size(), ctx.plan.m);

  XXH3_state_t* state = XXH3_createState();
  struct FreeState {
    XXH3_state_t* s;
    ~FreeState() { XXH3_freeState(s); }
  } free_state{state};

  // Node blocks, and their checksums into the block_hashes section.
  constexpr size_t kBlocksPerWrite = 512;
  std::vector<uint8_t> buf(kBlocksPerWrite * block_bytes);
  std::vector<float> rows(kBlocksPerWrite * layout.nodes_per_block * d);
  std::vector<uint64_t> hashes(kBlocksPerWrite);
  std::vector<uint32_t> nbs;
  XXH3_64bits_reset(state);
  for (uint64_t b0 = 0; b0 < h.num_blocks; b0 += kBlocksPerWrite) {
    if (Cancelled(ctx.cancel)) return CancelledStatus();
    const uint64_t nb = std::min<uint64_t>(kBlocksPerWrite, h.num_blocks - b0);
    const size_t first = b0 * layout.nodes_per_block;
    const size_t count = std::min<size_t>(n - first, nb * layout.nodes_per_block);
    PIXSEEK_RETURN_IF_ERROR(ctx.source.Read(first, count, rows.data()));
    std::fill(buf.begin(), buf.begin() + nb * block_bytes, 0);
    for (size_t i = 0; i < count; ++i) {
      const uint32_t node = static_cast<uint32_t>(first + i);
      uint8_t* rec = buf.data() + (i / layout.nodes_per_block) * block_bytes +
                     (i % layout.nodes_per_block) * layout.node_bytes;
      EncodeStored(ctx.params.storage, rows.data() + i * d, d, rec);
      PIXSEEK_RETURN_IF_ERROR(lists.Next(node, &nbs));
      const uint32_t degree = static_cast<uint32_t>(nbs.size());
      std::memcpy(rec + layout.vector_bytes, &degree, 4);
      std::memcpy(rec + layout.vector_bytes + 4, nbs.data(), nbs.size() * 4);
    }
    for (uint64_t b = 0; b < nb; ++b)
      hashes[b] = XXH3_64bits(buf.data() + b * block_bytes, block_bytes);
    XXH3_64bits_update(state, hashes.data(), nb * 8);
    PIXSEEK_RETURN_IF_ERROR(
        WriteFullAt(fd, buf.data(), nb * block_bytes, h.blocks_offset + b0 * block_bytes, tmp));
    PIXSEEK_RETURN_IF_ERROR(
        WriteFullAt(fd, hashes.data(), nb * 8, h.block_hashes.offset + b0 * 8, tmp));
    ctx.Progress(phase, first + count, n);
  }
  h.block_hashes.hash = XXH3_64bits_digest(state);

  // The codebook, the codes (copied from pq.part) and the ids.
  h.pq.hash = XXH3_64bits(pq.codebook.data(), pq.codebook.size());
  PIXSEEK_RETURN_IF_ERROR(
      WriteFullAt(fd, pq.codebook.data(), pq.codebook.size(), h.pq.offset, tmp));
  XXH3_64bits_reset(state);
  std::vector<uint8_t> chunk(size_t{1} << 20);
  for (uint64_t at = 0; at < h.codes.bytes;) {
    const size_t take = static_cast<size_t>(std::min<uint64_t>(chunk.size(), h.codes.bytes - at));
    PIXSEEK_RETURN_IF_ERROR(pq.reader->ReadAt(pq.codes_offset + at, chunk.data(), take));
    XXH3_64bits_update(state, chunk.data(), take);
    PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd, chunk.data(), take, h.codes.offset + at, tmp));
    at += take;
  }
  h.codes.hash = XXH3_64bits_digest(state);
  h.ids.hash = XXH3_64bits(ids.data(), ids.size() * 8);
  PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd, ids.data(), ids.size() * 8, h.ids.offset, tmp));

  h.header_hash = XXH3_64bits(&h, offsetof(disk::Header, header_hash));
  std::vector<uint8_t> sector(disk::kSector, 0);
  std::memcpy(sector.data(), &h, sizeof(h));
  PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd, sector.data(), sector.size(), 0, tmp));
  if (::ftruncate(fd, static_cast<off_t>(h.file_bytes)) != 0)
    return ErrnoStatus("cannot size", tmp);
  return Status::Ok();
}

// Writes the file to out + ".tmp", fsyncs it and renames it over `out`.
Status WriteAndRename(const BuildContext& ctx, const std::filesystem::path& out, uint32_t entry,
                      const PqPart& pq, NeighbourLists& lists, std::span<const int64_t> ids,
                      const char* phase) {
  disk::Header h =
      MakeHeader(ctx.params, static_cast<int>(ctx.plan.d), ctx.plan.n, ctx.plan.m, entry);
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
  PIXSEEK_RETURN_IF_ERROR(WriteGraphFile(ctx, fd, tmp, h, pq, lists, ids, phase));
  if (::fsync(fd) != 0) return ErrnoStatus("cannot fsync", tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, out, ec);
  if (ec) return Status::Internal("cannot rename " + tmp.string() + ": " + ec.message());
  closer.keep = true;
  ctx.report->file_bytes = h.file_bytes;
  return SyncDirectory(out.parent_path().empty() ? "." : out.parent_path());
}

// The merge keeps every shard part open; a build of many shards may need
// more descriptors than the default soft limit allows.
void RaiseOpenFileLimit(size_t needed) {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= needed) return;
  rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, needed);
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

Status MemoryVectorSource::Read(size_t begin, size_t count, float* out) const {
  if (begin > n_ || count > n_ - begin)
    return Status::InvalidArgument("vector source: rows past the end");
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
  if (begin > n_ || count > n_ - begin)
    return Status::InvalidArgument("vector source: rows past the end");
  const size_t row = size_t(dim_) * 4;
  return ReadFullAt(fd_, out, count * row, 8 + begin * row, path_);
}

size_t BuildBytesPerRow(int dim, int max_degree) {
  return size_t(dim) * sizeof(Bfloat16) + size_t(max_degree) * 4 * 2 + 320;
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

// What earlier runs finished, each part checked in full. Damaged parts are
// deleted (OpenValidPart); shard graphs count only beside the partition
// they were built from.
struct FinishedParts {
  std::unique_ptr<PartReader> pq;
  std::unique_ptr<PartReader> partition;
  std::vector<bool> shards;
};

Result<FinishedParts> ScanFinishedParts(const BuildContext& ctx) {
  FinishedParts f;
  const WorkDir& work = ctx.work;
  PIXSEEK_ASSIGN_OR_RETURN(f.pq, OpenValidPart(ctx, work.PqPart(), PartKind::kPq));
  f.shards.assign(ctx.plan.shards, false);
  if (ctx.plan.shards == 1) return f;
  PIXSEEK_ASSIGN_OR_RETURN(f.partition,
                           OpenValidPart(ctx, work.PartitionPart(), PartKind::kPartition));
  if (f.partition) {
    // The same inputs can be planned into another number of shards by
    // another pixseek version (it sized a row's build memory differently):
    // that partition and its shard graphs are cut again, the codes kept.
    uint32_t k = 0;
    PIXSEEK_RETURN_IF_ERROR(f.partition->ReadAt(0, &k, sizeof k));
    if (k != ctx.plan.shards) {
      const std::string why = "the partition in " + work.dir().string() + " was cut into " +
                              std::to_string(k) + " shards and this build plans " +
                              std::to_string(ctx.plan.shards);
      std::fprintf(stderr, "disk index build: %s; cutting it again\n", why.c_str());
      ctx.report->replanned = why;
      f.partition.reset();
      std::error_code ec;
      std::filesystem::remove(work.PartitionPart(), ec);
      for (size_t s = ctx.plan.shards; s < k; ++s) std::filesystem::remove(work.ShardPart(s), ec);
    }
  }
  for (size_t s = 0; s < ctx.plan.shards; ++s) {
    if (!f.partition) {
      std::error_code ec;
      std::filesystem::remove(work.ShardPart(s), ec);
      continue;
    }
    PIXSEEK_ASSIGN_OR_RETURN(auto shard,
                             OpenValidPart(ctx, work.ShardPart(s), PartKind::kShardGraph));
    f.shards[s] = shard != nullptr;
  }
  return f;
}

// Records what is reused in the report and logs the "resuming" line.
void ReportReuse(const BuildContext& ctx, const FinishedParts& f) {
  DiskBuildReport& r = *ctx.report;
  r.reused_pq = f.pq != nullptr;
  r.reused_partition = f.partition != nullptr;
  r.reused_shards = static_cast<int>(std::count(f.shards.begin(), f.shards.end(), true));
  if (!r.reused_pq && !r.reused_partition) return;
  std::string done = r.reused_pq ? "PQ codes" : "";
  if (ctx.plan.shards > 1) {
    if (r.reused_partition) done += std::string(done.empty() ? "" : ", ") + "the partition";
    done += (done.empty() ? "" : " and ") + std::to_string(r.reused_shards) + " of " +
            std::to_string(ctx.plan.shards) + " shard graphs";
  }
  r.resumed = "resuming the disk index build in " + ctx.work.dir().string() + ": " + done +
              " are already done";
  std::fprintf(stderr, "%s\n", r.resumed.c_str());
}

// Steps 2-4 when the data fits the budget: the graph in RAM, then the file.
// The graph is not kept as a part (it is rebuilt if the write is cut short).
Status BuildInRam(const BuildContext& ctx, const PqPart& pq, std::span<const int64_t> ids,
                  const std::filesystem::path& out) {
  const size_t n = ctx.plan.n;
  auto t = std::chrono::steady_clock::now();
  std::vector<Bfloat16> x(n * ctx.plan.d);
  PIXSEEK_RETURN_IF_ERROR(ReadBf16(n, ctx.plan.d, x.data(), [&](size_t i, size_t count, float* buf) {
    return ctx.source.Read(i, count, buf);
  }));
  ctx.report->max_rows_in_ram = n;
  ctx.Progress("graph", 0, n);
  PIXSEEK_ASSIGN_OR_RETURN(
      VamanaGraph g,
      VamanaGraph::BuildLinks(std::move(x), n, static_cast<int>(ctx.plan.d), ctx.params.graph,
                         ctx.progress ? VamanaGraph::Progress([&](size_t inserted, size_t inserts) {
                           // Below n until the graph is frozen.
                           ctx.Progress("graph", (n - 1) * inserted / inserts, n);
                         })
                                      : nullptr));
  ctx.Progress("graph", n, n);
  ctx.report->graph_s = Seconds(t);
  if (Cancelled(ctx.cancel)) return CancelledStatus();
  t = std::chrono::steady_clock::now();
  InRamLists lists(g);
  PIXSEEK_RETURN_IF_ERROR(WriteAndRename(ctx, out, g.entry_point(), pq, lists, ids, "write"));
  ctx.report->write_s = Seconds(t);
  return Status::Ok();
}

// Steps 2-4 under the budget: the partition, the shard graphs not done yet,
// then the merge straight into the node blocks.
Status BuildSharded(const BuildContext& ctx, FinishedParts& finished, const PqPart& pq,
                    std::span<const int64_t> ids, const std::filesystem::path& out) {
  const WorkDir& work = ctx.work;
  auto t = std::chrono::steady_clock::now();
  if (!finished.partition) {
    PIXSEEK_RETURN_IF_ERROR(WritePartitionPart(ctx));
    PIXSEEK_ASSIGN_OR_RETURN(
        finished.partition,
        PartReader::Open(work.PartitionPart(), PartKind::kPartition, work.fingerprint()));
  }
  PIXSEEK_ASSIGN_OR_RETURN(const Partition partition,
                           LoadPartition(ctx, std::move(finished.partition)));
  ctx.report->partition_s = Seconds(t);

  // Progress counts rows over all shards, so that its rate and ETA carry
  // from one shard to the next.
  t = std::chrono::steady_clock::now();
  const size_t k = ctx.plan.shards, total = 2 * ctx.plan.n;
  size_t done = 0;
  for (size_t s = 0; s < k; ++s) {
    if (finished.shards[s]) done += partition.counts[s];
  }
  for (size_t s = 0; s < k; ++s) {
    if (finished.shards[s] || partition.counts[s] == 0) continue;
    if (Cancelled(ctx.cancel)) return CancelledStatus();
    const std::string phase = "shard " + std::to_string(s + 1) + "/" + std::to_string(k) + " graph";
    ctx.Progress(phase.c_str(), done, total);
    // Within the shard, its rows count in proportion to the insertions
    // done (a shard of a 10M build takes the better part of an hour).
    const size_t rows = partition.counts[s];
    VamanaGraph::Progress within;  // none when nobody listens
    if (ctx.progress) {
      within = [&](size_t inserted, size_t inserts) {
        ctx.Progress(phase.c_str(), done + rows * inserted / std::max<size_t>(inserts, 1), total);
      };
    }
    PIXSEEK_RETURN_IF_ERROR(WriteShardPart(ctx, partition, s, within));
    done += partition.counts[s];
    ctx.Progress(phase.c_str(), done, total);
  }
  ctx.report->graph_s = Seconds(t);
  if (Cancelled(ctx.cancel)) return CancelledStatus();

  t = std::chrono::steady_clock::now();
  RaiseOpenFileLimit(k + 64);
  PIXSEEK_ASSIGN_OR_RETURN(auto lists, MergedShardLists::Open(ctx, partition));
  PIXSEEK_RETURN_IF_ERROR(WriteAndRename(ctx, out, partition.entry, pq, *lists, ids, "merge"));
  ctx.report->write_s = Seconds(t);
  return Status::Ok();
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
  const uint64_t build_budget =
      params.build_ram_budget ? params.build_ram_budget : uint64_t{4} << 30;
  const BuildPlan plan = MakePlan(n, dim, m, build_budget, params.graph.max_degree);
  report.pq_bytes = m;
  report.shards = static_cast<int>(plan.shards);

  // The work directory, emptied when it holds parts of another build.
  PIXSEEK_ASSIGN_OR_RETURN(const std::string inputs, InputsJson(source, ids, params, plan));
  const std::filesystem::path work_path =
      params.work_dir.empty() ? std::filesystem::path(out.string() + ".parts") : params.work_dir;
  PIXSEEK_ASSIGN_OR_RETURN(const WorkDir work, WorkDir::Open(work_path, inputs, &report.discarded));
  if (!report.discarded.empty()) {
    std::fprintf(stderr, "disk index build: starting over in %s: %s\n", work_path.c_str(),
                 report.discarded.c_str());
  }
  const BuildContext ctx{source, params, plan, work, cancel, progress, &report};
  PIXSEEK_ASSIGN_OR_RETURN(FinishedParts finished, ScanFinishedParts(ctx));
  ReportReuse(ctx, finished);

  // Step 1: the quantizer and the codes.
  auto t = std::chrono::steady_clock::now();
  if (!finished.pq) {
    PIXSEEK_RETURN_IF_ERROR(WritePqPart(ctx));
    PIXSEEK_ASSIGN_OR_RETURN(finished.pq,
                             PartReader::Open(work.PqPart(), PartKind::kPq, work.fingerprint()));
  }
  PIXSEEK_ASSIGN_OR_RETURN(const PqPart pq, LoadPqPart(ctx, std::move(finished.pq)));
  report.pq_s = Seconds(t);

  PIXSEEK_RETURN_IF_ERROR(plan.shards == 1 ? BuildInRam(ctx, pq, ids, out)
                                           : BuildSharded(ctx, finished, pq, ids, out));
  // The file is in place: the parts are no longer needed.
  PIXSEEK_RETURN_IF_ERROR(work.Remove());

  report.build_s = Seconds(start);
  if (report_out != nullptr) *report_out = report;
  return Status::Ok();
}

}  // namespace pixseek
