// Query-result cache: the Cache interface and the in-process LRU.
#ifndef PIXSEEK_CACHE_H_
#define PIXSEEK_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace pixseek {

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  size_t entries = 0;
  size_t bytes = 0;
};

// A string-to-string cache. Keys are built by the query service from the
// content hash and the query parameters. A cache never fails: a miss is
// always a correct answer.
//
// Thread-safety: all methods are safe to call concurrently.
class Cache {
 public:
  virtual ~Cache() = default;
  virtual std::optional<std::string> Get(const std::string& key) = 0;
  virtual void Put(const std::string& key, std::string value) = 0;
  // Drops every entry (called when the database changes).
  virtual void Clear() = 0;
  virtual CacheStats stats() const = 0;
};

// Least-recently-used eviction once keys + values exceed `capacity_bytes`.
// capacity_bytes == 0 gives a cache that stores nothing.
std::unique_ptr<Cache> NewLruCache(size_t capacity_bytes);

}  // namespace pixseek

#endif  // PIXSEEK_CACHE_H_
