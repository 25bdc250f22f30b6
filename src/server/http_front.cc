#include "server/http_front.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "server/http_errors.h"

namespace pixseek::server {
namespace {

using Clock = std::chrono::steady_clock;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// RFC 9110 token characters (header names, methods).
bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || std::strchr("\"(),/:;<=>?@[\\]{}", c) != nullptr) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const char* Reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// A refusal: the status, its message, and whether the connection must close
// (the rest of what the client sent cannot be framed).
struct Refusal {
  int status = 0;
  std::string message;
};

// Incremental decoder of a chunked body (RFC 9112 section 7.1): chunk sizes
// in hex with optional extensions, data, CRLF, then trailer lines up to an
// empty one. Feed returns the bytes consumed; done() once the last chunk and
// the trailers are read.
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(size_t max_body) : max_body_(max_body) {}

  // Consumes from `in` into `body`; a Refusal when the framing is bad or the
  // body too large.
  Result<size_t> Feed(std::string_view in, std::string* body, Refusal* refusal) {
    size_t used = 0;
    while (used < in.size() && state_ != kDone) {
      const std::string_view rest = in.substr(used);
      if (state_ == kData) {
        const size_t take = std::min<size_t>(left_, rest.size());
        body->append(rest.data(), take);
        used += take;
        left_ -= take;
        if (left_ == 0) state_ = kDataEnd;
        continue;
      }
      const size_t eol = rest.find("\r\n");
      if (eol == std::string_view::npos) {
        if (rest.size() > kMaxLine) return Fail(refusal, 400, "chunk line too long");
        break;  // wait for the rest of the line
      }
      const std::string_view line = rest.substr(0, eol);
      used += eol + 2;
      if (state_ == kDataEnd) {
        if (!line.empty()) return Fail(refusal, 400, "chunk data not followed by CRLF");
        state_ = kSize;
      } else if (state_ == kSize) {
        const std::string_view hex = Trim(line.substr(0, line.find(';')));
        uint64_t size = 0;
        const auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), size, 16);
        if (hex.empty() || ec != std::errc() || end != hex.data() + hex.size()) {
          return Fail(refusal, 400, "bad chunk size");
        }
        if (size > max_body_ - std::min(max_body_, body->size())) {
          return Fail(refusal, 413, "request body exceeds the limit of " +
                                        std::to_string(max_body_) + " bytes");
        }
        left_ = size;
        state_ = size == 0 ? kTrailer : kData;
      } else {  // kTrailer: header lines up to an empty one
        if (line.empty()) {
          state_ = kDone;
        } else if (++trailers_ > kMaxTrailers) {
          return Fail(refusal, 431, "too many trailer fields");
        }
      }
    }
    return used;
  }
  bool done() const { return state_ == kDone; }

 private:
  static constexpr size_t kMaxLine = 4096;
  static constexpr int kMaxTrailers = 32;
  enum State { kSize, kData, kDataEnd, kTrailer, kDone };
  static Status Fail(Refusal* refusal, int status, std::string message) {
    *refusal = {status, message};
    return Status::InvalidArgument(std::move(message));
  }
  size_t max_body_;
  State state_ = kSize;
  uint64_t left_ = 0;
  int trailers_ = 0;
};

// How the body of a parsed head is framed.
struct Framing {
  bool chunked = false;
  size_t length = 0;  // Content-Length (0 when absent)
  bool keep_alive = true;
  bool expect_continue = false;
};

