#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "pixseek/services.h"

namespace pixseek {

struct BuildJobs::State {
  Database& db;
  std::vector<std::filesystem::path> roots;  // canonical and as given
  mutable std::mutex mu;
  std::condition_variable wake;
  std::map<int64_t, BuildJobStatus> jobs;  // GUARDED_BY(mu)
  std::deque<int64_t> queue;               // GUARDED_BY(mu)
  int64_t next_id = 1;                     // GUARDED_BY(mu)
  bool stopping = false;                   // GUARDED_BY(mu)
  std::atomic<bool> cancel{false};
  std::thread worker;

  explicit State(Database& d) : db(d) {}

  void Run(int64_t id) {
    std::filesystem::path path;
    {
      std::lock_guard<std::mutex> lock(mu);
      jobs[id].state = "running";
      path = jobs[id].path;
    }
    const auto start = std::chrono::steady_clock::now();
    BuildOptions options;
    options.show_progress = false;
    options.cancel = &cancel;
    options.on_progress = [&](uint64_t processed, uint64_t total, uint64_t failed) {
      double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::lock_guard<std::mutex> lock(mu);
      auto& job = jobs[id];
      job.processed = processed;
      job.total = total;
      job.failed = failed;
      job.rate = secs > 0 ? static_cast<double>(processed) / secs : 0;
      job.eta_s = job.rate > 0 ? static_cast<double>(total - processed) / job.rate : 0;
    };
    auto report = BuildService(db).Build(path, options);
    std::lock_guard<std::mutex> lock(mu);
    auto& job = jobs[id];
    if (!report.ok()) {
      job.state = "failed";
      job.error = report.status().ToString();
      return;
    }
    job.state = report->cancelled ? "cancelled" : "done";
    job.total = report->total;
    job.indexed = report->indexed;
    job.skipped = report->skipped;
    job.failed = report->failed.size();
    job.failures = report->failed;
    job.eta_s = 0;
  }

  void Loop() {
    while (true) {
      int64_t id;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        id = queue.front();
        queue.pop_front();
      }
      Run(id);
    }
  }
};

BuildJobs::BuildJobs(Database& db, std::vector<std::filesystem::path> import_roots)
    : state_(std::make_unique<State>(db)) {
  for (const auto& root : import_roots) {
    std::error_code ec;
    auto canonical = std::filesystem::canonical(root, ec);
    if (ec) continue;  // a root that does not exist admits nothing
    // Both spellings, so a request may name the root as given or resolved.
    state_->roots.push_back(canonical);
    state_->roots.push_back(std::filesystem::absolute(root).lexically_normal());
  }
  state_->worker = std::thread([s = state_.get()] { s->Loop(); });
}

BuildJobs::~BuildJobs() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stopping = true;
  }
  state_->cancel = true;
  state_->wake.notify_all();
  state_->worker.join();
}

Result<int64_t> BuildJobs::Start(const std::filesystem::path& path) {
  if (state_->roots.empty()) {
    return Status::PermissionDenied(
        "builds over HTTP are disabled; start the server with --import-root DIR");
  }
  auto under_a_root = [&](const std::filesystem::path& p) {
    for (const auto& root : state_->roots) {
      auto rel = p.lexically_relative(root);
      if (!rel.empty() && *rel.begin() != "..") return true;
    }
    return false;
  };
  // Checked before touching the filesystem (so a client cannot probe which
  // paths exist outside the roots) and again after resolving symlinks.
  const auto lexical = std::filesystem::absolute(path).lexically_normal();
  if (!under_a_root(lexical)) {
    return Status::PermissionDenied(path.string() + " is not under an import root");
  }
  std::error_code ec;
  auto canonical = std::filesystem::canonical(lexical, ec);
  if (ec || !std::filesystem::is_directory(canonical, ec)) {
    return Status::NotFound(path.string() + " is not a directory");
  }
  if (!under_a_root(canonical)) {
    return Status::PermissionDenied(path.string() + " leads outside the import roots");
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  const int64_t id = state_->next_id++;
  BuildJobStatus job;
  job.id = id;
  job.path = canonical.string();
  job.state = "queued";
  state_->jobs[id] = job;
  state_->queue.push_back(id);
  state_->wake.notify_all();
  return id;
}

Result<BuildJobStatus> BuildJobs::Get(int64_t id) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->jobs.find(id);
  if (it == state_->jobs.end()) return Status::NotFound("no build job " + std::to_string(id));
  return it->second;
}

std::vector<BuildJobStatus> BuildJobs::List() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<BuildJobStatus> out;
  for (const auto& [id, job] : state_->jobs) out.push_back(job);
  return out;
}

}  // namespace pixseek
