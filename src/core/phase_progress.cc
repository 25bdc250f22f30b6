#include "core/phase_progress.h"

#include <cstdio>

#include "core/progress.h"

namespace pixseek {

namespace {

// "shard 3/17 graph" -> "graph"; other phases are their own key.
std::string PhaseKey(const std::string& phase) {
  if (phase.rfind("shard ", 0) == 0) {
    const size_t space = phase.find(' ', 6);
    if (space != std::string::npos) return phase.substr(space + 1);
  }
  return phase;
}

}  // namespace

PhaseProgress::PhaseProgress(std::string label, std::ostream* out,
                             std::chrono::milliseconds interval)
    : label_(std::move(label)), out_(out), interval_(interval) {}

void PhaseProgress::Update(const std::string& phase, size_t done, size_t total) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  const std::string key = PhaseKey(phase);
  if (current_.key != key) current_ = {key, now, done};
  const Phase& p = current_;
  const bool changed = phase != last_phase_;
  last_phase_ = phase;
  const bool finished = done >= total;
  if (out_ == nullptr || (!changed && !finished && now - last_print_ < interval_)) return;
  last_print_ = now;
  const double elapsed = std::chrono::duration<double>(now - p.start).count();
  const double rate =
      elapsed > 0 && done > p.start_done ? double(done - p.start_done) / elapsed : 0;
  const std::string eta = finished   ? std::string("0s")
                          : rate > 0 ? FormatDuration(double(total - done) / rate)
                                     : std::string("?");
  char line[256];
  std::snprintf(line, sizeof line, "%s: %s %3.0f%% (%zu/%zu) elapsed %s ETA %s\n", label_.c_str(),
                phase.c_str(), total > 0 ? 100.0 * double(done) / double(total) : 100.0, done,
                total, FormatDuration(elapsed).c_str(), eta.c_str());
  *out_ << line << std::flush;
}

}  // namespace pixseek
