#include "index/build_parts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/files.h"

namespace pixseek::build_parts {

namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;
constexpr const char* kManifestFormat = "pixseek-disk-build";
constexpr int kManifestVersion = 1;

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  return Status::Internal(what + " " + path.string() + ": " + std::strerror(errno));
}

std::string Hex(uint64_t x) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, x);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------
// PartWriter

PartWriter::PartWriter(std::filesystem::path path, int fd)
    : path_(std::move(path)), tmp_(path_.string() + ".tmp"), fd_(fd), hash_(XXH3_createState()) {
  XXH3_64bits_reset(hash_);
  buffer_.reserve(kBufferBytes);
}

Result<std::unique_ptr<PartWriter>> PartWriter::Create(const std::filesystem::path& path,
                                                       PartKind kind, uint64_t fingerprint) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  std::unique_ptr<PartWriter> w(new PartWriter(path, fd));
  PIXSEEK_RETURN_IF_ERROR(w->Append(kPartMagic, sizeof(kPartMagic)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(static_cast<uint32_t>(kind)));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(kPartVersion));
  PIXSEEK_RETURN_IF_ERROR(w->AppendValue(fingerprint));
  w->payload_ = 0;  // the header is not payload
  return w;
}

PartWriter::~PartWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
  XXH3_freeState(hash_);
}

Status PartWriter::Append(const void* data, size_t bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  XXH3_64bits_update(hash_, p, bytes);
  payload_ += bytes;
  while (bytes > 0) {
    const size_t take = std::min(bytes, kBufferBytes - buffer_.size());
    buffer_.insert(buffer_.end(), p, p + take);
    p += take;
    bytes -= take;
    if (buffer_.size() == kBufferBytes) PIXSEEK_RETURN_IF_ERROR(Flush());
  }
  return Status::Ok();
}

Status PartWriter::Flush() {
  PIXSEEK_RETURN_IF_ERROR(WriteFullAt(fd_, buffer_.data(), buffer_.size(), offset_, tmp_));
  offset_ += buffer_.size();
  buffer_.clear();
  return Status::Ok();
}

Status PartWriter::Commit() {
  // The trailer: the payload's size (hashed), then the hash of everything.
  const uint64_t payload = payload_;
  XXH3_64bits_update(hash_, &payload, sizeof(payload));
  const uint64_t hash = XXH3_64bits_digest(hash_);
  buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&payload),
                 reinterpret_cast<const uint8_t*>(&payload) + 8);
  buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&hash),
                 reinterpret_cast<const uint8_t*>(&hash) + 8);
  PIXSEEK_RETURN_IF_ERROR(Flush());
  if (::fsync(fd_) != 0) return ErrnoStatus("cannot fsync", tmp_);
  ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) return Status::Internal("cannot rename " + tmp_.string() + ": " + ec.message());
  committed_ = true;
  return SyncDirectory(path_.parent_path());
}

// ---------------------------------------------------------------------------
// PartReader

Result<std::unique_ptr<PartReader>> PartReader::Open(const std::filesystem::path& path,
                                                     PartKind kind, uint64_t fingerprint) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no such part: " + path.string());
    return ErrnoStatus("cannot open", path);
  }
  struct Closer {
    int fd;
    bool keep = false;
    ~Closer() {
      if (!keep) ::close(fd);
    }
  } closer{fd};
  auto damaged = [&](const std::string& what) {
    return Status::DataLoss("build part " + path.string() + ": " + what);
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kPartHeaderBytes + kPartTrailerBytes) return damaged("shorter than a part");
  uint8_t header[kPartHeaderBytes];
  PIXSEEK_RETURN_IF_ERROR(ReadFullAt(fd, header, sizeof header, 0, path));
  uint32_t got_kind, version;
  uint64_t got_fingerprint, trailer[2];
  std::memcpy(&got_kind, header + 8, 4);
  std::memcpy(&version, header + 12, 4);
  std::memcpy(&got_fingerprint, header + 16, 8);
  PIXSEEK_RETURN_IF_ERROR(ReadFullAt(fd, trailer, sizeof trailer, size - kPartTrailerBytes, path));
  if (std::memcmp(header, kPartMagic, 8) != 0) return damaged("wrong magic");
  if (version != kPartVersion) return damaged("unknown version " + std::to_string(version));
  if (got_kind != static_cast<uint32_t>(kind)) return damaged("a part of another kind");
  if (got_fingerprint != fingerprint) return damaged("a part of another build");
  if (trailer[0] != size - kPartHeaderBytes - kPartTrailerBytes) {
    return damaged("size " + std::to_string(size) + " does not match its payload of " +
                   std::to_string(trailer[0]) + " bytes");
  }
  // The checksum covers every byte before it: read the whole part once.
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::vector<uint8_t> buf(kBufferBytes);
  const uint64_t hashed = size - 8;
  for (uint64_t at = 0; at < hashed;) {
    const size_t take = static_cast<size_t>(std::min<uint64_t>(buf.size(), hashed - at));
    const Status s = ReadFullAt(fd, buf.data(), take, at, path);
    if (!s.ok()) {
      XXH3_freeState(state);
      return s;
    }
    XXH3_64bits_update(state, buf.data(), take);
    at += take;
  }
  const uint64_t hash = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  if (hash != trailer[1]) return damaged("checksum mismatch");
  closer.keep = true;
  return std::unique_ptr<PartReader>(new PartReader(path, fd, trailer[0]));
}

