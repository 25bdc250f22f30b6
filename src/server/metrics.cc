// Metrics and their Prometheus text rendering.
#include "server/metrics.h"

#include <cstdio>
#include <sstream>

namespace pixseek::server {
namespace {

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Prometheus wants doubles without locale effects; %.17g round-trips.
std::string Number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

std::string RouteLabel(std::string_view method, std::string_view path) {
  if (path == "/" || path == "/healthz" || path == "/metrics") return std::string(path);
  if (!path.starts_with("/api/v1/")) {
    // The page's own files are one route; anything else is noise.
    return method == "GET" && path.find('/', 1) == std::string_view::npos ? "/{asset}" : "other";
  }
  std::string out;
  size_t start = 1;
  int segments = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(start, end - start);
    if (++segments > 6) return "other";
    out += '/';
    out += AllDigits(seg) ? std::string("{id}") : std::string(seg);
    start = end + 1;
  }
  static const char* const kRoutes[] = {
      "/api/v1/search",          "/api/v1/images",
      "/api/v1/images/{id}",     "/api/v1/images/{id}/thumbnail",
      "/api/v1/images/{id}/file", "/api/v1/stats",
      "/api/v1/builds",          "/api/v1/builds/{id}",
      "/api/v1/openapi.json"};
  for (const char* r : kRoutes) {
    if (out == r) return out;
  }
  return "other";
}

void Metrics::Observe(std::string_view method, std::string_view path, int status,
                      double seconds) {
  const std::string route = RouteLabel(method, path);
  const std::string m(method.size() <= 7 ? method : "OTHER");
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{m, route, status}];
  Histogram& h = latency_[{m, route}];
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++h.buckets[i];
  }
  ++h.count;
  h.sum += seconds;
}

void Metrics::Reject(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++rejected_[reason];
}

std::string Metrics::Render(const std::vector<Sample>& samples) const {
  std::ostringstream out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out << "# HELP pixseek_http_requests_total HTTP requests answered, by route and status.\n"
           "# TYPE pixseek_http_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
      const auto& [method, route, status] = key;
      out << "pixseek_http_requests_total{method=\"" << method << "\",route=\"" << route
          << "\",status=\"" << status << "\"} " << n << "\n";
    }
    out << "# HELP pixseek_http_request_duration_seconds Time from routing to the answer.\n"
           "# TYPE pixseek_http_request_duration_seconds histogram\n";
    for (const auto& [key, h] : latency_) {
      const std::string labels = "method=\"" + key.first + "\",route=\"" + key.second + "\"";
      for (size_t i = 0; i < kBuckets.size(); ++i) {
        out << "pixseek_http_request_duration_seconds_bucket{" << labels << ",le=\""
            << Number(kBuckets[i]) << "\"} " << h.buckets[i] << "\n";
      }
      out << "pixseek_http_request_duration_seconds_bucket{" << labels << ",le=\"+Inf\"} "
          << h.count << "\n";
      out << "pixseek_http_request_duration_seconds_sum{" << labels << "} " << Number(h.sum)
          << "\n";
      out << "pixseek_http_request_duration_seconds_count{" << labels << "} " << h.count << "\n";
    }
    out << "# HELP pixseek_http_rejected_total Requests turned away before routing.\n"
           "# TYPE pixseek_http_rejected_total counter\n";
    for (const auto& [reason, n] : rejected_) {
      out << "pixseek_http_rejected_total{reason=\"" << reason << "\"} " << n << "\n";
    }
  }
  for (const Sample& s : samples) {
    out << "# HELP " << s.name << " " << s.help << "\n# TYPE " << s.name << " " << s.type << "\n"
        << s.name << " " << Number(s.value) << "\n";
  }
  return out.str();
}

}  // namespace pixseek::server
