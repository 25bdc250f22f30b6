// HttpServer: routes of the REST API (docs/openapi.json) and the web page over
// cpp-httplib, behind the bounded front (server/http_front.h). Clients talk
// only to the front; it relays each complete, checked request over a
// kept-alive loopback connection (one per front worker) to an httplib server
// bound to 127.0.0.1 that answers only requests carrying this process's
// secret. httplib stays inside this file; nothing of it crosses the public
// header.
#include "pixseek/server.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <exception>
#include <mutex>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/hash.h"
#include "pixseek/image.h"
#include "pixseek/services.h"
#include "pixseek/train_service.h"
#include "pixseek/vector_index.h"
#include "server/api_json.h"
#include "server/http_errors.h"
#include "server/http_front.h"
#include "server/metrics.h"
#include "server/request_guard.h"
#include "server/web_assets.h"

namespace pixseek {
namespace {

using httplib::Request;
using httplib::Response;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int64_t kDefaultListLimit = 100;
constexpr int64_t kMaxListLimit = 500;
constexpr size_t kMaxThumbnailBytes = 16u << 20;
constexpr char kJson[] = "application/json";

// Start of the request being handled on this worker thread (set by the
// pre-routing handler, read by the post-routing handler), and its duration
// until the answer was ready (read by the logger). httplib handles one
// request at a time per worker thread, from routing to logging.
thread_local std::optional<Clock::time_point> tls_request_start;
thread_local std::optional<double> tls_request_ms;
// Headers the front adds to what it relays (a client's own X-Pixseek-*
// headers are dropped): the process's secret, the client's address, and
// its Authorization header hex-encoded, so that httplib's parsing cannot
// change a byte of it before it is compared.
constexpr char kFrontHeader[] = "X-Pixseek-Front";
constexpr char kClientHeader[] = "X-Pixseek-Client";
constexpr char kAuthorizationHeader[] = "X-Pixseek-Authorization";

// The bytes of a text, for ToHex.
std::span<const uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string Unhex(std::string_view hex) {
  auto nibble = [](char c) {
    return c <= '9' ? c - '0' : c - 'a' + 10;
  };
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
  }
  return out;
}

// The client's address as the front saw it.
std::string ClientOf(const Request& req) {
  return req.has_header(kClientHeader) ? req.get_header_value(kClientHeader) : req.remote_addr;
}

// A front worker's kept-alive connection to the internal httplib server.
struct RelayConnection {
  int fd = -1;
  int port = -1;
  std::string buffer;  // read past the last answer (nothing, normally)
  void Reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    buffer.clear();
  }
  ~RelayConnection() { Reset(); }
};
thread_local RelayConnection tls_relay;

bool ConnectRelay(RelayConnection& r, int port) {
  r.Reset();
  r.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r.fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(r.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    r.Reset();
    return false;
  }
  int yes = 1;
  ::setsockopt(r.fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
  r.port = port;
  return true;
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(sent));
  }
  return true;
}

// Reads until `buffer` holds at least `want` bytes; false on EOF or error.
bool ReadAtLeast(RelayConnection& r, size_t want) {
  char chunk[64 << 10];
  while (r.buffer.size() < want) {
    const ssize_t got = ::recv(r.fd, chunk, sizeof(chunk), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    r.buffer.append(chunk, static_cast<size_t>(got));
  }
  return true;
}

// The request as the internal server gets it: framed by Content-Length,
// hop-by-hop and X-Pixseek-* headers dropped, the front's headers added.
std::string RelayedRequest(const server::FrontRequest& req, const std::string& secret) {
  static constexpr std::string_view kDropped[] = {
      "connection", "keep-alive", "transfer-encoding", "content-length", "expect",
      "te",         "upgrade",    "proxy-connection",  "authorization",  "trailer"};
  std::string out = req.method + " " + req.target + " HTTP/1.1\r\n";
  for (const auto& [name, value] : req.headers) {
    const std::string lower = Lower(name);
    if (lower.starts_with("x-pixseek-") ||
        std::find(std::begin(kDropped), std::end(kDropped), lower) != std::end(kDropped)) {
      continue;
    }
    out += name + ": " + value + "\r\n";
  }
  out += std::string(kFrontHeader) + ": " + secret + "\r\n";
  out += std::string(kClientHeader) + ": " + req.client + "\r\n";
  if (const std::string* auth = req.Header("Authorization")) {
    out += std::string(kAuthorizationHeader) + ": " + ToHex(Bytes(*auth)) + "\r\n";
  }
  out += "Content-Length: " + std::to_string(req.body.size()) + "\r\n\r\n";
  out += req.body;
  return out;
}

// One exchange over the worker's relay connection; nullopt when the
// connection failed before an answer began (the caller retries once on a
// fresh one: httplib closes idle kept-alive connections).
std::optional<server::FrontResponse> Exchange(RelayConnection& r, const std::string& request,
                                              bool head_request) {
  if (!SendAll(r.fd, request)) return std::nullopt;
  size_t end;
  while ((end = r.buffer.find("\r\n\r\n")) == std::string::npos) {
    const size_t before = r.buffer.size();
    if (!ReadAtLeast(r, before + 1)) return std::nullopt;
  }
  server::FrontResponse out;
  const std::string_view head(r.buffer.data(), end + 2);
  size_t length = 0;
  bool close = false;
  int status = 0;
  size_t pos = 0;
  while (pos < head.size()) {
    const size_t eol = head.find("\r\n", pos);
    const std::string_view line = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (out.head.empty()) {  // the status line
      if (line.size() >= 12) std::from_chars(line.data() + 9, line.data() + 12, status);
      out.head.append(line).append("\r\n");
      continue;
    }
    const size_t colon = line.find(':');
    const std::string name = Lower(line.substr(0, colon));
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (name == "connection") {
      close = value == "close";
      continue;
    }
    if (name == "keep-alive") continue;
    if (name == "content-length") std::from_chars(value.data(), value.data() + value.size(), length);
    out.head.append(line).append("\r\n");
  }
  r.buffer.erase(0, end + 4);
  if (head_request || status == 204 || status == 304) length = 0;
  if (!ReadAtLeast(r, length)) {
    r.Reset();
    return server::FrontErrorResponse(502, "the answer was cut off", 0);
  }
  out.body = r.buffer.substr(0, length);
  r.buffer.erase(0, length);
  if (close) r.Reset();
  return out;
}

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Replaces any previous Content-Type so headers never carry two.
void SetBody(Response& res, std::string body, const char* content_type) {
  res.headers.erase("Content-Type");
  res.set_content(std::move(body), content_type);
}

// A positive decimal id from a path segment. Non-numeric, signed, zero or
// overflowing ids are InvalidArgument (400).
Result<int64_t> ParseId(const std::string& text) {
  int64_t id = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, id);
  if (text.empty() || text[0] == '+' || text[0] == '-' || ec != std::errc() || ptr != end ||
      id <= 0) {
    return Status::InvalidArgument("image id must be a positive integer, got '" + text + "'");
  }
  return id;
}

