#include "service/vector_store.h"

#include <algorithm>
#include <cctype>

#include "core/url.h"

namespace pixseek {
namespace {

// The vector servers pixseek speaks to, by URL scheme. A new server kind is
// one row here and one in the index registry (src/index/index_registry.cc).
struct ServerKind {
  const char* scheme;
  const char* kind;  // the VectorIndexKinds() name
  const char* name;  // for messages
  int default_port;
};
constexpr ServerKind kServerKinds[] = {{"milvus", "milvus", "Milvus", 19530}};

const ServerKind* FindByKind(std::string_view kind) {
  for (const ServerKind& k : kServerKinds) {
    if (kind == k.kind) return &k;
  }
  return nullptr;
}

const ServerKind* FindByScheme(std::string_view scheme) {
  for (const ServerKind& k : kServerKinds) {
    if (scheme == k.scheme) return &k;
  }
  return nullptr;
}

// The scheme of `url` in lower case ("" when it has none).
std::string SchemeOf(const std::string& url) {
  const size_t end = url.find("://");
  if (end == std::string::npos) return {};
  std::string scheme = url.substr(0, end);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return scheme;
}

std::string SchemeList() {
  std::string list;
  for (const ServerKind& k : kServerKinds) {
    list += std::string(list.empty() ? "" : ", ") + k.scheme + "://";
  }
  return list;
}

}  // namespace

bool IsServerIndexKind(std::string_view kind) { return FindByKind(kind) != nullptr; }

Result<std::string> VectorKindOfUrl(const std::string& url) {
  const std::string scheme = SchemeOf(url);
  const bool plain = !scheme.empty() && std::all_of(scheme.begin(), scheme.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  });
  if (!plain) {
    return Status::InvalidArgument(
        "the vector URL is not a URL (expected milvus://[USER:PASSWORD@]HOST:PORT/COLLECTION)");
  }
  const ServerKind* kind = FindByScheme(scheme);
  if (kind == nullptr) {
    return Status::InvalidArgument("unknown vector store scheme '" + scheme +
                                   "://' (known: " + SchemeList() + ")");
  }
  auto parsed = ParseStoreUrl(url);
  if (!parsed.ok()) {
    // ParseStoreUrl's message shows the URL without its password, but a
    // token in the query would still show: say only what is expected.
    return Status::InvalidArgument("bad vector URL (expected " + std::string(kind->scheme) +
                                   "://[USER:PASSWORD@]HOST:PORT/COLLECTION[?token=T])");
  }
  if (parsed->host.empty() || parsed->path.empty() || parsed->path.find('/') != std::string::npos) {
    return Status::InvalidArgument("the vector URL " + RedactUrl(url) +
                                   " must name a host and "
                                   "one collection (" +
                                   kind->scheme + "://HOST:PORT/COLLECTION)");
  }
  return std::string(kind->kind);
}

std::string RecordedVectorStore(const std::string& url) { return RedactUrl(url); }

bool SameVectorStore(const std::string& recorded, const std::string& url) {
  auto a = ParseStoreUrl(recorded);
  auto b = ParseStoreUrl(url);
  if (!a.ok() || !b.ok()) return false;
  const ServerKind* kind = FindByScheme(a->scheme);
  const int port = kind != nullptr ? kind->default_port : 0;
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  };
  return a->scheme == b->scheme && lower(a->host) == lower(b->host) &&
         (a->port == 0 ? port : a->port) == (b->port == 0 ? port : b->port) && a->path == b->path;
}

Status CheckVectorStore(const DatabaseManifest& m, const std::string& vector_url,
                        const std::string& dir) {
  if (!vector_url.empty()) PIXSEEK_RETURN_IF_ERROR(VectorKindOfUrl(vector_url).status());
  const ServerKind* kind = FindByKind(m.index_kind);
  if (kind != nullptr && m.vector_store.empty()) {
    return Status::DataLoss("damaged manifest " + dir + "/" + kManifestFileName + ": index kind " +
                            m.index_kind + " without the vector_store it lives in");
  }
  const std::string where =
      kind != nullptr ? std::string(kind->name) + " at " + m.vector_store : "";
  if (kind != nullptr && vector_url.empty()) {
    return Status::FailedPrecondition("database " + dir + " keeps its vectors in " + where +
                                      ": set PIXSEEK_VECTOR_URL, vector_url in the config or "
                                      "--vector-url");
  }
  if (kind != nullptr && !SameVectorStore(m.vector_store, vector_url)) {
    return Status::FailedPrecondition("database " + dir + " keeps its vectors in " + where +
                                      " but this command was given " + RedactUrl(vector_url) +
                                      "; set PIXSEEK_VECTOR_URL, vector_url in the config or "
                                      "--vector-url to that host and collection");
  }
  if (kind == nullptr && !vector_url.empty()) {
    return Status::FailedPrecondition(
        "database " + dir + " keeps its vectors in its " + m.index_kind +
        " index; leave vector_url unset, or move them with `pixseek migrate`");
  }
  return Status::Ok();
}

}  // namespace pixseek
