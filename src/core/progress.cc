#include "core/progress.h"

#include <unistd.h>

#include <cmath>

namespace pixseek {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%llds", s);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label, uint64_t total, FILE* out, bool enabled)
    : label_(std::move(label)),
      total_(total),
      out_(out),
      enabled_(enabled && out != nullptr),
      tty_(out != nullptr && ::isatty(::fileno(out)) == 1),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

double ProgressBar::rate(uint64_t done) const {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return secs > 0 ? static_cast<double>(done) / secs : 0.0;
}

void ProgressBar::Update(uint64_t done, uint64_t failed) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  // A terminal redraws 10 times a second; logs get a line every 5 seconds.
  auto every = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  if (now - last_print_ < every) return;
  last_print_ = now;
  Print(done, failed, false);
}

void ProgressBar::Finish(uint64_t done, uint64_t failed) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  Print(done, failed, true);
}

void ProgressBar::Print(uint64_t done, uint64_t failed, bool final) {
  double r = rate(done);
  double eta = (r > 0 && total_ > done) ? static_cast<double>(total_ - done) / r : 0.0;
  double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  if (tty_) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kWidth - filled), '.');
    std::fprintf(out_, "\r%s [%s] %llu/%llu %3.0f%% %.1f/s ETA %s failed %llu\033[K",
                 label_.c_str(), bar.c_str(), static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total_), frac * 100, r,
                 FormatDuration(eta).c_str(), static_cast<unsigned long long>(failed));
    if (final) std::fputc('\n', out_);
  } else {
    std::fprintf(out_, "%s: %llu/%llu (%.0f%%) %.1f/s ETA %s failed %llu%s\n", label_.c_str(),
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
                 frac * 100, r, FormatDuration(eta).c_str(),
                 static_cast<unsigned long long>(failed), final ? " done" : "");
  }
  std::fflush(out_);
}

}  // namespace pixseek
