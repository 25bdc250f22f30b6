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

// An open file descriptor, closed when destroyed. Move-only; -1 holds none.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  // Hands the descriptor over without closing it.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Opens a regular file for reading without following any symbolic link, so
// that a file swapped for a link (or a folder above it swapped for one)
// after it was checked can never lead elsewhere.
//   `dir` empty:  `file` is absolute; none of its components may be a link.
//   `dir` given:  `file` is relative to the folder `dir`, which is opened as
//                 named (its own links followed: the caller trusts it);
//                 no component of `file` may be a link or leave `dir`.
// Uses openat2(RESOLVE_NO_SYMLINKS) where the kernel has it; otherwise opens
// one component at a time with O_NOFOLLOW, which refuses the same links and
// is as immune to a swap while it runs. Never blocks on a FIFO.
// Errors, whose messages say why but never name the file (the caller knows
// which file it asked for and whether its path may be shown):
// NotFound when the file or a folder above it is missing, is a symbolic
// link, or the file is not a regular file; PermissionDenied when it may not
// be read; InvalidArgument for an empty `file`, a ".." component, or a
// `file` that is not absolute without `dir` (or is absolute with it);
// Internal for other I/O errors.
Result<UniqueFd> OpenRegularNoFollow(const std::filesystem::path& dir,
                                     const std::filesystem::path& file);
// The same without trying openat2: what it falls back to on kernels that
// lack it (exposed so that tests check both ways on any kernel).
Result<UniqueFd> OpenRegularNoFollowByWalk(const std::filesystem::path& dir,
                                           const std::filesystem::path& file);

// The size of an open file (fstat). Internal on an I/O error.
Result<uint64_t> OpenFileSize(int fd);

// Reads an open file from offset 0 to its end. ResourceExhausted when it
// holds more than max_bytes (checked before reading and while reading, as
// the file may grow); Internal on an I/O error. Messages never name a file.
Result<std::vector<uint8_t>> ReadOpenFile(int fd, size_t max_bytes);

}  // namespace pixseek

#endif  // PIXSEEK_CORE_FILES_H_
