// A reader/writer mutex that does not starve writers.
#ifndef PIXSEEK_INDEX_RW_MUTEX_H_
#define PIXSEEK_INDEX_RW_MUTEX_H_

#include <mutex>
#include <shared_mutex>

namespace pixseek {

// std::shared_mutex on glibc prefers readers: under a steady stream of
// overlapping searches an Add would wait forever. Here every locker first
// passes a turnstile mutex; a writer keeps it until it owns the lock, so
// readers arriving after a waiting writer queue behind it.
//
// Meets the SharedMutex requirements (use with std::unique_lock and
// std::shared_lock). Thread-safe; not recursive.
class WriterPriorityMutex {
 public:
  void lock() {
    std::lock_guard turn(turnstile_);
    mu_.lock();
  }
  bool try_lock() {
    std::unique_lock turn(turnstile_, std::try_to_lock);
    return turn.owns_lock() && mu_.try_lock();
  }
  void unlock() { mu_.unlock(); }

  void lock_shared() {
    std::lock_guard turn(turnstile_);
    mu_.lock_shared();
  }
  bool try_lock_shared() {
    std::unique_lock turn(turnstile_, std::try_to_lock);
    return turn.owns_lock() && mu_.try_lock_shared();
  }
  void unlock_shared() { mu_.unlock_shared(); }

 private:
  std::mutex turnstile_;
  std::shared_mutex mu_;
};

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_RW_MUTEX_H_
