// Small filesystem helpers with error statuses instead of exceptions.
#ifndef PIXSEEK_CORE_FILES_H_
#define PIXSEEK_CORE_FILES_H_

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

// Reads a whole file. NotFound when missing.
Result<std::string> ReadTextFile(const std::filesystem::path& path);

// Writes `bytes` to `path` so that readers see either the old or the new
// content, never a mix: write a temporary file beside it, fsync, rename, fsync
// the directory.
Status WriteFileAtomic(const std::filesystem::path& path, std::span<const uint8_t> bytes);
// The same, writing `parts` one after another (no copy into one buffer).
Status WriteFileAtomic(const std::filesystem::path& path,
                       std::initializer_list<std::span<const uint8_t>> parts);
Status WriteFileAtomic(const std::filesystem::path& path, const std::string& text);

// create_directories with a Status.
Status EnsureDirectory(const std::filesystem::path& dir);

// Reads exactly `bytes` at `offset` (pread, retried on EINTR and short
// reads). DataLoss when the file ends first, Internal on an I/O error; `path`
// names the file in the message.
Status ReadFullAt(int fd, void* buf, size_t bytes, uint64_t offset,
                  const std::filesystem::path& path);
// Writes exactly `bytes` at `offset` (pwrite, retried likewise).
// ResourceExhausted when the disk is full, Internal on other errors.
Status WriteFullAt(int fd, const void* buf, size_t bytes, uint64_t offset,
                   const std::filesystem::path& path);

// fsync on a directory so a rename or create inside it survives a crash.
Status SyncDirectory(const std::filesystem::path& dir);

}  // namespace pixseek

#endif  // PIXSEEK_CORE_FILES_H_
