#include "index/flat_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "core/files.h"

namespace pixseek {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the flat log stores raw little-endian i64 and f32");

constexpr char kFileMagic[8] = {'P', 'X', 'F', 'L', 'A', 'T', '0', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 20;  // magic, version, dimension, header crc
// Bytes "PXR1" read as a little-endian u32.
constexpr uint32_t kRecordMagic = 0x31525850u;
constexpr uint8_t kOpAdd = 1;
constexpr uint8_t kOpRemove = 2;
constexpr size_t kRecordPrefix = 9;   // record magic, op, count
constexpr size_t kRecordTrailer = 4;  // crc
constexpr int kMaxDimension = 1 << 16;
// Vectors per add record when the log is rewritten (keeps records moderate).
constexpr size_t kRewriteChunk = 1 << 16;

void PutU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// zlib's crc32 takes 32-bit lengths; feed it in chunks.
uint32_t Crc32(uint32_t crc, const void* data, size_t n) {
  auto p = static_cast<const Bytef*>(data);
  while (n > 0) {
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, size_t{1} << 30));
    crc = static_cast<uint32_t>(::crc32(crc, p, chunk));
    p += chunk;
    n -= chunk;
  }
  return crc;
}

std::string Where(const std::filesystem::path& path, uint64_t offset) {
  return path.string() + " at offset " + std::to_string(offset);
}

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  int err = errno;
  std::string m = what + " " + path.string() + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return Status::ResourceExhausted(std::move(m));
  return Status::Internal(std::move(m));
}

Status WriteAt(int fd, uint64_t offset, const void* data, size_t n,
               const std::filesystem::path& path) {
  return WriteFullAt(fd, data, n, offset, path);
}

uint64_t RecordSize(uint8_t op, uint64_t count, int dimension) {
  uint64_t per = 8 + (op == kOpAdd ? 4 * static_cast<uint64_t>(dimension) : 0);
  return kRecordPrefix + count * per + kRecordTrailer;
}

// Writes one record at `offset`; returns its size.
Result<uint64_t> WriteRecord(int fd, uint64_t offset, uint8_t op, int dimension, size_t n,
                             const int64_t* ids, const float* vectors,
                             const std::filesystem::path& path) {
  uint8_t prefix[kRecordPrefix];
  PutU32(prefix, kRecordMagic);
  prefix[4] = op;
  PutU32(prefix + 5, static_cast<uint32_t>(n));
  const size_t id_bytes = n * sizeof(int64_t);
  const size_t vector_bytes = op == kOpAdd ? n * static_cast<size_t>(dimension) * sizeof(float) : 0;
  uint32_t crc = Crc32(0, prefix + 4, kRecordPrefix - 4);
  crc = Crc32(crc, ids, id_bytes);
  if (vector_bytes > 0) crc = Crc32(crc, vectors, vector_bytes);
  uint8_t trailer[kRecordTrailer];
  PutU32(trailer, crc);

  uint64_t at = offset;
  PIXSEEK_RETURN_IF_ERROR(WriteAt(fd, at, prefix, sizeof(prefix), path));
  at += sizeof(prefix);
  PIXSEEK_RETURN_IF_ERROR(WriteAt(fd, at, ids, id_bytes, path));
  at += id_bytes;
  if (vector_bytes > 0) {
    PIXSEEK_RETURN_IF_ERROR(WriteAt(fd, at, vectors, vector_bytes, path));
    at += vector_bytes;
  }
  PIXSEEK_RETURN_IF_ERROR(WriteAt(fd, at, trailer, sizeof(trailer), path));
  at += sizeof(trailer);
  return at - offset;
}

std::array<uint8_t, kHeaderSize> EncodeHeader(int dimension) {
  std::array<uint8_t, kHeaderSize> h{};
  std::memcpy(h.data(), kFileMagic, 8);
  PutU32(h.data() + 8, kVersion);
  PutU32(h.data() + 12, static_cast<uint32_t>(dimension));
  PutU32(h.data() + 16, Crc32(0, h.data(), 16));
  return h;
}

// Closes a descriptor unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// A read-only mapping of the whole file, unmapped on destruction.
class Mapping {
 public:
  Mapping(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const uint8_t* data() const { return data_; }

 private:
  const uint8_t* data_;
  size_t size_;
};

// Whether a complete record with a valid checksum starts anywhere in
// [from, size). Used to tell a torn tail (nothing valid can follow the last
// write) from a record whose length field was damaged in the middle.
bool ValidRecordFollows(const uint8_t* file, uint64_t from, uint64_t size, int dimension) {
  uint8_t magic[4];
  PutU32(magic, kRecordMagic);
  uint64_t at = from;
  while (at + kRecordPrefix + kRecordTrailer <= size) {
    auto* hit = static_cast<const uint8_t*>(::memmem(file + at, size - at, magic, 4));
    if (hit == nullptr) return false;
    uint64_t off = static_cast<uint64_t>(hit - file);
    if (off + kRecordPrefix + kRecordTrailer > size) return false;
    uint8_t op = file[off + 4];
    if (op == kOpAdd || op == kOpRemove) {
      uint64_t rec = RecordSize(op, GetU32(file + off + 5), dimension);
      if (rec <= size - off) {
        uint32_t crc = Crc32(0, file + off + 4, rec - 4 - kRecordTrailer);
        if (crc == GetU32(file + off + rec - kRecordTrailer)) return true;
      }
    }
    at = off + 1;
  }
  return false;
}

}  // namespace

