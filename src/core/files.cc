#include "core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
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

}  // namespace

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
