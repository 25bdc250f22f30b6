// LoadPlugin: finds and dlopens one of pixseek's plugins (MODULE libraries
// such as pixseek_torch.so and pixseek_train.so) and looks up its entry
// points.
//
// Plugins keep heavy libraries (libtorch loads ~280 shared libraries) out of
// the binary, so that only the commands that need them pay for them.
#ifndef PIXSEEK_CORE_PLUGIN_H_
#define PIXSEEK_CORE_PLUGIN_H_

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

// Where the plugin `file_name` may be, in order: $PIXSEEK_PLUGIN_DIR, beside
// the executable, ../lib/pixseek from it (an installed layout), and the
// build tree it was built in.
std::vector<std::filesystem::path> PluginCandidates(std::string_view file_name);

// The addresses of `entry_points` (in that order) in the first candidate of
// PluginCandidates(file_name) that loads and has them all. A plugin is
// loaded once per file name and never unloaded (libtorch does not support
// unloading); the outcome, success or failure, is remembered, so every call
// for one file name must ask for the same entry points. Thread-safe.
// Unsupported when no candidate works: the message lists each place looked
// at and why it failed, after `why_needed` (e.g. "libtorch models need the
// plugin pixseek_torch.so, which was not found (...)").
Result<std::vector<void*>> LoadPlugin(std::string_view file_name,
                                      std::span<const char* const> entry_points,
                                      std::string_view why_needed);

}  // namespace pixseek

#endif  // PIXSEEK_CORE_PLUGIN_H_
