// Checksummed files for the parts learned per collection (SIFT-VLAD codebook,
// PCA): an 8-byte magic naming the kind and version, the payload, then the
// SHA-256 (64 hex digits) of everything before it. Internal to the embed
// module.
#ifndef PIXSEEK_EMBED_SEALED_FILE_H_
#define PIXSEEK_EMBED_SEALED_FILE_H_

#include <cstring>
#include <string>
#include <string_view>

#include "core/hash.h"
#include "pixseek/status.h"

namespace pixseek {

inline std::string SealFile(std::string_view magic, std::string_view payload) {
  std::string out;
  out.reserve(magic.size() + payload.size() + 64);
  out.append(magic);
  out.append(payload);
  out += Sha256Hex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(out.data()),
                                            out.size()));
  return out;
}

// The payload of a sealed file; DataLoss naming `what` when the magic or the
// checksum is wrong (a damaged, truncated or foreign file).
inline Result<std::string_view> UnsealFile(std::string_view bytes, std::string_view magic,
                                           const std::string& what) {
  if (bytes.size() < magic.size() + 64 || bytes.substr(0, magic.size()) != magic) {
    return Status::DataLoss(what + " is damaged or not a " + std::string(magic.substr(0, 6)) +
                            " file (bad header); rebuild the database");
  }
  std::string_view body = bytes.substr(0, bytes.size() - 64);
  const std::string sum = Sha256Hex(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
  if (sum != bytes.substr(bytes.size() - 64)) {
    return Status::DataLoss(what + " is damaged (checksum mismatch); rebuild the database");
  }
  return body.substr(magic.size());
}

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_SEALED_FILE_H_
