// The HTTP interface: REST API (docs/openapi.json), the web page, and the
// status-to-HTTP mapping.
#ifndef PIXSEEK_SERVER_H_
#define PIXSEEK_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/services.h"
#include "pixseek/status.h"

namespace pixseek {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0 = pick a free port (see HttpServer::port())
  size_t max_request_bytes = 64u << 20;   // larger bodies: 413
  int threads = 8;                        // request worker threads
  bool log_requests = true;               // one line per request on stderr
  // Folders under which POST /api/v1/builds may build; empty = builds over
  // HTTP are refused (403).
  std::vector<std::string> import_roots;

  // API keys. Once any is set, every write (upload, delete, build) needs
  // "Authorization: Bearer KEY" with one of them: 401 without a key, 403 with
  // a wrong one. Keys are compared in constant time and never logged.
  std::vector<std::string> api_keys;
  // Reads (search, list, images, stats) need a key too.
  bool keyed_reads = false;
  // Answers never show absolute server paths: a record's `path` is relative
  // to the library root it was built from (an upload's to the database
  // directory), and file errors name the image, not its file. nullopt = on
  // exactly when api_keys is set. (Errors of the file routes never show a
  // path, whatever this says.)
  std::optional<bool> hide_paths;
  // Requests handled at once beyond which the server answers 503 with
  // Retry-After instead of queueing without bound; 0 = 4 x threads.
  int max_concurrent_requests = 0;
  // Per-client (remote address) rate limit: a token bucket refilled at
  // rate_limit_per_s with room for rate_burst requests; 0 = no limit. Over
  // it: 429 with Retry-After.
  double rate_limit_per_s = 0;
  int rate_burst = 20;
  // Request log format on stderr: "text" (one readable line) or "json" (one
  // JSON object per line, for log collectors).
  std::string log_format = "text";
  // Seconds a 503 answer asks the client to wait (Retry-After).
  int retry_after_s = 5;
  // The front's limits on clients (src/server/http_front.h): a request's
  // head must arrive within header_timeout_s of its first byte and its body
  // within body_timeout_s of the head (408 otherwise; total deadlines, not
  // per byte); a kept-alive connection idle for idle_timeout_s is closed;
  // at most max_connections are open, max_connections_per_client from one
  // address (more are closed at once).
  double header_timeout_s = 10;
  double body_timeout_s = 120;
  double idle_timeout_s = 60;
  int max_connections = 1024;
  int max_connections_per_client = 32;
  // Searches' re-ranking when a request names none (its `rerank` query
  // parameter picks the method; n, alpha and depth are always these).
  RerankOptions rerank;
};

// The API's JSON documents as text (docs/openapi.json's schemas), for the
// other interfaces, so that `pixseek query --json` and GET /api/v1/search
// answer in one shape: SearchResponse {"results": [...], "took_ms", "cached",
// "category" (when predicted): {"label", "confidence"}} and Stats {"count", "dimension", "model", "index_kind", "index"}.
std::string SearchResponseToJson(const QueryResponse& response);
std::string StatsToJson(const DatabaseStats& stats);

// HTTP status for a Status code (400, 401, 403, 404, 409, 413, 415, 500, 503).
int HttpStatusFor(StatusCode code);

// Serves one Database. Thread-safety: Start/Stop from one thread; requests
// are handled on the server's worker threads. Borrows `db`, which must
// outlive the server.
class HttpServer {
 public:
  HttpServer(Database& db, ServerOptions options);
  ~HttpServer();  // stops the server

  // Binds and starts serving on background threads. Unavailable when the
  // address cannot be bound.
  Status Start();
  // Blocks until Stop() is called (from another thread or a signal handler
  // thread).
  void Wait();
  // Stops accepting, lets in-flight requests finish, returns.
  void Stop();
  // The bound port (useful with port 0). Valid after Start().
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pixseek

#endif  // PIXSEEK_SERVER_H_
