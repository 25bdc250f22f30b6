#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace pixseek {
namespace {

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  return Status::Internal(what + " " + path.string() + ": " + std::strerror(errno));
}

// Flags of the final open: read only, and never wait on a FIFO or take a
// terminal.
constexpr int kOpenFileFlags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;

// Why opening failed with `err`, as OpenRegularNoFollow reports it.
Status OpenError(int err) {
  switch (err) {
    case ENOENT:
      return Status::NotFound("no such file");
    case ENOTDIR:
      return Status::NotFound("a folder on its path is missing or not a folder");
    case ELOOP:
    case EXDEV:  // RESOLVE_BENEATH: a way out of the folder
      return Status::NotFound("it is a symbolic link, or lies under one; links are not followed");
    case EACCES:
    case EPERM:
      return Status::PermissionDenied("permission denied");
    default:
      return Status::Internal(std::string("cannot open: ") + std::strerror(err));
  }
}

// -1 with errno ENOSYS where the kernel (or a sandbox) lacks openat2.
int OpenAt2(int dirfd, const char* path, bool beneath) {
#if defined(SYS_openat2) && defined(RESOLVE_NO_SYMLINKS)
  static std::atomic<bool> missing{false};
  if (!missing.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = static_cast<uint64_t>(kOpenFileFlags);
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | (beneath ? RESOLVE_BENEATH : 0);
    const long fd = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    // Some seccomp filters answer EPERM for a system call they do not know;
    // the walk below then gives the real answer.
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return static_cast<int>(fd);
    missing.store(true, std::memory_order_relaxed);
  }
#else
  (void)dirfd;
  (void)path;
  (void)beneath;
#endif
  errno = ENOSYS;
  return -1;
}

// The walk without openat2: each folder opened with O_NOFOLLOW from the one
// before, so no link is followed even if one is swapped in meanwhile.
Result<UniqueFd> OpenByWalk(int dirfd, const std::filesystem::path& file) {
  std::vector<std::string> parts;
  for (const auto& part : file.relative_path()) {
    if (!part.empty() && part != ".") parts.push_back(part.string());
  }
  if (parts.empty()) return Status::InvalidArgument("empty file name");
  UniqueFd held;
  int at = dirfd;
  if (file.is_absolute()) {
    held = UniqueFd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (held.get() < 0) return OpenError(errno);
    at = held.get();
  }
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    // O_DIRECTORY | O_NOFOLLOW on a link fails with ENOTDIR: tell a link
    // apart from a missing folder for the message.
    UniqueFd next(::openat(at, parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) {
      const int err = errno;
      struct stat st {};
      if (::fstatat(at, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
        return OpenError(ELOOP);
      }
      return OpenError(err);
    }
    held = std::move(next);
    at = held.get();
  }
  UniqueFd fd(::openat(at, parts.back().c_str(), kOpenFileFlags | O_NOFOLLOW));
  if (fd.get() < 0) return OpenError(errno);
  return fd;
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

Result<UniqueFd> OpenNoFollow(const std::filesystem::path& dir, const std::filesystem::path& file,
                              bool try_openat2) {
  if (file.empty()) return Status::InvalidArgument("empty file name");
  if (dir.empty() != file.is_absolute()) {
    return Status::InvalidArgument(dir.empty() ? "a file name without its folder"
                                               : "an absolute name under a folder");
  }
  for (const auto& part : file) {
    if (part == "..") return Status::InvalidArgument("a file name with '..' in it");
  }
  UniqueFd dir_fd;
  int at = AT_FDCWD;
  if (!dir.empty()) {
    dir_fd = UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd.get() < 0) return OpenError(errno);
    at = dir_fd.get();
  }
  UniqueFd fd;
  if (try_openat2) {
    fd = UniqueFd(OpenAt2(at, file.c_str(), /*beneath=*/!dir.empty()));
    if (fd.get() < 0 && errno != ENOSYS) return OpenError(errno);
  }
  if (fd.get() < 0) {
    PIXSEEK_ASSIGN_OR_RETURN(fd, OpenByWalk(at, file));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return OpenError(errno);
  if (!S_ISREG(st.st_mode)) return Status::NotFound("not a regular file");
  return fd;
}

}  // namespace

Result<UniqueFd> OpenRegularNoFollow(const std::filesystem::path& dir,
                                     const std::filesystem::path& file) {
  return OpenNoFollow(dir, file, /*try_openat2=*/true);
}

Result<UniqueFd> OpenRegularNoFollowByWalk(const std::filesystem::path& dir,
                                           const std::filesystem::path& file) {
  return OpenNoFollow(dir, file, /*try_openat2=*/false);
}

Result<uint64_t> OpenFileSize(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Status::Internal(std::string("cannot stat an open file: ") + std::strerror(errno));
  }
  return static_cast<uint64_t>(st.st_size);
}