PartReader::~PartReader() { ::close(fd_); }

Status PartReader::ReadAt(uint64_t offset, void* out, size_t bytes) const {
  if (offset > payload_bytes_ || bytes > payload_bytes_ - offset) {
    return Status::DataLoss("build part " + path_.string() + ": a read past its end");
  }
  return ReadFullAt(fd_, out, bytes, kPartHeaderBytes + offset, path_);
}

Status PartReader::Read(void* out, size_t bytes) {
  uint8_t* p = static_cast<uint8_t*>(out);
  while (bytes > 0) {
    const uint64_t end = buffer_start_ + buffer_.size();
    if (position_ >= buffer_start_ && position_ < end) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(bytes, end - position_));
      std::memcpy(p, buffer_.data() + (position_ - buffer_start_), take);
      p += take;
      bytes -= take;
      position_ += take;
      continue;
    }
    if (position_ >= payload_bytes_) {
      return Status::DataLoss("build part " + path_.string() + ": a read past its end");
    }
    const size_t fill =
        static_cast<size_t>(std::min<uint64_t>(kBufferBytes, payload_bytes_ - position_));
    buffer_.resize(fill);
    buffer_start_ = position_;
    PIXSEEK_RETURN_IF_ERROR(ReadAt(position_, buffer_.data(), fill));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// WorkDir

Result<WorkDir> WorkDir::Open(const std::filesystem::path& dir, const std::string& inputs_json,
                              std::string* discarded) {
  discarded->clear();
  const uint64_t fingerprint = XXH3_64bits(inputs_json.data(), inputs_json.size());
  const std::filesystem::path manifest = dir / "build.json";
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    auto text = ReadTextFile(manifest);
    if (!text.ok()) {
      *discarded = "it has no readable build.json";
    } else {
      const nlohmann::json m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (m.is_discarded() || !m.is_object() || m.value("format", "") != kManifestFormat ||
          m.value("version", 0) != kManifestVersion) {
        *discarded = "its build.json is damaged or of another format";
      } else if (m.value("fingerprint", "") != Hex(fingerprint)) {
        // Name what changed when the recorded inputs say.
        std::string changed;
        const nlohmann::json now = nlohmann::json::parse(inputs_json, nullptr, false);
        if (m.contains("inputs") && m["inputs"].is_object() && now.is_object()) {
          for (const auto& [key, value] : now.items()) {
            if (!m["inputs"].contains(key) || m["inputs"][key] != value) {
              changed += (changed.empty() ? "" : ", ") + key;
            }
          }
        }
        *discarded = "it was made from other inputs or parameters" +
                     (changed.empty() ? std::string() : " (" + changed + ")");
      }
    }
    if (discarded->empty()) return WorkDir(dir, fingerprint);
    std::filesystem::remove_all(dir, ec);
    if (ec) return Status::Internal("cannot empty " + dir.string() + ": " + ec.message());
  }
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(dir));
  nlohmann::json m = {{"format", kManifestFormat},
                      {"version", kManifestVersion},
                      {"fingerprint", Hex(fingerprint)},
                      {"inputs", nlohmann::json::parse(inputs_json)}};
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(manifest, m.dump(2) + "\n"));
  PIXSEEK_RETURN_IF_ERROR(SyncDirectory(dir.parent_path().empty() ? "." : dir.parent_path()));
  return WorkDir(dir, fingerprint);
}

std::filesystem::path WorkDir::ShardPart(size_t shard) const {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%04zu.part", shard);
  return dir_ / name;
}

std::filesystem::path WorkDir::SpillFile(size_t shard) const {
  char name[40];
  std::snprintf(name, sizeof name, "partition-%04zu.spill", shard);
  return dir_ / name;
}

Status WorkDir::Remove() const {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  if (ec) return Status::Internal("cannot remove " + dir_.string() + ": " + ec.message());
  return SyncDirectory(dir_.parent_path().empty() ? "." : dir_.parent_path());
}

}  // namespace pixseek::build_parts
