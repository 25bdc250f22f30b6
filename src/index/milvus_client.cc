// MilvusClient over cpp-httplib and nlohmann-json; URL parsing over
// core/url.h's ParseStoreUrl.
#include "index/milvus_client.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <utility>

#include "core/http_transport.h"
#include "core/url.h"

namespace pixseek::milvus {
namespace {

// Milvus's rule for collection and database names
// (internal/proxy/util.go validateCollectionNameOrAlias): a letter or '_'
// first, then letters, digits and '_', at most 255 characters.
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

// The "message" of an error envelope, when the body is one.
std::string EnvelopeMessage(const std::string& body) {
  try {
    const Json j = Json::parse(body);
    if (j.is_object() && j.contains("message") && j["message"].is_string()) {
      return j["message"].get<std::string>();
    }
  } catch (const Json::exception&) {
  }
  return {};
}

void SetTimeouts(httplib::Client& client, int timeout_ms) {
  const time_t s = timeout_ms / 1000;
  const time_t us = static_cast<time_t>(timeout_ms % 1000) * 1000;
  client.set_connection_timeout(s, us);
  client.set_read_timeout(s, us);
  client.set_write_timeout(s, us);
}

}  // namespace

Result<MilvusEndpoint> ParseMilvusUrl(const std::string& url) {
  const std::string shown = RedactMilvusUrl(url);
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(
        "bad Milvus URL '" + shown + "': " + why +
        " (expected milvus://[USER:PASSWORD@]HOST[:PORT]/[DATABASE/]COLLECTION[?token=TOKEN])");
  };
  auto parsed = ParseStoreUrl(url);
  if (!parsed.ok()) return bad("not a URL");
  const StoreUrl& u = *parsed;
  if (u.scheme != "milvus") return bad("the scheme must be milvus://");
  if (u.host.empty()) return bad("no host");
  MilvusEndpoint e;
  e.host = u.host;
  e.port = u.port != 0 ? u.port : kDefaultPort;
  std::string path = u.path;
  if (!path.empty() && path.front() == '/') path.erase(0, 1);
  if (const auto slash = path.find('/'); slash != std::string::npos) {
    e.database = path.substr(0, slash);
    e.collection = path.substr(slash + 1);
    if (!ValidName(e.database)) {
      return bad("database '" + e.database +
                 "' is not a Milvus name (a letter or '_', then letters, digits, '_')");
    }
  } else {
    e.collection = path;
  }
  if (e.collection.empty()) return bad("no collection name in the path");
  if (!ValidName(e.collection)) {
    return bad("collection '" + e.collection +
               "' is not a Milvus name (a letter or '_', then letters, digits, '_'; at most 255)");
  }
  for (const auto& [key, value] : u.query) {
    if (key != "token") return bad("unknown query parameter '" + key + "' (only token=)");
  }
  if (auto it = u.query.find("token"); it != u.query.end() && !it->second.empty()) {
    e.token = it->second;
  } else if (!u.user.empty()) {
    // Milvus takes "user:password" as the Bearer token of a user.
    e.token = u.user + ":" + u.password;
  }
  const std::string host = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
  e.display = "milvus://" + (u.user.empty() ? "" : u.user + "@") + host + ":" +
              std::to_string(e.port) + "/" + (e.database.empty() ? "" : e.database + "/") +
              e.collection;
  return e;
}

std::string RedactMilvusUrl(const std::string& url) {
  std::string out = RedactUrl(url);
  if (out == "<unparsable URL>") return out;
  const auto query = out.find('?');
  if (query == std::string::npos) return out;
  // Every token=VALUE in the query, up to the next '&' or '#'.
  size_t pos = query + 1;
  while (pos < out.size()) {
    const size_t end = std::min(out.find('&', pos), out.find('#', pos));
    const size_t stop = end == std::string::npos ? out.size() : end;
    const std::string_view part(out.data() + pos, stop - pos);
    if (part.substr(0, 6) == "token=" && part.size() > 6) {
      out.replace(pos + 6, stop - pos - 6, "***");
    }
    const size_t next = out.find_first_of("&#", pos);
    if (next == std::string::npos || out[next] == '#') break;
    pos = next + 1;
  }
  return out;
}

