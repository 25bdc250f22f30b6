// ParseMetricLoss, ToString(MetricLoss), DefaultMargin and the checks of
// TrainHead's input: no libtorch here, so that they work (and give the same
// errors) in a build without the plugin.
#include "train/metric_learning.h"

#include <cmath>
#include <map>
#include <string>

namespace pixseek {

Result<MetricLoss> ParseMetricLoss(std::string_view name) {
  if (name == "triplet") return MetricLoss::kTriplet;
  if (name == "triplet-per-query") return MetricLoss::kTripletPerQuery;
  if (name == "contrastive") return MetricLoss::kContrastive;
  return Status::InvalidArgument("unknown metric loss \"" + std::string(name) +
                                 "\" (expected triplet, triplet-per-query or contrastive)");
}

std::string_view ToString(MetricLoss loss) {
  switch (loss) {
    case MetricLoss::kTriplet: return "triplet";
    case MetricLoss::kTripletPerQuery: return "triplet-per-query";
    case MetricLoss::kContrastive: return "contrastive";
  }
  return "unknown";
}

float DefaultMargin(MetricLoss loss) {
  return loss == MetricLoss::kContrastive ? 0.5f : 0.1f;
}

namespace train {
namespace {

// Checks one set on its own; `what` names it in the messages.
Status ValidateSet(const LabelledFeatures& set, std::string_view what) {
  const std::string name(what);
  if (set.dimension <= 0) {
    return Status::InvalidArgument(name + " set: dimension " + std::to_string(set.dimension) +
                                   " is not positive");
  }
  if (set.features.size() % static_cast<size_t>(set.dimension) != 0) {
    return Status::InvalidArgument(name + " set: " + std::to_string(set.features.size()) +
                                   " floats are not whole rows of " +
                                   std::to_string(set.dimension));
  }
  if (set.rows() == 0) return Status::InvalidArgument(name + " set is empty");
  if (set.labels.size() != set.rows()) {
    return Status::InvalidArgument(name + " set: " + std::to_string(set.labels.size()) +
                                   " labels for " + std::to_string(set.rows()) + " rows");
  }
  for (size_t i = 0; i < set.labels.size(); ++i) {
    if (set.labels[i] < 0) {
      return Status::InvalidArgument(name + " set: row " + std::to_string(i) +
                                     " has a negative label");
    }
  }
  for (size_t i = 0; i < set.features.size(); ++i) {
    if (!std::isfinite(set.features[i])) {
      return Status::InvalidArgument(name + " set: row " + std::to_string(i / set.dimension) +
                                     " has a non-finite value");
    }
  }
  return Status::Ok();
}

// Classes with at least two rows: only they give positive pairs.
int ClassesWithPairs(const std::vector<int32_t>& labels) {
  std::map<int32_t, int> counts;
  for (int32_t label : labels) ++counts[label];
  int classes = 0;
  for (const auto& [label, count] : counts) classes += count >= 2 ? 1 : 0;
  return classes;
}

Status ValidateOptions(const MetricTrainOptions& o, int input_dimension) {
  auto bad = [](std::string m) { return Status::InvalidArgument(std::move(m)); };
  if (o.dimension < 0 || o.dimension > input_dimension) {
    return bad("head dimension " + std::to_string(o.dimension) + " is not in 0.." +
               std::to_string(input_dimension) + " (0 = the input's)");
  }
  if (o.batch_classes < 1 || o.per_class < 1) {
    return bad("batches need P >= 1 classes of K >= 1 rows (got P = " +
               std::to_string(o.batch_classes) + ", K = " + std::to_string(o.per_class) + ")");
  }
  if (o.epochs < 1) return bad("epochs must be at least 1");
  if (o.patience < 1) return bad("patience must be at least 1");
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return bad("the learning rate must be positive");
  }
  if (!(o.margin >= 0) || !std::isfinite(o.margin)) return bad("the margin must be >= 0");
  if (!(o.koleo >= 0) || !std::isfinite(o.koleo)) return bad("the KoLeo weight must be >= 0");
  if (o.xbm < 0) return bad("the cross-batch memory size must be >= 0");
  if (o.threads < 0) return bad("threads must be >= 0 (0 = all cores)");
  return Status::Ok();
}

}  // namespace

Status ValidateHeadTraining(const LabelledFeatures& train, const LabelledFeatures& validation,
                            const MetricTrainOptions& options) {
  PIXSEEK_RETURN_IF_ERROR(ValidateSet(train, "training"));
  PIXSEEK_RETURN_IF_ERROR(ValidateSet(validation, "validation"));
  if (validation.dimension != train.dimension) {
    return Status::InvalidArgument("validation rows have " + std::to_string(validation.dimension) +
                                   " dimensions, training rows " +
                                   std::to_string(train.dimension));
  }
  if (ClassesWithPairs(train.labels) < 2) {
    return Status::InvalidArgument(
        "training needs at least 2 classes with 2 or more rows each (a batch needs "
        "positive and negative pairs)");
  }
  if (ClassesWithPairs(validation.labels) < 1) {
    return Status::InvalidArgument(
        "validation needs a class with 2 or more rows (leave-one-out mAP is undefined "
        "otherwise)");
  }
  return ValidateOptions(options, train.dimension);
}

double EffectiveMargin(const MetricTrainOptions& options) {
  return options.margin > 0 ? options.margin : DefaultMargin(options.loss);
}

}  // namespace train
}  // namespace pixseek
