// The caches of a database (search results, and query features by content
// hash): the Cache interface, the in-process LRU and the Redis cache, and
// OpenCache, which picks one from a URL.
#ifndef PIXSEEK_CACHE_H_
#define PIXSEEK_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "pixseek/status.h"

namespace pixseek {

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  size_t entries = 0;
  size_t bytes = 0;
};

// Names what a cache held between two Clears. Opaque: two generations read
// from the same cache are equal exactly when no Clear came between the reads.
struct CacheGeneration {
  std::string token;  // empty = unknown (nothing is stored under it)
  bool operator==(const CacheGeneration&) const = default;
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
  // Stores `value` whatever Clears came before; only for values that no
  // Clear makes stale (e.g. an image's feature). A value computed from data
  // that a Clear invalidates goes through generation() and PutIfCurrent.
  virtual void Put(const std::string& key, std::string value) = 0;
  // The generation now. Read it before computing a value to store with
  // PutIfCurrent.
  virtual CacheGeneration generation() = 0;
  // Put, unless the cache was cleared (by any process sharing it) since
  // `seen` was read: then `value` was computed from data the Clear made
  // stale, and it is dropped. Without this, a search that started before an
  // upload and stored its results after the upload's Clear would answer
  // without the new image until the next Clear.
  virtual void PutIfCurrent(const std::string& key, std::string value,
                            const CacheGeneration& seen) = 0;
  // Drops every entry (called when the database changes).
  virtual void Clear() = 0;
  virtual CacheStats stats() const = 0;
};

// Least-recently-used eviction once keys + values exceed `capacity_bytes`.
// capacity_bytes == 0 gives a cache that stores nothing.
std::unique_ptr<Cache> NewLruCache(size_t capacity_bytes);

// Where and how the Redis cache connects. Every field has a usable default.
struct RedisCacheOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  // Path of a Unix socket; when set, host and port are ignored.
  std::string unix_socket;
  int db = 0;            // SELECTed after connecting
  std::string user;      // Redis 6 ACL user; empty = the default user
  std::string password;  // empty = no AUTH
  // Every entry expires this long after its Put; 0 = never (then entries made
  // obsolete by Clear stay until Redis evicts them).
  int ttl_seconds = 3600;
  // Prepended to every key, so that several databases can share one Redis.
  std::string key_prefix = "pixseek:";
  int connect_timeout_ms = 200;
  // Bounds each read and write on the socket: a hung Redis costs a call at
  // most about this long.
  int command_timeout_ms = 250;
  int pool_size = 4;  // connections, shared by the calling threads
  // While Redis is unreachable, at most one call per interval tries it again;
  // the others are misses (Get) or no-ops (Put) at once.
  int retry_interval_ms = 1000;
};

// Parses redis://[[USER]:PASS@]HOST[:PORT][/DB][?ttl=S&prefix=P] or
// redis+unix:///PATH[?db=N&ttl=S&prefix=P] (PASS, USER and P percent-decoded;
// default port 6379, db 0) into options with the other fields at their
// defaults. InvalidArgument for anything else; the message never contains the
// password.
Result<RedisCacheOptions> ParseRedisCacheUrl(std::string_view url);

// A cache shared by every process that uses the same Redis and key_prefix:
// a Clear by any of them empties it for all. Connects lazily; never fails
// (see Cache): while Redis is unreachable it is an always-empty cache, logs
// that once to stderr, and goes back to Redis by itself when it returns.
// stats(): hits and misses are this object's; entries and bytes only count
// what this object stored since the last Clear it saw (an approximation).
std::unique_ptr<Cache> NewRedisCache(const RedisCacheOptions& options);

// The cache named by `url`: "" or "memory://" is the in-process LRU of
// `lru_capacity_bytes`; redis:// and redis+unix:// as for ParseRedisCacheUrl.
// InvalidArgument for a malformed or unknown URL (never echoing a password).
Result<std::unique_ptr<Cache>> OpenCache(const std::string& url, size_t lru_capacity_bytes);

}  // namespace pixseek

#endif  // PIXSEEK_CACHE_H_
