// ParseStoreUrl and RedactUrl over uriparser (Debian liburiparser-dev).
#include "core/url.h"

#include <uriparser/Uri.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <vector>

namespace pixseek {
namespace {

std::string Range(const UriTextRangeA& r) {
  if (r.first == nullptr || r.afterLast == nullptr) return {};
  return std::string(r.first, r.afterLast);
}

std::string Unescape(std::string s) {
  if (s.empty()) return s;
  std::vector<char> buf(s.begin(), s.end());
  buf.push_back('\0');
  const char* end = uriUnescapeInPlaceExA(buf.data(), URI_FALSE, URI_BR_DONT_TOUCH);
  return std::string(static_cast<const char*>(buf.data()), end);
}

// Frees the parsed URI however the parse function returns.
struct UriHolder {
  UriUriA uri{};
  ~UriHolder() { uriFreeUriMembersA(&uri); }
};

}  // namespace

Result<StoreUrl> ParseStoreUrl(const std::string& text) {
  // Error messages show the URL without its password, or nothing of it.
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bad store URL '" + RedactUrl(text) + "': " + why);
  };
  UriHolder holder;
  const char* error_pos = nullptr;
  if (uriParseSingleUriA(&holder.uri, text.c_str(), &error_pos) != URI_SUCCESS) {
    return Status::InvalidArgument(
        "bad store URL (expected SCHEME://[USER[:PASSWORD]@]HOST[:PORT]/NAME)");
  }
  const UriUriA& uri = holder.uri;
  StoreUrl url;
  url.scheme = Range(uri.scheme);
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (url.scheme.empty()) return bad("no scheme");
  const std::string userinfo = Range(uri.userInfo);
  if (auto colon = userinfo.find(':'); colon != std::string::npos) {
    url.user = Unescape(userinfo.substr(0, colon));
    url.password = Unescape(userinfo.substr(colon + 1));
  } else {
    url.user = Unescape(userinfo);
  }
  url.host = Unescape(Range(uri.hostText));
  if (const std::string port = Range(uri.portText); !port.empty()) {
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), url.port);
    if (ec != std::errc() || ptr != port.data() + port.size() || url.port <= 0 ||
        url.port > 65535) {
      return bad("port must be 1-65535");
    }
  }
  for (const UriPathSegmentA* seg = uri.pathHead; seg != nullptr; seg = seg->next) {
    if (!url.path.empty() || seg != uri.pathHead) url.path += '/';
    url.path += Unescape(Range(seg->text));
  }
  // sqlite:///abs/path keeps its leading '/': the path is a file there.
  if (uri.absolutePath || (url.host.empty() && uri.pathHead != nullptr && url.scheme == "sqlite")) {
    url.path = "/" + url.path;
  }
  const std::string query = Range(uri.query);
  if (!query.empty()) {
    UriQueryListA* list = nullptr;
    int count = 0;
    if (uriDissectQueryMallocA(&list, &count, query.data(), query.data() + query.size()) !=
        URI_SUCCESS) {
      return bad("malformed query");
    }
    for (UriQueryListA* q = list; q != nullptr; q = q->next) {
      url.query[q->key ? q->key : ""] = q->value ? q->value : "";
    }
    uriFreeQueryListA(list);
  }
  return url;
}

namespace {

// Query parameters that carry a secret (Milvus's ?token=USER:PASSWORD or an
// API key): their values are redacted like the password.
bool SecretParameter(std::string key) {
  std::transform(key.begin(), key.end(), key.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return key == "token" || key == "password" || key == "api_key" || key == "apikey";
}

// `query` ("a=1&token=x") with the values of secret parameters as "***".
std::string RedactQuery(const std::string& query) {
  std::string out;
  size_t begin = 0;
  while (begin <= query.size()) {
    size_t end = query.find('&', begin);
    if (end == std::string::npos) end = query.size();
    std::string part = query.substr(begin, end - begin);
    const size_t eq = part.find('=');
    if (eq != std::string::npos && SecretParameter(Unescape(part.substr(0, eq)))) {
      part = part.substr(0, eq + 1) + "***";
    }
    out += (begin == 0 ? "" : "&") + part;
    begin = end + 1;
  }
  return out;
}

}  // namespace

std::string RedactUrl(const std::string& text) {
  UriHolder holder;
  const char* error_pos = nullptr;
  if (uriParseSingleUriA(&holder.uri, text.c_str(), &error_pos) != URI_SUCCESS) {
    return "<unparsable URL>";
  }
  // The ranges point into `text`, so their offsets locate the secrets; the
  // query comes after the user info, so it is redacted first.
  std::string out = text;
  if (holder.uri.query.first != nullptr && holder.uri.query.afterLast != nullptr) {
    const size_t start = static_cast<size_t>(holder.uri.query.first - text.c_str());
    const std::string query = Range(holder.uri.query);
    out = out.substr(0, start) + RedactQuery(query) + out.substr(start + query.size());
  }
  const std::string userinfo = Range(holder.uri.userInfo);
  const auto colon = userinfo.find(':');
  if (colon == std::string::npos) return out;
  const size_t start = static_cast<size_t>(holder.uri.userInfo.first - text.c_str()) + colon + 1;
  const size_t length = userinfo.size() - colon - 1;
  return out.substr(0, start) + "***" + out.substr(start + length);
}

}  // namespace pixseek
