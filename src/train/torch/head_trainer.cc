// TrainHead's plugin side: a linear projection head y = normalise(A x + b)
// trained with the losses of losses.h on P x K batches, validated by
// leave-one-out mAP after every epoch (the best epoch is kept), and a
// multinomial logistic-regression classifier on the base features.
//
// Determinism: torch::manual_seed(seed) and std::mt19937(seed) drive all
// randomness, and the initial weights are computed (identity or PCA), so the
// same data, seed and thread count give bit-identical weights.
#include <algorithm>
#include <chrono>
#include <exception>
#include <optional>
#include <string>
#include <thread>

#include "train/metric_learning.h"
#include "train/torch/losses.h"
#include "train/train_plugin.h"

namespace pixseek::train {
namespace {

namespace F = torch::nn::functional;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

torch::Tensor Rows(const LabelledFeatures& set) {
  return torch::from_blob(const_cast<float*>(set.features.data()),
                          {static_cast<int64_t>(set.rows()), set.dimension}, torch::kFloat)
      .clone();
}

torch::Tensor Labels(const LabelledFeatures& set) {
  return torch::from_blob(const_cast<int32_t*>(set.labels.data()),
                          {static_cast<int64_t>(set.labels.size())}, torch::kInt)
      .to(torch::kLong);
}

// at::set_num_threads rebuilds libtorch's pool: only when it changes.
void SetThreads(int threads) {
  const int wanted =
      threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (at::get_num_threads() != wanted) at::set_num_threads(wanted);
}

// The projection y = normalise(A x + b); a and b have gradients.
struct Head {
  torch::Tensor a;  // output x input
  torch::Tensor b;  // output
};

// A head whose epoch 0 ranks (nearly) as the base features do: the identity
// when the dimension is kept, else the top principal directions of the
// uncentred rows. Uncentred, because the rows are compared by cosine: the
// projection onto the top eigenvectors of X^T X keeps the inner products
// x.x' best (centring would drop the mean direction, which for
// non-negative CNN features carries much of the similarity).
Head InitialHead(const torch::Tensor& x, int64_t output_dimension) {
  const int64_t input_dimension = x.size(1);
  Head head;
  if (output_dimension == input_dimension) {
    head.a = torch::eye(input_dimension, torch::kFloat);
  } else {
    const torch::Tensor gram = x.to(torch::kDouble).t().matmul(x.to(torch::kDouble));
    const torch::Tensor vectors = std::get<1>(torch::linalg_eigh(gram));  // ascending
    head.a = vectors.slice(1, input_dimension - output_dimension)
                 .flip({1})
                 .t()
                 .to(torch::kFloat)
                 .contiguous();
  }
  head.b = torch::zeros({output_dimension}, torch::kFloat);
  head.a.requires_grad_(true);
  head.b.requires_grad_(true);
  return head;
}

torch::Tensor Project(const Head& head, const torch::Tensor& x) {
  return F::normalize(torch::addmm(head.b, x, head.a.t()), F::NormalizeFuncOptions().dim(1));
}

// Student's t at one-sided 95 % for `df` degrees of freedom (df >= 1).
double T95(int df) {
  static constexpr double kTable[] = {6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895,
                                      1.860, 1.833, 1.812, 1.796, 1.782, 1.771, 1.761,
                                      1.753, 1.746, 1.740, 1.734, 1.729, 1.725};
  if (df <= 20) return kTable[std::max(df, 1) - 1];
  return df <= 30 ? 1.697 : 1.645;
}

// The lower end of a one-sided 95 % confidence interval of the mean gain in
// per-class validation mAP of `trained` over `base` (paired over classes).
// The class is the unit because a class's queries share their relevant set,
// so they rise or fall together: with few validation classes a gain must be
// large and consistent to count. -inf when fewer than 2 classes.
double GainLowerBound(const std::map<int64_t, double>& base,
                      const std::map<int64_t, double>& trained) {
  std::vector<double> gains;
  for (const auto& [label, map] : base) {
    if (auto it = trained.find(label); it != trained.end()) gains.push_back(it->second - map);
  }
  const auto c = static_cast<double>(gains.size());
  if (gains.size() < 2) return -std::numeric_limits<double>::infinity();
  double mean = 0;
  for (double g : gains) mean += g / c;
  double var = 0;
  for (double g : gains) var += (g - mean) * (g - mean) / (c - 1);
  return mean - T95(static_cast<int>(gains.size()) - 1) * std::sqrt(var / c);
}

double ProjectedMap(const Head& head, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  return LeaveOneOutMap(Project(head, x), y);
}

std::vector<float> ToVector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// ---- Classifier ----------------------------------------------------------

struct Classifier {
  torch::Tensor w;  // classes x input
  torch::Tensor b;  // classes
  double accuracy = 0;
};

constexpr int kClassifierEpochs = 60;
constexpr int64_t kClassifierBatch = 256;
// Relative change of the epoch loss below which the classifier has converged.
constexpr double kClassifierTolerance = 1e-4;

// Multinomial logistic regression on the base features (Adam, cross-entropy,
// small weight decay), stopped when the epoch loss no longer moves.
Classifier FitClassifier(const torch::Tensor& x, const torch::Tensor& y, int64_t classes) {
  Classifier fit;
  fit.w = torch::zeros({classes, x.size(1)}, torch::requires_grad());
  fit.b = torch::zeros({classes}, torch::requires_grad());
  torch::optim::Adam adam({fit.w, fit.b}, torch::optim::AdamOptions(1e-2).weight_decay(1e-4));
  const int64_t n = x.size(0);
  double previous = 0;
  for (int epoch = 0; epoch < kClassifierEpochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, torch::kLong);
    double loss_sum = 0;
    for (int64_t start = 0; start < n; start += kClassifierBatch) {
      const torch::Tensor idx = order.slice(0, start, std::min(n, start + kClassifierBatch));
      adam.zero_grad();
      const torch::Tensor loss = F::cross_entropy(
          torch::addmm(fit.b, x.index_select(0, idx), fit.w.t()), y.index_select(0, idx));
      loss.backward();
      adam.step();
      loss_sum += loss.item<double>() * static_cast<double>(idx.size(0));
    }
    const double mean = loss_sum / static_cast<double>(n);
    if (epoch > 0 && std::abs(previous - mean) < kClassifierTolerance * previous) break;
    previous = mean;
  }
  return fit;
}

// Accuracy on the rows whose class the classifier knows (label < classes).
double ClassifierAccuracy(const Classifier& fit, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  const torch::Tensor known = y.lt(fit.w.size(0));
  const int64_t count = known.sum().item<int64_t>();
  if (count == 0) return 0;
  const torch::Tensor predicted = torch::addmm(fit.b, x, fit.w.t()).argmax(1);
  return predicted.eq(y).logical_and(known).sum().item<double>() / static_cast<double>(count);
}

// ---- Head ----------------------------------------------------------------

struct Best {
  double map = 0;
  int epoch = 0;  // 0 = the base features
  torch::Tensor a, b;
};

// One epoch's mean batch loss and rows seen; cancelled when options.cancel
// stopped it after a batch.
struct EpochRun {
  double loss = 0;
  int64_t rows = 0;
  bool cancelled = false;
};

EpochRun RunEpoch(const MetricTrainOptions& options, const std::vector<int32_t>& labels,
                  const torch::Tensor& x, const torch::Tensor& y, Head& head,
                  torch::optim::Adam& adam, CrossBatchMemory* memory, std::mt19937& rng) {
  EpochRun run;
  int batches = 0;
  for (const auto& batch : PkBatches(labels, options.batch_classes, options.per_class, rng)) {
    const torch::Tensor idx = torch::tensor(batch, torch::kLong);
    const torch::Tensor yb = y.index_select(0, idx);
    adam.zero_grad();
    const torch::Tensor z = Project(head, x.index_select(0, idx));
    const torch::Tensor loss = BatchLoss(options, z, yb, memory);
    loss.backward();
    adam.step();
    // After the step: the memory holds earlier batches only.
    if (memory != nullptr) memory->Enqueue(z, yb);
    run.loss += loss.item<double>();
    run.rows += idx.size(0);
    ++batches;
    if (options.cancel != nullptr && options.cancel->load()) {
      run.cancelled = true;
      break;
    }
  }
  if (batches > 0) run.loss /= batches;
  return run;
}

void Report(const MetricTrainOptions& options, HeadTrainResult& result, EpochReport report) {
  result.history.push_back(report);
  if (options.on_epoch) options.on_epoch(report);
}

Result<HeadTrainResult> TrainHeadOnTorch(const LabelledFeatures& train,
                                         const LabelledFeatures& validation,
                                         const MetricTrainOptions& options) {
  PIXSEEK_RETURN_IF_ERROR(ValidateHeadTraining(train, validation, options));
  const Clock::time_point start = Clock::now();
  SetThreads(options.threads);
  torch::manual_seed(options.seed);
  std::mt19937 rng(options.seed);
  const torch::Tensor x = Rows(train), y = Labels(train);
  const torch::Tensor xv = Rows(validation), yv = Labels(validation);

  HeadTrainResult result;
  result.input_dimension = train.dimension;
  result.validation_map_base = LeaveOneOutMap(xv, yv);

  const Classifier classifier = FitClassifier(x, y, y.max().item<int64_t>() + 1);
  result.classes = static_cast<int>(classifier.w.size(0));
  result.classifier_w = ToVector(classifier.w);
  result.classifier_b = ToVector(classifier.b);
  result.classifier_accuracy = ClassifierAccuracy(classifier, xv, yv);

  const int64_t output_dimension = options.dimension > 0 ? options.dimension : train.dimension;
  Head head = InitialHead(x, output_dimension);
  torch::optim::Adam adam({head.a, head.b}, torch::optim::AdamOptions(options.learning_rate));
  std::optional<CrossBatchMemory> memory;
  if (options.xbm > 0) memory.emplace(options.xbm, output_dimension);

  Best best{result.validation_map_base, 0, {}, {}};
  EpochReport report;
  report.epochs = options.epochs;
  report.validation_map = report.best_validation_map = best.map;
  report.seconds = SecondsSince(start);
  report.eta_s = 0;
  Report(options, result, report);
  const double training_start = report.seconds;

  int stale = 0;
  for (int epoch = 1; epoch <= options.epochs && stale < options.patience; ++epoch) {
    const Clock::time_point epoch_start = Clock::now();
    const EpochRun run = RunEpoch(options, train.labels, x, y, head, adam,
                                  memory ? &*memory : nullptr, rng);
    if (run.cancelled) {
      result.cancelled = true;
      break;
    }
    const double epoch_train_seconds = SecondsSince(epoch_start);
    const double map = ProjectedMap(head, xv, yv);
    if (map > best.map) {
      best = {map, epoch, head.a.detach().clone(), head.b.detach().clone()};
      stale = 0;
    } else {
      ++stale;
    }
    result.epochs_run = epoch;
    report.epoch = epoch;
    report.loss = run.loss;
    report.validation_map = map;
    report.best_validation_map = best.map;
    report.seconds = SecondsSince(start);
    report.rows_per_second = static_cast<double>(run.rows) / std::max(1e-9, epoch_train_seconds);
    const int left = stale < options.patience ? options.epochs - epoch : 0;
    report.eta_s = left * (report.seconds - training_start) / epoch;
    Report(options, result, report);
  }

  // The best epoch is kept only when its gain is unlikely to be noise of
  // the validation classes: a head that fits a few classes can lose much of
  // the base features' quality on others.
  result.best_epoch = best.epoch;
  if (best.epoch > 0) {
    torch::NoGradGuard no_grad;
    Head kept{best.a, best.b};
    result.validation_gain_lower_bound =
        GainLowerBound(LeaveOneOutClassMaps(xv, yv), LeaveOneOutClassMaps(Project(kept, xv), yv));
    if (!(result.validation_gain_lower_bound > 0)) result.best_epoch = 0;
  }
  result.keeps_base = result.best_epoch == 0;
  result.validation_map_best = result.keeps_base ? result.validation_map_base : best.map;
  if (!result.keeps_base) {
    result.output_dimension = static_cast<int>(output_dimension);
    result.a = ToVector(best.a);
    result.b = ToVector(best.b);
  }
  result.seconds = SecondsSince(start);
  return result;
}

}  // namespace
}  // namespace pixseek::train

void PixseekTrainHead(const pixseek::LabelledFeatures& train,
                      const pixseek::LabelledFeatures& validation,
                      const pixseek::MetricTrainOptions& options,
                      pixseek::Result<pixseek::HeadTrainResult>* out) {
  // No exception may cross the plugin boundary (libtorch's, or on_epoch's).
  try {
    *out = pixseek::train::TrainHeadOnTorch(train, validation, options);
  } catch (const c10::Error& e) {
    *out = pixseek::Status::Internal(std::string("head training failed in libtorch: ") +
                                     e.what_without_backtrace());
  } catch (const std::exception& e) {
    *out = pixseek::Status::Internal(std::string("head training failed: ") + e.what());
  }
}
