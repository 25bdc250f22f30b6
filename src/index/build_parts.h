// The work directory of a resumable disk graph build and the checksummed
// part files in it (docs/index_format.md, "Disk graph build work
// directory"). BuildDiskGraph (disk_build.cc) keeps every finished step of a
// build here, beside its output, so that a build stopped after hours (Ctrl-C,
// the cancel flag, SIGKILL, a power cut) goes on from its last finished part
// when run again.
//
// A part is written to "<name>.tmp", fsynced and renamed into place, so a
// part either exists complete or not at all; it carries the build's
// fingerprint and an XXH3-64 checksum of all its bytes, and a reader uses it
// only after both check out. The manifest (build.json) records the
// fingerprint and the inputs it was made from: a work directory left by a
// build of other inputs or parameters is emptied rather than mixed in.
#ifndef PIXSEEK_INDEX_BUILD_PARTS_H_
#define PIXSEEK_INDEX_BUILD_PARTS_H_

#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "pixseek/status.h"

namespace pixseek::build_parts {

constexpr char kPartMagic[8] = {'P', 'X', 'B', 'P', 'A', 'R', 'T', '1'};
constexpr uint32_t kPartVersion = 1;
constexpr uint64_t kPartHeaderBytes = 24;   // magic, kind, version, fingerprint
constexpr uint64_t kPartTrailerBytes = 16;  // payload bytes, checksum

// What a part holds; stored in its header so that a part is never read as
// another kind.
enum class PartKind : uint32_t {
  kPq = 1,          // pq.part: the codebook and every row's code
  kPartition = 2,   // partition.part: centres, entry node, per-shard row lists
  kShardGraph = 3,  // shard-NNNN.part: one shard's Vamana lists in global rows
};

// Writes one part: header, payload (appended through a buffer) and trailer
// to "<path>.tmp"; Commit fsyncs it and renames it to `path`. Destroying an
// uncommitted writer removes the temporary, so an interrupted part leaves
// nothing a later run could mistake for a finished one. Not thread-safe.
class PartWriter {
 public:
  // Internal when the temporary cannot be created.
  static Result<std::unique_ptr<PartWriter>> Create(const std::filesystem::path& path,
                                                    PartKind kind, uint64_t fingerprint);
  ~PartWriter();
  PartWriter(const PartWriter&) = delete;
  PartWriter& operator=(const PartWriter&) = delete;

  // ResourceExhausted when the disk is full, Internal on other I/O errors.
  Status Append(const void* data, size_t bytes);
  template <typename T>
  Status AppendValue(const T& value) {
    return Append(&value, sizeof(value));
  }
  // Writes the trailer, fsyncs, renames over `path` and fsyncs the
  // directory. The writer is done afterwards.
  Status Commit();

 private:
  PartWriter(std::filesystem::path path, int fd);
  Status Flush();

  const std::filesystem::path path_;
  const std::filesystem::path tmp_;
  int fd_;
  uint64_t offset_ = 0;  // bytes written to the file so far
  uint64_t payload_ = 0;
  std::vector<uint8_t> buffer_;
  XXH3_state_t* hash_;
  bool committed_ = false;
};

// A part opened for reading after a full check: magic, kind, version,
// fingerprint, the size the trailer states, and the checksum of every byte.
// Reads are from the payload, sequential (Read, buffered) or at an offset
// (ReadAt). Not thread-safe.
class PartReader {
 public:
  // NotFound when the file is missing; DataLoss naming the file and what is
  // wrong when any check fails (a part of another build is DataLoss too).
  static Result<std::unique_ptr<PartReader>> Open(const std::filesystem::path& path, PartKind kind,
                                                  uint64_t fingerprint);
  ~PartReader();
  PartReader(const PartReader&) = delete;
  PartReader& operator=(const PartReader&) = delete;

  uint64_t payload_bytes() const { return payload_bytes_; }
  const std::filesystem::path& path() const { return path_; }
  // The next `bytes` of the payload. DataLoss past its end.
  Status Read(void* out, size_t bytes);
  template <typename T>
  Status ReadValue(T* value) {
    return Read(value, sizeof(T));
  }
  // `bytes` at payload offset `offset` (does not move the sequential
  // position). DataLoss past the payload's end.
  Status ReadAt(uint64_t offset, void* out, size_t bytes) const;

 private:
  PartReader(std::filesystem::path path, int fd, uint64_t payload_bytes)
      : path_(std::move(path)), fd_(fd), payload_bytes_(payload_bytes) {}

  const std::filesystem::path path_;
  int fd_;
  const uint64_t payload_bytes_;
  uint64_t position_ = 0;        // next payload byte Read returns
  std::vector<uint8_t> buffer_;  // payload bytes [buffer_start_, + size)
  uint64_t buffer_start_ = 0;
};

// The work directory of one build. Thread-compatible; owns nothing but its
// path.
class WorkDir {
 public:
  // Opens `dir` for the build described by `inputs` (a JSON object of
  // everything the result depends on; its XXH3-64 is the fingerprint).
  // Creates the directory when missing. A directory whose manifest is
  // missing, unreadable or of another fingerprint is emptied first and
  // *discarded says why (empty when its parts may be reused). Internal on
  // I/O errors.
  static Result<WorkDir> Open(const std::filesystem::path& dir, const std::string& inputs_json,
                              std::string* discarded);

  const std::filesystem::path& dir() const { return dir_; }
  uint64_t fingerprint() const { return fingerprint_; }
  std::filesystem::path PqPart() const { return dir_ / "pq.part"; }
  std::filesystem::path PartitionPart() const { return dir_ / "partition.part"; }
  std::filesystem::path ShardPart(size_t shard) const;
  // A scratch file of the partition step (rows of one shard, before they are
  // gathered into partition.part).
  std::filesystem::path SpillFile(size_t shard) const;

  // Deletes the directory and everything in it (after the final file is in
  // place).
  Status Remove() const;

 private:
  WorkDir(std::filesystem::path dir, uint64_t fingerprint)
      : dir_(std::move(dir)), fingerprint_(fingerprint) {}
  std::filesystem::path dir_;
  uint64_t fingerprint_;
};

}  // namespace pixseek::build_parts

#endif  // PIXSEEK_INDEX_BUILD_PARTS_H_
