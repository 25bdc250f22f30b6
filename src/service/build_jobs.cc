// BuildJobs: builds started over HTTP, kept in the metadata store and run one
// at a time by whichever process sharing the store holds its lease "build".
//
// Two threads per BuildJobs. The runner polls the store for work (a job left
// "running" by a node that died comes first, then the oldest "queued" one),
// takes the lease when it is free or expired, runs jobs while it holds it
// and gives it up when none is left. The keeper renews the lease every
// lease_ttl / 3 while the runner holds it; when the store says another node
// has it, or no renewal has succeeded for lease_ttl (the store may have
// counted it expired), the keeper cancels the running build. Every write of
// a job goes through MetadataStore::UpdateJob, which refuses a writer that
// no longer holds the lease, so a node that lost it cannot overwrite the
// progress of the node that took the job over.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/files.h"
#include "pixseek/services.h"

namespace pixseek {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kJobKind[] = "build";    // the store's job kind
constexpr char kLeaseName[] = "build";  // the store's lease that runs them
constexpr char kLegacyJobsFile[] = "build_jobs.json";
constexpr size_t kListedJobs = 100;
constexpr auto kProgressSaveInterval = std::chrono::seconds(1);

// The job's record in the store: id and state are columns of their own, the
// rest is the payload.
json Payload(const BuildJobStatus& j) {
  json failures = json::array();
  for (size_t i = 0; i < j.failures.size() && i < kMaxBuildJobFailures; ++i) {
    failures.push_back({{"path", j.failures[i].path}, {"reason", j.failures[i].reason}});
  }
  return {{"path", j.path},     {"processed", j.processed}, {"total", j.total},
          {"failed", j.failed}, {"indexed", j.indexed},     {"skipped", j.skipped},
          {"rate", j.rate},     {"eta_s", j.eta_s},         {"failures", failures},
          {"error", j.error}};
}

// Fills the payload's fields into `job`; throws json::exception when they
// have the wrong types.
void ReadPayload(const json& j, BuildJobStatus* job) {
  job->path = j.value("path", "");
  job->processed = j.value("processed", uint64_t{0});
  job->total = j.value("total", uint64_t{0});
  job->failed = j.value("failed", uint64_t{0});
  job->indexed = j.value("indexed", uint64_t{0});
  job->skipped = j.value("skipped", uint64_t{0});
  job->rate = j.value("rate", 0.0);
  job->eta_s = j.value("eta_s", 0.0);
  job->error = j.value("error", "");
  for (const auto& f : j.value("failures", json::array())) {
    job->failures.push_back({f.value("path", ""), f.value("reason", "")});
  }
}

// A stored job as BuildJobStatus. A payload that cannot be read (written by
// hand, or by a newer pixseek) gives a job without a path, which fails when
// it runs.
BuildJobStatus FromRecord(const JobRecord& record) {
  BuildJobStatus job;
  job.id = record.id;
  job.state = record.state;
  const json j = json::parse(record.payload, nullptr, /*allow_exceptions=*/false);
  try {
    if (j.is_object()) ReadPayload(j, &job);
  } catch (const json::exception&) {
    job = BuildJobStatus();
    job.id = record.id;
    job.state = record.state;
  }
  return job;
}

JobRecord ToRecord(const BuildJobStatus& job) {
  JobRecord record;
  record.id = job.id;
  record.kind = kJobKind;
  record.state = job.state;
  record.payload = Payload(job).dump();
  return record;
}

// A name for this process that no other process shares: the host, the pid
// and a random part (a pid is reused after a restart, and two containers
// may have the same host name and pid).
std::string NewOwner() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device random;
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%08x%08x", random(), random());
  return std::string(host[0] != '\0' ? host : "host") + ":" + std::to_string(::getpid()) + ":" +
         suffix;
}

}  // namespace

struct BuildJobs::State {
  Database& db;
  MetadataStore& store;
  const BuildJobsOptions options;
  std::vector<std::filesystem::path> roots;  // canonical and as given
  const std::string owner = NewOwner();      // this process, for the lease

