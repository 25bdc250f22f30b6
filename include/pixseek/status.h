// Status and Result<T>: the error vocabulary that crosses every module boundary.
//
// A Status is either OK or carries a code and a human-readable message. A
// Result<T> holds either a value or a non-OK Status. Both are cheap to move and
// are [[nodiscard]] so that an ignored error is a compiler warning.
#ifndef PIXSEEK_STATUS_H_
#define PIXSEEK_STATUS_H_

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pixseek {

// Codes follow absl/gRPC naming. server/http_errors.cc maps each to one HTTP status.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad input from the caller (corrupt image, bad JSON): 400
  kNotFound,            // unknown id, missing file: 404
  kAlreadyExists,       // 409
  kPermissionDenied,    // 403
  kUnauthenticated,     // 401
  kResourceExhausted,   // too large (bytes or pixels): 413
  kUnsupported,         // not an image / unknown format: 415
  kFailedPrecondition,  // e.g. model mismatch with database: 409
  kDataLoss,            // corrupt or truncated stored file: 500
  kUnavailable,         // a dependency is down, try again: 503
  kCancelled,           // the caller (or shutdown) stopped the work: 503
  kInternal,            // a bug or an unexpected library failure: 500
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
  static Status Unauthenticated(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
  static Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
  static Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "context: message"; OK stays OK.
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a T or a non-OK Status. Constructing from an OK Status is a bug and
// turns into an Internal error rather than undefined behaviour.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(data_).ok()) {
      data_ = Status::Internal("Result constructed from an OK status");
    }
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(data_); }

  // Precondition: ok().
  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace pixseek

#define PIXSEEK_CONCAT_INNER_(a, b) a##b
#define PIXSEEK_CONCAT_(a, b) PIXSEEK_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define PIXSEEK_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::pixseek::Status pixseek_status_ = (expr);        \
    if (!pixseek_status_.ok()) return pixseek_status_; \
  } while (0)

// `lhs` = value of `rexpr` (a Result<T>), or returns its error.
#define PIXSEEK_ASSIGN_OR_RETURN(lhs, rexpr) \
  PIXSEEK_ASSIGN_OR_RETURN_IMPL_(PIXSEEK_CONCAT_(pixseek_result_, __LINE__), lhs, rexpr)
#define PIXSEEK_ASSIGN_OR_RETURN_IMPL_(result, lhs, rexpr) \
  auto result = (rexpr);                                   \
  if (!result.ok()) return result.status();                \
  lhs = std::move(result).value()

#endif  // PIXSEEK_STATUS_H_
