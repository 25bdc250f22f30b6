// Torch-free pieces of metric learning shared by the static library
// (train_loader.cc) and the plugin pixseek_train.so (src/train/torch/).
#ifndef PIXSEEK_TRAIN_METRIC_LEARNING_H_
#define PIXSEEK_TRAIN_METRIC_LEARNING_H_

#include "pixseek/train.h"

namespace pixseek::train {

// OK when TrainHead can run on these sets and options; otherwise
// InvalidArgument saying what is wrong: rows not whole, a label count that
// differs from the rows, a negative label, a non-finite value, sets of
// different dimensions, an empty set, fewer than 2 training classes with 2+
// rows, a validation set where no row has another of its class (mAP is
// undefined), or an option out of range.
Status ValidateHeadTraining(const LabelledFeatures& train, const LabelledFeatures& validation,
                            const MetricTrainOptions& options);

// The margin the losses use: options.margin, or DefaultMargin when it is 0.
double EffectiveMargin(const MetricTrainOptions& options);

}  // namespace pixseek::train

#endif  // PIXSEEK_TRAIN_METRIC_LEARNING_H_
