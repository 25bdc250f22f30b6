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
                             std::chrono::milliseconds interval, Clock clock)
    : label_(std::move(label)),
      out_(out),
      interval_(interval),
      clock_(clock ? std::move(clock) : Clock(&std::chrono::steady_clock::now)) {}

void PhaseProgress::Update(const std::string& phase, size_t done, size_t total) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = clock_();
  const std::string key = PhaseKey(phase);
  if (current_.key != key) {
    current_ = Phase();
    current_.key = key;
    current_.start = now;
    current_.start_done = done;
  }
  Phase& p = current_;
  // The rate is measured from the first step: the time before it (rows
  // loading, or nothing done yet this run) has no units to divide.
  if (!p.moved && done > p.start_done) {
    p.moved = true;
    p.move_start = now;
    p.move_done = done;
  }
  const bool changed = phase != last_phase_;
  last_phase_ = phase;
  const bool finished = done >= total;
  if (out_ == nullptr || (!changed && !finished && now - last_print_ < interval_)) return;
  last_print_ = now;
  const double elapsed = std::chrono::duration<double>(now - p.start).count();
  const double moving = p.moved ? std::chrono::duration<double>(now - p.move_start).count() : 0;
  const double rate = moving > 0 && done > p.move_done ? double(done - p.move_done) / moving : 0;
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
