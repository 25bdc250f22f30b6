#include "core/plugin.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace pixseek {

std::vector<std::filesystem::path> PluginCandidates(std::string_view file_name) {
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
  for (const auto& d : dirs) files.push_back(d / file_name);
  return files;
}

namespace {

// Tries each candidate in turn; `tried` collects why each one failed.
Result<std::vector<void*>> Load(std::string_view file_name,
                                std::span<const char* const> entry_points,
                                std::string_view why_needed) {
  std::string tried;
  for (const auto& file : PluginCandidates(file_name)) {
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) {
      tried += "\n  " + file.string() + " (absent)";
      continue;
    }
    // RTLD_LOCAL: the plugin's copies of pixseek code (Status, ...) must not
    // interpose the binary's.
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      tried += "\n  " + file.string() + ": " + dlerror();
      continue;
    }
    std::vector<void*> addresses;
    for (const char* name : entry_points) {
      void* address = dlsym(handle, name);
      if (address == nullptr) break;
      addresses.push_back(address);
    }
    if (addresses.size() == entry_points.size()) return addresses;
    // Left loaded: dlclose of a half-initialised libtorch is not safe.
    tried += "\n  " + file.string() + ": entry points missing (a plugin from another build?)";
  }
  return Status::Unsupported(std::string(why_needed) + " Looked for:" + tried);
}

}  // namespace

Result<std::vector<void*>> LoadPlugin(std::string_view file_name,
                                      std::span<const char* const> entry_points,
                                      std::string_view why_needed) {
  static std::mutex mutex;
  // The outcome per file name; entries are never removed.
  static std::map<std::string, Result<std::vector<void*>>, std::less<>> loaded;
  std::lock_guard lock(mutex);
  auto it = loaded.find(file_name);
  if (it == loaded.end()) {
    it = loaded.emplace(std::string(file_name), Load(file_name, entry_points, why_needed)).first;
  }
  return it->second;
}

}  // namespace pixseek
