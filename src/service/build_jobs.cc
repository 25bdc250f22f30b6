// BuildJobs: builds started over HTTP, run one at a time on a background
// thread. The job list is kept in DB/build_jobs.json (rewritten atomically on
// every change of state and every few seconds of progress), so that jobs
// survive a restart: a job that was queued or running when the server
// stopped runs again (a build skips the images already stored).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/files.h"
#include "pixseek/services.h"

namespace pixseek {
namespace {

using nlohmann::json;

constexpr char kJobsFile[] = "build_jobs.json";
constexpr size_t kKeptFinishedJobs = 100;
constexpr auto kProgressSaveInterval = std::chrono::seconds(2);

json JobJson(const BuildJobStatus& j) {
  json failures = json::array();
  for (const auto& f : j.failures) failures.push_back({{"path", f.path}, {"reason", f.reason}});
  return {{"id", j.id},           {"path", j.path},       {"state", j.state},
          {"processed", j.processed}, {"total", j.total},   {"failed", j.failed},
          {"indexed", j.indexed}, {"skipped", j.skipped}, {"rate", j.rate},
          {"eta_s", j.eta_s},     {"failures", failures}, {"error", j.error}};
}

BuildJobStatus JobFromJson(const json& j) {
  BuildJobStatus job;
  job.id = j.at("id").get<int64_t>();
  job.path = j.at("path").get<std::string>();
  job.state = j.at("state").get<std::string>();
  job.processed = j.value("processed", uint64_t{0});
  job.total = j.value("total", uint64_t{0});
  job.failed = j.value("failed", uint64_t{0});
  job.indexed = j.value("indexed", uint64_t{0});
  job.skipped = j.value("skipped", uint64_t{0});
  job.rate = j.value("rate", 0.0);
  job.eta_s = j.value("eta_s", 0.0);
  job.error = j.value("error", "");
  for (const auto& f : j.value("failures", json::array())) {
    job.failures.push_back({f.value("path", ""), f.value("reason", "")});
  }
  return job;
}

}  // namespace

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
  std::chrono::steady_clock::time_point last_save;  // GUARDED_BY(mu)

  explicit State(Database& d) : db(d) {}

  std::filesystem::path file() const { return db.dir() / kJobsFile; }

  // Writes the job list; called with mu held. A failure is logged, not
  // fatal: the build itself goes on.
  void Save() {
    last_save = std::chrono::steady_clock::now();
    // Finished jobs beyond the newest kKeptFinishedJobs are forgotten.
    size_t finished = 0;
    for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
      finished += it->second.state != "queued" && it->second.state != "running";
    }
    for (auto it = jobs.begin(); it != jobs.end() && finished > kKeptFinishedJobs;) {
      if (it->second.state != "queued" && it->second.state != "running") {
        it = jobs.erase(it);
        --finished;
      } else {
        ++it;
      }
    }
    json list = json::array();
    for (const auto& [id, job] : jobs) list.push_back(JobJson(job));
    Status s = WriteFileAtomic(file(), json{{"next_id", next_id}, {"jobs", list}}.dump() + "\n");
    if (!s.ok()) std::fprintf(stderr, "pixseek: cannot save build jobs: %s\n", s.ToString().c_str());
  }

  // Reads the saved jobs and queues again the ones a stop interrupted.
  void Load() {
    auto text = ReadTextFile(file());
    if (!text.ok()) return;  // no file yet
    json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    try {
      next_id = j.at("next_id").get<int64_t>();
      for (const auto& item : j.at("jobs")) {
        BuildJobStatus job = JobFromJson(item);
        if (job.state == "queued" || job.state == "running") {
          job.state = "queued";
          queue.push_back(job.id);
        }
        next_id = std::max(next_id, job.id + 1);
        jobs[job.id] = std::move(job);
      }
    } catch (const json::exception& e) {
      std::fprintf(stderr, "pixseek: ignoring damaged %s: %s\n", file().c_str(), e.what());
      jobs.clear();
      queue.clear();
    }
  }

  void Run(int64_t id) {
    std::filesystem::path path;
    {
      std::lock_guard<std::mutex> lock(mu);
      jobs[id].state = "running";
      path = jobs[id].path;
      Save();
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
      if (std::chrono::steady_clock::now() - last_save > kProgressSaveInterval) Save();
    };
    auto report = BuildService(db).Build(path, options);
    std::lock_guard<std::mutex> lock(mu);
    auto& job = jobs[id];
    if (!report.ok()) {
      job.state = "failed";
      job.error = report.status().ToString();
      Save();
      return;
    }
    // Stopped by a shutdown: queued again, to run when the server restarts.
    job.state = report->cancelled ? (stopping ? "queued" : "cancelled") : "done";
    job.total = report->total;
    job.indexed = report->indexed;
    job.skipped = report->skipped;
    job.failed = report->failed.size();
    job.failures = report->failed;
    job.eta_s = 0;
    Save();
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
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->Load();
  }
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
  if (path.empty()) {
    return Status::InvalidArgument("the build's path is empty; send {\"path\": \"DIR\"}");
  }
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
  state_->Save();
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