// Parses a head (without its final CRLF CRLF) into `req` and `framing`.
std::optional<Refusal> ParseHead(std::string_view head, const FrontOptions& options,
                                 FrontRequest* req, Framing* framing) {
  const size_t line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Refusal{400, "malformed request line"};
  }
  req->method = std::string(line.substr(0, sp1));
  req->target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  req->version = std::string(line.substr(sp2 + 1));
  if (!IsToken(req->method)) return Refusal{400, "malformed method"};
  if (req->target.empty() || req->target[0] != '/') return Refusal{400, "malformed request target"};
  for (char c : req->target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Refusal{400, "malformed request target"};
    }
  }
  if (req->version != "HTTP/1.1" && req->version != "HTTP/1.0") {
    return Refusal{400, "unsupported HTTP version"};
  }
  const bool http11 = req->version == "HTTP/1.1";
  size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) end = head.size();
    const std::string_view field = head.substr(pos, end - pos);
    pos = end + 2;
    if (field.empty()) continue;
    if (field[0] == ' ' || field[0] == '\t') return Refusal{400, "folded header lines are not accepted"};
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos || !IsToken(field.substr(0, colon))) {
      return Refusal{400, "malformed header field"};
    }
    const std::string_view value = Trim(field.substr(colon + 1));
    for (char c : value) {
      if (c == '\r' || c == '\n' || c == '\0') return Refusal{400, "malformed header value"};
    }
    if (req->headers.size() == options.max_headers) {
      return Refusal{431, "more than " + std::to_string(options.max_headers) + " header fields"};
    }
    req->headers.emplace_back(std::string(field.substr(0, colon)), std::string(value));
  }

  // Framing (RFC 9112 section 6): Transfer-Encoding, Content-Length.
  std::optional<uint64_t> length;
  bool has_te = false;
  bool connection_close = false, connection_keep_alive = false;
  for (const auto& [name, value] : req->headers) {
    if (EqualsIgnoreCase(name, "Content-Length")) {
      // One value, or a list of the same value repeated.
      std::string_view rest = value;
      while (true) {
        const size_t comma = rest.find(',');
        const std::string_view item = Trim(rest.substr(0, comma));
        uint64_t v = 0;
        const auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
        if (item.empty() || ec != std::errc() || p != item.data() + item.size()) {
          return Refusal{400, "malformed Content-Length"};
        }
        if (length && *length != v) return Refusal{400, "conflicting Content-Length values"};
        length = v;
        if (comma == std::string_view::npos) break;
        rest = rest.substr(comma + 1);
      }
    } else if (EqualsIgnoreCase(name, "Transfer-Encoding")) {
      if (has_te) return Refusal{400, "more than one Transfer-Encoding field"};
      has_te = true;
      if (!EqualsIgnoreCase(value, "chunked")) {
        return Refusal{400, "Transfer-Encoding other than chunked is not accepted"};
      }
    } else if (EqualsIgnoreCase(name, "Connection")) {
      connection_close = connection_close || EqualsIgnoreCase(value, "close");
      connection_keep_alive = connection_keep_alive || EqualsIgnoreCase(value, "keep-alive");
    } else if (EqualsIgnoreCase(name, "Expect") && EqualsIgnoreCase(value, "100-continue")) {
      framing->expect_continue = http11;
    }
  }
  // HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 closes it
  // unless asked to keep it.
  framing->keep_alive = http11 ? !connection_close : connection_keep_alive;
  if (has_te && length) return Refusal{400, "both Transfer-Encoding and Content-Length"};
  if (has_te && !http11) return Refusal{400, "Transfer-Encoding in an HTTP/1.0 request"};
  framing->chunked = has_te;
  if (length && *length > options.max_body_bytes) {
    return Refusal{413, "request body exceeds the limit of " +
                            std::to_string(options.max_body_bytes) + " bytes"};
  }
  framing->length = length.value_or(0);
  return std::nullopt;
}

}  // namespace

const std::string* FrontRequest::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (EqualsIgnoreCase(n, name)) return &v;
  }
  return nullptr;
}

FrontResponse FrontErrorResponse(int status, const std::string& message, int retry_after_s) {
  const nlohmann::json body = {
      {"error", {{"code", std::string(ErrorCodeForHttpStatus(status))}, {"message", message}}}};
  FrontResponse r;
  r.body = body.dump();
  r.head = "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) +
           "\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(r.body.size()) + "\r\n";
  if (status == 503) r.head += "Retry-After: " + std::to_string(retry_after_s) + "\r\n";
  return r;
}

struct HttpFront::Impl {
  enum class State { kHead, kBody, kWaiting, kWriting };

