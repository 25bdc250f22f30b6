// LearningJobs: `pixseek train`, `pixseek reindex` and `pixseek eval` as
// background jobs of a server, one at a time, with their progress for GET
// /api/v1/train/{id}, /api/v1/reindex/{id} and /api/v1/evaluations/{id}.
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "pixseek/train_service.h"

namespace pixseek {

struct LearningJobs::State {
  explicit State(Database& d) : db(d) {}

  Database& db;
  mutable std::mutex mu;
  std::condition_variable wake;
  std::map<int64_t, LearningJobStatus> jobs;                      // guarded by mu
  std::map<int64_t, TrainRequest> train_requests;                 // guarded by mu
  std::map<int64_t, EvalJobRequest> eval_requests;                // guarded by mu
  std::deque<int64_t> queue;                                      // guarded by mu
  int64_t next_id = 1;                                            // guarded by mu
  bool stopping = false;                                          // guarded by mu
  std::atomic<bool> cancel{false};
  std::thread worker;

  int64_t Queue(LearningJobStatus job) {
    job.id = next_id++;
    job.state = "queued";
    jobs[job.id] = job;
    queue.push_back(job.id);
    wake.notify_all();
    return job.id;
  }

  void Update(int64_t id, const std::function<void(LearningJobStatus&)>& change) {
    std::lock_guard<std::mutex> lock(mu);
    change(jobs[id]);
  }

  // Runs one job to its end and records how it ended.
  void Run(int64_t id) {
    std::string kind;
    std::string model;
    TrainRequest request;
    EvalJobRequest eval_request;
    {
      std::lock_guard<std::mutex> lock(mu);
      LearningJobStatus& job = jobs[id];
      job.state = "running";
      kind = job.kind;
      model = job.model;
      if (kind == "train") request = train_requests[id];
      if (kind == "evaluate") eval_request = eval_requests[id];
    }
    Result<std::string> result = kind == "train"      ? RunTrain(id, std::move(request))
                                 : kind == "evaluate" ? RunEvaluate(id, eval_request)
                                                      : RunReindex(id, model);
    Update(id, [&](LearningJobStatus& job) {
      if (result.ok()) {
        job.state = "done";
        job.result = *result;
        job.eta_s = 0;
      } else {
        job.state = result.status().code() == StatusCode::kCancelled ? "cancelled" : "failed";
        job.error = result.status().ToString();
      }
    });
  }

  Result<std::string> RunTrain(int64_t id, TrainRequest request) {
    request.show_progress = false;
    request.metric.on_epoch = [this, id](const EpochReport& e) {
      Update(id, [&](LearningJobStatus& job) {
        job.done = static_cast<uint64_t>(e.epoch);
        job.total = static_cast<uint64_t>(e.epochs);
        job.rate = e.rows_per_second;
        job.eta_s = e.eta_s;
        job.loss = e.loss;
        job.validation_map = e.validation_map;
        job.best_validation_map = e.best_validation_map;
      });
    };
    PIXSEEK_ASSIGN_OR_RETURN(TrainReport report, TrainModel(db, request, &cancel));
    if (report.cancelled) return Status::Cancelled("training stopped (the server is stopping)");
    return TrainReportJson(report);
  }

  // Progress in items (queries ranked, images reindexed), at the rate so far.
  std::function<void(uint64_t, uint64_t)> ProgressOf(int64_t id) {
    const auto start = std::chrono::steady_clock::now();
    return [this, id, start](uint64_t done, uint64_t total) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      Update(id, [&](LearningJobStatus& job) {
        job.done = done;
        job.total = total;
        job.rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
        job.eta_s = job.rate > 0 ? static_cast<double>(total - std::min(done, total)) / job.rate
                                 : 0;
      });
    };
  }

  Result<std::string> RunEvaluate(int64_t id, const EvalJobRequest& request) {
    EvalOptions options;
    options.split = request.split;
    options.cancel = &cancel;
    options.on_progress = ProgressOf(id);
    PIXSEEK_ASSIGN_OR_RETURN(EvalReport report, Evaluate(db, request.root, options));
    return EvalReportJson(report);
  }