FlatLog::FlatLog(std::filesystem::path path, int dimension, int fd, uint64_t file_size,
                 bool read_only)
    : path_(std::move(path)),
      dimension_(dimension),
      fd_(fd),
      read_only_(read_only),
      file_size_(file_size) {}

FlatLog::~FlatLog() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// Opens the log file, creating it with its header when absent (and
// writable), and locks it for a writer. Returns the descriptor.
Result<int> OpenLogFile(const std::filesystem::path& path, int dimension, bool read_only) {
  int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && read_only) {
    return Status::NotFound("no index file " + path.string());
  }
  if (fd < 0 && errno == ENOENT) {
    // Header written to a temporary file and renamed: the log never exists
    // with a partial header.
    auto header = EncodeHeader(dimension);
    PIXSEEK_RETURN_IF_ERROR(
        WriteFileAtomic(path, std::span<const uint8_t>(header.data(), header.size())));
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  }
  if (fd < 0) return ErrnoStatus("cannot open index file", path);
  FdCloser closer(fd);
  if (!read_only && ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Status::Unavailable("index file " + path.string() +
                                 " is locked: another pixseek process (or another open index "
                                 "in this one) is using it");
    }
    return ErrnoStatus("cannot lock index file", path);
  }
  return closer.release();
}