  struct Conn {
    int fd = -1;
    uint64_t id = 0;
    std::string client;
    State state = State::kHead;
    std::string in;                    // read, not yet consumed
    bool head_started = false;         // the current request's first byte came
    Clock::time_point deadline;        // of the current phase
    FrontRequest req;
    Framing framing;
    std::unique_ptr<ChunkedDecoder> chunks;
    std::string out;                   // being written
    size_t out_off = 0;
    bool close_after_write = false;
    bool peer_closed = false;          // the client shut down its side
    bool registered = false;           // added to epoll
    uint32_t events = 0;               // what epoll watches for
  };

  struct Task {
    uint64_t conn;
    FrontRequest req;
    bool keep_alive;
  };
  struct Done {
    uint64_t conn;
    std::string bytes;
    bool close;
  };

  Impl(FrontOptions o, FrontHandler h, FrontRefusal r)
      : options(std::move(o)), handler(std::move(h)), on_refused(std::move(r)) {}

  // ---- loop thread ----------------------------------------------------------

  void Loop() {
    std::vector<epoll_event> events(256);
    Clock::time_point drain_deadline;
    bool drain_started = false;
    while (true) {
      const int n = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), 100);
      for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        if (key == kListenKey) {
          AcceptAll();
        } else if (key == kWakeKey) {
          uint64_t count;
          (void)!::read(wake_fd, &count, sizeof(count));
          TakeDone();
        } else if (auto it = conns.find(key); it != conns.end()) {
          OnEvent(*it->second, events[i].events);
        }
      }
      ExpireDeadlines();
      if (draining.load()) {
        if (!drain_started) {
          drain_started = true;
          drain_deadline = Clock::now() + Seconds(HttpFront::kDrainSeconds);
          BeginDrain();
        }
        if (conns.empty() || Clock::now() >= drain_deadline) return;
      }
    }
  }

  // Stop: no new connections; idle ones close now, the others once
  // answered (Dispatch no longer keeps them alive).
  void BeginDrain() {
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
    ::close(listen_fd);
    listen_fd = -1;
    std::vector<uint64_t> idle;
    for (const auto& [id, c] : conns) {
      if (c->state == State::kHead && !c->head_started) idle.push_back(id);
    }
    for (uint64_t id : idle) Close(*conns.at(id));
  }

  void AcceptAll() {
    while (true) {
      sockaddr_storage addr{};
      socklen_t len = sizeof(addr);
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a transient error: the next event retries
      char host[NI_MAXHOST] = "";
      ::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0,
                    NI_NUMERICHOST);
      std::string client = host;
      if (static_cast<int>(conns.size()) >= options.max_connections ||
          per_client[client] >= options.max_connections_per_client) {
        ::close(fd);
        on_refused("", "", 503);
        if (per_client[client] == 0) per_client.erase(client);
        continue;
      }
      int yes = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
      auto conn = std::make_unique<Conn>();
      conn->fd = fd;
      conn->id = next_id++;
      conn->client = std::move(client);
      conn->deadline = Clock::now() + Seconds(options.idle_timeout_s);
      ++per_client[conn->client];
      Conn& c = *conn;
      conns.emplace(c.id, std::move(conn));
      connection_count.store(static_cast<int>(conns.size()));
      Watch(c, EPOLLIN);
    }
  }

  static Clock::duration Seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  void Watch(Conn& c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = c.id;
    if (!c.registered) {
      ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c.fd, &ev);
      c.registered = true;
    } else {
      ::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &ev);
    }
    c.events = events;
  }

  void Close(Conn& c) {
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    if (--per_client[c.client] <= 0) per_client.erase(c.client);
    conns.erase(c.id);  // destroys c
    connection_count.store(static_cast<int>(conns.size()));
  }

  void OnEvent(Conn& c, uint32_t events) {
    if (events & (EPOLLERR | EPOLLHUP)) return Close(c);
    if ((events & EPOLLIN) && (c.state == State::kHead || c.state == State::kBody)) {
      if (!ReadSome(c)) return;  // closed
    }
    Pump(c);
  }

  // Drives a connection as far as it goes without waiting: parses what was
  // read, writes answers, then parses the next (pipelined) request. A loop,
  // not recursion, however many requests are buffered. False: closed.
  bool Pump(Conn& c) {
    while (true) {
      if (c.state == State::kHead || c.state == State::kBody) {
        Advance(c);
        if (c.state == State::kHead || c.state == State::kBody) {
          // Waiting for bytes that a closed peer will never send.
          if (c.peer_closed) {
            Close(c);
            return false;
          }
          return true;
        }
      }
      if (c.state != State::kWriting) return true;  // kWaiting: a worker has it
      if (!WriteSome(c)) return false;
      if (c.state == State::kWriting) return true;  // the socket is full
    }
  }

  // Reads what is there (up to a bound per wake-up, so that one client
  // cannot hold the loop). False when the connection was closed.
  bool ReadSome(Conn& c) {
    char buf[64 << 10];
    for (int round = 0; round < 16; ++round) {
      const ssize_t got = ::recv(c.fd, buf, sizeof(buf), 0);
      if (got > 0) {
        c.in.append(buf, static_cast<size_t>(got));
        if (c.state == State::kHead && c.in.size() > options.max_header_bytes) break;
        continue;
      }
      if (got == 0) {
        // Half-closed: what was sent is still answered, then it closes.
        c.peer_closed = true;
        Watch(c, 0);
        break;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      Close(c);
      return false;
    }
    return true;
  }

  // Parses what was read: the head, then the body; dispatches a complete
  // request, or prepares a refusal (state kWriting).
  void Advance(Conn& c) {
    const auto now = Clock::now();
    if (c.state == State::kHead) {
      if (c.in.empty()) return;
      if (!c.head_started) {
        c.head_started = true;
        c.deadline = now + Seconds(options.header_timeout_s);
      }
      const size_t end = c.in.find("\r\n\r\n");
      if (end == std::string::npos || end + 4 > options.max_header_bytes) {
        if (end != std::string::npos || c.in.size() > options.max_header_bytes) {
          return Refuse(c, {431, "request head exceeds " +
                                     std::to_string(options.max_header_bytes) + " bytes"});
        }
        return;  // wait for the rest of the head
      }
      c.req = FrontRequest{};
      c.req.client = c.client;
      c.framing = Framing{};
      if (auto refusal = ParseHead(std::string_view(c.in).substr(0, end), options, &c.req,
                                   &c.framing)) {
        return Refuse(c, *refusal);
      }
      c.in.erase(0, end + 4);
      c.state = State::kBody;
      c.deadline = now + Seconds(options.body_timeout_s);
      if (c.framing.chunked) c.chunks = std::make_unique<ChunkedDecoder>(options.max_body_bytes);
      const bool has_body = c.framing.chunked || c.framing.length > 0;
      if (has_body && c.framing.expect_continue && c.in.empty()) {
        const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        (void)!::send(c.fd, kContinue, sizeof(kContinue) - 1, MSG_NOSIGNAL);
      }
    }
    if (c.state == State::kBody) {
      if (c.framing.chunked) {
        Refusal refusal;
        auto used = c.chunks->Feed(c.in, &c.req.body, &refusal);
        if (!used.ok()) return Refuse(c, refusal);
        c.in.erase(0, *used);
        if (!c.chunks->done()) return;
        c.chunks.reset();
      } else {
        const size_t take = std::min(c.framing.length - c.req.body.size(), c.in.size());
        if (c.req.body.empty()) c.req.body.reserve(c.framing.length);
        c.req.body.append(c.in, 0, take);
        c.in.erase(0, take);
        if (c.req.body.size() < c.framing.length) return;
      }
      Dispatch(c);
    }
  }

  void Dispatch(Conn& c) {
    c.state = State::kWaiting;
    Watch(c, 0);  // no reads while the answer is made: pipelined bytes wait
    const bool keep_alive = c.framing.keep_alive && !c.peer_closed && !draining.load();
    {
      std::lock_guard<std::mutex> lock(task_mu);
      if (busy + static_cast<int>(tasks.size()) >= options.max_pending) {
        on_refused(c.req.method, c.req.target, 503);
        Respond(c, FrontErrorResponse(503, "the server is busy; try again shortly",
                                      options.retry_after_s),
                !keep_alive);
        return;
      }
      tasks.push_back({c.id, std::move(c.req), keep_alive});
      pending_count.store(busy + static_cast<int>(tasks.size()));
    }
    task_cv.notify_one();
  }

  // Answers a request the front refuses and closes after the answer: the
  // rest of the connection's bytes cannot be framed.
  void Refuse(Conn& c, const Refusal& refusal) {
    on_refused(c.req.method, c.req.target, refusal.status);
    Respond(c, FrontErrorResponse(refusal.status, refusal.message, options.retry_after_s), true);
  }

  // Queues an answer made by the loop itself; Pump writes it.
  void Respond(Conn& c, const FrontResponse& r, bool close) {
    c.out = r.head;
    c.out += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
    if (c.req.method != "HEAD") c.out += r.body;
    c.out_off = 0;
    c.close_after_write = close;
    c.state = State::kWriting;
    c.deadline = Clock::now() + Seconds(options.write_timeout_s);
  }

  // Writes what the socket takes. Once the answer is out: closes, or gets
  // ready for the next request (state kHead). False: closed.
  bool WriteSome(Conn& c) {
    while (c.out_off < c.out.size()) {
      const ssize_t sent =
          ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (sent > 0) {
        c.out_off += static_cast<size_t>(sent);
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!(c.events & EPOLLOUT)) Watch(c, EPOLLOUT);
        return true;
      }
      Close(c);
      return false;
    }
    if (c.close_after_write || c.peer_closed) {
      ::shutdown(c.fd, SHUT_WR);
      Close(c);
      return false;
    }
    // Ready for the next request, which may be buffered already.
    c.out.clear();
    c.out.shrink_to_fit();
    c.state = State::kHead;
    c.head_started = false;
    c.req = FrontRequest{};
    c.deadline = Clock::now() + Seconds(options.idle_timeout_s);
    Watch(c, EPOLLIN);
    return true;
  }

  void TakeDone() {
    std::deque<Done> ready;
    {
      std::lock_guard<std::mutex> lock(done_mu);
      ready.swap(done);
    }
    for (Done& d : ready) {
      auto it = conns.find(d.conn);
      if (it == conns.end()) continue;  // the client left meanwhile
      Conn& c = *it->second;
      c.out = std::move(d.bytes);
      c.out_off = 0;
      c.close_after_write = d.close;
      c.state = State::kWriting;
      c.deadline = Clock::now() + Seconds(options.write_timeout_s);
      Pump(c);
    }
  }

  void ExpireDeadlines() {
    const auto now = Clock::now();
    if (now < next_sweep) return;
    next_sweep = now + std::chrono::milliseconds(100);
    std::vector<uint64_t> expired;
    for (const auto& [id, c] : conns) {
      if (c->state != State::kWaiting && now >= c->deadline) expired.push_back(id);
    }
    for (uint64_t id : expired) {
      Conn& c = *conns.at(id);
      if ((c.state == State::kHead && c.head_started) || c.state == State::kBody) {
        on_refused(c.req.method, c.req.target, 408);
        // Best effort: the client may not be reading.
        const FrontResponse r = FrontErrorResponse(
            408, c.state == State::kHead ? "the request head took too long"
                                         : "the request body took too long",
            options.retry_after_s);
        const std::string bytes = r.head + "Connection: close\r\n\r\n" + r.body;
        (void)!::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      Close(c);
    }
  }

  // ---- workers --------------------------------------------------------------

  void Work() {
    while (true) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(task_mu);
        task_cv.wait(lock, [&] { return !tasks.empty() || workers_stop; });
        if (tasks.empty()) return;
        task = std::move(tasks.front());
        tasks.pop_front();
        ++busy;
      }
      FrontResponse r;
      try {
        r = handler(task.req);
      } catch (const std::exception& e) {
        r = FrontErrorResponse(500, std::string("unexpected error: ") + e.what(), 0);
      }
      std::string bytes = std::move(r.head);
      bytes += task.keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
      if (task.req.method != "HEAD") bytes += r.body;
      {
        std::lock_guard<std::mutex> lock(done_mu);
        done.push_back({task.conn, std::move(bytes), !task.keep_alive});
      }
      {
        std::lock_guard<std::mutex> lock(task_mu);
        --busy;
        pending_count.store(busy + static_cast<int>(tasks.size()));
      }
      const uint64_t one = 1;
      (void)!::write(wake_fd, &one, sizeof(one));
    }
  }

  static constexpr uint64_t kListenKey = ~uint64_t{0};
  static constexpr uint64_t kWakeKey = ~uint64_t{0} - 1;

  const FrontOptions options;
  const FrontHandler handler;
  const FrontRefusal on_refused;
  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  int bound_port = -1;
  std::atomic<bool> draining{false};
  std::thread loop;
  std::vector<std::thread> workers;

  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
  std::map<std::string, int> per_client;
  uint64_t next_id = 1;
  Clock::time_point next_sweep;

  std::mutex task_mu;
  std::condition_variable task_cv;
  std::deque<Task> tasks;  // guarded by task_mu
  int busy = 0;            // guarded by task_mu
  bool workers_stop = false;  // guarded by task_mu
  std::mutex done_mu;
  std::deque<Done> done;  // guarded by done_mu
  std::atomic<int> pending_count{0};
  std::atomic<int> connection_count{0};
  std::mutex stop_mu;
  bool started = false;
};

