#include "service/model_resolution.h"

#include <algorithm>
#include <cstdio>
#include <optional>

#include "pixseek/feature_fit.h"

namespace pixseek {
namespace {

const KnownModel* FindKnown(const std::string& name) {
  for (const KnownModel& k : KnownModels()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

// Finds `name`, pulling it when allowed. A known model learned per collection
// (sift-vlad) is never installed: its file is in the database directory.
// With `quiet_unavailable`, a failed download returns the plain Unavailable
// status (the caller falls back).
Result<InstalledModel> FindModel(ModelRegistry& registry, const std::string& name, bool pull,
                                 const std::filesystem::path& db_dir, bool quiet_unavailable) {
  const KnownModel* known = FindKnown(name);
  if (known != nullptr && LearnsPerCollection(known->card)) {
    InstalledModel m;
    m.card = known->card;
    m.dir = db_dir;
    m.model_file = db_dir / known->card.file;
    return m;
  }
  auto found = registry.Find(name);
  if (found.ok() || !pull || found.status().code() != StatusCode::kNotFound) return found;
  if (known == nullptr) return found;
  std::fprintf(stderr, "model '%s' is not installed; downloading it...\n", name.c_str());
  auto pulled = registry.Pull(name, std::nullopt);
  if (pulled.ok() || (quiet_unavailable && pulled.status().code() == StatusCode::kUnavailable)) {
    return pulled;
  }
  return Status(pulled.status().code(),
                pulled.status().message() + "\nNo model is available. Either connect to the "
                "network and run `pixseek model pull " + name + "`, or copy the model file "
                "to this machine and run `pixseek model import FILE`.");
}

}  // namespace

Result<ResolvedModel> ResolveModel(const ModelRequest& request) {
  ModelRegistry registry(request.home);
  auto found = FindModel(registry, request.name, request.pull, request.db_dir,
                         request.may_fall_back);
  if (!request.may_fall_back || found.ok() ||
      found.status().code() != StatusCode::kUnavailable) {
    PIXSEEK_ASSIGN_OR_RETURN(InstalledModel model, std::move(found));
    return ResolvedModel{request.name, std::move(model)};
  }
  std::fprintf(stderr,
               "pixseek: warning: the default model '%s' is not installed and cannot be "
               "downloaded (%s); building with '%s' instead: classical SIFT features learned "
               "from these images, no download needed, good for near-duplicates but weaker "
               "on similar-looking content. For better results later, run `pixseek model pull "
               "%s` (or `pixseek model import FILE`) and build a new database.\n",
               request.name.c_str(), found.status().message().c_str(), kOfflineModel,
               request.name.c_str());
  PIXSEEK_ASSIGN_OR_RETURN(InstalledModel model,
                           FindModel(registry, kOfflineModel, false, request.db_dir, false));
  return ResolvedModel{kOfflineModel, std::move(model)};
}

}  // namespace pixseek
