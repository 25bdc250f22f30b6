// Files compiled into the server binary (web/index.html, docs/openapi.json).
// The definition is generated at build time by cmake/embed_files.cmake.
#ifndef PIXSEEK_SERVER_WEB_ASSETS_H_
#define PIXSEEK_SERVER_WEB_ASSETS_H_

#include <string_view>

namespace pixseek {

// The contents of the embedded file called `name` (its file name, e.g.
// "index.html"); empty when there is none. The data lives for the whole
// program. Thread-safe.
std::string_view EmbeddedFile(std::string_view name);

}  // namespace pixseek

#endif  // PIXSEEK_SERVER_WEB_ASSETS_H_
