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
#include <ctime>
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

// The offset of the first complete record with a valid checksum in
// [from, size), or `size` when none starts there. Tells a torn tail (nothing
// valid can follow the last write) from a record whose length field was
// damaged in the middle, and finds the intact records after a damaged one.
uint64_t NextValidRecord(const uint8_t* file, uint64_t from, uint64_t size, int dimension) {
  uint8_t magic[4];
  PutU32(magic, kRecordMagic);
  uint64_t at = from;
  while (at + kRecordPrefix + kRecordTrailer <= size) {
    auto* hit = static_cast<const uint8_t*>(::memmem(file + at, size - at, magic, 4));
    if (hit == nullptr) return size;
    uint64_t off = static_cast<uint64_t>(hit - file);
    if (off + kRecordPrefix + kRecordTrailer > size) return size;
    uint8_t op = file[off + 4];
    if (op == kOpAdd || op == kOpRemove) {
      uint64_t rec = RecordSize(op, GetU32(file + off + 5), dimension);
      if (rec <= size - off) {
        uint32_t crc = Crc32(0, file + off + 4, rec - 4 - kRecordTrailer);
        if (crc == GetU32(file + off + rec - kRecordTrailer)) return off;
      }
    }
    at = off + 1;
  }
  return size;
}

// How a walk over a log's records ended.
struct RecordWalk {
  uint64_t end = 0;  // where the intact records replayed stop
  // Not OK: the record at `end` is damaged (record_damaged) or the visitor
  // refused it. OK with end < size: a torn last record starts at `end`.
  Status status;
  bool record_damaged = false;
  uint64_t records = 0;
  uint64_t adds = 0;
  uint64_t removes = 0;
};

