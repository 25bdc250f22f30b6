// Which model a database uses and where its file is: an installed model, one
// downloaded on demand, or, for a new database with no model named and no
// network, the offline fallback (sift-vlad) with one warning that says so.
#ifndef PIXSEEK_SERVICE_MODEL_RESOLUTION_H_
#define PIXSEEK_SERVICE_MODEL_RESOLUTION_H_

#include <filesystem>
#include <string>

#include "pixseek/model_registry.h"
#include "pixseek/status.h"

namespace pixseek {

// The model used when the default one is neither installed nor downloadable.
inline constexpr char kOfflineModel[] = "sift-vlad";

struct ModelRequest {
  std::string name;                 // the model to find
  std::filesystem::path home;       // where models are installed
  std::filesystem::path db_dir;     // a model learned per collection keeps its file here
  bool pull = false;                // download a known model that is not installed
  // The default model was implied (not named) for a new database: when it
  // can be neither found nor downloaded, use kOfflineModel instead.
  bool may_fall_back = false;
};

struct ResolvedModel {
  std::string name;  // request.name, or kOfflineModel after a fall-back
  InstalledModel model;
};

// NotFound for a model neither installed nor known; Unavailable (with what to
// do) when a download was needed and failed.
Result<ResolvedModel> ResolveModel(const ModelRequest& request);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_MODEL_RESOLUTION_H_
