// Tests of the in-process LRU cache.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "pixseek/cache.h"

namespace pixseek {
namespace {

TEST(LruCacheTest, HitAndMiss) {
  auto cache = NewLruCache(1024);
  EXPECT_FALSE(cache->Get("a").has_value());
  cache->Put("a", "apple");
  auto got = cache->Get("a");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, "apple");
  cache->Put("a", "avocado");  // replaces
  EXPECT_EQ(*cache->Get("a"), "avocado");
  CacheStats s = cache->stats();
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.bytes, 1u + 7u);
}

TEST(LruCacheTest, EvictsLeastRecentlyUsed) {
  // Each entry costs 2 (key) + 8 (value) = 10 bytes; three fit.
  auto cache = NewLruCache(30);
  cache->Put("k1", std::string(8, '1'));
  cache->Put("k2", std::string(8, '2'));
  cache->Put("k3", std::string(8, '3'));
  EXPECT_EQ(cache->stats().entries, 3u);
  EXPECT_TRUE(cache->Get("k1").has_value());  // k1 is now the most recent
  cache->Put("k4", std::string(8, '4'));      // evicts k2
  EXPECT_FALSE(cache->Get("k2").has_value());
  EXPECT_TRUE(cache->Get("k1").has_value());
  EXPECT_TRUE(cache->Get("k3").has_value());
  EXPECT_TRUE(cache->Get("k4").has_value());
  // Replacing counts as a use: k3 refreshed, k1 goes next.
  cache->Put("k3", std::string(8, 'x'));
  cache->Put("k5", std::string(8, '5'));
  EXPECT_FALSE(cache->Get("k1").has_value());
  EXPECT_EQ(*cache->Get("k3"), std::string(8, 'x'));
  EXPECT_EQ(cache->stats().bytes, 30u);
}

TEST(LruCacheTest, ByteCapacity) {
  auto cache = NewLruCache(100);
  cache->Put("small", "x");                   // 6 bytes
  cache->Put("big", std::string(90, 'b'));    // 93 bytes: 99 total
  EXPECT_EQ(cache->stats().bytes, 99u);
  EXPECT_EQ(cache->stats().entries, 2u);
  cache->Put("two", "yy");  // 5 more: "small" (least recent) goes
  EXPECT_FALSE(cache->Get("small").has_value());
  EXPECT_EQ(cache->stats().bytes, 98u);
  // Larger than the whole cache: not stored, and the old value goes too.
  cache->Put("two", std::string(200, 'z'));
  EXPECT_FALSE(cache->Get("two").has_value());
  EXPECT_TRUE(cache->Get("big").has_value());
  EXPECT_EQ(cache->stats().bytes, 93u);
  // Growing one value evicts others to make room.
  cache->Put("a", std::string(5, 'a'));
  cache->Put("big", std::string(96, 'b'));  // 99 bytes alone
  EXPECT_FALSE(cache->Get("a").has_value());
  EXPECT_EQ(cache->stats().entries, 1u);
  EXPECT_LE(cache->stats().bytes, 100u);
}

TEST(LruCacheTest, Clear) {
  auto cache = NewLruCache(1000);
  for (int i = 0; i < 10; ++i) cache->Put("k" + std::to_string(i), "v");
  EXPECT_TRUE(cache->Get("k3").has_value());
  cache->Clear();
  CacheStats s = cache->stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.bytes, 0u);
  EXPECT_EQ(s.hits, 1u);  // counters survive a Clear
  EXPECT_FALSE(cache->Get("k3").has_value());
  cache->Put("k3", "again");
  EXPECT_EQ(*cache->Get("k3"), "again");
}

TEST(LruCacheTest, ZeroCapacityStoresNothing) {
  auto cache = NewLruCache(0);
  cache->Put("a", "b");
  cache->Put("", "");
  EXPECT_FALSE(cache->Get("a").has_value());
  EXPECT_FALSE(cache->Get("").has_value());
  CacheStats s = cache->stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.bytes, 0u);
  EXPECT_EQ(s.misses, 2u);
}

TEST(LruCacheTest, ConcurrentUse) {
  constexpr size_t kCapacity = 2000;
  auto cache = NewLruCache(kCapacity);
  constexpr int kThreads = 8, kOps = 5000;
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        std::string key = "key" + std::to_string((i * 7 + t) % 300);
        if (i % 3 == 0) {
          cache->Put(key, "value-of-" + key);
        } else if (auto v = cache->Get(key)) {
          if (*v != "value-of-" + key) ++wrong;
        }
        if (i % 1000 == 999 && t == 0) cache->Clear();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  CacheStats s = cache->stats();
  EXPECT_LE(s.bytes, kCapacity);
  // Every Get was counted exactly once.
  uint64_t gets = 0;
  for (int i = 0; i < kOps; ++i) gets += i % 3 != 0;
  EXPECT_EQ(s.hits + s.misses, gets * kThreads);
  // Bytes agree with the entries still held.
  size_t bytes = 0, entries = 0;
  for (int k = 0; k < 300; ++k) {
    std::string key = "key" + std::to_string(k);
    if (auto v = cache->Get(key)) {
      bytes += key.size() + v->size();
      ++entries;
    }
  }
  EXPECT_EQ(entries, s.entries);
  EXPECT_EQ(bytes, s.bytes);
}

}  // namespace
}  // namespace pixseek
