// Progress reporting for long jobs: a bar with rate and ETA on a terminal,
// plain periodic lines otherwise (logs, CI).
#ifndef PIXSEEK_CORE_PROGRESS_H_
#define PIXSEEK_CORE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace pixseek {

// Thread-safety: Update and Finish may be called from any thread.
class ProgressBar {
 public:
  // Writes to `out` (not owned). `enabled` false makes every call a no-op.
  ProgressBar(std::string label, uint64_t total, FILE* out, bool enabled = true);

  // Reports `done` items processed of total, `failed` of which failed.
  void Update(uint64_t done, uint64_t failed);
  // Prints the final line.
  void Finish(uint64_t done, uint64_t failed);

  // Items per second since construction.
  double rate(uint64_t done) const;

 private:
  void Print(uint64_t done, uint64_t failed, bool final);

  const std::string label_;
  const uint64_t total_;
  FILE* const out_;
  const bool enabled_;
  const bool tty_;
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_print_;  // GUARDED_BY(mu_)
};

// "1h02m", "3m05s", "12s".
std::string FormatDuration(double seconds);

}  // namespace pixseek

#endif  // PIXSEEK_CORE_PROGRESS_H_
