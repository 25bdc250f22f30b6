#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "core/bounded_queue.h"
#include "core/files.h"
#include "core/hash.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "pixseek/services.h"
#include "service/indexing.h"

namespace pixseek {
namespace {

// One file read, hashed, decoded and (where the embedder splits its work)
// preprocessed by a worker, waiting for the network.
struct Prepared {
  ImageRecord record;
  Image image;               // only when the embedder cannot preprocess apart
  std::vector<float> input;  // preprocessed_size() floats, otherwise
  std::vector<uint8_t> thumbnail;
};

// One Build call: decode workers fill a bounded queue, the calling thread
// embeds and stores batches from it. Thread-safety: Finish and the report's
// counters are guarded by mu_; the rest is set before the workers start.
class BuildRun {
 public:
  // `refused`: files found but not to be read (links that leave the root),
  // reported as failures.
  BuildRun(Database& db, std::filesystem::path root, std::vector<std::filesystem::path> files,
           std::vector<RefusedFile> refused, const BuildOptions& options)
      : db_(db),
        root_(std::move(root)),
        files_(std::move(files)),
        refused_(std::move(refused)),
        options_(options),
        decode_(db.decode_options()),
        batch_size_(static_cast<size_t>(std::max(1, db.card().max_batch))),
        input_floats_(db.preprocessed_size()),
        bar_("build", files_.size() + refused_.size(), options.progress_out, options.show_progress),
        queue_(batch_size_ * 2) {
    report_.total = files_.size() + refused_.size();
  }

  // Runs the workers and the embedding loop; a fatal store error stops it.
  Result<BuildReport> Run() {
    for (const RefusedFile& file : refused_) {
      Finish(BuildFailure{file.path.string(), file.reason}, false);
    }
    std::vector<std::thread> workers;
    for (int t = 0; t < ThreadCount(options_.decode_threads); ++t) {
      workers.emplace_back([this] { Work(); });
    }
    std::thread closer([&] {
      for (auto& w : workers) w.join();
      queue_.Close();
    });
    EmbedAndStore();
    closer.join();
    bar_.Finish(done_, report_.failed.size());
    if (!fatal_.ok()) return fatal_.WithContext("build stopped");
    report_.cancelled = Cancelled();
    return std::move(report_);
  }

 private:
  bool Cancelled() const { return options_.cancel && options_.cancel->load(); }

  // Counts one file as done: failed, skipped (already stored) or indexed.
  void Finish(std::optional<BuildFailure> failure, bool skipped, bool indexed = false) {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    if (failure) report_.failed.push_back(std::move(*failure));
    if (skipped) ++report_.skipped;
    if (indexed) ++report_.indexed;
    bar_.Update(done_, report_.failed.size());
    if (options_.on_progress) options_.on_progress(done_, report_.total, report_.failed.size());
  }

  // A worker: reads, hashes, decodes and preprocesses files until none are
  // left. Preprocessing (resize, crop, normalise) runs here, so the network's
  // thread does nothing but forward passes.
  void Work() {
    for (size_t i = next_++; i < files_.size() && !Cancelled(); i = next_++) {
      const auto& path = files_[i];
      auto prepared = Prepare(path);
      if (!prepared.ok()) {
        Finish(BuildFailure{path.string(), prepared.status().ToString()}, false);
      } else if (!*prepared) {
        Finish(std::nullopt, /*skipped=*/true);
      } else {
        queue_.Push(std::move(**prepared));
      }
    }
  }

