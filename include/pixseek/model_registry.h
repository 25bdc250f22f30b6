// Installed models under $PIXSEEK_HOME/models and the built-in list of known
// models (name, download URL, sha256, card).
//
// Layout: <home>/models/<name>/card.json and <home>/models/<name>/<card.file>.
// Thread-safety: not thread-safe; used by the CLI and at start-up.
#ifndef PIXSEEK_MODEL_REGISTRY_H_
#define PIXSEEK_MODEL_REGISTRY_H_

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/status.h"

namespace pixseek {

// A model the registry knows how to fetch and describe without a user card.
struct KnownModel {
  std::string name;
  std::string url;
  std::string sha256;
  std::string description;
  ModelCard card;  // card.file and card.sha256 filled in
};

// Built-in list; the first entry is the default model.
const std::vector<KnownModel>& KnownModels();
// The name `pixseek build` uses when no --model is given.
std::string DefaultModelName();

struct InstalledModel {
  ModelCard card;
  std::filesystem::path dir;         // <home>/models/<name>
  std::filesystem::path model_file;  // dir / card.file (a head-only model: its base's file)
  // dir / card.trained.head; empty when the model has no trained head.
  std::filesystem::path head_file() const {
    return card.trained.head.empty() ? std::filesystem::path() : dir / card.trained.head;
  }
};

// $PIXSEEK_HOME if set, else $XDG_DATA_HOME/pixseek, else ~/.local/share/pixseek.
std::filesystem::path DefaultPixseekHome();

// Called during downloads with bytes so far and total (0 when unknown).
using DownloadProgress = std::function<void(uint64_t done, uint64_t total)>;

class ModelRegistry {
 public:
  explicit ModelRegistry(std::filesystem::path home);

  const std::filesystem::path& home() const { return home_; }
  std::filesystem::path models_dir() const { return home_ / "models"; }

  // The installed model called `name`. NotFound when it is not installed; the
  // message says how to get it (pull or import).
  // A model trained with `pixseek train` that has only a head runs its base
  // model's network: its card then has the base's network fields and
  // model_file is the base's (FailedPrecondition when the installed base is
  // not the one it was trained on).
  Result<InstalledModel> Find(const std::string& name) const;
  // Find for the base of a trained model: FailedPrecondition when `name` is
  // itself a head without a network.
  Result<InstalledModel> FindBase(const std::string& name) const;

  // Every installed model, sorted by name. Broken entries are skipped.
  std::vector<InstalledModel> List() const;

  // Copies `file` into the registry. With no card: the file's sha256 must
  // match a known model, whose card and name are used, or a card must lie
  // beside the file (`file` + ".json", or card.json in its directory). `name` overrides the
  // card's name. AlreadyExists when a different model has that name.
  Result<InstalledModel> Import(const std::filesystem::path& file,
                                const std::optional<std::filesystem::path>& card,
                                const std::optional<std::string>& name);

  // Downloads a known model (from `url_override` when given, e.g. a mirror)
  // and checks its sha256 before installing it. Unavailable when the network
  // fails, DataLoss when the checksum does not match, NotFound for an unknown
  // name.
  Result<InstalledModel> Pull(const std::string& name,
                              const std::optional<std::string>& url_override,
                              const DownloadProgress& progress = {});

  // A fresh directory on the registry's file system (models/.NAME.partial)
  // to write a trained model's files into before InstallStaged moves it
  // into place. AlreadyExists when a model called `name` is installed.
  Result<std::filesystem::path> Stage(const std::string& name) const;
  // Writes `card` into `staged` and renames it to models/<card.name> in one
  // step: a crash leaves either no model or the whole model.
  Result<InstalledModel> InstallStaged(const ModelCard& card,
                                       const std::filesystem::path& staged) const;

 private:
  Result<InstalledModel> Find(const std::string& name, bool as_base) const;
  std::filesystem::path home_;
};

}  // namespace pixseek

#endif  // PIXSEEK_MODEL_REGISTRY_H_
