// The append-only, checksummed log that persists the flat index
// (byte layout: docs/index_format.md, "Flat index log (vectors.flat)").
#ifndef PIXSEEK_INDEX_FLAT_LOG_H_
#define PIXSEEK_INDEX_FLAT_LOG_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pixseek/status.h"
#include "pixseek/vector_index.h"

namespace pixseek {

// Receives the records of a log being replayed, in file order. `ids` holds
// count little-endian i64 and `vectors` count * dimension little-endian f32,
// both unaligned (copy them out with memcpy). A non-OK status stops the
// replay and is returned by FlatLog::Open.
struct FlatLogVisitor {
  std::function<Status(uint32_t count, const uint8_t* ids, const uint8_t* vectors)> on_add;
  std::function<Status(uint32_t count, const uint8_t* ids)> on_remove;
};

// What FlatLog::Inspect found in a log, which it reads without changing it.
struct FlatLogInspection {
  uint64_t file_size = 0;
  // Intact records replayed into the visitor, and the vectors and ids in them.
  uint64_t records = 0;
  uint64_t adds = 0;
  uint64_t removes = 0;
  // Where the replayed records end: file_size for a whole log.
  uint64_t end = 0;
  // [end, file_size) is a torn last record: the trace of a crash while
  // appending, never acknowledged; a writable open drops it. Not damage.
  bool torn_tail = false;
  // Empty, or why the 20-byte header is damaged (its records were still read,
  // as a salvaging open reads them).
  std::string header_damage;
  // Empty, or why the record at `end` is damaged (or was refused by the
  // visitor): the replay stopped there.
  std::string damage;
  // Intact records found after the damaged one (handed to `after_damage`).
  uint64_t records_after_damage = 0;
};

// What a salvaging FlatLog::Open did to a damaged log.
struct FlatLogSalvage {
  bool salvaged = false;  // the log was damaged and has been cut back
  // Why: the header's and/or the first damaged record's DataLoss messages.
  std::string damage;
  uint64_t offset = 0;         // where the damaged record started
  uint64_t bytes_dropped = 0;  // from there to the end of the file
  std::filesystem::path copy;  // the damaged file as it was, kept beside it
};

// How `pixseek check` reports an inspected log: its summary ("4 records: 12
// vectors added, 1 removed"), its damage, a torn tail as a note, and `lost`
// (the ids added after the damage) as its lost ids.
IndexFileCheck LogFileCheck(const std::filesystem::path& path, const FlatLogInspection& inspection,
                            std::vector<int64_t> lost);
// How a salvaged log is reported (IndexFileCheck's damage, offset, bytes
// dropped and damaged copy).
IndexFileCheck SalvagedLogCheck(const std::filesystem::path& path, const FlatLogSalvage& salvage);

// Whether another open file description holds an exclusive flock on `path`
// (a writer has the index open). False when the file cannot be opened.
bool HeldByWriter(const std::filesystem::path& path);

// One open log file. Holds an exclusive flock on the file while open, so a
// second process (or a second FlatLog in this one) gets Unavailable instead of
// interleaving writes.
//
// Thread-safety: not thread-safe; the owning index serialises calls (its
// writer lock). Owns its file descriptor.
class FlatLog {
 public:
  // Opens `path` (creating it, with only the header, when absent) and replays
  // every record into `visitor`. A torn final record (the file ends inside it,
  // or it is the last record and its checksum fails: a crash while appending)
  // is truncated away with one line on stderr. Any other damage is DataLoss
  // naming the file and the offset. InvalidArgument when the file holds
  // another dimension.
  //
  // With `read_only`, the file is opened for reading only, without the lock;
  // it must exist (NotFound), a torn tail is skipped silently (a writer may
  // be appending it right now), and every write fails with
  // FailedPrecondition.
  //
  // With `salvage` (writable only), a damaged log is not DataLoss: a damaged
  // header is written again, the records are replayed up to the first
  // damaged one and the file is cut there (the records after it are lost);
  // beforehand the file is copied to "<path>.damaged-<unix seconds>".
  // *salvage says what was done. A record the visitor refuses (an id added
  // twice) is still an error: the visitor has seen part of it.
  static Result<std::unique_ptr<FlatLog>> Open(const std::filesystem::path& path, int dimension,
                                               const FlatLogVisitor& visitor,
                                               bool read_only = false,
                                               FlatLogSalvage* salvage = nullptr);

  // Reads the log at `path` without locking or changing it: replays its
  // intact records into `visitor` up to the first damaged one, then hands
  // the intact records found after that one to `after_damage` (either
  // visitor's members may be empty). Damage is reported in the result, not
  // as an error. NotFound when the file is missing, InvalidArgument when it
  // holds another dimension, Internal when it cannot be read.
  static Result<FlatLogInspection> Inspect(const std::filesystem::path& path, int dimension,
                                           const FlatLogVisitor& visitor,
                                           const FlatLogVisitor& after_damage);

  ~FlatLog();
  FlatLog(const FlatLog&) = delete;
  FlatLog& operator=(const FlatLog&) = delete;

  // Appends one add record of n vectors and fdatasyncs. On error the file is
  // cut back to its previous length.
  Status AppendAdd(size_t n, const int64_t* ids, const float* vectors);
  // Appends one remove record and fdatasyncs.
  Status AppendRemove(std::span<const int64_t> ids);

  // Replaces the log by one holding just these n vectors: written to
  // "<path>.tmp", fsynced, renamed over the log, directory fsynced. On error
  // the old log stays in use, unchanged.
  Status Rewrite(size_t n, const int64_t* ids, const float* vectors);

  // Vectors in the add records / ids in the remove records of the file.
  uint64_t logged_adds() const { return logged_adds_; }
  uint64_t logged_removes() const { return logged_removes_; }
  uint64_t file_size() const { return file_size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  FlatLog(std::filesystem::path path, int dimension, int fd, uint64_t file_size, bool read_only);

  Status Append(uint8_t op, size_t n, const int64_t* ids, const float* vectors);
  // Hands every whole record of the mapped file (size bytes) to `visitor`
  // and returns the offset where the valid records end: `size`, or the start
  // of a torn last record. DataLoss for damage anywhere else; then
  // *damaged_at is the damaged record's offset (unchanged when the visitor
  // refused a record).
  Result<uint64_t> Replay(const uint8_t* file, uint64_t size, const FlatLogVisitor& visitor,
                          uint64_t* damaged_at);
  // Salvage: copies the damaged file (its size bytes mapped at `file`) to
  // "<path>.damaged-<unix seconds>", once per salvage.
  Status KeepDamagedCopy(const uint8_t* file, uint64_t size, FlatLogSalvage* salvage);
  // Salvage: keeps that copy and cuts the log at `end`, the damaged record.
  Status CutDamaged(const uint8_t* file, uint64_t size, uint64_t end, FlatLogSalvage* salvage);
  // Cuts a torn last record from `end` off the file (a writer), or only
  // stops before it (a reader: a writer may be appending it right now).
  Status DropTornTail(uint64_t end, uint64_t size);

  const std::filesystem::path path_;
  const int dimension_;
  int fd_;
  const bool read_only_;
  uint64_t file_size_;
  uint64_t logged_adds_ = 0;
  uint64_t logged_removes_ = 0;
};

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_FLAT_LOG_H_