  std::mutex mu;
  std::condition_variable wake;         // the runner: a job started here, or stopping
  std::condition_variable keeper_wake;  // the keeper: stopping
  bool stopping = false;                // GUARDED_BY(mu): the destructor runs
  bool keeper_stopping = false;         // GUARDED_BY(mu)
  bool work_started = false;            // GUARDED_BY(mu): Start ran since the runner last looked
  bool holding = false;                 // GUARDED_BY(mu): this process holds the lease
  uint64_t lease_epoch = 0;             // GUARDED_BY(mu): counts takes and releases
  Clock::time_point renewed_at;         // GUARDED_BY(mu): when the last good renewal was sent
  std::string last_error;               // GUARDED_BY(mu): the store error last logged
  std::atomic<bool> cancel{false};
  std::thread runner;
  std::thread keeper;

  State(Database& d, BuildJobsOptions o) : db(d), store(d.store()), options(std::move(o)) {}

  // Logs a store error once, not once per poll while the store is down.
  void LogError(const std::string& what, const Status& s) {
    const std::string message = what + ": " + s.ToString();
    std::lock_guard<std::mutex> lock(mu);
    if (message == last_error) return;
    last_error = message;
    std::fprintf(stderr, "pixseek: build jobs: %s\n", message.c_str());
  }
  void ClearError() {
    std::lock_guard<std::mutex> lock(mu);
    last_error.clear();
  }

  // ---- Import of DB/build_jobs.json ----

  void ImportLegacyFile() {
    const std::filesystem::path file = db.dir() / kLegacyJobsFile;
    auto text = ReadTextFile(file);
    if (!text.ok()) return;  // none: nothing to import
    std::vector<JobRecord> records;
    try {
      const json j = json::parse(*text);
      for (const auto& item : j.at("jobs")) {
        BuildJobStatus job;
        job.id = item.at("id").get<int64_t>();
        job.state = item.at("state").get<std::string>();
        ReadPayload(item, &job);
        // Interrupted by the stop that preceded this start: run again.
        if (job.state == "queued" || job.state == "running") job.state = "queued";
        if (job.id > 0 && !job.state.empty()) records.push_back(ToRecord(job));
      }
    } catch (const json::exception& e) {
      std::fprintf(stderr, "pixseek: ignoring damaged %s (renamed to %s.damaged): %s\n",
                   file.c_str(), kLegacyJobsFile, e.what());
      std::error_code ec;
      std::filesystem::rename(file, file.string() + ".damaged", ec);
      return;
    }
    for (const JobRecord& record : records) {
      auto id = store.CreateJob(record);
      // Already there: imported by an earlier start, or by another node.
      if (!id.ok() && id.status().code() != StatusCode::kAlreadyExists) {
        // Left in place, to be imported at the next start.
        LogError("cannot import " + file.string(), id.status());
        return;
      }
    }
    std::error_code ec;
    std::filesystem::rename(file, file.string() + ".imported", ec);
  }