// Hands the records from `from` on to `visitor` (a missing member skips
// that kind of record) until the end of the file, a torn last record or the
// first damaged one. Messages name `path` and the record's offset.
RecordWalk WalkRecords(const std::filesystem::path& path, const uint8_t* file, uint64_t size,
                       uint64_t from, int dimension, const FlatLogVisitor& visitor) {
  RecordWalk w;
  uint64_t off = from;
  auto damaged = [&](const std::string& why) {
    w.end = off;
    w.status = Status::DataLoss(Where(path, off) + ": " + why);
    w.record_damaged = true;
    return w;
  };
  while (off < size) {
    const uint64_t rest = size - off;
    w.end = off;
    if (rest < kRecordPrefix) return w;
    const uint8_t* rec = file + off;
    if (GetU32(rec) != kRecordMagic) return damaged("bad record magic");
    const uint8_t op = rec[4];
    if (op != kOpAdd && op != kOpRemove) {
      return damaged("unknown record type " + std::to_string(op));
    }
    const uint32_t count = GetU32(rec + 5);
    const uint64_t rec_size = RecordSize(op, count, dimension);
    if (rec_size > rest) {
      if (NextValidRecord(file, off + 1, size, dimension) < size) {
        return damaged(
            "record length runs past the end of the file but valid records follow (damaged "
            "length field)");
      }
      return w;
    }
    const uint32_t crc = Crc32(0, rec + 4, rec_size - 4 - kRecordTrailer);
    if (crc != GetU32(rec + rec_size - kRecordTrailer)) {
      // The last record: a write cut short by a crash.
      if (off + rec_size == size) return w;
      return damaged("record checksum mismatch");
    }
    const uint8_t* ids = rec + kRecordPrefix;
    Status s;
    if (op == kOpAdd) {
      if (visitor.on_add) s = visitor.on_add(count, ids, ids + 8 * static_cast<uint64_t>(count));
      w.adds += count;
    } else {
      if (visitor.on_remove) s = visitor.on_remove(count, ids);
      w.removes += count;
    }
    if (!s.ok()) {
      w.status = s.WithContext(Where(path, off));
      return w;
    }
    ++w.records;
    off += rec_size;
  }
  w.end = off;
  return w;
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

namespace {

// A read-only mapping of `size` bytes of fd (none for an empty file).
Result<std::unique_ptr<Mapping>> MapFile(int fd, uint64_t size, const std::filesystem::path& path) {
  if (size == 0) return std::make_unique<Mapping>(nullptr, 0);
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (mapped == MAP_FAILED) return ErrnoStatus("cannot map index file", path);
  ::madvise(mapped, size, MADV_SEQUENTIAL);
  return std::make_unique<Mapping>(static_cast<const uint8_t*>(mapped), size);
}

Status HeaderOf(const std::filesystem::path& path, const uint8_t* file, uint64_t size,
                int dimension) {
  if (size < kHeaderSize) {
    return Status::DataLoss(path.string() + ": file too short for a flat index header (" +
                            std::to_string(size) + " bytes)");
  }
  return CheckHeader(path, file, dimension);
}

}  // namespace

Result<std::unique_ptr<FlatLog>> FlatLog::Open(const std::filesystem::path& path, int dimension,
                                               const FlatLogVisitor& visitor, bool read_only,
                                               FlatLogSalvage* salvage) {
  if (dimension <= 0 || dimension > kMaxDimension) {
    return Status::InvalidArgument("index dimension must be in 1.." +
                                   std::to_string(kMaxDimension) + ", got " +
                                   std::to_string(dimension));
  }
  if (salvage != nullptr && read_only) {
    return Status::InvalidArgument("a log opened read-only cannot be salvaged");
  }
  PIXSEEK_ASSIGN_OR_RETURN(int fd, OpenLogFile(path, dimension, read_only));
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat index file", path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<Mapping> mapping, MapFile(fd, size, path));
  auto log = std::unique_ptr<FlatLog>(
      new FlatLog(path, dimension, closer.release(), size, read_only));
  if (Status header = HeaderOf(path, mapping->data(), size, dimension); !header.ok()) {
    if (salvage == nullptr || header.code() != StatusCode::kDataLoss) return header;
    PIXSEEK_RETURN_IF_ERROR(log->KeepDamagedCopy(mapping->data(), size, salvage));
    salvage->damage = header.message();
    // The header holds nothing but the format and the dimension: write it
    // again and read the records as they are.
    auto fresh = EncodeHeader(dimension);
    if (size < kHeaderSize && ::ftruncate(log->fd_, 0) != 0) {
      return ErrnoStatus("cannot truncate", path);
    }
    PIXSEEK_RETURN_IF_ERROR(WriteAt(log->fd_, 0, fresh.data(), fresh.size(), path));
    if (::fdatasync(log->fd_) != 0) return ErrnoStatus("cannot fdatasync", path);
    size = std::max<uint64_t>(size, kHeaderSize);
    log->file_size_ = size;
    mapping.reset();
    PIXSEEK_ASSIGN_OR_RETURN(mapping, MapFile(log->fd_, size, path));
  }
  uint64_t damaged_at = UINT64_MAX;
  Result<uint64_t> end = log->Replay(mapping->data(), size, visitor, &damaged_at);
  if (!end.ok()) {
    if (salvage == nullptr || damaged_at == UINT64_MAX) return end.status();
    salvage->damage += (salvage->damage.empty() ? "" : "; ") + end.status().message();
    PIXSEEK_RETURN_IF_ERROR(log->CutDamaged(mapping->data(), size, damaged_at, salvage));
    return log;
  }
  mapping.reset();
  if (*end < size) PIXSEEK_RETURN_IF_ERROR(log->DropTornTail(*end, size));
  return log;
}

Result<FlatLogInspection> FlatLog::Inspect(const std::filesystem::path& path, int dimension,
                                           const FlatLogVisitor& visitor,
                                           const FlatLogVisitor& after_damage) {
  if (dimension <= 0 || dimension > kMaxDimension) {
    return Status::InvalidArgument("index dimension must be in 1.." +
                                   std::to_string(kMaxDimension) + ", got " +
                                   std::to_string(dimension));
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return Status::NotFound("no index file " + path.string());
  if (fd < 0) return ErrnoStatus("cannot open index file", path);
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat index file", path);
  FlatLogInspection r;
  r.file_size = static_cast<uint64_t>(st.st_size);
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<Mapping> mapping, MapFile(fd, r.file_size, path));
  const uint8_t* file = mapping->data();
  const uint64_t size = r.file_size;
  if (Status header = HeaderOf(path, file, size, dimension); !header.ok()) {
    if (header.code() != StatusCode::kDataLoss) return header;
    r.header_damage = header.message();
    if (size < kHeaderSize) return r;
  }
  const RecordWalk w = WalkRecords(path, file, size, kHeaderSize, dimension, visitor);
  r.records = w.records;
  r.adds = w.adds;
  r.removes = w.removes;
  r.end = w.end;
  if (w.status.ok()) {
    r.torn_tail = w.end < size;
    return r;
  }
  r.damage = w.status.message();
  for (uint64_t at = NextValidRecord(file, w.end + 1, size, dimension); at < size;) {
    const RecordWalk later = WalkRecords(path, file, size, at, dimension, after_damage);
    r.records_after_damage += later.records;
    if (later.status.ok()) break;
    at = NextValidRecord(file, later.end + 1, size, dimension);
  }
  return r;
}

Result<uint64_t> FlatLog::Replay(const uint8_t* file, uint64_t size, const FlatLogVisitor& visitor,
                                 uint64_t* damaged_at) {
  const RecordWalk w = WalkRecords(path_, file, size, kHeaderSize, dimension_, visitor);
  logged_adds_ += w.adds;
  logged_removes_ += w.removes;
  if (!w.status.ok()) {
    if (w.record_damaged) *damaged_at = w.end;
    return w.status;
  }
  return w.end;
}

Status FlatLog::KeepDamagedCopy(const uint8_t* file, uint64_t size, FlatLogSalvage* salvage) {
  if (!salvage->copy.empty()) return Status::Ok();
  const std::string stem = path_.string() + ".damaged-" + std::to_string(std::time(nullptr));
  std::filesystem::path copy = stem;
  std::error_code ec;
  for (int i = 2; std::filesystem::exists(copy, ec); ++i) copy = stem + "-" + std::to_string(i);
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(copy, std::span<const uint8_t>(file, size)));
  salvage->copy = copy;
  salvage->salvaged = true;
  return Status::Ok();
}

