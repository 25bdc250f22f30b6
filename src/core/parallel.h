// Small parallel-loop helpers shared by the build, fit, eval and bench code.
#ifndef PIXSEEK_CORE_PARALLEL_H_
#define PIXSEEK_CORE_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace pixseek {

// `threads` when positive, otherwise the core count (at least 1).
inline int ThreadCount(int threads) {
  return threads > 0 ? threads
                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs fn(i) for every i in [0, n) on `threads` threads, the caller's
// included, and returns when all are done. fn must be safe to call
// concurrently for different i.
template <typename Fn>
void ParallelFor(size_t n, int threads, Fn&& fn) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> pool;
  const int extra = static_cast<int>(std::min<size_t>(n, static_cast<size_t>(std::max(threads, 1)))) - 1;
  for (int t = 0; t < extra; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

}  // namespace pixseek

#endif  // PIXSEEK_CORE_PARALLEL_H_