// The header's magic, checksum, version and dimension.
Status CheckHeader(const std::filesystem::path& path, const uint8_t* file, int dimension) {
  if (std::memcmp(file, kFileMagic, 8) != 0) {
    return Status::DataLoss(Where(path, 0) + ": bad magic, not a pixseek flat index");
  }
  if (Crc32(0, file, 16) != GetU32(file + 16)) {
    return Status::DataLoss(Where(path, 16) + ": header checksum mismatch");
  }
  if (GetU32(file + 8) != kVersion) {
    return Status::DataLoss(Where(path, 8) + ": unsupported flat index version " +
                            std::to_string(GetU32(file + 8)));
  }
  const uint32_t file_dimension = GetU32(file + 12);
  if (file_dimension != static_cast<uint32_t>(dimension)) {
    return Status::InvalidArgument("index file has dimension " + std::to_string(file_dimension) +
                                   ", database expects " + std::to_string(dimension));
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<FlatLog>> FlatLog::Open(const std::filesystem::path& path, int dimension,
                                               const FlatLogVisitor& visitor, bool read_only) {
  if (dimension <= 0 || dimension > kMaxDimension) {
    return Status::InvalidArgument("index dimension must be in 1.." +
                                   std::to_string(kMaxDimension) + ", got " +
                                   std::to_string(dimension));
  }
  PIXSEEK_ASSIGN_OR_RETURN(int fd, OpenLogFile(path, dimension, read_only));
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat index file", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderSize) {
    return Status::DataLoss(path.string() + ": file too short for a flat index header (" +
                            std::to_string(size) + " bytes)");
  }
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (mapped == MAP_FAILED) return ErrnoStatus("cannot map index file", path);
  auto mapping = std::make_unique<Mapping>(static_cast<const uint8_t*>(mapped), size);
  ::madvise(mapped, size, MADV_SEQUENTIAL);
  PIXSEEK_RETURN_IF_ERROR(CheckHeader(path, mapping->data(), dimension));

  auto log = std::unique_ptr<FlatLog>(
      new FlatLog(path, dimension, closer.release(), size, read_only));
  PIXSEEK_ASSIGN_OR_RETURN(uint64_t end, log->Replay(mapping->data(), size, visitor));
  mapping.reset();
  if (end < size) PIXSEEK_RETURN_IF_ERROR(log->DropTornTail(end, size));
  return log;
}

Result<uint64_t> FlatLog::Replay(const uint8_t* file, uint64_t size,
                                 const FlatLogVisitor& visitor) {
  const std::filesystem::path& path = path_;
  uint64_t off = kHeaderSize;
  while (off < size) {
    const uint64_t rest = size - off;
    if (rest < kRecordPrefix) return off;
    const uint8_t* rec = file + off;
    if (GetU32(rec) != kRecordMagic) {
      return Status::DataLoss(Where(path, off) + ": bad record magic");
    }
    const uint8_t op = rec[4];
    if (op != kOpAdd && op != kOpRemove) {
      return Status::DataLoss(Where(path, off) + ": unknown record type " + std::to_string(op));
    }
    const uint32_t count = GetU32(rec + 5);
    const uint64_t rec_size = RecordSize(op, count, dimension_);
    if (rec_size > rest) {
      if (ValidRecordFollows(file, off + 1, size, dimension_)) {
        return Status::DataLoss(Where(path, off) + ": record length runs past the end of the " +
                                "file but valid records follow (damaged length field)");
      }
      return off;
    }
    const uint32_t crc = Crc32(0, rec + 4, rec_size - 4 - kRecordTrailer);
    if (crc != GetU32(rec + rec_size - kRecordTrailer)) {
      // The last record: a write cut short by a crash.
      if (off + rec_size == size) return off;
      return Status::DataLoss(Where(path, off) + ": record checksum mismatch");
    }
    const uint8_t* ids = rec + kRecordPrefix;
    Status s;
    if (op == kOpAdd) {
      s = visitor.on_add(count, ids, ids + 8 * static_cast<uint64_t>(count));
      logged_adds_ += count;
    } else {
      s = visitor.on_remove(count, ids);
      logged_removes_ += count;
    }
    if (!s.ok()) return s.WithContext(Where(path, off));
    off += rec_size;
  }
  return off;
}

Status FlatLog::DropTornTail(uint64_t end, uint64_t size) {
  if (read_only_) {
    file_size_ = end;  // a writer may be appending this record right now
    return Status::Ok();
  }
  std::fprintf(stderr,
               "pixseek: %s: dropping a torn record at offset %llu (%llu bytes; the write was "
               "interrupted by a crash and never acknowledged)\n",
               path_.c_str(), static_cast<unsigned long long>(end),
               static_cast<unsigned long long>(size - end));
  if (::ftruncate(fd_, static_cast<off_t>(end)) != 0 || ::fdatasync(fd_) != 0) {
    return ErrnoStatus("cannot truncate torn record of", path_);
  }
  file_size_ = end;
  return Status::Ok();
}

Status FlatLog::Append(uint8_t op, size_t n, const int64_t* ids, const float* vectors) {
  if (read_only_) return Status::FailedPrecondition("index " + path_.string() + " is open read-only");
  if (n > UINT32_MAX) {
    return Status::InvalidArgument("at most " + std::to_string(UINT32_MAX) +
                                   " vectors per call");
  }
  Result<uint64_t> written =
      WriteRecord(fd_, file_size_, op, dimension_, n, ids, vectors, path_);
  Status s = written.status();
  if (s.ok() && ::fdatasync(fd_) != 0) s = ErrnoStatus("cannot fdatasync", path_);
  if (!s.ok()) {
    // Leave no partial record behind; if this fails too, the next Open drops
    // the torn tail.
    if (::ftruncate(fd_, static_cast<off_t>(file_size_)) == 0) (void)::fdatasync(fd_);
    return s;
  }
  file_size_ += *written;
  if (op == kOpAdd) {
    logged_adds_ += n;
  } else {
    logged_removes_ += n;
  }
  return Status::Ok();
}

Status FlatLog::AppendAdd(size_t n, const int64_t* ids, const float* vectors) {
  return Append(kOpAdd, n, ids, vectors);
}

Status FlatLog::AppendRemove(std::span<const int64_t> ids) {
  return Append(kOpRemove, ids.size(), ids.data(), nullptr);
}

Status FlatLog::Rewrite(size_t n, const int64_t* ids, const float* vectors) {
  if (read_only_) return Status::FailedPrecondition("index " + path_.string() + " is open read-only");
  std::filesystem::path tmp = path_;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  FdCloser closer(fd);
  auto fail = [&](Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  // Locked before it is renamed into place, so the lock never lapses.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return fail(ErrnoStatus("cannot lock", tmp));
  auto header = EncodeHeader(dimension_);
  Status s = WriteAt(fd, 0, header.data(), header.size(), tmp);
  if (!s.ok()) return fail(s);
  uint64_t size = header.size();
  const size_t dim = static_cast<size_t>(dimension_);
  for (size_t done = 0; done < n; done += kRewriteChunk) {
    size_t m = std::min(kRewriteChunk, n - done);
    Result<uint64_t> w = WriteRecord(fd, size, kOpAdd, dimension_, m, ids + done,
                                     vectors + done * dim, tmp);
    if (!w.ok()) return fail(w.status());
    size += *w;
  }
  if (::fsync(fd) != 0) return fail(ErrnoStatus("cannot fsync", tmp));
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return fail(ErrnoStatus("cannot rename onto", path_));
  // From here on the new file is the log whatever happens.
  ::close(fd_);
  fd_ = closer.release();
  file_size_ = size;
  logged_adds_ = n;
  logged_removes_ = 0;
  return SyncDirectory(path_.parent_path());
}

}  // namespace pixseek