  Result<std::string> RunReindex(int64_t id, const std::string& model) {
    ReindexOptions options;
    options.model = model;
    options.show_progress = false;
    options.cancel = &cancel;
    options.on_progress = ProgressOf(id);
    PIXSEEK_ASSIGN_OR_RETURN(ReindexReport report, db.Reindex(options));
    return ReindexReportJson(report);
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      wake.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) return;
      const int64_t id = queue.front();
      queue.pop_front();
      lock.unlock();
      Run(id);
      lock.lock();
    }
  }
};

LearningJobs::LearningJobs(Database& db) : state_(std::make_unique<State>(db)) {
  state_->worker = std::thread([s = state_.get()] { s->Loop(); });
}

LearningJobs::~LearningJobs() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stopping = true;
  }
  state_->cancel = true;
  state_->wake.notify_all();
  state_->worker.join();
}

Result<int64_t> LearningJobs::StartTrain(TrainRequest request) {
  if (request.root.empty() || request.name.empty()) {
    return Status::InvalidArgument("a training needs the folder the images were built from "
                                   "(\"path\") and a name for the new model (\"name\")");
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  LearningJobStatus job;
  job.kind = "train";
  job.model = request.name;
  const int64_t id = state_->next_id;
  state_->train_requests[id] = std::move(request);
  return state_->Queue(std::move(job));
}

Result<int64_t> LearningJobs::StartReindex(const std::string& model) {
  if (model.empty()) return Status::InvalidArgument("name the model to switch to (\"model\")");
  std::lock_guard<std::mutex> lock(state_->mu);
  LearningJobStatus job;
  job.kind = "reindex";
  job.model = model;
  return state_->Queue(std::move(job));
}

Result<int64_t> LearningJobs::StartEvaluate(EvalJobRequest request) {
  if (request.root.empty()) {
    return Status::InvalidArgument("an evaluation needs the folder the images were built from "
                                   "(\"path\")");
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  LearningJobStatus job;
  job.kind = "evaluate";
  job.model = state_->db.model_name();
  const int64_t id = state_->next_id;
  state_->eval_requests[id] = std::move(request);
  return state_->Queue(std::move(job));
}

Result<LearningJobStatus> LearningJobs::Get(int64_t id) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->jobs.find(id);
  if (it == state_->jobs.end()) return Status::NotFound("no job " + std::to_string(id));
  return it->second;
}

std::vector<LearningJobStatus> LearningJobs::List() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<LearningJobStatus> out;
  for (const auto& [id, job] : state_->jobs) out.push_back(job);
  return out;
}

std::string LearningJobs::TrainReportJson(const TrainReport& r) {
  nlohmann::json history = nlohmann::json::array();
  for (const EpochReport& e : r.history) {
    history.push_back({{"epoch", e.epoch},
                       {"loss", e.loss},
                       {"validation_map", e.validation_map},
                       {"seconds", e.seconds}});
  }
  return nlohmann::json{{"model", r.model},
                        {"base", r.base_model},
                        {"fine_tune", r.fine_tune == FineTune::kHead ? "head" : "backbone"},
                        {"loss", r.loss},
                        {"split", std::string(ToString(r.split))},
                        {"train_images", r.train_images},
                        {"validation_images", r.validation_images},
                        {"classes", r.classes},
                        {"epochs", r.epochs},
                        {"best_epoch", r.best_epoch},
                        {"validation_map_before", r.validation_map_before},
                        {"validation_map_after", r.validation_map_after},
                        {"keeps_base", r.keeps_base},
                        {"validation_gain_lower_bound", r.validation_gain_lower_bound},
                        {"classifier_accuracy", r.classifier_accuracy},
                        {"cancelled", r.cancelled},
                        {"seconds", r.seconds},
                        {"data_sha256", r.data_sha256},
                        {"history", history}}
      .dump();
}

std::string LearningJobs::ReindexReportJson(const ReindexReport& r) {
  return nlohmann::json{{"from", r.from_model},
                        {"to", r.to_model},
                        {"images", r.images},
                        {"from_base_features", r.from_base_features},
                        {"failed", r.failed},
                        {"seconds", r.seconds}}
      .dump();
}

}  // namespace pixseek