// Integer query parameter `name` in [lo, hi]; `fallback` when absent.
Result<int64_t> IntParam(const Request& req, const char* name, int64_t fallback, int64_t lo,
                         int64_t hi) {
  if (!req.has_param(name)) return fallback;
  const std::string text = req.get_param_value(name);
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < lo || value > hi) {
    return Status::InvalidArgument(std::string(name) + " must be an integer between " +
                                   std::to_string(lo) + " and " + std::to_string(hi) +
                                   ", got '" + text + "'");
  }
  return value;
}

// Optional finite float query parameter `name`.
Result<std::optional<float>> FloatParam(const Request& req, const char* name) {
  if (!req.has_param(name)) return std::optional<float>();
  const std::string text = req.get_param_value(name);
  float value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(value)) {
    return Status::InvalidArgument(std::string(name) + " must be a number, got '" + text + "'");
  }
  return std::optional<float>(value);
}

// A search's filter: label, added_after, added_before, format, min_width,
// min_height (QueryService checks what the parsers leave).
Result<RecordFilter> RecordFilterFrom(const Request& req) {
  RecordFilter filter;
  if (req.has_param("label")) filter.label = req.get_param_value("label");
  for (auto [name, bound] : {std::pair{"added_after", &filter.added_after},
                             std::pair{"added_before", &filter.added_before}}) {
    if (!req.has_param(name)) continue;
    auto time = ParseFilterTime(req.get_param_value(name));
    if (!time.ok()) return Status::InvalidArgument(std::string(name) + ": " + time.status().message());
    *bound = *time;
  }
  if (req.has_param("format")) {
    PIXSEEK_ASSIGN_OR_RETURN(filter.format, ParseFilterFormat(req.get_param_value("format")));
  }
  constexpr int64_t kMaxSide = 1 << 20;
  PIXSEEK_ASSIGN_OR_RETURN(int64_t min_width, IntParam(req, "min_width", 0, 0, kMaxSide));
  PIXSEEK_ASSIGN_OR_RETURN(int64_t min_height, IntParam(req, "min_height", 0, 0, kMaxSide));
  filter.min_width = static_cast<int>(min_width);
  filter.min_height = static_cast<int>(min_height);
  return filter;
}

// `rerank`: the server's default re-ranking ([search] in the config file).
Result<QueryParams> QueryParamsFrom(const Request& req, const RerankOptions& rerank) {
  QueryParams params;
  params.rerank = rerank;
  if (req.has_param("rerank")) {
    // "dba+qe" unescaped in a URL arrives as "dba qe" ('+' is a space in a
    // query string).
    std::string method = req.get_param_value("rerank");
    std::replace(method.begin(), method.end(), ' ', '+');
    PIXSEEK_ASSIGN_OR_RETURN(params.rerank.method, ParseRerankMethod(method));
  }
  PIXSEEK_ASSIGN_OR_RETURN(int64_t top_k,
                           IntParam(req, "top_k", static_cast<int64_t>(params.top_k), 1,
                                    static_cast<int64_t>(kMaxTopK)));
  params.top_k = static_cast<size_t>(top_k);
  PIXSEEK_ASSIGN_OR_RETURN(int64_t search_list,
                           IntParam(req, "search_list", 0, 0, kMaxSearchList));
  params.search.search_list = static_cast<int>(search_list);
  PIXSEEK_ASSIGN_OR_RETURN(std::optional<float> min_score, FloatParam(req, "min_score"));
  if (min_score) params.min_score = *min_score;
  // "auto" or a label; QueryService checks it.
  if (req.has_param("category")) params.category = req.get_param_value("category");
  PIXSEEK_ASSIGN_OR_RETURN(params.filter, RecordFilterFrom(req));
  return params;
}

