#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "core/bounded_queue.h"
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


}  // namespace

Result<BuildReport> BuildService::Build(const std::filesystem::path& root_arg,
                                        const BuildOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  if (!std::filesystem::is_directory(root_arg, ec)) {
    return Status::NotFound(root_arg.string() + " is not a directory");
  }
  const auto root = std::filesystem::canonical(root_arg, ec);
  if (ec) return Status::NotFound("cannot resolve " + root_arg.string() + ": " + ec.message());
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> files, ListImages(root));

  BuildReport report;
  report.total = files.size();
  const DecodeOptions decode = db_.decode_options();
  const size_t batch_size = static_cast<size_t>(std::max(1, db_.card().max_batch));
  const int threads = ThreadCount(options.decode_threads);

  std::mutex mu;  // guards report.failed, report.skipped, done
  uint64_t done = 0;
  ProgressBar bar("build", files.size(), options.progress_out, options.show_progress);
  auto cancelled = [&] { return options.cancel && options.cancel->load(); };
  auto finish_one = [&](std::optional<BuildFailure> failure, bool skipped) {
    std::lock_guard<std::mutex> lock(mu);
    ++done;
    if (failure) report.failed.push_back(std::move(*failure));
    if (skipped) ++report.skipped;
    bar.Update(done, report.failed.size());
    if (options.on_progress) options.on_progress(done, report.total, report.failed.size());
  };

  // Preprocessing (resize, crop, normalise) runs on the workers too, so the
  // network's thread does nothing but forward passes.
  const size_t input_floats = db_.preprocessed_size();
  BoundedQueue<Prepared> queue(batch_size * 2);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < files.size() && !cancelled(); i = next++) {
      const auto& path = files[i];
      auto fail = [&](const Status& s) { finish_one(BuildFailure{path.string(), s.ToString()}, false); };
      auto bytes = ReadFileLimited(path, decode.limits.max_bytes);
      if (!bytes.ok()) { fail(bytes.status()); continue; }
      const std::string sha = Sha256Hex(*bytes);
      auto stored = StoredUnchanged(db_, path.string(), sha);
      if (!stored.ok()) { fail(stored.status()); continue; }
      if (*stored) { finish_one(std::nullopt, true); continue; }
      auto decoded = DecodeImage(*bytes, decode);
      if (!decoded.ok()) { fail(decoded.status()); continue; }
      auto thumb = EncodeThumbnail(decoded->image);
      if (!thumb.ok()) { fail(thumb.status()); continue; }
      Prepared p;
      p.record.path = path.string();
      p.record.name = path.filename().string();
      auto rel = path.lexically_relative(root);
      if (std::distance(rel.begin(), rel.end()) > 1) p.record.label = rel.begin()->string();
      DescribeImage(*bytes, sha, decoded->info, &p.record);
      if (input_floats > 0) {
        p.input.resize(input_floats);
        Status pre = db_.Preprocess(decoded->image, p.input.data());
        if (!pre.ok()) { fail(pre); continue; }
      } else {
        p.image = std::move(decoded->image);
      }
      p.thumbnail = std::move(*thumb);
      queue.Push(std::move(p));
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(worker);
  std::thread closer([&] {
    for (auto& w : workers) w.join();
    queue.Close();
  });

  // This thread runs the network on batches of whatever the workers prepared.
  Status fatal;
  std::vector<Prepared> batch;
  std::vector<float> inputs;
  std::vector<float> features;
  const size_t dim = static_cast<size_t>(db_.dimension());
  while (auto first = queue.Pop()) {
    batch.clear();
    batch.push_back(std::move(*first));
    while (batch.size() < batch_size) {
      auto more = queue.TryPop();
      if (!more) break;
      batch.push_back(std::move(*more));
    }
    if (!fatal.ok()) {  // drain so the workers can finish
      for (auto& p : batch) finish_one(BuildFailure{p.record.path, "not processed: " + fatal.ToString()}, false);
      continue;
    }
    features.resize(batch.size() * dim);
    Status s;
    if (input_floats > 0) {
      inputs.resize(batch.size() * input_floats);
      for (size_t i = 0; i < batch.size(); ++i) {
        std::copy(batch[i].input.begin(), batch[i].input.end(), inputs.begin() + i * input_floats);
      }
      s = db_.EmbedPreprocessed(inputs.data(), batch.size(), features.data());
    } else {
      std::vector<const Image*> images;
      for (const auto& p : batch) images.push_back(&p.image);
      s = db_.Embed(images, features.data());
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& p = batch[i];
      if (!s.ok()) { finish_one(BuildFailure{p.record.path, s.ToString()}, false); continue; }
      auto id = db_.Insert(p.record, std::span<const float>(features.data() + i * dim, dim),
                           p.thumbnail);
      if (!id.ok()) {
        finish_one(BuildFailure{p.record.path, id.status().ToString()}, false);
        // A store that cannot write (disk full, damaged) will fail every
        // file: stop instead of listing them all.
        if (id.status().code() != StatusCode::kInvalidArgument) fatal = id.status();
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        ++report.indexed;
      }
      finish_one(std::nullopt, false);
    }
  }
  closer.join();
  bar.Finish(done, report.failed.size());
  if (!fatal.ok()) return fatal.WithContext("build stopped");
  report.cancelled = cancelled();
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
