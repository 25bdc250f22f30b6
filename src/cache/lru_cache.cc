// The in-process LRU query-result cache.
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "pixseek/cache.h"

namespace pixseek {
namespace {

// Entries live in a list ordered from most to least recently used; the map
// points each key at its list node. An entry costs key.size() + value.size()
// bytes against the capacity (bookkeeping overhead is not counted).
//
// Thread-safety: all methods take mu_ (Get too: it reorders the list). Owns
// copies of every key and value.
class LruCache final : public Cache {
 public:
  explicit LruCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  std::optional<std::string> Get(const std::string& key) override {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) {
      ++misses_;
      return std::nullopt;
    }
    ++hits_;
    entries_.splice(entries_.begin(), entries_, it->second);
    return it->second->second;
  }

  void Put(const std::string& key, std::string value) override {
    std::lock_guard lock(mu_);
    PutLocked(key, std::move(value));
  }

  CacheGeneration generation() override {
    std::lock_guard lock(mu_);
    return {std::to_string(clears_)};
  }

  void PutIfCurrent(const std::string& key, std::string value,
                    const CacheGeneration& seen) override {
    std::lock_guard lock(mu_);
    if (seen.token != std::to_string(clears_)) return;
    PutLocked(key, std::move(value));
  }

  // Drops the entries; the hit and miss counters keep counting.
  void Clear() override {
    std::lock_guard lock(mu_);
    entries_.clear();
    index_.clear();
    bytes_ = 0;
    ++clears_;
  }

  CacheStats stats() const override {
    std::lock_guard lock(mu_);
    return CacheStats{hits_, misses_, entries_.size(), bytes_};
  }

 private:
  using Entry = std::pair<std::string, std::string>;

  static size_t Cost(const Entry& e) { return e.first.size() + e.second.size(); }

  // Put with mu_ held.
  void PutLocked(const std::string& key, std::string value) {
    const size_t cost = key.size() + value.size();
    auto it = index_.find(key);
    if (it != index_.end()) {
      bytes_ -= Cost(*it->second);
      entries_.erase(it->second);
      index_.erase(it);
    }
    // An entry larger than the whole cache is not stored (it would evict
    // everything and then itself); a zero-capacity cache stores nothing, not
    // even empty entries.
    if (capacity_ == 0 || cost > capacity_) return;
    entries_.emplace_front(key, std::move(value));
    index_.emplace(key, entries_.begin());
    bytes_ += cost;
    while (bytes_ > capacity_) {
      auto& last = entries_.back();
      bytes_ -= Cost(last);
      index_.erase(last.first);
      entries_.pop_back();
    }
  }

  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> entries_;  // GUARDED_BY(mu_): most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;  // GUARDED_BY(mu_)
  size_t bytes_ = 0;          // GUARDED_BY(mu_)
  uint64_t hits_ = 0;         // GUARDED_BY(mu_)
  uint64_t misses_ = 0;       // GUARDED_BY(mu_)
  uint64_t clears_ = 0;       // GUARDED_BY(mu_): Clear calls; the generation
};

}  // namespace

std::unique_ptr<Cache> NewLruCache(size_t capacity_bytes) {
  return std::make_unique<LruCache>(capacity_bytes);
}

}  // namespace pixseek