// The image id of a JSON search body {"image_id": N}.
Result<int64_t> ImageIdFromJson(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("request body is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("request body must be a JSON object");
  auto it = j.find("image_id");
  if (it == j.end()) return Status::InvalidArgument("JSON body needs \"image_id\"");
  if (it->is_number_unsigned()) {
    const uint64_t id = it->get<uint64_t>();
    if (id > 0 && id <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(id);
  } else if (it->is_number_integer() && it->get<int64_t>() > 0) {
    return it->get<int64_t>();
  }
  return Status::InvalidArgument("\"image_id\" must be a positive integer");
}

// Printable ASCII copy of a request path for the log (no line injection).
std::string LoggablePath(const std::string& path) {
  std::string out;
  out.reserve(std::min<size_t>(path.size(), 256));
  for (char c : path.substr(0, 256)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  return out;
}

// Several nodes may serve one database whose vectors are on a server
// (docs/deployment.md). What a node keeps to itself is then wrong for the
// others: an in-process cache answers stale results after another node's
// upload or delete (until this node writes itself), and a SQLite store in the
// database directory cannot be shared by several machines. Says so at start;
// a single node may ignore it.
void WarnAboutNodeLocalParts(Database& db) {
  auto kind = FindVectorIndexKind(db.index().kind());
  if (!kind.ok() || std::string_view((*kind)->files) != "") return;  // vectors in the directory
  const DatabaseOptions& o = db.options();
  if (!o.cache_url.starts_with("redis")) {
    std::fprintf(stderr,
                 "pixseek: warning: the vectors are on a %s server but the cache is in-process: "
                 "if several nodes serve this database, each may answer stale results after "
                 "another node's writes; set cache_url to one shared redis:// URL\n",
                 (*kind)->name);
  }
  if (o.metadata_url.empty() || o.metadata_url.starts_with("sqlite")) {
    std::fprintf(stderr,
                 "pixseek: warning: the vectors are on a %s server but the metadata is SQLite: "
                 "only one node may serve this database; for several, set metadata_url to one "
                 "shared mysql:// URL\n",
                 (*kind)->name);
  }
}

}  // namespace

// Owns the httplib server and its listening thread; borrows the database.
struct HttpServer::Impl {
  Impl(Database& database, ServerOptions opts)
      : db(database),
        options(std::move(opts)),
        paths(server::PathViewFor(options, database.dir())),
        guard(options),
        builds(database, {options.import_roots.begin(), options.import_roots.end()}),
        learning(database) {}

  // Sets up the server: transport (limits, queue, sockets), the error
  // answers httplib produces itself, metrics and the request log, the API
  // routes and the web app's files.
  void InstallRoutes();
  void ConfigureTransport();
  void InstallErrorHandlers();
  void InstallObservers();
  void InstallApiRoutes();
  void InstallWebRoutes();

  // Route handlers. Each answers JSON (or the file/page it serves) and turns
  // every error into an error body via ReplyError.
  void Search(const Request& req, Response& res);
  void Upload(const Request& req, Response& res);
  void List(const Request& req, Response& res);
  void GetImage(const Request& req, Response& res);
  void GetThumbnail(const Request& req, Response& res);
  void GetFile(const Request& req, Response& res);
  void DeleteImage(const Request& req, Response& res);
  void Stats(const Request& req, Response& res);
  void Duplicates(const Request& req, Response& res);
  void StartBuild(const Request& req, Response& res);
  void GetBuild(const Request& req, Response& res);
  void ListBuilds(const Request& req, Response& res);
  void StartTrain(const Request& req, Response& res);
  void StartReindex(const Request& req, Response& res);
  void StartEvaluation(const Request& req, Response& res);
  void GetLearningJob(const Request& req, Response& res);

  // Answers `body` with `http_status`; a 503 also gets this server's
  // Retry-After.
  void ReplyJson(Response& res, int http_status, const json& body) const;
  // Answers the error body of `status` with its HTTP status.
  void ReplyError(Response& res, const Status& status) const;
  // Replies with a file's bytes (read by Database::ReadImageFile or
  // ReadThumbnail, whose errors never name a path), or its error.
  void ReplyFile(Response& res, Result<std::vector<uint8_t>> bytes,
                 std::string_view content_type);

  // Prometheus text for GET /metrics.
  std::string RenderMetrics();
  // Overload, rate limit, then the API key; false after answering a refusal.
  // Called by every handler rather than before routing, so that a refused
  // request's body has been read and cannot be mistaken for the next request
  // on a kept-alive connection.
  bool Admit(const Request& req, Response& res);

  Database& db;
  const ServerOptions options;
  const server::PathView paths;  // how answers show records' paths (hide_paths)
  server::RequestGuard guard;
  server::Metrics metrics;
  BuildJobs builds;  // background builds started over HTTP
  LearningJobs learning;  // trainings and reindexes started over HTTP
  // Answers a request the front read, through the internal server.
  server::FrontResponse Relay(const server::FrontRequest& req);

  httplib::Server svr;  // the internal server, on 127.0.0.1
  int internal_port = -1;
  // Proves a request came through the front (random per process).
  std::string secret;
  std::unique_ptr<server::HttpFront> front;
  int port = -1;

  std::mutex stop_mu;  // serialises Stop (and the destructor) with each other
  std::thread thread;  // runs listen_after_bind; guarded by stop_mu after Start

  std::mutex mu;
  std::condition_variable cv;
  bool started = false;  // guarded by mu
  bool finished = false;  // guarded by mu: listen_after_bind returned
};

void HttpServer::Impl::ReplyJson(Response& res, int http_status, const json& body) const {
  res.status = http_status;
  // A dependency that is down (MariaDB), a busy server or a shutdown: tell
  // clients when to come back.
  if (http_status == 503) res.set_header("Retry-After", std::to_string(options.retry_after_s));
  SetBody(res, server::DumpJson(body), kJson);
}

void HttpServer::Impl::ReplyError(Response& res, const Status& status) const {
  ReplyJson(res, HttpStatusFor(status.ok() ? StatusCode::kInternal : status.code()),
            server::ErrorJson(status));
}

void HttpServer::Impl::InstallRoutes() {
  ConfigureTransport();
  InstallErrorHandlers();
  InstallObservers();
  InstallApiRoutes();
  InstallWebRoutes();
}

void HttpServer::Impl::ConfigureTransport() {
  svr.set_payload_max_length(options.max_request_bytes);
  // httplib writes a response's headers and body in two send()s. With Nagle's
  // algorithm on, the body waits for the client to ACK the headers, and
  // clients delay that ACK by up to 40 ms: every small answer on a kept-alive
  // connection took ~42 ms (bench/load/load.sh, one connection, cached).
  // The front sets the same on clients' sockets.
  svr.set_tcp_nodelay(true);
  // One kept-alive relay connection per front worker, each served by one of
  // httplib's threads for as long as it lives (admission is the front's).
  const size_t workers = static_cast<size_t>(std::max(1, options.threads));
  svr.new_task_queue = [workers] { return new httplib::ThreadPool(workers + 2); };
  svr.set_keep_alive_max_count(std::numeric_limits<int>::max());
  svr.set_keep_alive_timeout(3600);
  svr.set_read_timeout(3600);
  svr.set_write_timeout(3600);

  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT.
  svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });

  // Only what came through the front is served: another local process that
  // finds the internal port gets 403.
  svr.set_pre_routing_handler([this](const Request& req, Response& res) {
    if (req.get_header_value(kFrontHeader) != secret) {
      ReplyError(res, Status::PermissionDenied("connect to the server's public address"));
      return httplib::Server::HandlerResponse::Handled;
    }
    tls_request_start = Clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
}

server::FrontResponse HttpServer::Impl::Relay(const server::FrontRequest& req) {
  const std::string request = RelayedRequest(req, secret);
  const bool head = req.method == "HEAD";
  RelayConnection& r = tls_relay;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if ((r.fd < 0 || r.port != internal_port) && !ConnectRelay(r, internal_port)) break;
    if (auto answer = Exchange(r, request, head)) return *std::move(answer);
    r.Reset();
  }
  return server::FrontErrorResponse(503, "the server is shutting down", options.retry_after_s);
}

void HttpServer::Impl::InstallErrorHandlers() {
  // Called for every answer >= 400. Handlers write their own JSON errors;
  // this fills in the ones httplib produced itself (unknown route, body over
  // the limit, malformed request or multipart body).
  const size_t max_bytes = options.max_request_bytes;
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [max_bytes](const Request& req, Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = server::MessageForHttpStatus(res.status);
    if (res.status == 404) {
      message = "no route for " + req.method + " " + req.path;
    } else if (res.status == 413) {
      message = "request body exceeds the limit of " + std::to_string(max_bytes) + " bytes";
    }
    json body = {{"error",
                  {{"code", std::string(server::ErrorCodeForHttpStatus(res.status))},
                   {"message", message}}}};
    SetBody(res, server::DumpJson(body), kJson);
    return httplib::Server::HandlerResponse::Handled;
  }));

  svr.set_exception_handler([this](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    ReplyError(res, Status::Internal("unexpected error: " + what));
  });
}

