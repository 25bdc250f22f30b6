// Metrics: request counts and latency histograms per route, rendered with
// the server's gauges in the Prometheus text exposition format (GET /metrics).
#ifndef PIXSEEK_SERVER_METRICS_H_
#define PIXSEEK_SERVER_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace pixseek::server {

// The route a path belongs to, with ids replaced ("/api/v1/images/{id}"), so
// that label values stay few whatever clients send; "other" for paths that
// are not routes of the API.
std::string RouteLabel(std::string_view method, std::string_view path);

// One gauge or counter line the server adds at render time.
struct Sample {
  std::string name;  // e.g. "pixseek_images"
  std::string help;
  std::string type;  // "gauge" or "counter"
  double value = 0;
};

// Thread-safety: all methods may be called concurrently.
class Metrics {
 public:
  // Upper bounds of the latency buckets, in seconds.
  static constexpr std::array<double, 12> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1,    2.5,   10};

  void Observe(std::string_view method, std::string_view path, int status, double seconds);
  // Counts a request turned away before routing ("rate_limit", "overload",
  // "auth").
  void Reject(const std::string& reason);

  std::string Render(const std::vector<Sample>& samples) const;

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  // (method, route, status) -> requests
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;  // GUARDED_BY(mu_)
  std::map<std::pair<std::string, std::string>, Histogram> latency_;        // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> rejected_;                                // GUARDED_BY(mu_)
};

}  // namespace pixseek::server

#endif  // PIXSEEK_SERVER_METRICS_H_
