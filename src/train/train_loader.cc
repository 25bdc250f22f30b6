// TrainHead and TrainBackbone for the rest of pixseek: they load the
// training plugin (pixseek_train.so, built from src/train/torch/ when
// libtorch is installed) on first use and call its entry points, so that
// only training pays for loading libtorch (see src/embed/torch_loader.cc).
#include <array>
#include <string>

#include "core/plugin.h"
#include "train/metric_learning.h"
#include "train/train_plugin.h"

namespace pixseek {
namespace {

constexpr char kPluginName[] = "pixseek_train.so";
constexpr std::array<const char*, 2> kEntryPoints = {"PixseekTrainHead",
                                                     "PixseekTrainBackbone"};

// The plugin's entry points, or Unsupported saying how to get it.
Result<std::vector<void*>> Plugin() {
  return LoadPlugin(kPluginName, kEntryPoints,
                    "metric learning needs the plugin " + std::string(kPluginName) +
                        ", which was not found (it is built when libtorch-dev is installed "
                        "and PIXSEEK_WITH_TORCH is ON: scripts/install-deps.sh, then re-run "
                        "cmake).");
}

}  // namespace

Result<HeadTrainResult> TrainHead(const LabelledFeatures& train, const LabelledFeatures& validation,
                                  const MetricTrainOptions& options) {
  // Checked here too so that bad input is InvalidArgument with or without
  // the plugin.
  PIXSEEK_RETURN_IF_ERROR(train::ValidateHeadTraining(train, validation, options));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<void*> entries, Plugin());
  auto* entry = reinterpret_cast<decltype(&PixseekTrainHead)>(entries[0]);
  Result<HeadTrainResult> out = Status::Internal("the training plugin returned nothing");
  entry(train, validation, options, &out);
  return out;
}

Result<BackboneTrainResult> TrainBackbone(const ModelCard& card,
                                          const std::filesystem::path& model_file,
                                          const LabelledImages& train,
                                          const LabelledImages& validation,
                                          const BackboneTrainOptions& options,
                                          const std::filesystem::path& out_file) {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<void*> entries, Plugin());
  auto* entry = reinterpret_cast<decltype(&PixseekTrainBackbone)>(entries[1]);
  Result<BackboneTrainResult> out = Status::Internal("the training plugin returned nothing");
  entry(card, model_file.c_str(), train, validation, options, out_file.c_str(), &out);
  return out;
}

}  // namespace pixseek