void HttpServer::Impl::InstallObservers() {
  // Metrics are counted once the answer is ready and before it is written,
  // so that a client that has its answer finds it counted in /metrics (the
  // logger runs only after the write). The log line follows the write (never
  // the Authorization header or the query string, which may carry secrets).
  auto observe = [this](const Request& req, const Response& res) {
    if (!tls_request_start) return;
    const double ms =
        std::chrono::duration<double, std::milli>(Clock::now() - *tls_request_start).count();
    tls_request_start.reset();
    tls_request_ms = ms;
    metrics.Observe(req.method, req.path, res.status, ms / 1000.0);
  };
  svr.set_post_routing_handler([observe](const Request& req, Response& res) { observe(req, res); });
  const bool log = options.log_requests;
  const bool json_log = options.log_format == "json";
  svr.set_logger([observe, log, json_log](const Request& req, const Response& res) {
    observe(req, res);  // counts an answer the post-routing handler did not see
    const double ms = tls_request_ms.value_or(-1);
    tls_request_ms.reset();
    if (!log) return;
    if (json_log) {
      json line = {{"ts", static_cast<int64_t>(std::time(nullptr))},
                   {"method", LoggablePath(req.method)},
                   {"path", LoggablePath(req.path)},
                   {"status", res.status},
                   {"ms", std::round(ms * 10) / 10},
                   {"client", ClientOf(req)}};
      std::fprintf(stderr, "%s\n", line.dump().c_str());
    } else {
      std::fprintf(stderr, "%s %s %d %.1f ms\n", LoggablePath(req.method).c_str(),
                   LoggablePath(req.path).c_str(), res.status, ms);
    }
  });
}

