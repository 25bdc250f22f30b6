// BoundedQueue: a blocking queue with a capacity, closed when the producers
// are done. Used by the pipelines that decode on worker threads while one
// thread runs the network (the build, bench embed).
#ifndef PIXSEEK_CORE_BOUNDED_QUEUE_H_
#define PIXSEEK_CORE_BOUNDED_QUEUE_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace pixseek {

// Thread-safety: all methods may be called concurrently.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}

  // Blocks while the queue is full.
  void Push(T item) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_; });
    items_.push_back(std::move(item));
    not_empty_.notify_one();
  }
  // Blocks while empty; an empty optional once closed and drained.
  std::optional<T> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    return TakeFront();
  }
  // Non-blocking pop, for filling a batch with what is already ready.
  std::optional<T> TryPop() {
    std::lock_guard<std::mutex> lock(mu_);
    return TakeFront();
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
  }

 private:
  std::optional<T> TakeFront() {  // with mu_ held
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }

  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> items_;  // GUARDED_BY(mu_)
  bool closed_ = false;  // GUARDED_BY(mu_)
};

}  // namespace pixseek

#endif  // PIXSEEK_CORE_BOUNDED_QUEUE_H_
