// Where a database's vectors live: in its own directory (the embedded index
// kinds, "disk" and "flat") or on a server named by a URL
// (DatabaseOptions::vector_url, "milvus://..."). The one place that knows
// which URL schemes name which server kinds, and what an open with a given
// URL must refuse. Internal to the service module (Database::Open, `pixseek
// check`, `pixseek migrate`).
#ifndef PIXSEEK_SERVICE_VECTOR_STORE_H_
#define PIXSEEK_SERVICE_VECTOR_STORE_H_

#include <string>
#include <string_view>

#include "pixseek/status.h"
#include "service/manifest.h"

namespace pixseek {

// Whether index kind `kind` keeps its vectors on a server (and so takes a
// URL, VectorIndexSpec::url) rather than in the database directory.
bool IsServerIndexKind(std::string_view kind);

// The index kind that a vector URL names ("milvus://..." -> "milvus").
// InvalidArgument for another scheme (naming only the scheme: the rest may
// hold a password) or for text that is not a URL.
Result<std::string> VectorKindOfUrl(const std::string& url);

// The URL without its password or token, as the manifest records it.
std::string RecordedVectorStore(const std::string& url);

// Whether `url` names the server and collection that `recorded` (a
// manifest's vector_store) names: the same scheme, host, port (19530 when
// absent) and collection; user, password and query may differ.
bool SameVectorStore(const std::string& recorded, const std::string& url);

// What an open of database `dir` (its manifest `m`) given `vector_url` must
// refuse: FailedPrecondition, saying what to set, for a database whose
// vectors are in a server opened without a URL or with one of another
// server or collection, and for an embedded index opened with a URL;
// InvalidArgument for a URL of an unknown scheme.
Status CheckVectorStore(const DatabaseManifest& m, const std::string& vector_url,
                        const std::string& dir);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_VECTOR_STORE_H_