void HttpServer::Impl::InstallApiRoutes() {
  auto bind = [this](void (Impl::*handler)(const Request&, Response&)) {
    return [this, handler](const Request& req, Response& res) {
      if (Admit(req, res)) (this->*handler)(req, res);
    };
  };
  svr.Post("/api/v1/search", bind(&Impl::Search));
  svr.Post("/api/v1/images", bind(&Impl::Upload));
  svr.Get("/api/v1/images", bind(&Impl::List));
  svr.Get(R"(/api/v1/images/([^/]+))", bind(&Impl::GetImage));
  svr.Get(R"(/api/v1/images/([^/]+)/thumbnail)", bind(&Impl::GetThumbnail));
  svr.Get(R"(/api/v1/images/([^/]+)/file)", bind(&Impl::GetFile));
  svr.Delete(R"(/api/v1/images/([^/]+))", bind(&Impl::DeleteImage));
  svr.Get("/api/v1/stats", bind(&Impl::Stats));
  svr.Get("/api/v1/duplicates", bind(&Impl::Duplicates));
  svr.Post("/api/v1/builds", bind(&Impl::StartBuild));
  svr.Get("/api/v1/builds", bind(&Impl::ListBuilds));
  svr.Get(R"(/api/v1/builds/([^/]+))", bind(&Impl::GetBuild));
  svr.Post("/api/v1/train", bind(&Impl::StartTrain));
  svr.Get(R"(/api/v1/train/([^/]+))", bind(&Impl::GetLearningJob));
  svr.Post("/api/v1/reindex", bind(&Impl::StartReindex));
  svr.Get(R"(/api/v1/reindex/([^/]+))", bind(&Impl::GetLearningJob));
  svr.Post("/api/v1/evaluations", bind(&Impl::StartEvaluation));
  svr.Get(R"(/api/v1/evaluations/([^/]+))", bind(&Impl::GetLearningJob));
  svr.Get("/metrics", [this](const Request& req, Response& res) {
    if (!Admit(req, res)) return;
    res.status = 200;
    SetBody(res, RenderMetrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Get("/healthz", [this](const Request&, Response& res) {
    ReplyJson(res, 200, {{"status", "ok"}});
  });
  svr.Get("/api/v1/openapi.json", [this](const Request&, Response& res) {
    const std::string_view doc = EmbeddedFile("openapi.json");
    if (doc.empty()) return ReplyError(res, Status::Internal("openapi.json is not embedded"));
    res.status = 200;
    SetBody(res, std::string(doc), kJson);
  });
}

void HttpServer::Impl::InstallWebRoutes() {
  svr.Get("/", [this](const Request& req, Response& res) {
    if (!Admit(req, res)) return;
    const std::string_view page = EmbeddedFile("index.html");
    if (page.empty()) return ReplyError(res, Status::Internal("index.html is not embedded"));
    res.status = 200;
    SetBody(res, std::string(page), "text/html; charset=utf-8");
  });
  // The web app's other files (app.js, sw.js, manifest, icons), by name; only
  // embedded files exist here, so nothing from the request reaches the disk.
  svr.Get(R"(/([A-Za-z0-9_-]+\.([a-z0-9]+)))", [this](const Request& req, Response& res) {
    if (!Admit(req, res)) return;
    const std::string_view data = EmbeddedFile(req.matches[1].str());
    if (data.empty()) return ReplyError(res, Status::NotFound("no file " + req.path));
    static const std::pair<std::string_view, const char*> kTypes[] = {
        {"html", "text/html; charset=utf-8"}, {"js", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},   {"json", kJson},
        {"webmanifest", "application/manifest+json"}, {"svg", "image/svg+xml"},
        {"png", "image/png"}};
    const std::string ext = req.matches[2].str();
    const char* type = "application/octet-stream";
    for (const auto& [known, mime] : kTypes) {
      if (ext == known) type = mime;
    }
    res.status = 200;
    // Revalidate each time: the app's files change with the binary.
    res.set_header("Cache-Control", "no-cache");
    SetBody(res, std::string(data), type);
  });
}

void HttpServer::Impl::Search(const Request& req, Response& res) {
  auto params = QueryParamsFrom(req, options.rerank);
  if (!params.ok()) return ReplyError(res, params.status());
  QueryService query(db);
  Result<QueryResponse> response = Status::Internal("no search ran");
  if (req.is_multipart_form_data()) {
    auto file = req.files.find("image");
    if (file == req.files.end()) {
      return ReplyError(res, Status::InvalidArgument(
                                 "multipart body needs a file field named \"image\""));
    }
    response = query.SearchImage(AsBytes(file->second.content), *params);
  } else {
    if (req.body.empty()) {
      return ReplyError(res, Status::InvalidArgument(
                                 "send multipart/form-data with an \"image\" file field, or a "
                                 "JSON body {\"image_id\": N}"));
    }
    auto id = ImageIdFromJson(req.body);
    if (!id.ok()) return ReplyError(res, id.status());
    response = query.SearchById(*id, *params);
  }
  if (!response.ok()) return ReplyError(res, response.status());
  ReplyJson(res, 200, server::SearchResponseJson(*response, paths));
}

// All-or-report: files are stored in order; the first failure stops the
// request and is answered with its own status, its error, and the ids of the
// files stored before it (which stay stored).
void HttpServer::Impl::Upload(const Request& req, Response& res) {
  if (!req.is_multipart_form_data()) {
    return ReplyError(res, Status::InvalidArgument(
                               "upload with multipart/form-data, one or more \"image\" fields"));
  }
  auto [begin, end] = req.files.equal_range("image");
  if (begin == end) {
    return ReplyError(res,
                      Status::InvalidArgument("multipart body needs a file field named \"image\""));
  }
  UploadService upload(db);
  json ids = json::array();
  size_t index = 0;
  for (auto it = begin; it != end; ++it, ++index) {
    const httplib::MultipartFormData& file = it->second;
    auto id = upload.AddBytes(AsBytes(file.content), file.filename);
    if (!id.ok()) {
      const std::string which =
          file.filename.empty() ? "file #" + std::to_string(index + 1) : file.filename;
      json body = server::ErrorJson(id.status().WithContext(which));
      body["ids"] = std::move(ids);
      body["failed_index"] = index;
      return ReplyJson(res, HttpStatusFor(id.status().code()), body);
    }
    ids.push_back(*id);
  }
  ReplyJson(res, 201, {{"ids", std::move(ids)}});
}

void HttpServer::Impl::List(const Request& req, Response& res) {
  auto after_id = IntParam(req, "after_id", 0, 0, INT64_MAX);
  if (!after_id.ok()) return ReplyError(res, after_id.status());
  auto limit = IntParam(req, "limit", kDefaultListLimit, 1, kMaxListLimit);
  if (!limit.ok()) return ReplyError(res, limit.status());
  ListOptions options;
  options.after_id = *after_id;
  options.limit = static_cast<size_t>(*limit);
  if (req.has_param("label")) options.label = req.get_param_value("label");
  auto records = db.store().List(options);
  if (!records.ok()) return ReplyError(res, records.status());
  json images = json::array();
  for (const ImageRecord& record : *records) images.push_back(server::RecordJson(record, paths));
  // A full page may have a next one; a short page is the last.
  json next = nullptr;
  if (!records->empty() && records->size() == options.limit) next = records->back().id;
  ReplyJson(res, 200, {{"images", std::move(images)}, {"next_after_id", std::move(next)}});
}

void HttpServer::Impl::GetImage(const Request& req, Response& res) {
  auto id = ParseId(req.matches[1]);
  if (!id.ok()) return ReplyError(res, id.status());
  auto record = db.store().Get(*id);
  if (!record.ok()) return ReplyError(res, record.status());
  ReplyJson(res, 200, server::RecordJson(*record, paths));
}

void HttpServer::Impl::ReplyFile(Response& res, Result<std::vector<uint8_t>> bytes,
                                 std::string_view content_type) {
  if (!bytes.ok()) {
    // The record exists, so a missing file is damage on the server's side;
    // still reported as NotFound (404) so clients can tell "no bytes", and a
    // file changed since it was indexed as FailedPrecondition (409).
    return ReplyError(res, bytes.status());
  }
  res.status = 200;
  res.set_header("X-Content-Type-Options", "nosniff");
  res.headers.erase("Content-Type");
  res.set_content(reinterpret_cast<const char*>(bytes->data()), bytes->size(),
                  std::string(content_type));
}

void HttpServer::Impl::GetThumbnail(const Request& req, Response& res) {
  auto id = ParseId(req.matches[1]);
  if (!id.ok()) return ReplyError(res, id.status());
  auto record = db.store().Get(*id);
  if (!record.ok()) return ReplyError(res, record.status());
  ReplyFile(res, db.ReadThumbnail(*id, kMaxThumbnailBytes), "image/jpeg");
  // Ids are never reused, so a thumbnail never changes.
  if (res.status == 200) res.set_header("Cache-Control", "public, max-age=86400, immutable");
}

// Serves only the path recorded in the metadata (nothing from the request
// names a file), and only while it is the regular file that was indexed,
// reached without a symbolic link: a file swapped for a link after indexing
// must not serve whatever the link leads to.
void HttpServer::Impl::GetFile(const Request& req, Response& res) {
  auto id = ParseId(req.matches[1]);
  if (!id.ok()) return ReplyError(res, id.status());
  auto record = db.store().Get(*id);
  if (!record.ok()) return ReplyError(res, record.status());
  ReplyFile(res, db.ReadImageFile(*record), server::ContentTypeForFormat(record->format));
}

void HttpServer::Impl::DeleteImage(const Request& req, Response& res) {
  auto id = ParseId(req.matches[1]);
  if (!id.ok()) return ReplyError(res, id.status());
  Status removed = UploadService(db).Remove(*id);
  if (!removed.ok()) return ReplyError(res, removed);
  res.status = 204;
}

void HttpServer::Impl::Stats(const Request&, Response& res) {
  auto stats = db.Stats();
  if (!stats.ok()) return ReplyError(res, stats.status());
  ReplyJson(res, 200, server::StatsJson(*stats));
}

// The groups of near-identical images, at most kMaxDuplicateGroups of them
// (largest first; "truncated" says when more were found). An exact scan of
// all pairs: seconds on a large database, so a read like any other GET.
void HttpServer::Impl::Duplicates(const Request& req, Response& res) {
  constexpr size_t kMaxDuplicateGroups = 1000;
  auto threshold = FloatParam(req, "threshold");
  if (!threshold.ok()) return ReplyError(res, threshold.status());
  DuplicateOptions options;
  if (threshold->has_value()) options.threshold = **threshold;
  options.max_groups = kMaxDuplicateGroups;
  auto report = FindDuplicates(db, options);
  if (!report.ok()) return ReplyError(res, report.status());
  res.status = 200;
  SetBody(res, DuplicateReportJson(*report), kJson);
}

bool HttpServer::Impl::Admit(const Request& req, Response& res) {
  if (double wait = guard.TakeToken(ClientOf(req)); wait > 0) {
    metrics.Reject("rate_limit");
    const int seconds = static_cast<int>(std::ceil(wait));
    res.set_header("Retry-After", std::to_string(seconds));
    ReplyJson(res, 429,
              {{"error",
                {{"code", std::string(server::ErrorCodeForHttpStatus(429))},
                 {"message", "too many requests from this client; retry after " +
                                 std::to_string(seconds) + " s"}}}});
    return false;
  }
  const server::Access access = server::AccessFor(req.method, req.path);
  // The header exactly as the client sent it (the front hex-encodes it).
  const std::string authorization = Unhex(req.get_header_value(kAuthorizationHeader));
  if (Status s = guard.CheckKey(access, authorization); !s.ok()) {
    metrics.Reject("auth");
    if (s.code() == StatusCode::kUnauthenticated) res.set_header("WWW-Authenticate", "Bearer");
    ReplyError(res, s);
    return false;
  }
  return true;
}

std::string HttpServer::Impl::RenderMetrics() {
  std::vector<server::Sample> samples;
  const CacheStats cache = db.cache().stats();
  const double lookups = static_cast<double>(cache.hits + cache.misses);
  samples.push_back({"pixseek_cache_hits_total", "Query cache hits.", "counter",
                     static_cast<double>(cache.hits)});
  samples.push_back({"pixseek_cache_misses_total", "Query cache misses.", "counter",
                     static_cast<double>(cache.misses)});
  samples.push_back({"pixseek_cache_hit_ratio", "Hits over lookups since start.", "gauge",
                     lookups > 0 ? static_cast<double>(cache.hits) / lookups : 0});
  samples.push_back({"pixseek_queue_depth", "Connections waiting or being served.", "gauge",
                     static_cast<double>(front ? front->pending() : 0)});
  const EmbedBatcherStats batching = db.batcher_stats();
  samples.push_back({"pixseek_embed_batches_total",
                     "Forward passes run for searches and uploads (dynamic batching).", "counter",
                     static_cast<double>(batching.batches)});
  samples.push_back({"pixseek_embed_batched_images_total",
                     "Images those forward passes embedded; over batches, the mean batch size.",
                     "counter", static_cast<double>(batching.images)});
  samples.push_back({"pixseek_embed_batch_size_max", "Largest batch so far.", "gauge",
                     static_cast<double>(batching.max_seen)});
  samples.push_back({"pixseek_embed_queue_depth",
                     "Images waiting for, or in, a forward pass.", "gauge",
                     static_cast<double>(batching.waiting)});
  // Every node's: the jobs are in the shared store. Left out while it is down.
  if (auto jobs = builds.List(); jobs.ok()) {
    double builds_pending = 0;
    for (const auto& job : *jobs) {
      builds_pending += job.state == "queued" || job.state == "running";
    }
    samples.push_back({"pixseek_build_jobs_pending", "Builds queued or running.", "gauge",
                       builds_pending});
  }
  // The index's figures need the metadata store; while it is down they are
  // left out rather than failing the scrape.
  if (auto stats = db.Stats(); stats.ok()) {
    samples.push_back({"pixseek_images", "Searchable images.", "gauge",
                       static_cast<double>(stats->count)});
    // The index's numeric figures that have a metric.
    static constexpr std::array<std::array<const char*, 3>, 3> kIndexMetrics = {{
        {"ram_bytes", "pixseek_index_ram_bytes", "RAM held by the index."},
        {"disk_bytes", "pixseek_index_disk_bytes", "Disk used by the index."},
        {"delta_vectors", "pixseek_index_delta_vectors", "Vectors not yet compacted."},
    }};
    for (const IndexStat& stat : stats->index) {
      const auto* value = std::get_if<int64_t>(&stat.value);
      for (const auto& [name, metric, help] : kIndexMetrics) {
        if (value != nullptr && stat.name == name) {
          samples.push_back({metric, help, "gauge", static_cast<double>(*value)});
        }
      }
    }
  }
  return metrics.Render(samples);
}

void HttpServer::Impl::StartBuild(const Request& req, Response& res) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("path") || !body["path"].is_string()) {
    return ReplyError(res, Status::InvalidArgument("send a JSON body {\"path\": \"DIR\"}"));
  }
  auto id = builds.Start(body["path"].get<std::string>());
  if (!id.ok()) return ReplyError(res, id.status());
  auto job = builds.Get(*id);
  if (!job.ok()) return ReplyError(res, job.status());
  ReplyJson(res, 202, server::BuildJobJson(*job, paths));
}

void HttpServer::Impl::GetBuild(const Request& req, Response& res) {
  auto id = ParseId(req.matches[1]);
  if (!id.ok()) return ReplyError(res, id.status());
  auto job = builds.Get(*id);
  if (!job.ok()) return ReplyError(res, job.status());
  ReplyJson(res, 200, server::BuildJobJson(*job, paths));
}

void HttpServer::Impl::ListBuilds(const Request&, Response& res) {
  auto jobs = builds.List();
  if (!jobs.ok()) return ReplyError(res, jobs.status());
  json all = json::array();
  for (const auto& job : *jobs) all.push_back(server::BuildJobJson(job, paths));
  ReplyJson(res, 200, {{"builds", std::move(all)}});
}

void HttpServer::Impl::StartTrain(const Request& req, Response& res) {
  auto request = server::TrainRequestFromJson(json::parse(req.body, nullptr, false));
  if (!request.ok()) return ReplyError(res, request.status());
  auto id = learning.StartTrain(std::move(*request));
  if (!id.ok()) return ReplyError(res, id.status());
  ReplyJson(res, 202, server::LearningJobJson(*learning.Get(*id)));
}

void HttpServer::Impl::StartReindex(const Request& req, Response& res) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
    return ReplyError(res, Status::InvalidArgument("send a JSON body {\"model\": \"NAME\"}"));
  }
  auto id = learning.StartReindex(body["model"].get<std::string>());
  if (!id.ok()) return ReplyError(res, id.status());
  ReplyJson(res, 202, server::LearningJobJson(*learning.Get(*id)));
}

