// The exact (flat) vector index: every vector in one contiguous array in RAM,
// searched by a multi-threaded SIMD scan, persisted by FlatLog.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "index/flat_log.h"
#include "index/index_kinds.h"
#include "index/inner_product.h"
#include "index/rw_mutex.h"
#include "index/top_k.h"
#include "pixseek/vector_index.h"

namespace pixseek {
namespace {

// Below this many multiply-adds per thread, another thread costs more to
// start than it saves.
constexpr size_t kMinWorkPerThread = size_t{1} << 21;
// Stored vectors scanned per block: the block stays in L2 while every query
// of the batch passes over it, so a batch of queries reads RAM once.
constexpr size_t kBlockBytes = 256 * 1024;

bool AllFinite(const float* values, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return false;
  }
  return true;
}

// Thread-safety: as VectorIndex. Search takes mu_ shared; Add and Remove take
// it exclusively and append to the log (fdatasync) before changing memory, so
// an acknowledged change is durable and a failed one changes nothing.
class FlatIndex final : public VectorIndex {
 public:
  FlatIndex(int dimension, const FlatIndexOptions& options)
      : dim_(static_cast<size_t>(dimension)),
        num_threads_(options.num_threads > 0
                         ? options.num_threads
                         : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))),
        read_only_(options.read_only),
        salvaged_(options.salvaged) {}

  // Opens the log and replays it into memory. Called once, before sharing.
  Status Load(const std::filesystem::path& file) {
    FlatLogVisitor visitor;
    visitor.on_add = [this](uint32_t count, const uint8_t* ids, const uint8_t* vectors) {
      return ReplayAdd(count, ids, vectors);
    };
    visitor.on_remove = [this](uint32_t count, const uint8_t* ids) {
      std::vector<int64_t> removed(count);
      std::memcpy(removed.data(), ids, count * sizeof(int64_t));
      for (int64_t id : removed) RemoveFromMemory(id);
      return Status::Ok();
    };
    FlatLogSalvage salvage;
    PIXSEEK_ASSIGN_OR_RETURN(
        log_, FlatLog::Open(file, static_cast<int>(dim_), visitor, read_only_,
                            salvaged_ != nullptr ? &salvage : nullptr));
    if (salvage.salvaged) salvaged_->push_back(SalvagedLogCheck(file, salvage));
    if (!read_only_) MaybeCompact();
    return Status::Ok();
  }

  std::string kind() const override { return "flat"; }
  int dimension() const override { return static_cast<int>(dim_); }

  size_t size() const override {
    std::shared_lock lock(mu_);
    return slot_ids_.size();
  }

  Status Add(size_t n, const int64_t* ids, const float* vectors) override {
    if (n == 0) return Status::Ok();
    if (ids == nullptr || vectors == nullptr) {
      return Status::InvalidArgument("Add: null ids or vectors");
    }
    if (!AllFinite(vectors, n * dim_)) {
      return Status::InvalidArgument("Add: vectors contain NaN or infinite values");
    }
    std::unique_lock lock(mu_);
    std::unordered_set<int64_t> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (slots_.count(ids[i]) != 0 || !batch.insert(ids[i]).second) {
        return Status::AlreadyExists("vector id " + std::to_string(ids[i]) +
                                     " is already in the index");
      }
    }
    try {
      vectors_.reserve(vectors_.size() + n * dim_);
      slot_ids_.reserve(slot_ids_.size() + n);
      slots_.reserve(slots_.size() + n);
    } catch (const std::bad_alloc&) {
      return Status::ResourceExhausted("Add: out of memory for " + std::to_string(n) +
                                       " vectors");
    }
    PIXSEEK_RETURN_IF_ERROR(log_->AppendAdd(n, ids, vectors));
    for (size_t i = 0; i < n; ++i) {
      slots_.emplace(ids[i], slot_ids_.size());
      slot_ids_.push_back(ids[i]);
    }
    vectors_.insert(vectors_.end(), vectors, vectors + n * dim_);
    return Status::Ok();
  }

  Status Remove(std::span<const int64_t> ids) override {
    std::unique_lock lock(mu_);
    std::vector<int64_t> present;
    std::unordered_set<int64_t> seen;
    for (int64_t id : ids) {
      if (slots_.count(id) != 0 && seen.insert(id).second) present.push_back(id);
    }
    if (present.empty()) return Status::Ok();
    PIXSEEK_RETURN_IF_ERROR(log_->AppendRemove(present));
    for (int64_t id : present) RemoveFromMemory(id);
    MaybeCompact();
    return Status::Ok();
  }

  Result<std::vector<float>> Get(int64_t id) const override {
    std::shared_lock lock(mu_);
    auto it = slots_.find(id);
    if (it == slots_.end()) return Status::NotFound("vector id " + std::to_string(id));
    const float* v = vectors_.data() + it->second * dim_;
    return std::vector<float>(v, v + dim_);
  }

  std::vector<int64_t> Ids() const override {
    std::vector<int64_t> ids;
    {
      std::shared_lock lock(mu_);
      ids = slot_ids_;
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  using VectorIndex::Search;
  // Exact: every stored vector is scored, so search_list changes nothing; a
  // filter keeps the ids it rejects out of the heaps.
  Status Search(size_t n, const float* queries, size_t k, const SearchParams& params,
                std::vector<std::vector<SearchHit>>* results) const override {
    if (results == nullptr) return Status::InvalidArgument("Search: null results");
    if (n > 0 && queries == nullptr) return Status::InvalidArgument("Search: null queries");
    if (!AllFinite(queries, n * dim_)) {
      return Status::InvalidArgument("Search: queries contain NaN or infinite values");
    }
    results->assign(n, {});
    if (n == 0 || k == 0) return Status::Ok();

    std::shared_lock lock(mu_);
    const size_t total = slot_ids_.size();
    if (total == 0) return Status::Ok();
    const size_t kk = std::min(k, total);

    size_t threads = std::min<size_t>(static_cast<size_t>(num_threads_), (total + 3) / 4);
    threads = std::min(threads, std::max<size_t>(1, total * n * dim_ / kMinWorkPerThread));

    // Each part keeps its own heaps; parts are merged below.
    std::vector<std::vector<TopK>> heaps(threads, std::vector<TopK>(n, TopK(kk)));
    auto range = [&](size_t t) {
      return std::pair<size_t, size_t>(total * t / threads, total * (t + 1) / threads);
    };
    std::vector<std::thread> workers;
    std::vector<size_t> inline_parts = {0};
    for (size_t t = 1; t < threads; ++t) {
      try {
        workers.emplace_back([&, t] {
          auto [begin, end] = range(t);
          Scan(begin, end, n, queries, params.filter, heaps[t]);
        });
      } catch (const std::system_error&) {
        inline_parts.push_back(t);  // no thread available: scan it here
      }
    }
    for (size_t t : inline_parts) {
      auto [begin, end] = range(t);
      Scan(begin, end, n, queries, params.filter, heaps[t]);
    }
    for (auto& w : workers) w.join();

    for (size_t q = 0; q < n; ++q) {
      TopK& merged = heaps[0][q];
      for (size_t t = 1; t < threads; ++t) {
        for (const SearchHit& hit : heaps[t][q].hits()) merged.Push(hit.score, hit.id);
      }
      (*results)[q] = merged.TakeSorted();
    }
    return Status::Ok();
  }

 private:
  // Scores slots [begin, end) against every query, block by block; ids the
  // filter (when given) rejects are scored but not kept.
  void Scan(size_t begin, size_t end, size_t n, const float* queries, const IdFilter* filter,
            std::vector<TopK>& heaps) const {
    const size_t block = std::max<size_t>(4, (kBlockBytes / (dim_ * sizeof(float))) & ~size_t{3});
    const float* data = vectors_.data();
    for (size_t b0 = begin; b0 < end; b0 += block) {
      const size_t b1 = std::min(end, b0 + block);
      for (size_t q = 0; q < n; ++q) {
        const float* query = queries + q * dim_;
        TopK& heap = heaps[q];
        for (size_t s = b0; s < b1; s += 4) {
          const size_t m = std::min<size_t>(4, b1 - s);
          const float* group[4];
          // A short last group repeats its last vector; InnerProduct4 scores
          // each lane independently of the others.
          for (size_t j = 0; j < 4; ++j) group[j] = data + (s + std::min(j, m - 1)) * dim_;
          float scores[4];
          InnerProduct4(query, group, dim_, scores);
          for (size_t j = 0; j < m; ++j) {
            const int64_t id = slot_ids_[s + j];
            if (filter == nullptr || filter->Contains(id)) heap.Push(scores[j], id);
          }
        }
      }
    }
  }

  Status ReplayAdd(uint32_t count, const uint8_t* ids, const uint8_t* vectors) {
    const size_t old_slots = slot_ids_.size();
    const size_t old_floats = vectors_.size();
    slot_ids_.resize(old_slots + count);
    std::memcpy(slot_ids_.data() + old_slots, ids, count * sizeof(int64_t));
    vectors_.resize(old_floats + count * dim_);
    std::memcpy(vectors_.data() + old_floats, vectors, count * dim_ * sizeof(float));
    Status bad;
    if (!AllFinite(vectors_.data() + old_floats, count * dim_)) {
      bad = Status::DataLoss("add record holds non-finite values");
    }
    for (size_t i = old_slots; bad.ok() && i < slot_ids_.size(); ++i) {
      if (!slots_.emplace(slot_ids_[i], i).second) {
        bad = Status::DataLoss("add record repeats id " + std::to_string(slot_ids_[i]));
      }
    }
    return bad;
  }

  // Swaps the last slot into the removed one. Requires mu_ held exclusively.
  void RemoveFromMemory(int64_t id) {
    auto it = slots_.find(id);
    if (it == slots_.end()) return;
    const size_t slot = it->second;
    const size_t last = slot_ids_.size() - 1;
    slots_.erase(it);
    if (slot != last) {
      std::memcpy(vectors_.data() + slot * dim_, vectors_.data() + last * dim_,
                  dim_ * sizeof(float));
      slot_ids_[slot] = slot_ids_[last];
      slots_[slot_ids_[slot]] = slot;
    }
    slot_ids_.pop_back();
    vectors_.resize(last * dim_);
  }

  // Rewrites the log with the live vectors once removed ones are the
  // majority. A failure only costs disk space, so it is reported, not
  // returned: the removal itself is already durable. Requires mu_ exclusive.
  void MaybeCompact() {
    if (log_->logged_removes() * 2 <= log_->logged_adds()) return;
    Status s = log_->Rewrite(slot_ids_.size(), slot_ids_.data(), vectors_.data());
    if (!s.ok()) {
      std::fprintf(stderr, "pixseek: compacting %s failed, keeping the longer log: %s\n",
                   log_->path().c_str(), s.ToString().c_str());
    }
  }

  const size_t dim_;
  const int num_threads_;
  const bool read_only_;
  std::vector<IndexFileCheck>* const salvaged_;  // not owned; used by Load only

  // Search holds it shared, Add/Remove exclusive (std::shared_mutex inside,
  // with a turnstile so a stream of searches cannot starve a writer).
  mutable WriterPriorityMutex mu_;
  std::unique_ptr<FlatLog> log_;                 // GUARDED_BY(mu_)
  std::vector<float> vectors_;                   // GUARDED_BY(mu_): slot-major, dim_ each
  std::vector<int64_t> slot_ids_;                // GUARDED_BY(mu_): id of each slot
  std::unordered_map<int64_t, size_t> slots_;    // GUARDED_BY(mu_): id -> slot
};

}  // namespace