HttpFront::HttpFront(FrontOptions options, FrontHandler handler, FrontRefusal on_refused)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler),
                                   std::move(on_refused))) {}

HttpFront::~HttpFront() { Stop(); }

Status HttpFront::Start() {
  Impl& s = *impl_;
  const std::string where = s.options.host + ":" + std::to_string(s.options.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(s.options.port);
  if (::getaddrinfo(s.options.host.c_str(), port.c_str(), &hints, &found) != 0 || !found) {
    return Status::Unavailable("cannot resolve " + where);
  }
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr && s.listen_fd < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    int yes = 1;
    // SO_REUSEADDR only: SO_REUSEPORT would let a second server silently
    // share (and split) a port already in use.
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
      s.listen_fd = fd;
    } else {
      error = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (s.listen_fd < 0) return Status::Unavailable("cannot bind " + where + ": " + error);
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(s.listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  s.bound_port = ntohs(addr.ss_family == AF_INET6
                           ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  s.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  s.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s.epoll_fd < 0 || s.wake_fd < 0) return Status::Internal("cannot create the event loop");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = Impl::kListenKey;
  ::epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, s.listen_fd, &ev);
  ev.data.u64 = Impl::kWakeKey;
  ::epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, s.wake_fd, &ev);
  for (int i = 0; i < std::max(1, s.options.workers); ++i) s.workers.emplace_back([&s] { s.Work(); });
  s.loop = std::thread([&s] { s.Loop(); });
  std::lock_guard<std::mutex> lock(s.stop_mu);
  s.started = true;
  return Status::Ok();
}

void HttpFront::Stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.stop_mu);
  if (!s.started) return;
  s.started = false;
  // The loop drains and returns; the workers then finish what they hold
  // (answers no connection waits for any more are dropped).
  s.draining.store(true);
  const uint64_t one = 1;
  (void)!::write(s.wake_fd, &one, sizeof(one));
  s.loop.join();
  {
    std::lock_guard<std::mutex> tl(s.task_mu);
    s.workers_stop = true;
  }
  s.task_cv.notify_all();
  for (auto& w : s.workers) w.join();
  s.workers.clear();
  for (auto& [id, c] : s.conns) ::close(c->fd);
  s.conns.clear();
  if (s.listen_fd >= 0) ::close(s.listen_fd);
  ::close(s.epoll_fd);
  ::close(s.wake_fd);
  s.listen_fd = s.epoll_fd = s.wake_fd = -1;
}

int HttpFront::port() const { return impl_->bound_port; }
int HttpFront::pending() const { return impl_->pending_count.load(); }
int HttpFront::connections() const { return impl_->connection_count.load(); }

}  // namespace pixseek::server