// POST /api/v1/evaluations {"path": DIR, "split": "none"}: DIR only names
// which stored images are labelled (their paths' prefix); nothing is read
// from it.
void HttpServer::Impl::StartEvaluation(const Request& req, Response& res) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("path") || !body["path"].is_string()) {
    return ReplyError(res, Status::InvalidArgument(
                               "send a JSON body {\"path\": \"DIR\", \"split\": \"none\"}"));
  }
  EvalJobRequest request;
  request.root = body["path"].get<std::string>();
  if (body.contains("split")) {
    if (!body["split"].is_string()) {
      return ReplyError(res, Status::InvalidArgument("split must be a string"));
    }
    auto split = ParseDataSplit(body["split"].get<std::string>());
    if (!split.ok()) return ReplyError(res, split.status());
    request.split = *split;
  }
  auto id = learning.StartEvaluate(std::move(request));
  if (!id.ok()) return ReplyError(res, id.status());
  ReplyJson(res, 202, server::LearningJobJson(*learning.Get(*id)));
}

// GET /api/v1/train/{id}, /api/v1/reindex/{id} and /api/v1/evaluations/{id}:
// one id space; a job is found only under its own kind.
void HttpServer::Impl::GetLearningJob(const Request& req, Response& res) {
  auto id = ParseId(req.matches[1]);
  if (!id.ok()) return ReplyError(res, id.status());
  auto job = learning.Get(*id);
  const std::string kind = req.path.starts_with("/api/v1/train/")         ? "train"
                           : req.path.starts_with("/api/v1/evaluations/") ? "evaluate"
                                                                          : "reindex";
  if (!job.ok() || job->kind != kind) {
    return ReplyError(res, Status::NotFound("no " + kind + " job " + std::to_string(*id)));
  }
  ReplyJson(res, 200, server::LearningJobJson(*job));
}

