#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <span>
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

// A batch the network has embedded, waiting to be stored.
struct Embedded {
  std::vector<Prepared> images;
  std::vector<float> features;  // images.size() base features
  Status status;                // the network's: not OK, nothing to store
};

// One Build call, a pipeline of three stages: decode workers fill a bounded
// queue, the calling thread embeds batches from it, and a store thread
// writes what the network gave. The store thread groups every batch waiting
// for it into one Database::InsertBatch (one metadata commit and one index
// sync for all of them), and stores while the network runs on the next
// batch, so neither the syncs nor the index inserts hold up the network.
// Thread-safety: Finish, the report's counters and fatal_ are guarded by
// mu_; the rest is set before the threads start.
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
        dim_(static_cast<size_t>(db.base_dimension())),
        bar_("build", files_.size() + refused_.size(), options.progress_out, options.show_progress),
        queue_(batch_size_ * 2),
        embedded_(2) {
    report_.total = files_.size() + refused_.size();
  }

  // Runs the workers, the embedding loop and the store thread; a fatal store
  // error stops it.
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
    std::thread storer([this] { StoreAll(); });
    EmbedAll();
    embedded_.Close();
    closer.join();
    storer.join();
    bar_.Finish(done_, report_.failed.size());
    if (Status fatal = Fatal(); !fatal.ok()) return fatal.WithContext("build stopped");
    report_.cancelled = Cancelled();
    return std::move(report_);
  }

 private:
  bool Cancelled() const { return options_.cancel && options_.cancel->load(); }

  Status Fatal() {
    std::lock_guard<std::mutex> lock(mu_);
    return fatal_;
  }

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

  // Counts every image of `images` as failed with `reason`.
  void FailAll(std::span<const Prepared> images, const std::string& reason) {
    for (const Prepared& p : images) Finish(BuildFailure{p.record.path, reason}, false);
  }

  // A worker: reads, hashes, decodes and preprocesses files until none are
  // left. Preprocessing (resize, crop, normalise) and the thumbnail are made
  // here from the one decoding, so the network's thread does nothing but
  // forward passes.
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
    if (stored && options_.verify_stored) {
      PIXSEEK_ASSIGN_OR_RETURN(stored, WithVector(*stored));
    }
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

  // `id` when the index holds its vector; otherwise (a writer died between
  // the metadata commit and the vectors) the record is removed and nullopt
  // returned, so that the file is stored again.
  Result<std::optional<int64_t>> WithVector(int64_t id) {
    auto vector = db_.index().Get(id);
    if (vector.ok()) return std::optional<int64_t>(id);
    if (vector.status().code() != StatusCode::kNotFound) return vector.status();
    PIXSEEK_RETURN_IF_ERROR(db_.Remove(id));
    return std::optional<int64_t>();
  }

  // The calling thread: runs the network on full batches (the model card's
  // max_batch; only the last one may be short) and hands them to the store
  // thread. It waits for a batch to fill rather than running what is ready:
  // on CPU a forward pass of a full batch costs much less per image than
  // several short ones, and while it waits the decode workers have the cores.
  void EmbedAll() {
    while (auto first = queue_.Pop()) {
      Embedded e;
      e.images.push_back(std::move(*first));
      while (e.images.size() < batch_size_) {
        auto more = queue_.Pop();
        if (!more) break;
        e.images.push_back(std::move(*more));
      }
      if (Status fatal = Fatal(); !fatal.ok()) {  // drain so the workers can finish
        FailAll(e.images, "not processed: " + fatal.ToString());
        continue;
      }
      e.status = Embed(e.images, &e.features);
      embedded_.Push(std::move(e));
    }
  }

  // Base features of `batch` into `features`.
  Status Embed(const std::vector<Prepared>& batch, std::vector<float>* features) {
    features->resize(batch.size() * dim_);
    if (input_floats_ > 0) {
      inputs_.resize(batch.size() * input_floats_);
      for (size_t i = 0; i < batch.size(); ++i) {
        std::copy(batch[i].input.begin(), batch[i].input.end(),
                  inputs_.begin() + static_cast<std::ptrdiff_t>(i * input_floats_));
      }
      return db_.EmbedPreprocessed(inputs_.data(), batch.size(), features->data());
    }
    std::vector<const Image*> images;
    for (const auto& p : batch) images.push_back(&p.image);
    return db_.Embed(images, features->data());
  }

  // The store thread: stores every batch waiting for it at once.
  void StoreAll() {
    std::vector<Embedded> group;
    while (auto first = embedded_.Pop()) {
      group.clear();
      group.push_back(std::move(*first));
      while (auto more = embedded_.TryPop()) group.push_back(std::move(*more));
      StoreGroup(group);
    }
  }

  void StoreGroup(std::vector<Embedded>& group) {
    std::vector<NewImage> images;
    const Status fatal = Fatal();
    for (Embedded& e : group) {
      if (!fatal.ok()) {
        FailAll(e.images, "not processed: " + fatal.ToString());
      } else if (!e.status.ok()) {
        FailAll(e.images, e.status.ToString());
      } else {
        for (size_t i = 0; i < e.images.size(); ++i) {
          const Prepared& p = e.images[i];
          images.push_back(NewImage{
              p.record, std::span<const float>(e.features).subspan(i * dim_, dim_), p.thumbnail});
        }
      }
    }
    if (images.empty()) return;
    // A DBA index takes its images one at a time (Database::InsertBatch).
    if (!db_.dba().enabled()) {
      auto ids = db_.InsertBatch(images);
      if (ids.ok()) {
        for (size_t i = 0; i < images.size(); ++i) Finish(std::nullopt, false, /*indexed=*/true);
        return;
      }
      const StatusCode code = ids.status().code();
      if (code != StatusCode::kInvalidArgument && code != StatusCode::kAlreadyExists) {
        // A store that cannot write (disk full, damaged) will fail every
        // file: stop instead of listing them all.
        for (const NewImage& image : images) {
          Finish(BuildFailure{image.record.path, ids.status().ToString()}, false);
        }
        SetFatal(ids.status());
        return;
      }
      // One image was refused and so nothing was stored: store them one by
      // one, so that the failure names that image as it always did.
    }
    for (size_t i = 0; i < images.size(); ++i) StoreOne(images[i]);
  }

  void StoreOne(const NewImage& image) {
    if (Status fatal = Fatal(); !fatal.ok()) {
      Finish(BuildFailure{image.record.path, "not processed: " + fatal.ToString()}, false);
      return;
    }
    auto id = db_.Insert(image.record, image.base_feature, image.thumbnail_jpeg);
    if (id.status().code() == StatusCode::kAlreadyExists) {
      // Stored since this build found it missing, by another writer: a node
      // that lost the build lease to this one, finishing its last batch.
      Finish(std::nullopt, /*skipped=*/true);
      return;
    }
    if (!id.ok()) {
      Finish(BuildFailure{image.record.path, id.status().ToString()}, false);
      if (id.status().code() != StatusCode::kInvalidArgument) SetFatal(id.status());
      return;
    }
    Finish(std::nullopt, false, /*indexed=*/true);
  }

  void SetFatal(Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.ok()) fatal_ = std::move(status);
  }

  Database& db_;
  const std::filesystem::path root_;
  const std::vector<std::filesystem::path> files_;
  const std::vector<RefusedFile> refused_;
  const BuildOptions& options_;
  const DecodeOptions decode_;
  const size_t batch_size_;
  const size_t input_floats_;
  const size_t dim_;  // base features' length
  std::mutex mu_;     // guards report_, done_, bar_ and fatal_
  BuildReport report_;
  uint64_t done_ = 0;
  ProgressBar bar_;
  Status fatal_;                     // the first store error that stops the build
  BoundedQueue<Prepared> queue_;     // workers -> network
  BoundedQueue<Embedded> embedded_;  // network -> store thread
  std::atomic<size_t> next_{0};      // the next file a worker takes
  std::vector<float> inputs_;        // the network thread's batch buffer
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