  // ---- The lease ----

  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu);
    return stopping;
  }

  bool Holding() {
    std::lock_guard<std::mutex> lock(mu);
    return holding;
  }

  // Takes the lease if it is free or expired.
  bool TakeLease() {
    const auto sent = Clock::now();
    auto taken = store.AcquireLease(kLeaseName, owner, options.lease_ttl);
    if (!taken.ok()) {
      LogError("cannot take the build lease", taken.status());
      return false;
    }
    if (!*taken) return false;
    std::lock_guard<std::mutex> lock(mu);
    holding = true;
    ++lease_epoch;
    renewed_at = sent;
    return true;
  }

  // Gives the lease up (nothing happens in the store when another node has
  // taken it meanwhile).
  void ReleaseLease() {
    {
      std::lock_guard<std::mutex> lock(mu);
      holding = false;
      ++lease_epoch;
    }
    Status s = store.ReleaseLease(kLeaseName, owner);
    if (!s.ok()) LogError("cannot release the build lease", s);
  }

  // The lease is gone (or may be): the running build stops, and nothing more
  // is written to its job. Requires mu.
  void LoseLeaseLocked(const std::string& why) {
    if (!holding) return;
    holding = false;
    ++lease_epoch;
    cancel = true;
    std::fprintf(stderr, "pixseek: build jobs: lost the build lease (%s); stopping the job\n",
                 why.c_str());
  }

  // The keeper thread: renews the lease while the runner holds it.
  void Keep() {
    const auto interval = std::max(options.lease_ttl / 3, std::chrono::milliseconds(1));
    std::unique_lock<std::mutex> lock(mu);
    while (!keeper_stopping) {
      keeper_wake.wait_for(lock, interval, [&] { return keeper_stopping; });
      if (keeper_stopping || !holding) continue;
      const uint64_t epoch = lease_epoch;
      const auto sent = Clock::now();
      lock.unlock();
      auto renewed = store.RenewLease(kLeaseName, owner, options.lease_ttl);
      if (!renewed.ok()) LogError("cannot renew the build lease", renewed.status());
      lock.lock();
      if (epoch != lease_epoch) continue;  // released or taken again meanwhile
      if (renewed.ok() && *renewed) {
        renewed_at = sent;
      } else if (renewed.ok()) {
        LoseLeaseLocked("another node took it");
      } else if (Clock::now() - renewed_at >= options.lease_ttl) {
        LoseLeaseLocked("not renewed for " + std::to_string(options.lease_ttl.count()) + " ms");
      }
    }
  }

  // ---- Running jobs ----

  // The next job to run: one left running (its node died or lost the lease:
  // it has waited longest), else the oldest queued one.
  Result<std::optional<JobRecord>> NextJob() {
    for (const char* state : {"running", "queued"}) {
      JobQuery query;
      query.kind = kJobKind;
      query.state = state;
      query.limit = 1;
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store.ListJobs(query));
      if (!jobs.empty()) return std::optional<JobRecord>(std::move(jobs.front()));
    }
    return std::optional<JobRecord>();
  }

  // Writes the job's state, if this process still holds the lease. When it
  // does not, the job is another node's now: the running build stops.
  Status Write(const BuildJobStatus& job) {
    Status s = store.UpdateJob(ToRecord(job), kLeaseName, owner);
    if (s.code() == StatusCode::kFailedPrecondition) {
      std::lock_guard<std::mutex> lock(mu);
      LoseLeaseLocked("another node took it");
    } else if (!s.ok()) {
      LogError("cannot save build job " + std::to_string(job.id), s);
    }
    return s;
  }

  // Runs one job to its end (or until the lease is lost or the destructor
  // stops it). False when its start could not be recorded: nothing ran.
  bool Run(const JobRecord& record) {
    BuildJobStatus job = FromRecord(record);
    // A job found running was interrupted: its node may have stored the
    // metadata of its last batch without the vectors.
    const bool resumed = record.state == "running";
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping || !holding) return false;
      cancel = false;
    }
    job.state = "running";
    job.error.clear();
    job.failures.clear();
    if (!Write(job).ok()) return false;  // left for whoever holds the lease next
    const auto start = Clock::now();
    auto last_save = start;
    BuildOptions options;
    options.show_progress = false;
    options.cancel = &cancel;
    options.verify_stored = resumed;
    // Called by the build's threads one at a time (under the build's lock).
    options.on_progress = [&](uint64_t processed, uint64_t total, uint64_t failed) {
      const auto now = Clock::now();
      const double secs = std::chrono::duration<double>(now - start).count();
      job.processed = processed;
      job.total = total;
      job.failed = failed;
      job.rate = secs > 0 ? static_cast<double>(processed) / secs : 0;
      job.eta_s = job.rate > 0 ? static_cast<double>(total - processed) / job.rate : 0;
      if (now - last_save >= kProgressSaveInterval) {
        last_save = now;
        (void)Write(job);  // a failure is logged; the build goes on
      }
    };
    auto report = BuildService(db).Build(job.path, options);
    if (!Holding()) return true;  // lost: the node that took the lease resumes it
    if (!report.ok()) {
      job.state = "failed";
      job.error = report.status().ToString();
    } else {
      // Cancelled only by the destructor (a lost lease returned above):
      // queued again, for this node's next start or another node now.
      job.state = report->cancelled ? "queued" : "done";
      job.total = report->total;
      job.indexed = report->indexed;
      job.skipped = report->skipped;
      job.failed = report->failed.size();
      job.failures = report->failed;
      job.eta_s = 0;
    }
    (void)Write(job);
    return true;
  }

  // Runs jobs while this process holds the lease and jobs are left.
  void RunWhileHolding() {
    while (!Stopping() && Holding()) {
      auto next = NextJob();
      if (!next.ok()) {
        LogError("cannot read the build jobs", next.status());
        return;
      }
      if (!*next || !Run(**next)) return;
    }
  }

  // The runner thread.
  void Loop() {
    while (!Stopping()) {
      auto next = NextJob();
      if (!next.ok()) {
        LogError("cannot read the build jobs", next.status());
      } else {
        ClearError();
        if (*next && TakeLease()) {
          RunWhileHolding();
          ReleaseLease();
        }
      }
      std::unique_lock<std::mutex> lock(mu);
      wake.wait_for(lock, options.poll_interval, [&] { return stopping || work_started; });
      work_started = false;
    }
  }
};