HttpServer::HttpServer(Database& db, ServerOptions options)
    : impl_(std::make_unique<Impl>(db, std::move(options))) {
  impl_->InstallRoutes();
}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.started) return Status::FailedPrecondition("the server was already started");
  }
  const std::string where = s.options.host + ":" + std::to_string(s.options.port);
  if (s.options.port < 0 || s.options.port > 65535) {
    return Status::InvalidArgument("port out of range: " + std::to_string(s.options.port));
  }
  WarnAboutNodeLocalParts(s.db);
  // The internal server first, on a free loopback port.
  std::random_device random;
  uint32_t words[4];
  for (uint32_t& w : words) w = random();
  s.secret = ToHex({reinterpret_cast<const uint8_t*>(words), sizeof(words)});
  try {
    s.internal_port = s.svr.bind_to_any_port("127.0.0.1");
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("cannot bind a loopback port: ") + e.what());
  }
  if (s.internal_port <= 0) return Status::Unavailable("cannot bind a loopback port");
  s.thread = std::thread([&s] {
    try {
      s.svr.listen_after_bind();
    } catch (...) {
      // listen_after_bind does not throw in practice; never let it kill us.
    }
    {
      std::lock_guard<std::mutex> lock(s.mu);
      s.finished = true;
    }
    s.cv.notify_all();
  });
  // httplib's stop() only acts once the accept loop runs, so wait for it
  // before going on; Stop() right after Start() must not hang.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!s.svr.is_running() && Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.finished) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto stop_internal = [&s] {
    if (s.svr.is_running()) s.svr.stop();
    if (s.thread.joinable()) s.thread.join();
  };
  if (!s.svr.is_running()) {
    stop_internal();
    return Status::Unavailable("cannot listen on a loopback port");
  }

  server::FrontOptions front;
  front.host = s.options.host;
  front.port = s.options.port;
  front.workers = std::max(1, s.options.threads);
  front.max_pending = s.options.max_concurrent_requests > 0
                          ? s.options.max_concurrent_requests
                          : 4 * front.workers;
  front.max_body_bytes = s.options.max_request_bytes;
  front.retry_after_s = s.options.retry_after_s;
  front.header_timeout_s = s.options.header_timeout_s;
  front.body_timeout_s = s.options.body_timeout_s;
  front.idle_timeout_s = s.options.idle_timeout_s;
  front.max_connections = s.options.max_connections;
  front.max_connections_per_client = s.options.max_connections_per_client;
  s.front = std::make_unique<server::HttpFront>(
      front, [&s](const server::FrontRequest& req) { return s.Relay(req); },
      [&s](const std::string& method, const std::string& target, int status) {
        if (status == 503) s.metrics.Reject("overload");
        s.metrics.Observe(method, target.substr(0, target.find('?')), status, 0);
      });
  if (Status started = s.front->Start(); !started.ok()) {
    s.front.reset();
    stop_internal();
    return Status::Unavailable(started.message());
  }
  s.port = s.front->port();
  std::lock_guard<std::mutex> lock(s.mu);
  s.started = true;
  s.finished = false;
  return Status::Ok();
}

void HttpServer::Wait() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mu);
  s.cv.wait(lock, [&s] { return !s.started || s.finished; });
}

void HttpServer::Stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> stop_lock(s.stop_mu);
  if (s.front) s.front->Stop();
  if (s.svr.is_running()) s.svr.stop();
  if (s.thread.joinable()) s.thread.join();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.started) s.finished = true;
  s.cv.notify_all();
}

int HttpServer::port() const { return impl_->port; }

}  // namespace pixseek