  // Nothing (nullopt) when the file is stored already with this content.
  Result<std::optional<Prepared>> Prepare(const std::filesystem::path& path) {
    // Opened without following links: a file swapped for one after it was
    // listed (ListImages follows only those that stay under the root) is
    // refused rather than read from wherever it leads.
    PIXSEEK_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularNoFollow({}, path));
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                             ReadOpenFile(fd.get(), decode_.limits.max_bytes));
    const std::string sha = Sha256Hex(bytes);
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<int64_t> stored,
                             StoredUnchanged(db_, path.string(), sha));
    if (stored) return std::optional<Prepared>();
    PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, decode_));
    Prepared p;
    PIXSEEK_ASSIGN_OR_RETURN(p.thumbnail, EncodeThumbnail(decoded.image));
    p.record.path = path.string();
    p.record.name = path.filename().string();
    auto rel = path.lexically_relative(root_);
    if (std::distance(rel.begin(), rel.end()) > 1) p.record.label = rel.begin()->string();
    DescribeImage(bytes, sha, decoded.info, &p.record);
    if (input_floats_ > 0) {
      p.input.resize(input_floats_);
      PIXSEEK_RETURN_IF_ERROR(db_.Preprocess(decoded.image, p.input.data()));
    } else {
      p.image = std::move(decoded.image);
    }
    return std::optional<Prepared>(std::move(p));
  }

  // The calling thread: runs the network on batches of whatever the workers
  // prepared and stores each image.
  void EmbedAndStore() {
    std::vector<Prepared> batch;
    while (auto first = queue_.Pop()) {
      batch.clear();
      batch.push_back(std::move(*first));
      while (batch.size() < batch_size_) {
        auto more = queue_.TryPop();
        if (!more) break;
        batch.push_back(std::move(*more));
      }
      if (!fatal_.ok()) {  // drain so the workers can finish
        for (auto& p : batch) {
          Finish(BuildFailure{p.record.path, "not processed: " + fatal_.ToString()}, false);
        }
        continue;
      }
      StoreBatch(batch);
    }
  }

  void StoreBatch(std::vector<Prepared>& batch) {
    // Base features: Insert stores them and projects them for the index.
    const size_t dim = static_cast<size_t>(db_.base_dimension());
    features_.resize(batch.size() * dim);
    Status s;
    if (input_floats_ > 0) {
      inputs_.resize(batch.size() * input_floats_);
      for (size_t i = 0; i < batch.size(); ++i) {
        std::copy(batch[i].input.begin(), batch[i].input.end(),
                  inputs_.begin() + static_cast<std::ptrdiff_t>(i * input_floats_));
      }
      s = db_.EmbedPreprocessed(inputs_.data(), batch.size(), features_.data());
    } else {
      std::vector<const Image*> images;
      for (const auto& p : batch) images.push_back(&p.image);
      s = db_.Embed(images, features_.data());
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& p = batch[i];
      if (!s.ok()) {
        Finish(BuildFailure{p.record.path, s.ToString()}, false);
        continue;
      }
      auto id = db_.Insert(p.record, std::span<const float>(features_.data() + i * dim, dim),
                           p.thumbnail);
      if (!id.ok()) {
        Finish(BuildFailure{p.record.path, id.status().ToString()}, false);
        // A store that cannot write (disk full, damaged) will fail every
        // file: stop instead of listing them all.
        if (id.status().code() != StatusCode::kInvalidArgument) fatal_ = id.status();
        continue;
      }
      Finish(std::nullopt, false, /*indexed=*/true);
    }
  }

  Database& db_;
  const std::filesystem::path root_;
  const std::vector<std::filesystem::path> files_;
  const std::vector<RefusedFile> refused_;
  const BuildOptions& options_;
  const DecodeOptions decode_;
  const size_t batch_size_;
  const size_t input_floats_;
  std::mutex mu_;  // guards report_, done_ and bar_
  BuildReport report_;
  uint64_t done_ = 0;
  ProgressBar bar_;
  BoundedQueue<Prepared> queue_;
  std::atomic<size_t> next_{0};  // the next file a worker takes
  Status fatal_;                 // the embedding thread's only
  std::vector<float> inputs_, features_;
};

}  // namespace

Result<BuildReport> BuildService::Build(const std::filesystem::path& root_arg,
                                        const BuildOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (root_arg.empty()) return Status::InvalidArgument("the folder to build is empty; name one");
  std::error_code ec;
  if (!std::filesystem::is_directory(root_arg, ec)) {
    return Status::NotFound(root_arg.string() + " is not a directory");
  }
  const auto root = std::filesystem::canonical(root_arg, ec);
  if (ec) return Status::NotFound("cannot resolve " + root_arg.string() + ": " + ec.message());
  PIXSEEK_RETURN_IF_ERROR(db_.AddLibraryRoot(root));
  std::vector<RefusedFile> refused;
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> files, ListImages(root, &refused));
  PIXSEEK_ASSIGN_OR_RETURN(
      BuildReport report, BuildRun(db_, root, std::move(files), std::move(refused), options).Run());
  if (!report.cancelled && report.indexed > 0) {
    // The new vectors sit in the disk index's in-memory graph; fold them into
    // the disk graph now rather than on some later upload.
    PIXSEEK_RETURN_IF_ERROR(db_.CompactIfNeeded().WithContext("compacting the index"));
  }
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(report.failed.begin(), report.failed.end(),
            [](const BuildFailure& a, const BuildFailure& b) { return a.path < b.path; });
  return report;
}

}  // namespace pixseek