Status FlatLog::CutDamaged(const uint8_t* file, uint64_t size, uint64_t end,
                           FlatLogSalvage* salvage) {
  PIXSEEK_RETURN_IF_ERROR(KeepDamagedCopy(file, size, salvage));
  if (::ftruncate(fd_, static_cast<off_t>(end)) != 0 || ::fdatasync(fd_) != 0) {
    return ErrnoStatus("cannot cut the damaged records of", path_);
  }
  salvage->offset = end;
  salvage->bytes_dropped = size - end;
  file_size_ = end;
  std::fprintf(stderr,
               "pixseek: %s: salvaged the records before the damaged one at offset %llu; "
               "dropped the %llu bytes from there on (the damaged file is kept as %s)\n",
               path_.c_str(), static_cast<unsigned long long>(end),
               static_cast<unsigned long long>(size - end), salvage->copy.c_str());
  return Status::Ok();
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

IndexFileCheck LogFileCheck(const std::filesystem::path& path, const FlatLogInspection& inspection,
                            std::vector<int64_t> lost) {
  IndexFileCheck check;
  check.file = path;
  check.summary = std::to_string(inspection.records) + " records: " +
                  std::to_string(inspection.adds) + " vectors added, " +
                  std::to_string(inspection.removes) + " removed";
  check.damage = inspection.header_damage;
  if (!inspection.damage.empty()) {
    check.damage += (check.damage.empty() ? "" : "; ") + inspection.damage + "; the " +
                    std::to_string(inspection.file_size - inspection.end) +
                    " bytes from there on hold " +
                    std::to_string(inspection.records_after_damage) +
                    " intact records, which a repair drops";
    check.offset = inspection.end;
    check.bytes_dropped = inspection.file_size - inspection.end;
  }
  if (inspection.torn_tail) {
    check.note = "a torn last record at offset " + std::to_string(inspection.end) + " (" +
                 std::to_string(inspection.file_size - inspection.end) +
                 " bytes, a write cut short by a crash and never acknowledged); the next "
                 "writable open drops it";
  }
  check.lost_ids = std::move(lost);
  return check;
}

IndexFileCheck SalvagedLogCheck(const std::filesystem::path& path, const FlatLogSalvage& salvage) {
  IndexFileCheck check;
  check.file = path;
  check.damage = salvage.damage;
  check.offset = salvage.offset;
  check.bytes_dropped = salvage.bytes_dropped;
  check.damaged_copy = salvage.copy;
  check.summary = salvage.bytes_dropped > 0
                      ? "kept the records before offset " + std::to_string(salvage.offset) +
                            ", dropped the " + std::to_string(salvage.bytes_dropped) +
                            " bytes from there on"
                      : "wrote the damaged header again, kept every record";
  return check;
}

bool HeldByWriter(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  FdCloser closer(fd);
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) return errno == EWOULDBLOCK;
  (void)::flock(fd, LOCK_UN);
  return false;
}

}  // namespace pixseek
