// API keys, per-client token buckets and the in-flight cap.
#include "server/request_guard.h"

#include <algorithm>

#include "core/hash.h"

namespace pixseek::server {
namespace {

std::string Digest(std::string_view text) {
  return Sha256Hex({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Buckets of clients idle this long are full again and can be forgotten.
constexpr size_t kMaxBuckets = 10000;

}  // namespace

Access AccessFor(std::string_view method, std::string_view path) {
  if (path == "/api/v1/search") return Access::kRead;
  if (method == "GET" || method == "HEAD" || method == "OPTIONS") {
    const bool api = path.starts_with("/api/") && path != "/api/v1/openapi.json";
    return api || path == "/metrics" ? Access::kRead : Access::kOpen;
  }
  return Access::kWrite;
}

RequestGuard::RequestGuard(const ServerOptions& options)
    : keyed_reads_(options.keyed_reads),
      rate_(options.rate_limit_per_s),
      burst_(std::max(1, options.rate_burst)) {
  // Only digests are kept: comparing fixed-length digests in constant time
  // hides both the keys' contents and their lengths.
  for (const auto& key : options.api_keys) {
    if (!key.empty()) key_digests_.push_back(Digest(key));
  }
}

Status RequestGuard::CheckKey(Access access, std::string_view authorization) const {
  if (key_digests_.empty() || access == Access::kOpen) return Status::Ok();
  if (access == Access::kRead && !keyed_reads_) return Status::Ok();
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.empty()) {
    return Status::Unauthenticated(
        "this server requires an API key: send \"Authorization: Bearer KEY\"");
  }
  if (!authorization.starts_with(kBearer)) {
    return Status::Unauthenticated("the Authorization header must be \"Bearer KEY\"");
  }
  const std::string digest = Digest(authorization.substr(kBearer.size()));
  bool match = false;
  for (const auto& key : key_digests_) match |= ConstantTimeEquals(digest, key);
  if (!match) return Status::PermissionDenied("the API key is not valid");
  return Status::Ok();
}

double RequestGuard::TakeToken(const std::string& client, Clock::time_point now) {
  if (rate_ <= 0) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  if (buckets_.size() >= kMaxBuckets) {
    // Forget the clients whose buckets have refilled: they are as new.
    std::erase_if(buckets_, [&](const auto& entry) {
      const double secs = std::chrono::duration<double>(now - entry.second.last).count();
      return entry.second.tokens + secs * rate_ >= burst_;
    });
  }
  auto [it, fresh] = buckets_.try_emplace(client, Bucket{burst_, now});
  Bucket& b = it->second;
  if (!fresh) {
    const double secs = std::chrono::duration<double>(now - b.last).count();
    b.tokens = std::min(burst_, b.tokens + secs * rate_);
    b.last = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return (1 - b.tokens) / rate_;
}

}  // namespace pixseek::server
