// OpenEmbedder: the runtime named by a card picks the opener, from one table.
// Adding a runtime is its file (an opener with the signature below), its
// enumerator and name in pixseek/embedder.h, and one line of kOpeners.
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "embed/kserve_embedder.h"
#include "embed/onnx_embedder.h"
#include "embed/sift_vlad.h"
#include "embed/torch_embedder.h"
#include "pixseek/embedder.h"

namespace pixseek {
namespace {

using Opener = Result<std::unique_ptr<Embedder>> (*)(const ModelCard& card,
                                                      const std::filesystem::path& model_file);

struct RuntimeOpener {
  Runtime runtime;
  // False for a runtime that has no local file (a remote model): OpenEmbedder
  // then neither checks nor reads model_file.
  bool reads_model_file;
  Opener open;
};

Result<std::unique_ptr<Embedder>> OpenKServe(const ModelCard& card,
                                             const std::filesystem::path& /*model_file*/) {
  return OpenKServeEmbedder(card);
}

constexpr RuntimeOpener kOpeners[] = {
    {Runtime::kOnnx, true, OpenOnnxEmbedder},
    {Runtime::kTorchScript, true, OpenTorchScript},
    {Runtime::kKServe, false, OpenKServe},
    {Runtime::kSiftVlad, true, OpenSiftVladEmbedder},
};

const RuntimeOpener* FindOpener(Runtime runtime) {
  for (const RuntimeOpener& o : kOpeners) {
    if (o.runtime == runtime) return &o;
  }
  return nullptr;
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenEmbedder(const ModelCard& card,
                                               const std::filesystem::path& model_file) {
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  const RuntimeOpener* opener = FindOpener(card.runtime);
  if (opener == nullptr) {
    return Status::Unsupported("runtime " + std::string(ToString(card.runtime)) +
                               " is not available in this build");
  }
  if (opener->reads_model_file) {
    std::error_code ec;
    if (!std::filesystem::exists(model_file, ec)) {
      return Status::NotFound("model file " + model_file.string() + " does not exist");
    }
    if (!std::filesystem::is_regular_file(model_file, ec)) {
      return Status::InvalidArgument("model file " + model_file.string() +
                                     " is not a regular file");
    }
  }
  return opener->open(card, model_file);
}

}  // namespace pixseek
