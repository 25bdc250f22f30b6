// OpenTorchScript for the rest of pixseek: loads the libtorch plugin
// (pixseek_torch.so, built from torch_embedder.cc) on first use and calls
// its entry point. Linking libtorch into the binary made every command,
// even `pixseek --help`, load about 280 shared libraries first (seconds on a
// busy 2-core machine); now only a TorchScript model pays for it.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "embed/torch_embedder.h"

namespace pixseek {
namespace {

constexpr char kPluginName[] = "pixseek_torch.so";
constexpr char kTorchScriptEntry[] = "PixseekOpenTorchScript";
constexpr char kOnnxEntry[] = "PixseekOpenOnnxOnTorch";

using EntryPoint = void (*)(const ModelCard&, const char*,
                            Result<std::unique_ptr<Embedder>>*);

// Where the plugin may be, in order: $PIXSEEK_PLUGIN_DIR, beside the
// executable, ../lib/pixseek from it (an installed layout), and the build
// tree it was built in.
std::vector<std::filesystem::path> PluginCandidates() {
  std::vector<std::filesystem::path> dirs;
  if (const char* env = std::getenv("PIXSEEK_PLUGIN_DIR"); env != nullptr && *env != '\0') {
    dirs.emplace_back(env);
  }
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back(exe.parent_path());
    dirs.push_back(exe.parent_path() / ".." / "lib" / "pixseek");
  }
#ifdef PIXSEEK_PLUGIN_BUILD_DIR
  dirs.emplace_back(PIXSEEK_PLUGIN_BUILD_DIR);
#endif
  std::vector<std::filesystem::path> files;
  for (const auto& d : dirs) files.push_back(d / kPluginName);
  return files;
}

struct Plugin {
  EntryPoint open_torchscript = nullptr;
  EntryPoint open_onnx = nullptr;
  std::string error;  // why it is not available
};

// Loaded once and never unloaded (libtorch does not support unloading).
const Plugin& LoadPlugin() {
  static Plugin plugin;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    for (const auto& file : PluginCandidates()) {
      std::error_code ec;
      if (!std::filesystem::exists(file, ec)) {
        tried += "\n  " + file.string() + " (absent)";
        continue;
      }
      void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        tried += "\n  " + file.string() + ": " + dlerror();
        continue;
      }
      plugin.open_torchscript = reinterpret_cast<EntryPoint>(dlsym(handle, kTorchScriptEntry));
      plugin.open_onnx = reinterpret_cast<EntryPoint>(dlsym(handle, kOnnxEntry));
      if (plugin.open_torchscript != nullptr && plugin.open_onnx != nullptr) return;
      plugin.open_torchscript = plugin.open_onnx = nullptr;
      tried += "\n  " + file.string() + ": entry points missing (a plugin from another build?)";
    }
    plugin.error =
        "libtorch models need the plugin " + std::string(kPluginName) +
        ", which was not found (it is built when libtorch-dev is installed: "
        "scripts/install-deps.sh, then re-run cmake). Looked for:" + tried;
  });
  return plugin;
}

// Calls one entry point of the plugin.
Result<std::unique_ptr<Embedder>> Open(EntryPoint Plugin::*entry, const ModelCard& card,
                                       const std::filesystem::path& model_file) {
  const Plugin& plugin = LoadPlugin();
  if (plugin.*entry == nullptr) return Status::Unsupported(plugin.error);
  Result<std::unique_ptr<Embedder>> out = Status::Internal("the torch plugin returned nothing");
  (plugin.*entry)(card, model_file.c_str(), &out);
  return out;
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenTorchScript(const ModelCard& card,
                                                  const std::filesystem::path& model_file) {
  return Open(&Plugin::open_torchscript, card, model_file);
}

Result<std::unique_ptr<Embedder>> OpenOnnxOnTorch(const ModelCard& card,
                                                  const std::filesystem::path& model_file) {
  return Open(&Plugin::open_onnx, card, model_file);
}

}  // namespace pixseek
