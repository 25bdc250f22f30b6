// Parsing of the URLs that name pixseek's stores (mysql://, redis://,
// sqlite://): one parser, uriparser's, for every store.
#ifndef PIXSEEK_CORE_URL_H_
#define PIXSEEK_CORE_URL_H_

#include <map>
#include <string>

#include "pixseek/status.h"

namespace pixseek {

// The parts of SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/PATH][?QUERY],
// percent-decoded.
struct StoreUrl {
  std::string scheme;    // lower case
  std::string user;
  std::string password;
  std::string host;
  int port = 0;          // 0 when absent
  std::string path;      // without the leading '/' (a database name or number)
  std::map<std::string, std::string> query;
};

// InvalidArgument for text that is not such a URL; the message never contains
// the password.
Result<StoreUrl> ParseStoreUrl(const std::string& text);

// The URL with its password, and the values of its secret query parameters
// (token, password, api_key), replaced by "***" (for logs, errors and
// manifests). Text that does not parse is returned as "<unparsable URL>".
std::string RedactUrl(const std::string& text);

}  // namespace pixseek

#endif  // PIXSEEK_CORE_URL_H_
