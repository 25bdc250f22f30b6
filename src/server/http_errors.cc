#include "server/http_errors.h"

#include "pixseek/server.h"

namespace pixseek {

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists: return 409;
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kResourceExhausted: return 413;
    case StatusCode::kUnsupported: return 415;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kCancelled: return 503;
    case StatusCode::kDataLoss: return 500;
    case StatusCode::kInternal: return 500;
  }
  return 500;
}

namespace server {

nlohmann::json ErrorJson(const Status& status) {
  const Status s = status.ok() ? Status::Internal("error reported with an OK status") : status;
  return {{"error",
           {{"code", std::string(StatusCodeName(s.code()))}, {"message", s.message()}}}};
}

std::string_view ErrorCodeForHttpStatus(int http_status) {
  switch (http_status) {
    case 401: return StatusCodeName(StatusCode::kUnauthenticated);
    case 403: return StatusCodeName(StatusCode::kPermissionDenied);
    case 404: return StatusCodeName(StatusCode::kNotFound);
    case 409: return StatusCodeName(StatusCode::kFailedPrecondition);
    case 413: return StatusCodeName(StatusCode::kResourceExhausted);
    case 429: return StatusCodeName(StatusCode::kResourceExhausted);
    case 415: return StatusCodeName(StatusCode::kUnsupported);
    case 503: return StatusCodeName(StatusCode::kUnavailable);
    default: break;
  }
  if (http_status >= 400 && http_status < 500) {
    return StatusCodeName(StatusCode::kInvalidArgument);
  }
  return StatusCodeName(StatusCode::kInternal);
}

std::string MessageForHttpStatus(int http_status) {
  switch (http_status) {
    case 400: return "malformed request (HTTP syntax, headers or multipart body)";
    case 404: return "no such route";
    case 413: return "request body too large";
    case 414: return "request URI too long";
    case 415: return "unsupported media type";
    case 416: return "requested range not satisfiable";
    case 503: return "service unavailable";
    default: break;
  }
  return "HTTP error " + std::to_string(http_status);
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace server
}  // namespace pixseek
