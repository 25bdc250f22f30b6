// The server's front door: the only code that reads from and writes to
// clients' sockets. One event loop (epoll) owns every connection and reads
// requests under limits a client cannot stretch; complete requests go to a
// fixed pool of workers; the loop writes their answers back. So an idle,
// slow or hostile connection holds a few kilobytes and no thread.
//
// What it enforces, per connection:
//   - the head (request line and headers) within max_header_bytes and
//     max_headers, in header_timeout_s from its first byte (a total deadline:
//     bytes trickling in do not extend it), else 431 or 408;
//   - RFC 9112 framing: Transfer-Encoding only "chunked" (HTTP/1.1), never
//     with Content-Length; Content-Length digits only, repeated only with
//     the same value; no whitespace before a header's colon, no folded
//     lines; anything else is 400, and the connection closes;
//   - the body within max_body_bytes, checked before reading for
//     Content-Length and while reading for chunked bodies (413), in
//     body_timeout_s from the end of the head (408);
//   - pipelining: requests on one connection are answered one at a time, in
//     order; the bytes of the next wait in the connection's buffer;
//   - connections: at most max_connections, max_connections_per_client per
//     remote address (more are closed at once), idle ones closed after
//     idle_timeout_s, a response not taken by the client in write_timeout_s
//     dropped;
//   - admission: at most max_pending requests run or wait for one of the
//     `workers`; beyond that the loop answers 503 with Retry-After itself.
#ifndef PIXSEEK_SERVER_HTTP_FRONT_H_
#define PIXSEEK_SERVER_HTTP_FRONT_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pixseek/status.h"

namespace pixseek::server {

struct FrontOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0 = any free port (see HttpFront::port())
  int workers = 8;
  int max_pending = 32;
  size_t max_header_bytes = 16u << 10;
  size_t max_headers = 100;
  size_t max_body_bytes = 64u << 20;
  double header_timeout_s = 10;
  double body_timeout_s = 120;
  double idle_timeout_s = 60;
  double write_timeout_s = 60;
  int max_connections = 1024;
  int max_connections_per_client = 32;
  int retry_after_s = 5;
};

// One complete request as the client sent it (the body de-chunked).
struct FrontRequest {
  std::string method;
  std::string target;   // as sent: path and query string, not decoded
  std::string version;  // "HTTP/1.1" or "HTTP/1.0"
  std::vector<std::pair<std::string, std::string>> headers;  // in order, values trimmed
  std::string body;
  std::string client;  // the peer's address

  // The first header named `name` (case-insensitive), or nullptr.
  const std::string* Header(std::string_view name) const;
};

// An answer: `head` is the status line and headers, each line ending in
// CRLF, without Connection (the front adds it) and without the blank line;
// `body` follows it as is (its Content-Length is in `head`).
struct FrontResponse {
  std::string head;
  std::string body;
};

// Runs on a worker thread, one request at a time per worker.
using FrontHandler = std::function<FrontResponse(const FrontRequest&)>;
// Told of each request the front refused itself (status 400, 408, 413, 431,
// 503), from the loop thread; method and path may be empty.
using FrontRefusal = std::function<void(const std::string& method, const std::string& target,
                                        int status)>;

// Thread-safety: Start, Stop and Wait from one owner thread (Stop may also
// come from another thread once Start returned); handler and on_refused
// run on the front's threads.
class HttpFront {
 public:
  HttpFront(FrontOptions options, FrontHandler handler, FrontRefusal on_refused);
  ~HttpFront();  // Stop()
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  // Binds and starts the loop and the workers. Unavailable when the address
  // cannot be bound.
  Status Start();
  // Stops accepting and closes idle connections; requests already begun are
  // read (within their deadlines, at most kDrainSeconds in all), answered
  // with Connection: close, and written; then the threads end. Idempotent.
  void Stop();
  static constexpr double kDrainSeconds = 30;
  int port() const;
  // Requests running or waiting for a worker.
  int pending() const;
  // Open client connections.
  int connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n..." for an
// error answer of the API's shape ({"error": {"code", "message"}}).
FrontResponse FrontErrorResponse(int status, const std::string& message, int retry_after_s);

}  // namespace pixseek::server

#endif  // PIXSEEK_SERVER_HTTP_FRONT_H_
