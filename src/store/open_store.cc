// OpenMetadataStore: picks the MetadataStore implementation a URL names.
#include <algorithm>
#include <cctype>
#include <string>

#include "pixseek/metadata_store.h"

namespace pixseek {

Result<std::unique_ptr<MetadataStore>> OpenMetadataStore(const std::string& url) {
  const size_t end = url.find("://");
  std::string scheme = end == std::string::npos ? "" : url.substr(0, end);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme == "sqlite") {
    // The rest is the file path as is: no percent-decoding, so that any
    // path a shell can write works.
    std::string path = url.substr(end + 3);
    if (path.empty()) return Status::InvalidArgument("metadata URL: sqlite:// needs a file path");
    return OpenSqliteStore(path);
  }
  if (scheme == "mysql" || scheme == "mariadb") return OpenMysqlStore(url);
  // Only the scheme is echoed: the rest may hold a password.
  return Status::InvalidArgument(
      (scheme.empty() ? std::string("metadata URL without a scheme")
                      : "unknown metadata URL scheme '" + scheme + "'") +
      ": expected sqlite://PATH or mysql://USER:PASSWORD@HOST:PORT/DATABASE");
}

}  // namespace pixseek
