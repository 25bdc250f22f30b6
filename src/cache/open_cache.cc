// OpenCache: the cache named by a URL (in-process LRU or Redis), and the
// Redis URL's meaning. The URL syntax itself is core/url.h's (uriparser),
// shared with the other stores.
//
// Error messages never quote the URL or any part of it that could hold a
// password; they say which part is wrong and what was expected (errors from
// ParseStoreUrl show the URL with its password redacted).
#include <charconv>
#include <cctype>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/url.h"
#include "pixseek/cache.h"

namespace pixseek {
namespace {

Status BadUrl(std::string_view what) {
  return Status::InvalidArgument(
      "cache URL: " + std::string(what) +
      " (expected memory://, redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or "
      "redis+unix:///PATH[?db=N])");
}

// A whole non-negative decimal number in [lo, hi].
std::optional<int> ParseInt(std::string_view s, int lo, int hi) {
  int value = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < lo || value > hi) {
    return std::nullopt;
  }
  return value;
}

// Applies the query parameters. `allow_db`: only the Unix-socket form takes
// the database as a parameter (the TCP form has it in the path).
Status ApplyQuery(const StoreUrl& url, bool allow_db, RedisCacheOptions* options) {
  for (const auto& [name, value] : url.query) {
    if (name == "ttl") {
      auto ttl = ParseInt(value, 0, std::numeric_limits<int>::max());
      if (!ttl) return BadUrl("ttl must be a number of seconds");
      options->ttl_seconds = *ttl;
    } else if (name == "prefix") {
      options->key_prefix = value;
    } else if (name == "db" && allow_db) {
      auto db = ParseInt(value, 0, std::numeric_limits<int>::max());
      if (!db) return BadUrl("db must be a database number");
      options->db = *db;
    } else {
      bool plain = !name.empty() && name.size() <= 32;
      for (char ch : name) {
        plain = plain && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
      }
      return BadUrl(plain ? "unknown parameter '" + name + "' (known: ttl, prefix" +
                                (allow_db ? ", db)" : ")")
                          : std::string("unknown parameter"));
    }
  }
  return Status::Ok();
}

Status ApplyTcp(const StoreUrl& url, RedisCacheOptions* options) {
  if (url.host.empty()) return BadUrl("no host");
  if (!url.user.empty() && url.password.empty()) {
    // redis://SECRET@HOST: most likely a password without its colon.
    return BadUrl("a user without a password (write redis://:PASSWORD@HOST)");
  }
  options->host = url.host;
  if (url.port != 0) options->port = url.port;
  options->user = url.user;
  options->password = url.password;
  std::string_view path = url.path;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (!path.empty()) {
    auto db = ParseInt(path, 0, std::numeric_limits<int>::max());
    if (!db) return BadUrl("the path must be a database number (/0, /1, ...)");
    options->db = *db;
  }
  return ApplyQuery(url, /*allow_db=*/false, options);
}

Status ApplyUnix(const StoreUrl& url, RedisCacheOptions* options) {
  if (!url.host.empty() || url.path.empty()) {
    return BadUrl("a Unix socket URL needs an absolute path (redis+unix:///PATH)");
  }
  if (!url.user.empty() || !url.password.empty()) {
    return BadUrl("a Unix socket URL takes no user or password");
  }
  // The path comes back without its leading '/' when the authority is empty.
  options->unix_socket = url.path.front() == '/' ? url.path : "/" + url.path;
  return ApplyQuery(url, /*allow_db=*/true, options);
}

}  // namespace

Result<RedisCacheOptions> ParseRedisCacheUrl(std::string_view text) {
  auto parsed = ParseStoreUrl(std::string(text));
  if (!parsed.ok()) return parsed.status().WithContext("cache URL");
  const StoreUrl& url = *parsed;
  RedisCacheOptions options;
  if (url.scheme == "redis") {
    PIXSEEK_RETURN_IF_ERROR(ApplyTcp(url, &options));
  } else if (url.scheme == "redis+unix" || url.scheme == "unix") {
    PIXSEEK_RETURN_IF_ERROR(ApplyUnix(url, &options));
  } else if (url.scheme == "rediss") {
    return BadUrl("TLS (rediss://) is not supported");
  } else {
    return BadUrl("not a Redis URL (scheme '" + url.scheme + "')");
  }
  return options;
}

Result<std::unique_ptr<Cache>> OpenCache(const std::string& text, size_t lru_capacity_bytes) {
  if (text.empty()) return NewLruCache(lru_capacity_bytes);
  auto parsed = ParseStoreUrl(text);
  if (!parsed.ok()) return parsed.status().WithContext("cache URL");
  const StoreUrl& url = *parsed;
  if (url.scheme == "memory") {
    if (!url.host.empty() || !url.path.empty() || !url.user.empty() || !url.password.empty() ||
        !url.query.empty()) {
      return BadUrl("memory:// takes nothing after it");
    }
    return NewLruCache(lru_capacity_bytes);
  }
  if (url.scheme != "redis" && url.scheme != "redis+unix" && url.scheme != "unix" &&
      url.scheme != "rediss") {
    return BadUrl("unknown scheme '" + url.scheme + "'");
  }
  PIXSEEK_ASSIGN_OR_RETURN(RedisCacheOptions options, ParseRedisCacheUrl(text));
  return NewRedisCache(options);
}

}  // namespace pixseek