StatusCode MilvusErrorCode(int64_t code) {
  switch (code) {
    case 100:   // collection not found
    case 800:   // database not found
    case 1600:  // alias not found
    case 1603:  // collection of an alias not found
      return StatusCode::kNotFound;
    case 1:      // service not ready
    case 2:      // service unavailable
    case 4:      // request limit exceeded
    case 8:      // rate limit exceeded
    case 11:     // time tick long delay
    case 12:     // service resource insufficient
    case 101:    // collection not loaded (e.g. still loading after a restart)
    case 103:    // collection not fully loaded
    case 106:    // collection on recovering
    case 201:    // partition not loaded
    case 202:    // partition not fully loaded
    case 305:    // resource group
    case 400:    // replica not found
    case 401:    // replica not available
    case 1002:   // unexpected EOF
    case 1302:   // message queue internal error
    case 1303:   // deny to write the message to mq
    case 1807:   // request rejected by the RESTful limiter
    case 2200:   // inconsistent requery result
    case 10000:  // canceled
    case 10001:  // timeout
      return StatusCode::kUnavailable;
    case 3:    // memory limit exceeded
    case 7:    // disk limit exceeded
    case 9:    // quota exceeded
    case 102:  // too many collections
    case 250:  // general capacity exceeded
    case 801:  // too many databases
      return StatusCode::kResourceExhausted;
    case 1400:  // not authenticated
    case 1800:  // user hasn't authenticated
      return StatusCode::kUnauthenticated;
    case 1401:  // privilege not permitted
      return StatusCode::kPermissionDenied;
    case 10:    // service unimplemented
    case 701:   // index type not supported
    case 3000:  // unsupported operation
      return StatusCode::kUnsupported;
    case 105:  // illegal collection schema
    case 107:
    case 700:   // index not found
    case 702:   // index duplicates
    case 802:   // invalid database name
    case 1100:  // invalid parameter
    case 1101:  // missing parameter
    case 1102:  // parameter too large
    case 1700:  // field not found
    case 1701:  // field name invalid
    case 1801:  // can only accept json format request
    case 1802:  // missing required parameters
    case 1803:
    case 1804:  // fail to deal the insert data
    case 1805:
    case 1806:  // primary key check
      return StatusCode::kInvalidArgument;
    default:
      break;
  }
  // Channels, segments, nodes and IO: a part of the cluster is away.
  if ((code >= 500 && code < 700) || (code >= 900 && code < 1100)) return StatusCode::kUnavailable;
  return StatusCode::kInternal;
}

MilvusClient::MilvusClient(MilvusEndpoint endpoint, int timeout_ms)
    : endpoint_(std::move(endpoint)), timeout_ms_(std::max(1, timeout_ms)) {}

Json MilvusClient::CollectionBody() const {
  Json body = {{"collectionName", endpoint_.collection}};
  if (!endpoint_.database.empty()) body["dbName"] = endpoint_.database;
  return body;
}

Result<Json> MilvusClient::Call(std::string_view path, const Json& body) const {
  PIXSEEK_ASSIGN_OR_RETURN(Json envelope, CallEnvelope(path, body));
  auto it = envelope.find("data");
  if (it == envelope.end()) return Json();
  return std::move(*it);
}

Result<Json> MilvusClient::CallEnvelope(std::string_view path, const Json& body) const {
  const std::string where = "Milvus at " + endpoint_.display;
  const std::string route = "/v2/vectordb/" + std::string(path);
  std::string payload;
  try {
    payload = body.dump();
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(where + ": cannot encode the " + std::string(path) +
                                   " request: " + e.what());
  }
  httplib::Client client(endpoint_.host, endpoint_.port);
  SetTimeouts(client, timeout_ms_);
  client.set_keep_alive(false);
  httplib::Headers headers = {
      // Int64 ids as JSON numbers, not strings (handler_v2.go's allowJS).
      {"Accept-Type-Allow-Int64", "true"},
      // Milvus bounds its own work by this many seconds (timeoutMiddleware).
      {"Request-Timeout", std::to_string((timeout_ms_ + 999) / 1000)},
  };
  if (!endpoint_.token.empty()) headers.emplace("Authorization", "Bearer " + endpoint_.token);
  httplib::Result res = client.Post(route, headers, payload, "application/json");
  if (!res) {
    return Status::Unavailable(where + " did not answer " + std::string(path) + ": " +
                               HttpTransportError(res.error()));
  }
  const int http = res->status;
  if (http != 200) {
    std::string message = EnvelopeMessage(res->body);
    message = message.empty() ? "" : ": " + message;
    const std::string what =
        where + " answered HTTP " + std::to_string(http) + " to " + std::string(path) + message;
    if (http == 401) return Status::Unauthenticated(what + " (check the user:password or token)");
    if (http == 403) return Status::PermissionDenied(what);
    if (http == 404) {
      return Status::Unsupported(what + " (not a Milvus RESTful v2 endpoint, or a Milvus without " +
                                 std::string(path) + ")");
    }
    if (http == 429 || http >= 500) return Status::Unavailable(what);
    return Status::Internal(what);
  }
  Json envelope;
  try {
    envelope = Json::parse(res->body);
  } catch (const Json::exception&) {
    return Status::Internal(where + ": the answer to " + std::string(path) + " is not JSON");
  }
  if (!envelope.is_object() || !envelope.contains("code") || !envelope["code"].is_number()) {
    return Status::Internal(where + ": the answer to " + std::string(path) +
                            " has no numeric \"code\"");
  }
  const int64_t code = envelope["code"].get<int64_t>();
  if (code == 0) return envelope;
  std::string message;
  if (auto m = envelope.find("message"); m != envelope.end() && m->is_string()) {
    message = m->get<std::string>();
  }
  return Status(MilvusErrorCode(code), where + ": " + std::string(path) + " failed: " + message +
                                           " (Milvus code " + std::to_string(code) + ")");
}

}  // namespace pixseek::milvus
