// The entry points of the training plugin pixseek_train.so, looked up by name
// with dlsym (train_loader.cc) and defined, extern "C" with default
// visibility, in src/train/torch/. Declared here so that both sides are
// compiled against the same signatures. The plugin is built by the same
// compiler from the same tree, so C++ types cross the boundary by reference.
#ifndef PIXSEEK_TRAIN_TRAIN_PLUGIN_H_
#define PIXSEEK_TRAIN_TRAIN_PLUGIN_H_

#include "pixseek/train.h"

// Default visibility: the plugin is built with hidden symbols otherwise.
#define PIXSEEK_TRAIN_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C" {

// TrainHead (src/train/torch/head_trainer.cc). Sets *out; never throws.
PIXSEEK_TRAIN_PLUGIN_EXPORT void PixseekTrainHead(
    const pixseek::LabelledFeatures& train, const pixseek::LabelledFeatures& validation,
    const pixseek::MetricTrainOptions& options, pixseek::Result<pixseek::HeadTrainResult>* out);

// TrainBackbone (src/train/torch/backbone_trainer.cc); model_file and
// out_file are paths. Sets *out; never throws.
PIXSEEK_TRAIN_PLUGIN_EXPORT void PixseekTrainBackbone(
    const pixseek::ModelCard& card, const char* model_file, const pixseek::LabelledImages& train,
    const pixseek::LabelledImages& validation, const pixseek::BackboneTrainOptions& options,
    const char* out_file, pixseek::Result<pixseek::BackboneTrainResult>* out);

}  // extern "C"

#endif  // PIXSEEK_TRAIN_TRAIN_PLUGIN_H_
