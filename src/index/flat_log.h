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

#include "pixseek/status.h"

namespace pixseek {

// Receives the records of a log being replayed, in file order. `ids` holds
// count little-endian i64 and `vectors` count * dimension little-endian f32,
// both unaligned (copy them out with memcpy). A non-OK status stops the
// replay and is returned by FlatLog::Open.
struct FlatLogVisitor {
  std::function<Status(uint32_t count, const uint8_t* ids, const uint8_t* vectors)> on_add;
  std::function<Status(uint32_t count, const uint8_t* ids)> on_remove;
};

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
  static Result<std::unique_ptr<FlatLog>> Open(const std::filesystem::path& path, int dimension,
                                               const FlatLogVisitor& visitor,
                                               bool read_only = false);

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
  // of a torn last record. DataLoss for damage anywhere else.
  Result<uint64_t> Replay(const uint8_t* file, uint64_t size, const FlatLogVisitor& visitor);
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
