// Progress lines for long multi-phase jobs (the disk graph build, the exact
// ground truth): "disk build: shard 3/17 graph 41% (2412345/5882352) ETA
// 1h02m". Used by `pixseek bench ann`, `pixseek bench gt` and the index
// compaction at the end of `pixseek build`.
#ifndef PIXSEEK_CORE_PHASE_PROGRESS_H_
#define PIXSEEK_CORE_PHASE_PROGRESS_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>

namespace pixseek {

// Prints a line when a phase starts, at most every `interval` while it runs,
// and when it ends (done == total). The ETA of a phase is its remaining units
// over the rate seen since the phase first moved in this process: work an
// earlier run finished (a resumed build starts a phase part-way) and the wait
// before the first step (a resumed shard first loads its rows) do not count,
// so a resumed build's first ETAs are not hours too long. Phases named
// "shard I/K graph" count as one phase, "graph", whose units run over all
// shards, so the loads between later shards do count.
//
// Thread-safety: Update may be called from any thread. Writes to `out` (not
// owned; null prints nothing).
class PhaseProgress {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `clock` is for tests; by default the steady clock.
  PhaseProgress(std::string label, std::ostream* out,
                std::chrono::milliseconds interval = std::chrono::seconds(5), Clock clock = {});

  void Update(const std::string& phase, size_t done, size_t total);

 private:
  struct Phase {
    std::string key;
    std::chrono::steady_clock::time_point start;  // first seen
    size_t start_done = 0;
    bool moved = false;                                // done has grown since
    std::chrono::steady_clock::time_point move_start;  // when it first grew
    size_t move_done = 0;                              // done at that moment
  };

  const std::string label_;
  std::ostream* const out_;
  const std::chrono::milliseconds interval_;
  const Clock clock_;
  std::mutex mu_;
  Phase current_;                                     // GUARDED_BY(mu_)
  std::string last_phase_;                            // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point last_print_;  // GUARDED_BY(mu_)
};

}  // namespace pixseek

#endif  // PIXSEEK_CORE_PHASE_PROGRESS_H_
