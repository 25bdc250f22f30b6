// RequestGuard: who may do what and how much, decided before a request is
// routed: API keys and a per-client rate limit (token buckets). The cap on
// requests waiting or running is the server's task queue (http_server.cc).
#ifndef PIXSEEK_SERVER_REQUEST_GUARD_H_
#define PIXSEEK_SERVER_REQUEST_GUARD_H_

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pixseek/server.h"
#include "pixseek/status.h"

namespace pixseek::server {

enum class Access { kOpen, kRead, kWrite };

// What a request needs, from its method and path: the page, its assets,
// /healthz and the OpenAPI document are open (a browser must load the page
// before it can ask for a key); searches and GETs of the API read; every
// other method writes.
Access AccessFor(std::string_view method, std::string_view path);

// Thread-safety: all methods may be called concurrently.
class RequestGuard {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RequestGuard(const ServerOptions& options);

  // OK, or Unauthenticated (no "Authorization: Bearer KEY" header) or
  // PermissionDenied (a key that is not configured). Every access is open
  // while no key is configured; reads are open unless keyed_reads.
  Status CheckKey(Access access, std::string_view authorization) const;

  // Takes one request from `client`'s bucket. Returns 0 when allowed, else
  // the seconds until a token is free (for Retry-After).
  double TakeToken(const std::string& client, Clock::time_point now = Clock::now());

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point last;
  };

  std::vector<std::string> key_digests_;  // SHA-256 of each key
  bool keyed_reads_;
  double rate_;
  double burst_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;  // GUARDED_BY(mu_)
};

}  // namespace pixseek::server

#endif  // PIXSEEK_SERVER_REQUEST_GUARD_H_