namespace {
BuildJobsOptions WithRoots(std::vector<std::filesystem::path> import_roots) {
  BuildJobsOptions options;
  options.import_roots = std::move(import_roots);
  return options;
}
}  // namespace

BuildJobs::BuildJobs(Database& db, std::vector<std::filesystem::path> import_roots)
    : BuildJobs(db, WithRoots(std::move(import_roots))) {}

BuildJobs::BuildJobs(Database& db, BuildJobsOptions options)
    : state_(std::make_unique<State>(db, std::move(options))) {
  for (const auto& root : state_->options.import_roots) {
    std::error_code ec;
    auto canonical = std::filesystem::canonical(root, ec);
    if (ec) continue;  // a root that does not exist admits nothing
    // Both spellings, so a request may name the root as given or resolved.
    state_->roots.push_back(canonical);
    state_->roots.push_back(std::filesystem::absolute(root).lexically_normal());
  }
  state_->ImportLegacyFile();
  state_->keeper = std::thread([s = state_.get()] { s->Keep(); });
  state_->runner = std::thread([s = state_.get()] { s->Loop(); });
}

BuildJobs::~BuildJobs() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stopping = true;
  }
  state_->cancel = true;
  state_->wake.notify_all();
  // The runner saves the stopped job as queued and releases the lease; the
  // keeper renews it until then.
  state_->runner.join();
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->keeper_stopping = true;
  }
  state_->keeper_wake.notify_all();
  state_->keeper.join();
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
  BuildJobStatus job;
  job.path = canonical.string();
  job.state = "queued";
  PIXSEEK_ASSIGN_OR_RETURN(int64_t id, state_->store.CreateJob(ToRecord(job)));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->work_started = true;
  }
  state_->wake.notify_all();
  return id;
}

Result<BuildJobStatus> BuildJobs::Get(int64_t id) const {
  auto record = state_->store.GetJob(id);
  if (record.status().code() == StatusCode::kNotFound ||
      (record.ok() && record->kind != kJobKind)) {
    return Status::NotFound("no build job " + std::to_string(id));
  }
  if (!record.ok()) return record.status();
  return FromRecord(*record);
}

Result<std::vector<BuildJobStatus>> BuildJobs::List() const {
  JobQuery query;
  query.kind = kJobKind;
  query.limit = kListedJobs;
  query.newest_first = true;
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<JobRecord> records, state_->store.ListJobs(query));
  std::vector<BuildJobStatus> out;
  out.reserve(records.size());
  for (auto it = records.rbegin(); it != records.rend(); ++it) out.push_back(FromRecord(*it));
  return out;
}

}  // namespace pixseek