Result<std::vector<uint8_t>> ReadOpenFile(int fd, size_t max_bytes) {
  PIXSEEK_ASSIGN_OR_RETURN(uint64_t size, OpenFileSize(fd));
  auto too_big = [max_bytes](uint64_t n) {
    return Status::ResourceExhausted("the file is " + std::to_string(n) +
                                     " bytes or more, over the limit of " +
                                     std::to_string(max_bytes) + " bytes");
  };
  if (size > max_bytes) return too_big(size);
  // Read to the end (it may have changed since fstat), one byte past the
  // limit at most.
  std::vector<uint8_t> bytes(static_cast<size_t>(size) + 1);
  size_t used = 0;
  while (true) {
    if (used == bytes.size()) {
      if (bytes.size() > max_bytes) return too_big(bytes.size());
      bytes.resize(std::min(max_bytes + 1, bytes.size() * 2));
    }
    const ssize_t r =
        ::pread(fd, bytes.data() + used, bytes.size() - used, static_cast<off_t>(used));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::Internal(std::string("cannot read: ") + std::strerror(errno));
    if (r == 0) break;
    used += static_cast<size_t>(r);
  }
  bytes.resize(used);
  return bytes;
}

Result<std::string> ReadTextFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::Internal("cannot read " + path.string());
  return ss.str();
}

Status EnsureDirectory(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Internal("cannot create directory " + dir.string() + ": " + ec.message());
  return Status::Ok();
}

Status ReadFullAt(int fd, void* buf, size_t bytes, uint64_t offset,
                  const std::filesystem::path& path) {
  auto* p = static_cast<uint8_t*>(buf);
  while (bytes > 0) {
    const ssize_t r = ::pread(fd, p, std::min<size_t>(bytes, size_t{1} << 30), static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::Internal("cannot read " + path.string() + ": " + std::strerror(errno));
    if (r == 0) {
      return Status::DataLoss(path.string() + " ends before offset " +
                              std::to_string(offset + bytes) + " (truncated?)");
    }
    p += r;
    bytes -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

Status WriteFullAt(int fd, const void* buf, size_t bytes, uint64_t offset,
                   const std::filesystem::path& path) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (bytes > 0) {
    const ssize_t w = ::pwrite(fd, p, std::min<size_t>(bytes, size_t{1} << 30), static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      const int err = errno;
      std::string m = "cannot write " + path.string() + ": " + std::strerror(err);
      if (err == ENOSPC || err == EDQUOT) return Status::ResourceExhausted(std::move(m));
      return Status::Internal(std::move(m));
    }
    p += w;
    bytes -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

Status SyncDirectory(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("cannot fsync directory", dir);
  return Status::Ok();
}

Status WriteFileAtomic(const std::filesystem::path& path,
                       std::initializer_list<std::span<const uint8_t>> parts) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  auto fail = [&](const char* what) {
    Status s = ErrnoStatus(what, tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  for (std::span<const uint8_t> bytes : parts) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return fail("cannot write");
      }
      done += static_cast<size_t>(w);
    }
  }
  if (::fsync(fd) != 0) return fail("cannot fsync");
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = ErrnoStatus("cannot rename onto", path);
    ::unlink(tmp.c_str());
    return s;
  }
  return SyncDirectory(path.parent_path());
}

Status WriteFileAtomic(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
  return WriteFileAtomic(path, {bytes});
}

Status WriteFileAtomic(const std::filesystem::path& path, const std::string& text) {
  return WriteFileAtomic(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace pixseek