Result<std::unique_ptr<VectorIndex>> OpenFlatIndex(const std::filesystem::path& file,
                                                   int dimension,
                                                   const FlatIndexOptions& options) {
  if (dimension <= 0) {
    return Status::InvalidArgument("index dimension must be positive, got " +
                                   std::to_string(dimension));
  }
  auto index = std::make_unique<FlatIndex>(dimension, options);
  try {
    PIXSEEK_RETURN_IF_ERROR(index->Load(file));
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("not enough memory to load " + file.string());
  }
  return std::unique_ptr<VectorIndex>(std::move(index));
}

Result<std::unique_ptr<VectorIndex>> OpenFlatIndexFromSpec(const VectorIndexSpec& spec) {
  FlatIndexOptions options;
  options.num_threads = spec.threads;
  options.read_only = spec.read_only;
  options.salvaged = spec.salvaged;
  return OpenFlatIndex(spec.dir / "vectors.flat", spec.dimension, options);
}

Result<IndexVerifyReport> VerifyFlatIndexFromSpec(const VectorIndexSpec& spec) {
  const std::filesystem::path file = spec.dir / "vectors.flat";
  IndexVerifyReport report;
  report.writer_active = HeldByWriter(file);
  const size_t dim = static_cast<size_t>(spec.dimension);
  // The live ids as a replay builds them, with the checks ReplayAdd makes;
  // and the ids that intact records after a damaged one would add.
  std::unordered_set<int64_t> live, added_after_damage;
  FlatLogVisitor visitor;
  visitor.on_add = [&](uint32_t count, const uint8_t* ids, const uint8_t* vectors) -> Status {
    std::vector<int64_t> id(count);
    std::vector<float> v(count * dim);
    std::memcpy(id.data(), ids, count * sizeof(int64_t));
    std::memcpy(v.data(), vectors, v.size() * sizeof(float));
    if (!AllFinite(v.data(), v.size())) {
      return Status::DataLoss("add record holds non-finite values");
    }
    for (int64_t x : id) {
      if (!live.insert(x).second) {
        return Status::DataLoss("add record repeats id " + std::to_string(x));
      }
    }
    return Status::Ok();
  };
  visitor.on_remove = [&](uint32_t count, const uint8_t* ids) {
    std::vector<int64_t> id(count);
    std::memcpy(id.data(), ids, count * sizeof(int64_t));
    for (int64_t x : id) live.erase(x);
    return Status::Ok();
  };
  FlatLogVisitor after;
  after.on_add = [&](uint32_t count, const uint8_t* ids, const uint8_t*) {
    std::vector<int64_t> id(count);
    std::memcpy(id.data(), ids, count * sizeof(int64_t));
    added_after_damage.insert(id.begin(), id.end());
    return Status::Ok();
  };
  after.on_remove = [&](uint32_t count, const uint8_t* ids) {
    std::vector<int64_t> id(count);
    std::memcpy(id.data(), ids, count * sizeof(int64_t));
    for (int64_t x : id) added_after_damage.erase(x);
    return Status::Ok();
  };
  auto inspection = FlatLog::Inspect(file, spec.dimension, visitor, after);
  if (!inspection.ok() && inspection.status().code() == StatusCode::kNotFound) {
    IndexFileCheck missing;
    missing.file = file;
    missing.summary = "absent";
    missing.note = "no log yet: the index is empty (a writable open creates it)";
    report.files.push_back(std::move(missing));
    return report;
  }
  if (!inspection.ok()) return inspection.status();
  std::vector<int64_t> lost;
  for (int64_t x : added_after_damage) {
    if (live.count(x) == 0) lost.push_back(x);
  }
  std::sort(lost.begin(), lost.end());
  report.files.push_back(LogFileCheck(file, *inspection, std::move(lost)));
  report.ids.assign(live.begin(), live.end());
  std::sort(report.ids.begin(), report.ids.end());
  return report;
}

}  // namespace pixseek
