// What cpp-httplib's client errors mean, in words, for the modules that
// speak HTTP to a server (the KServe embedder, the Milvus index). Include
// only after <httplib.h>; core itself does not link httplib.
#ifndef PIXSEEK_CORE_HTTP_TRANSPORT_H_
#define PIXSEEK_CORE_HTTP_TRANSPORT_H_

#include <httplib.h>

#include <string>

namespace pixseek {

// httplib's error names ("Connection", "Read") in words.
inline std::string HttpTransportError(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "cannot connect (refused, unreachable or timed out)";
    case httplib::Error::ConnectionTimeout:
      return "connecting timed out";
    case httplib::Error::Read:
      return "no complete reply (connection closed or timed out)";
    case httplib::Error::Write:
      return "sending the request failed (connection closed or timed out)";
    default:
      return httplib::to_string(error);
  }
}

}  // namespace pixseek

#endif  // PIXSEEK_CORE_HTTP_TRANSPORT_H_
