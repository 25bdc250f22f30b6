// OpenTorchScript for the rest of pixseek: loads the libtorch plugin
// (pixseek_torch.so, built from torch_embedder.cc) on first use and calls
// its entry point. Linking libtorch into the binary made every command,
// even `pixseek --help`, load about 280 shared libraries first (seconds on a
// busy 2-core machine); now only a TorchScript model pays for it.
#include <array>
#include <string>

#include "core/plugin.h"
#include "embed/torch_embedder.h"

namespace pixseek {
namespace {

constexpr char kPluginName[] = "pixseek_torch.so";
constexpr std::array<const char*, 2> kEntryPoints = {"PixseekOpenTorchScript",
                                                     "PixseekOpenOnnxOnTorch"};

using EntryPoint = void (*)(const ModelCard&, const char*,
                            Result<std::unique_ptr<Embedder>>*);

// Calls entry point `index` (of kEntryPoints) of the plugin.
Result<std::unique_ptr<Embedder>> Open(size_t index, const ModelCard& card,
                                       const std::filesystem::path& model_file) {
  Result<std::vector<void*>> plugin = LoadPlugin(
      kPluginName, kEntryPoints,
      "libtorch models need the plugin " + std::string(kPluginName) +
          ", which was not found (it is built when libtorch-dev is installed: "
          "scripts/install-deps.sh, then re-run cmake).");
  if (!plugin.ok()) return plugin.status();
  auto entry = reinterpret_cast<EntryPoint>((*plugin)[index]);
  Result<std::unique_ptr<Embedder>> out = Status::Internal("the torch plugin returned nothing");
  entry(card, model_file.c_str(), &out);
  return out;
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenTorchScript(const ModelCard& card,
                                                  const std::filesystem::path& model_file) {
  return Open(0, card, model_file);
}

Result<std::unique_ptr<Embedder>> OpenOnnxOnTorch(const ModelCard& card,
                                                  const std::filesystem::path& model_file) {
  return Open(1, card, model_file);
}

}  // namespace pixseek
