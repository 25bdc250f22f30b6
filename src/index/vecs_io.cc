#include "index/vecs_io.h"

#include <span>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "core/files.h"

namespace pixseek {
namespace {

static_assert(std::endian::native == std::endian::little,
              "vecs files are read with memcpy on a little-endian host");

constexpr uint64_t kHeaderBytes = 8;
constexpr size_t kMaxInt32 = static_cast<size_t>(std::numeric_limits<int32_t>::max());

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

Status ErrnoStatus(const std::filesystem::path& path, std::string_view what, int err) {
  std::string msg = std::string(what) + " " + path.string() + ": " + std::strerror(err);
  if (err == ENOENT) return Status::NotFound(std::move(msg));
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(std::move(msg));
  return Status::Unavailable(std::move(msg));
}

// Opens path for reading and returns its size in *size.
Result<File> OpenForRead(const std::filesystem::path& path, uint64_t* size) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return ErrnoStatus(path, "cannot open", errno);
  std::error_code ec;
  *size = std::filesystem::file_size(path, ec);
  if (ec) return ErrnoStatus(path, "cannot stat", ec.value());
  return f;
}

Status ReadExact(std::FILE* f, void* dst, size_t bytes, const std::filesystem::path& path) {
  if (bytes == 0) return Status::Ok();
  if (std::fread(dst, 1, bytes, f) != bytes) {
    if (std::ferror(f)) return ErrnoStatus(path, "cannot read", errno);
    return Status::DataLoss(path.string() + ": file ended early (changed while reading?)");
  }
  return Status::Ok();
}

Status ReadHeader(std::FILE* f, const std::filesystem::path& path, uint64_t size, int32_t* a,
                  int32_t* b) {
  if (size < kHeaderBytes) {
    return Status::DataLoss(path.string() + ": " + std::to_string(size) +
                            " bytes, shorter than the 8-byte header");
  }
  int32_t header[2];
  PIXSEEK_RETURN_IF_ERROR(ReadExact(f, header, sizeof(header), path));
  *a = header[0];
  *b = header[1];
  return Status::Ok();
}

// The bytes of `count` values of T, for WriteFileAtomic.
template <typename T>
std::span<const uint8_t> Bytes(const T* data, size_t count) {
  return {reinterpret_cast<const uint8_t*>(data), count * sizeof(T)};
}

}  // namespace

Result<FloatMatrix> ReadFbin(const std::filesystem::path& path, size_t max_rows) {
  uint64_t size = 0;
  PIXSEEK_ASSIGN_OR_RETURN(File f, OpenForRead(path, &size));
  int32_t n = 0;
  int32_t d = 0;
  PIXSEEK_RETURN_IF_ERROR(ReadHeader(f.get(), path, size, &n, &d));
  if (n < 0 || d <= 0) {
    return Status::DataLoss(path.string() + ": bad fbin header (n " + std::to_string(n) + ", d " +
                            std::to_string(d) + ")");
  }
  const uint64_t row_bytes = static_cast<uint64_t>(d) * sizeof(float);
  const uint64_t full = kHeaderBytes + static_cast<uint64_t>(n) * row_bytes;
  const uint64_t rows = std::min<uint64_t>(static_cast<uint64_t>(n), max_rows);
  const uint64_t needed = kHeaderBytes + rows * row_bytes;
  if (rows == static_cast<uint64_t>(n) ? size != full : (size < needed || size > full)) {
    return Status::DataLoss(
        path.string() + ": " + std::to_string(size) + " bytes, but the header (n " +
        std::to_string(n) + ", d " + std::to_string(d) + ") says " + std::to_string(full) +
        (rows < static_cast<uint64_t>(n)
             ? " (at least " + std::to_string(needed) + " for " + std::to_string(rows) + " rows)"
             : std::string()));
  }
  FloatMatrix m;
  m.rows = static_cast<size_t>(rows);
  m.cols = static_cast<size_t>(d);
  m.data.resize(m.rows * m.cols);
  PIXSEEK_RETURN_IF_ERROR(ReadExact(f.get(), m.data.data(), m.data.size() * sizeof(float), path));
  return m;
}

Status WriteFbin(const std::filesystem::path& path, const FloatMatrix& m) {
  if (m.cols == 0 || m.cols > kMaxInt32 || m.rows > kMaxInt32) {
    return Status::InvalidArgument("fbin: cannot write a " + std::to_string(m.rows) + " x " +
                                   std::to_string(m.cols) +
                                   " matrix (need 0 < cols, both <= 2^31-1)");
  }
  if (m.data.size() != m.rows * m.cols) {
    return Status::InvalidArgument("fbin: matrix holds " + std::to_string(m.data.size()) +
                                   " values, expected " + std::to_string(m.rows * m.cols));
  }
  const int32_t header[2] = {static_cast<int32_t>(m.rows), static_cast<int32_t>(m.cols)};
  return WriteFileAtomic(path, {Bytes(header, 2), Bytes(m.data.data(), m.data.size())});
}

Result<GroundTruth> ReadIbin(const std::filesystem::path& path) {
  uint64_t size = 0;
  PIXSEEK_ASSIGN_OR_RETURN(File f, OpenForRead(path, &size));
  int32_t n = 0;
  int32_t k = 0;
  PIXSEEK_RETURN_IF_ERROR(ReadHeader(f.get(), path, size, &n, &k));
  if (n < 0 || k <= 0) {
    return Status::DataLoss(path.string() + ": bad ibin header (n " + std::to_string(n) + ", k " +
                            std::to_string(k) + ")");
  }
  const uint64_t count = static_cast<uint64_t>(n) * static_cast<uint64_t>(k);
  const uint64_t expected = kHeaderBytes + count * (sizeof(int32_t) + sizeof(float));
  if (size != expected) {
    return Status::DataLoss(path.string() + ": " + std::to_string(size) +
                            " bytes, but the header (n " + std::to_string(n) + ", k " +
                            std::to_string(k) + ") says " + std::to_string(expected));
  }
  GroundTruth gt;
  gt.rows = static_cast<size_t>(n);
  gt.k = static_cast<size_t>(k);
  gt.ids.resize(count);
  gt.distances.resize(count);
  PIXSEEK_RETURN_IF_ERROR(ReadExact(f.get(), gt.ids.data(), count * sizeof(int32_t), path));
  PIXSEEK_RETURN_IF_ERROR(ReadExact(f.get(), gt.distances.data(), count * sizeof(float), path));
  return gt;
}

Status WriteIbin(const std::filesystem::path& path, const GroundTruth& gt) {
  if (gt.k == 0 || gt.k > kMaxInt32 || gt.rows > kMaxInt32) {
    return Status::InvalidArgument("ibin: cannot write " + std::to_string(gt.rows) + " rows of k " +
                                   std::to_string(gt.k) + " (need 0 < k, both <= 2^31-1)");
  }
  const size_t count = gt.rows * gt.k;
  if (gt.ids.size() != count || gt.distances.size() != count) {
    return Status::InvalidArgument("ibin: " + std::to_string(gt.ids.size()) + " ids and " +
                                   std::to_string(gt.distances.size()) + " distances, expected " +
                                   std::to_string(count) + " of each");
  }
  const int32_t header[2] = {static_cast<int32_t>(gt.rows), static_cast<int32_t>(gt.k)};
  return WriteFileAtomic(
      path, {Bytes(header, 2), Bytes(gt.ids.data(), count), Bytes(gt.distances.data(), count)});
}

}  // namespace pixseek
