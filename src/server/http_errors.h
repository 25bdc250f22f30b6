// The JSON error body of the HTTP API and the helpers that write JSON
// responses. Every function here is thread-safe (no shared state).
#ifndef PIXSEEK_SERVER_HTTP_ERRORS_H_
#define PIXSEEK_SERVER_HTTP_ERRORS_H_

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pixseek/status.h"

namespace pixseek::server {

// {"error": {"code": "NOT_FOUND", "message": "..."}} for a non-OK status.
nlohmann::json ErrorJson(const Status& status);

// The error code name used for a status that httplib produced by itself
// (413 for a body over the limit, 404 for an unknown route, 400 for a
// malformed request): "RESOURCE_EXHAUSTED", "NOT_FOUND", ...
std::string_view ErrorCodeForHttpStatus(int http_status);

// The default message for such a status.
std::string MessageForHttpStatus(int http_status);

// Serialises `value` compactly. Strings that are not valid UTF-8 (file names
// from clients, paths on disk) have the bad bytes replaced by U+FFFD instead
// of throwing.
std::string DumpJson(const nlohmann::json& value);

}  // namespace pixseek::server

#endif  // PIXSEEK_SERVER_HTTP_ERRORS_H_
