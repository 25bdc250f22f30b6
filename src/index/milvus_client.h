// A small client of Milvus's RESTful API v2 (POST /v2/vectordb/<group>/<verb>
// with a JSON body; the answer is the envelope {"code": 0, "data": ...} or
// {"code": <non-zero>, "message": "..."}), for the "milvus" vector index
// (milvus_index.cc). Written from Milvus's own handler source
// (internal/distributed/proxy/httpserver/handler_v2.go, request_v2.go) and
// its error codes (pkg/util/merr/errors.go).
//
// cpp-httplib and nlohmann-json stay inside the index module; no exception
// leaves this client.
#ifndef PIXSEEK_INDEX_MILVUS_CLIENT_H_
#define PIXSEEK_INDEX_MILVUS_CLIENT_H_

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "pixseek/status.h"

namespace pixseek::milvus {

using Json = nlohmann::json;

// Milvus's default port (the gRPC and RESTful endpoints share it).
inline constexpr int kDefaultPort = 19530;

// Where one collection lives, parsed from
//   milvus://[USER[:PASSWORD]@]HOST[:PORT]/[DATABASE/]COLLECTION[?token=TOKEN]
// The secret (USER:PASSWORD, or the token, which wins when both are given)
// is kept only in `token`; nothing else here contains it.
struct MilvusEndpoint {
  std::string host;
  int port = kDefaultPort;
  std::string database;  // empty: Milvus's "default"
  std::string collection;
  std::string token;  // the Bearer credential; empty when auth is off
  // milvus://[USER@]HOST:PORT/[DATABASE/]COLLECTION, with no secret: what
  // messages, logs and Stats show.
  std::string display;
};

// InvalidArgument for anything else (another scheme, no host, no or a bad
// collection name, an unknown query key); the message never holds the
// password or the token.
Result<MilvusEndpoint> ParseMilvusUrl(const std::string& url);

// The URL without its secrets: the password after "USER:" and the value of
// ?token= become "***" (RedactUrl only knows the first). For text that does
// not parse, "<unparsable URL>".
std::string RedactMilvusUrl(const std::string& url);

// Maps a Milvus error code (merr) to pixseek's vocabulary: a missing
// collection or database is NotFound; a retriable or server-side failure
// (service not ready or unavailable, rate limit, a node or channel away,
// timeouts) is Unavailable; a malformed request or parameter is
// InvalidArgument; authentication and privilege failures are Unauthenticated
// and PermissionDenied; quota and capacity are ResourceExhausted.
StatusCode MilvusErrorCode(int64_t code);

// Thread-safety: const and safe to share; each call opens its own connection
// (no keep-alive, so a restarted server is never answered through a dead
// socket).
class MilvusClient {
 public:
  // timeout_ms bounds connecting, sending and reading each request.
  MilvusClient(MilvusEndpoint endpoint, int timeout_ms);

  // POSTs `body` to /v2/vectordb/<path> ("entities/search") and returns the
  // envelope's "data" (null when absent). Unavailable when Milvus cannot be
  // reached, times out or answers 5xx; otherwise the envelope's code mapped
  // by MilvusErrorCode, with Milvus's message and the call named.
  Result<Json> Call(std::string_view path, const Json& body) const;
  // As Call, and also the whole envelope (for fields beside "data", such as
  // a search's "topks").
  Result<Json> CallEnvelope(std::string_view path, const Json& body) const;

  // {"collectionName": ..., "dbName": ...}: the start of most bodies.
  Json CollectionBody() const;

  const MilvusEndpoint& endpoint() const { return endpoint_; }
  int timeout_ms() const { return timeout_ms_; }

 private:
  MilvusEndpoint endpoint_;
  int timeout_ms_;
};

}  // namespace pixseek::milvus

#endif  // PIXSEEK_INDEX_MILVUS_CLIENT_H_
