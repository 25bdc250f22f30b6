// The train service: learns a new model from a database's labelled images
// (labels = first folder level under a root, as `eval`), from the base
// features the database stores (a head) or from the images themselves (a
// fine-tuned network), and installs it under $PIXSEEK_HOME/models. The
// learning is src/train's (pixseek/train.h); this is the part that knows the
// database: which images, their labels and splits, and the model it writes.
// `pixseek reindex` (Database::Reindex) then switches a database to it.
#ifndef PIXSEEK_TRAIN_SERVICE_H_
#define PIXSEEK_TRAIN_SERVICE_H_

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/services.h"
#include "pixseek/status.h"
#include "pixseek/train.h"

namespace pixseek {

enum class FineTune { kHead, kBackbone };
// "head", "backbone"; InvalidArgument otherwise.
Result<FineTune> ParseFineTune(std::string_view name);

// The head's output dimension when none is asked for (or the base's when
// that is smaller). On PACS it matched or beat the full 1,280-d head
// (held-out mAP 0.762 against 0.754) in a quarter of the training time, and
// the index's vectors are 5 times smaller (bench/RESULTS.md).
inline constexpr int kDefaultHeadDimension = 256;

struct TrainRequest {
  std::filesystem::path root;  // the labelled folders the database was built from
  std::string name;            // the new model's name (must not be installed)
  FineTune fine_tune = FineTune::kHead;
  // What training may see (DataSplit): only the training part, so that
  // `pixseek eval --split` measures the rest.
  DataSplit split = DataSplit::kNone;
  // Share of the training part kept for validation (early stopping):
  // images of each class for splits none and images, whole classes for
  // split classes (validation mirrors the split).
  double validation_fraction = 0.2;
  // metric.dimension: 0 = the base's; above the base's it is cut to it.
  MetricTrainOptions metric = [] {
    MetricTrainOptions m;
    m.dimension = kDefaultHeadDimension;
    return m;
  }();
  int trainable_blocks = 2;  // fine_tune backbone only
  // fine_tune backbone only: Adam's step for pretrained weights, far below
  // the head's metric.learning_rate.
  float backbone_learning_rate = BackboneTrainOptions{}.learning_rate;
  bool show_progress = true;
  std::FILE* progress_out = stderr;
};

struct TrainReport {
  std::string model;       // the model installed
  std::string base_model;  // the network it builds on
  std::string loss;
  FineTune fine_tune = FineTune::kHead;
  DataSplit split = DataSplit::kNone;
  uint64_t train_images = 0;
  uint64_t validation_images = 0;
  int classes = 0;
  int epochs = 0;       // epochs run
  int best_epoch = 0;   // 0 = the base features were best (kept as they are)
  double validation_map_before = 0;
  double validation_map_after = 0;
  bool keeps_base = false;
  // Head only: the lower end of the 95 % confidence interval of the gain per
  // validation class; the projection is kept only when it is above 0.
  double validation_gain_lower_bound = 0;
  bool cancelled = false;  // stopped by Ctrl-C: the best so far was kept
  double classifier_accuracy = 0;
  double seconds = 0;
  std::string data_sha256;  // of the training data (paths, labels, features)
  std::vector<EpochReport> history;
};

// Trains request.name from `db` and installs it. FailedPrecondition when
// there is too little labelled data, base features are missing, or the
// database's model cannot be trained on (sift-vlad); AlreadyExists when the
// name is taken; Unsupported without libtorch.
Result<TrainReport> TrainModel(Database& db, const TrainRequest& request,
                               const std::atomic<bool>* cancel = nullptr);

// ---- Jobs over HTTP -------------------------------------------------------

// What an evaluation job measures (`pixseek eval ROOT --split S`).
struct EvalJobRequest {
  std::filesystem::path root;  // the labelled folders the database was built from
  DataSplit split = DataSplit::kNone;
};

// One train, reindex or evaluate job started over HTTP.
struct LearningJobStatus {
  int64_t id = 0;
  std::string kind;   // "train", "reindex" or "evaluate"
  std::string model;  // the model trained, switched to, or evaluated
  std::string state;  // "queued", "running", "done", "failed", "cancelled"
  // Progress: epochs (train), images (reindex) or queries (evaluate).
  uint64_t done = 0;
  uint64_t total = 0;
  double rate = 0;   // per second: training rows, or images
  double eta_s = 0;  // seconds left at that rate
  double loss = 0;                 // train: the last epoch's
  double validation_map = 0;       // train: the last epoch's
  double best_validation_map = 0;  // train
  std::string error;               // why a job failed
  std::string result;              // JSON of the report, when done
};

// Runs train, reindex and evaluate jobs on one background thread, one at a
// time, in the order started (a reindex never runs beside a training or an
// evaluation that reads the same database; an evaluation uses every core). Jobs live in memory: after a restart they are gone and may
// be started again (a killed reindex leaves the old database, whole).
// Thread-safety: all methods may be called concurrently. The destructor
// cancels the running job and waits for it.
class LearningJobs {
 public:
  explicit LearningJobs(Database& db);
  ~LearningJobs();
  LearningJobs(const LearningJobs&) = delete;
  LearningJobs& operator=(const LearningJobs&) = delete;

  // Queues a training (request.show_progress is ignored: progress is the
  // job's). InvalidArgument for a request without a root or name.
  Result<int64_t> StartTrain(TrainRequest request);
  // Queues a switch to `model`. InvalidArgument for an empty name.
  Result<int64_t> StartReindex(const std::string& model);
  // Queues an evaluation (Evaluate); its result is EvalReportJson.
  // InvalidArgument for a request without a root.
  Result<int64_t> StartEvaluate(EvalJobRequest request);
  // NotFound for an unknown job.
  Result<LearningJobStatus> Get(int64_t id) const;
  std::vector<LearningJobStatus> List() const;

  // The report of a training or a reindex as JSON (also `pixseek train
  // --json` and `pixseek reindex --json`).
  static std::string TrainReportJson(const TrainReport& report);
  static std::string ReindexReportJson(const ReindexReport& report);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace pixseek

#endif  // PIXSEEK_TRAIN_SERVICE_H_
