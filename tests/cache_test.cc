// Tests of the caches: one typed suite run against the in-process LRU and the
// Redis cache (on a private, real redis-server), then what only one of them
// has: LRU eviction, Redis TTL, sharing, outages, and the URL parser.
#include "pixseek/cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "redis_server.h"
#include "test_util.h"

namespace pixseek {
namespace {

using testing::RedisServer;
using Clock = std::chrono::steady_clock;

double MillisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

constexpr char kNoRedis[] =
    "redis-server not found (install the Debian package redis-server, or set "
    "PIXSEEK_REDIS_SERVER)";

// ---------------------------------------------------------------------------
// The typed suite. A backend makes caches; caches made by one backend in one
// test share their storage (for Redis: one server).

struct LruBackend {
  static constexpr bool kExactSizes = true;
  static constexpr int kConcurrentOps = 5000;
  std::string SetUp() { return ""; }
  std::unique_ptr<Cache> NewCache() { return NewLruCache(64u << 20); }
};

struct RedisBackend {
  static constexpr bool kExactSizes = false;   // entries/bytes are estimates
  static constexpr int kConcurrentOps = 1000;  // each op is a round trip
  std::string SetUp() {
    if (!RedisServer::FindBinary()) return kNoRedis;
    std::string error = server.Start();
    return error.empty() ? "" : "cannot start redis-server: " + error;
  }
  std::unique_ptr<Cache> NewCache() {
    auto options = ParseRedisCacheUrl(server.url());
    EXPECT_TRUE(options.ok()) << options.status().ToString();
    // Generous timeouts: these tests are about semantics, on a busy machine.
    options->command_timeout_ms = 2000;
    options->connect_timeout_ms = 2000;
    return NewRedisCache(*options);
  }
  RedisServer server;
};

struct BackendNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, LruBackend> ? "Lru" : "Redis";
  }
};

template <typename Backend>
class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = backend_.SetUp();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  std::unique_ptr<Cache> NewCache() { return backend_.NewCache(); }
  Backend backend_;
};

using Backends = ::testing::Types<LruBackend, RedisBackend>;
TYPED_TEST_SUITE(CacheTest, Backends, BackendNames);

TYPED_TEST(CacheTest, GetPutOverwrite) {
  auto cache = this->NewCache();
  EXPECT_FALSE(cache->Get("a").has_value());
  cache->Put("a", "apple");
  auto got = cache->Get("a");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, "apple");
  cache->Put("a", "avocado");  // replaces
  EXPECT_EQ(cache->Get("a"), "avocado");
  EXPECT_FALSE(cache->Get("b").has_value());
  CacheStats s = cache->stats();
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.misses, 2u);
  if (TypeParam::kExactSizes) {
    EXPECT_EQ(s.entries, 1u);
    EXPECT_EQ(s.bytes, 1u + 7u);
  } else {
    EXPECT_GE(s.entries, 1u);
    EXPECT_GE(s.bytes, 1u + 7u);
  }
}

TYPED_TEST(CacheTest, EmptyValueIsAHit) {
  auto cache = this->NewCache();
  cache->Put("", "");
  cache->Put("k", "");
  EXPECT_EQ(cache->Get(""), std::optional<std::string>(""));
  EXPECT_EQ(cache->Get("k"), std::optional<std::string>(""));
}

TYPED_TEST(CacheTest, ManyKeysStayApart) {
  auto cache = this->NewCache();
  for (int i = 0; i < 200; ++i) cache->Put("key" + std::to_string(i), "v" + std::to_string(i));
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(cache->Get("key" + std::to_string(i)), "v" + std::to_string(i)) << i;
  }
}

TYPED_TEST(CacheTest, Clear) {
  auto cache = this->NewCache();
  for (int i = 0; i < 10; ++i) cache->Put("k" + std::to_string(i), "v");
  EXPECT_TRUE(cache->Get("k3").has_value());
  cache->Clear();
  CacheStats s = cache->stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.bytes, 0u);
  EXPECT_EQ(s.hits, 1u);  // counters survive a Clear
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(cache->Get("k" + std::to_string(i)).has_value()) << i;
  cache->Put("k3", "again");
  EXPECT_EQ(cache->Get("k3"), "again");
  cache->Clear();
  cache->Clear();  // twice in a row is fine
  EXPECT_FALSE(cache->Get("k3").has_value());
}

// A value computed before a Clear and stored after it is dropped: it was
// computed from data the Clear made stale.
TYPED_TEST(CacheTest, PutIfCurrentAfterAClearIsDropped) {
  auto cache = this->NewCache();
  const CacheGeneration before = cache->generation();
  EXPECT_FALSE(before.token.empty());
  EXPECT_EQ(cache->generation(), before) << "no Clear, the same generation";
  cache->PutIfCurrent("fresh", "v", before);
  EXPECT_EQ(cache->Get("fresh"), "v");

  const CacheGeneration stale = cache->generation();
  cache->Clear();
  const CacheGeneration after = cache->generation();
  EXPECT_NE(after, stale);
  cache->PutIfCurrent("k", "stale", stale);
  EXPECT_FALSE(cache->Get("k").has_value());
  if (TypeParam::kExactSizes) {
    EXPECT_EQ(cache->stats().entries, 0u);
  }

  // A value computed after the Clear is stored, and a stale Put does not
  // replace it.
  cache->PutIfCurrent("k", "current", after);
  EXPECT_EQ(cache->Get("k"), "current");
  cache->PutIfCurrent("k", "stale", stale);
  EXPECT_EQ(cache->Get("k"), "current");
  // Each Clear makes a new generation, also one with nothing stored.
  cache->Clear();
  cache->Clear();
  cache->PutIfCurrent("k", "stale", after);
  EXPECT_FALSE(cache->Get("k").has_value());
  // A generation nobody read is unknown: nothing is stored under it.
  cache->PutIfCurrent("k", "v", CacheGeneration{});
  EXPECT_FALSE(cache->Get("k").has_value());
}

// Searches that run while another thread clears: whatever one of them
// stores, it was computed after the last Clear before it was read back.
TYPED_TEST(CacheTest, ConcurrentClearsNeverKeepStaleValues) {
  auto cache = this->NewCache();
  // `version` stands for the database: Clear follows each change, as in
  // Database::Add; a value records the version it was computed from.
  std::atomic<int> version{0};
  std::atomic<bool> stop{false};
  std::atomic<int> stale{0};
  std::thread writer([&] {
    while (!stop) {
      ++version;
      cache->Clear();
      std::this_thread::yield();
    }
  });
  const int ops = TypeParam::kConcurrentOps / 4;
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; i < ops; ++i) {
        const std::string key = "q" + std::to_string((i + t) % 10);
        const int now = version.load();
        if (auto v = cache->Get(key)) {
          // A hit may only be older than the version read just before it if
          // a Clear is under way, never by two changes or more.
          if (std::stoi(*v) < now - 1) ++stale;
          continue;
        }
        const CacheGeneration seen = cache->generation();
        const int computed_from = version.load();
        std::this_thread::yield();  // the search itself, during which Clears may come
        cache->PutIfCurrent(key, std::to_string(computed_from), seen);
      }
    });
  }
  for (auto& r : readers) r.join();
  stop = true;
  writer.join();
  EXPECT_EQ(stale.load(), 0);
}

TYPED_TEST(CacheTest, LargeValues) {
  auto cache = this->NewCache();
  const std::string big = RandomBytes(6u << 20, 1);
  cache->Put("big", big);
  cache->Put("small", "s");
  auto got = cache->Get("big");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), big.size());
  EXPECT_TRUE(*got == big);
  EXPECT_EQ(cache->Get("small"), "s");
}

TYPED_TEST(CacheTest, BinarySafe) {
  auto cache = this->NewCache();
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
  const std::string k1("a\0b", 3), k2("a\0c", 3), k3("a", 1);
  const std::string v1("\0\r\n$3\r\n\0", 9);
  cache->Put(k1, v1);
  cache->Put(k2, every_byte);
  cache->Put(k3, "plain");
  cache->Put(every_byte, every_byte + every_byte);
  EXPECT_EQ(cache->Get(k1), v1);
  EXPECT_EQ(cache->Get(k2), every_byte);
  EXPECT_EQ(cache->Get(k3), "plain");
  EXPECT_EQ(cache->Get(every_byte), every_byte + every_byte);
  EXPECT_FALSE(cache->Get(std::string("a\0", 2)).has_value());
}

TYPED_TEST(CacheTest, ConcurrentUse) {
  auto cache = this->NewCache();
  constexpr int kThreads = 8;
  const int ops = TypeParam::kConcurrentOps;
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < ops; ++i) {
        std::string key = "key" + std::to_string((i * 7 + t) % 300);
        if (i % 3 == 0) {
          cache->Put(key, "value-of-" + key);
        } else if (auto v = cache->Get(key)) {
          if (*v != "value-of-" + key) ++wrong;
        }
        // Never as the very last operation: thread 0 may finish last, and
        // the check below needs something left to read back.
        if (i % 250 == 249 && i + 1 < ops && t == 0) cache->Clear();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  CacheStats s = cache->stats();
  // Every Get was counted exactly once.
  uint64_t gets = 0;
  for (int i = 0; i < ops; ++i) gets += i % 3 != 0;
  EXPECT_EQ(s.hits + s.misses, gets * kThreads);
  EXPECT_GT(s.hits, 0u);
  // What is left is readable, and (LRU) agrees with the sizes reported.
  size_t bytes = 0, entries = 0;
  for (int k = 0; k < 300; ++k) {
    std::string key = "key" + std::to_string(k);
    if (auto v = cache->Get(key)) {
      EXPECT_EQ(*v, "value-of-" + key);
      bytes += key.size() + v->size();
      ++entries;
    }
  }
  EXPECT_GT(entries, 0u);
  if (TypeParam::kExactSizes) {
    EXPECT_EQ(entries, s.entries);
    EXPECT_EQ(bytes, s.bytes);
  }
}

// ---------------------------------------------------------------------------
// The in-process LRU only: eviction and capacity.

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
  cache->Put("small", "x");                 // 6 bytes
  cache->Put("big", std::string(90, 'b'));  // 93 bytes: 99 total
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

TEST(LruCacheTest, ConcurrentUseWithinCapacity) {
  constexpr size_t kCapacity = 2000;
  auto cache = NewLruCache(kCapacity);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        std::string key = "key" + std::to_string((i * 7 + t) % 300);
        if (i % 3 == 0) {
          cache->Put(key, "value-of-" + key);
        } else {
          (void)cache->Get(key);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(cache->stats().bytes, kCapacity);
}

// ---------------------------------------------------------------------------
// URLs (no server needed).

TEST(CacheUrlTest, ParsesRedisUrls) {
  auto o = ParseRedisCacheUrl("redis://10.1.2.3:6380/2");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->host, "10.1.2.3");
  EXPECT_EQ(o->port, 6380);
  EXPECT_EQ(o->db, 2);
  EXPECT_EQ(o->password, "");
  EXPECT_EQ(o->ttl_seconds, 3600);
  EXPECT_EQ(o->key_prefix, "pixseek:");

  o = ParseRedisCacheUrl("redis://:p%40ss%2Fw@cache.local");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->host, "cache.local");
  EXPECT_EQ(o->port, 6379);
  EXPECT_EQ(o->db, 0);
  EXPECT_EQ(o->user, "");
  EXPECT_EQ(o->password, "p@ss/w");

  o = ParseRedisCacheUrl("REDIS://alice:pw@[::1]:7000/0?ttl=60&prefix=db1%3A");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->host, "::1");
  EXPECT_EQ(o->port, 7000);
  EXPECT_EQ(o->user, "alice");
  EXPECT_EQ(o->password, "pw");
  EXPECT_EQ(o->ttl_seconds, 60);
  EXPECT_EQ(o->key_prefix, "db1:");

  o = ParseRedisCacheUrl("redis+unix:///run/redis/redis.sock?db=3");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->unix_socket, "/run/redis/redis.sock");
  EXPECT_EQ(o->db, 3);
}

TEST(CacheUrlTest, RejectsMalformedUrlsWithoutEchoingThePassword) {
  const char* kSecret = "s3cretpw";
  for (std::string url : {
           "redis://:s3cretpw@host:notaport/0",
           "redis://:s3cretpw@host:6379/zero",
           "redis://:s3cretpw@host:70000",
           "redis://:s3cretpw@:6379",
           "redis://s3cretpw@host",
           "redis://:s3cretpw@host:6379/0?ttl=-1",
           "redis://:s3cretpw@host:6379/0?bogus=1",
           "redis://:s3cret%zzpw@host",
           "redis://:s3cretpw@host:6379:s3cretpw",
           "rediss://:s3cretpw@host",
           "redis+unix://relative/s3cretpw.sock",
           "mysql://u:s3cretpw@host/db",
           ":s3cretpw@host:6379",
           "memory://s3cretpw",
       }) {
    auto cache = OpenCache(url, 1024);
    ASSERT_FALSE(cache.ok()) << url;
    EXPECT_EQ(cache.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_EQ(cache.status().message().find(kSecret), std::string::npos)
        << cache.status().message();
  }
}

TEST(CacheUrlTest, EmptyAndMemoryUrlsGiveTheLru) {
  for (std::string url : {"", "memory://", "MEMORY://"}) {
    auto cache = OpenCache(url, 30);
    ASSERT_TRUE(cache.ok()) << url << ": " << cache.status().ToString();
    // The capacity reached the LRU: a fourth 10-byte entry evicts the first.
    for (int i = 1; i <= 4; ++i) (*cache)->Put("k" + std::to_string(i), std::string(8, 'v'));
    EXPECT_FALSE((*cache)->Get("k1").has_value()) << url;
    EXPECT_TRUE((*cache)->Get("k4").has_value()) << url;
  }
}

// ---------------------------------------------------------------------------
// Redis only: each test has its own server.

class RedisCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RedisServer::FindBinary()) GTEST_SKIP() << kNoRedis;
    std::string error = server_.Start();
    ASSERT_EQ(error, "");
  }

  // Short timeouts, as a deployment would use.
  RedisCacheOptions Options() {
    auto options = ParseRedisCacheUrl(server_.url());
    EXPECT_TRUE(options.ok());
    options->connect_timeout_ms = 200;
    options->command_timeout_ms = 200;
    options->retry_interval_ms = 1000;
    return *options;
  }

  // Puts and gets a fresh key until the cache answers from Redis again.
  // Returns the milliseconds it took, or -1 after `limit_ms`.
  static double WaitUntilCaching(Cache* cache, int limit_ms) {
    auto start = Clock::now();
    int probe = 0;
    const bool caching = testing::WaitFor(
        [&] {
          const std::string key = "probe" + std::to_string(probe++);
          cache->Put(key, "p");
          return cache->Get(key) == "p";
        },
        std::chrono::milliseconds(limit_ms), std::chrono::milliseconds(20));
    return caching ? MillisSince(start) : -1;
  }

  // How many writes Redis has refused for want of memory (INFO errorstats).
  int OutOfMemoryRefusals() {
    const std::string info = server_.Cli({"INFO", "errorstats"});
    const std::string field = "errorstat_OOM:count=";
    const size_t at = info.find(field);
    return at == std::string::npos ? 0 : std::stoi(info.substr(at + field.size()));
  }

  static int CountLines(const std::string& text, const std::string& a, const std::string& b) {
    int n = 0;
    size_t begin = 0;
    while (begin < text.size()) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(begin, end - begin);
      n += line.find(a) != std::string::npos && line.find(b) != std::string::npos;
      begin = end + 1;
    }
    return n;
  }

  RedisServer server_;
};

TEST_F(RedisCacheTest, EntriesLiveInRedisWithTheTtl) {
  RedisCacheOptions options = Options();
  options.ttl_seconds = 120;
  auto cache = NewRedisCache(options);
  cache->Put("query-1", "answer");
  ASSERT_EQ(cache->Get("query-1"), "answer");
  // The entry is in the server (not held locally), with the TTL.
  std::string keys = server_.Cli({"--scan", "--pattern", "pixseek:*:query-1"});
  ASSERT_NE(keys, "");
  ASSERT_EQ(keys.find('\n'), std::string::npos) << keys;
  int ttl = std::stoi(server_.Cli({"TTL", keys}));
  EXPECT_GT(ttl, 100);
  EXPECT_LE(ttl, 120);
  EXPECT_EQ(server_.Cli({"GET", keys}), "answer");
  // The data is the server's: once flushed, it is gone for the cache too.
  server_.Cli({"FLUSHALL"});
  EXPECT_FALSE(cache->Get("query-1").has_value());
  cache->Put("query-1", "again");
  EXPECT_EQ(cache->Get("query-1"), "again");
}

TEST_F(RedisCacheTest, EntriesExpire) {
  RedisCacheOptions options = Options();
  options.ttl_seconds = 1;
  auto cache = NewRedisCache(options);
  auto put_at = Clock::now();
  cache->Put("k", "v");
  ASSERT_EQ(cache->Get("k"), "v");
  const bool expired = testing::WaitFor([&] { return !cache->Get("k").has_value(); },
                                        std::chrono::seconds(4), std::chrono::milliseconds(50));
  double gone_after = MillisSince(put_at);
  EXPECT_TRUE(expired) << "still there after " << gone_after << " ms";
  EXPECT_GE(gone_after, 900);
}

TEST_F(RedisCacheTest, CachesSharingRedisSeeEachOthersClear) {
  auto a = NewRedisCache(Options());
  auto b = NewRedisCache(Options());
  a->Put("k", "from-a");
  EXPECT_EQ(b->Get("k"), "from-a");
  b->Clear();
  EXPECT_FALSE(a->Get("k").has_value());
  EXPECT_FALSE(b->Get("k").has_value());
  b->Put("k", "from-b");
  EXPECT_EQ(a->Get("k"), "from-b");
  // A Put from before the other's Clear, sent after it, is not seen.
  (void)a->Get("k");  // a knows the current generation
  b->Clear();
  a->Put("k", "stale");  // a has not seen b's Clear yet
  EXPECT_FALSE(b->Get("k").has_value());
  EXPECT_FALSE(a->Get("k").has_value());
  // Even the generation key lost (eviction, FLUSHALL) brings nothing old back.
  a->Put("k2", "v2");
  server_.Cli({"DEL", "pixseek:generation"});
  EXPECT_FALSE(b->Get("k2").has_value());
  EXPECT_FALSE(a->Get("k2").has_value());
  b->Put("k2", "new");
  EXPECT_EQ(a->Get("k2"), "new");
}

// A value computed before another process's Clear and stored after it is
// not seen, though the object that stores it has not seen that Clear yet.
TEST_F(RedisCacheTest, PutIfCurrentAfterAnotherProcesssClearIsNotSeen) {
  auto a = NewRedisCache(Options());
  auto b = NewRedisCache(Options());
  const CacheGeneration seen = a->generation();
  EXPECT_EQ(b->generation(), seen) << "one generation, shared";
  b->Clear();
  a->PutIfCurrent("k", "stale", seen);
  EXPECT_FALSE(b->Get("k").has_value());
  EXPECT_FALSE(a->Get("k").has_value());
  // The Get showed `a` the Clear: it now reads b's generation.
  EXPECT_EQ(a->generation(), b->generation());
  a->PutIfCurrent("k", "fresh", a->generation());
  EXPECT_EQ(b->Get("k"), "fresh");
  // Likewise when the generation key is lost (eviction, a Redis restart).
  const CacheGeneration before_loss = a->generation();
  server_.Cli({"DEL", "pixseek:generation"});
  a->PutIfCurrent("k2", "stale", before_loss);
  EXPECT_FALSE(b->Get("k2").has_value());
  EXPECT_FALSE(a->Get("k2").has_value());
}

TEST_F(RedisCacheTest, PrefixesAndDatabasesKeepCachesApart) {
  RedisCacheOptions one = Options(), two = Options(), other_db = Options();
  two.key_prefix = "other:";
  other_db.db = 5;
  auto c1 = NewRedisCache(one);
  auto c2 = NewRedisCache(two);
  auto c3 = NewRedisCache(other_db);
  c1->Put("k", "1");
  c2->Put("k", "2");
  c3->Put("k", "3");
  EXPECT_EQ(c1->Get("k"), "1");
  EXPECT_EQ(c2->Get("k"), "2");
  EXPECT_EQ(c3->Get("k"), "3");
  c2->Clear();
  EXPECT_EQ(c1->Get("k"), "1");
  EXPECT_FALSE(c2->Get("k").has_value());
  EXPECT_EQ(c3->Get("k"), "3");
  EXPECT_NE(server_.Cli({"-n", "5", "DBSIZE"}), "0");
}

TEST_F(RedisCacheTest, OpenCacheConnectsByTcpAndUnixSocket) {
  auto tcp = OpenCache(server_.url(3) + "?prefix=t%3A", 0);
  ASSERT_TRUE(tcp.ok()) << tcp.status().ToString();
  (*tcp)->Put("k", "tcp");
  EXPECT_EQ((*tcp)->Get("k"), "tcp");
  EXPECT_NE(server_.Cli({"-n", "3", "--scan", "--pattern", "t:*:k"}), "");

  auto unix_cache = OpenCache("redis+unix://" + server_.unix_socket() + "?db=3&prefix=t%3A", 0);
  ASSERT_TRUE(unix_cache.ok()) << unix_cache.status().ToString();
  EXPECT_EQ((*unix_cache)->Get("k"), "tcp");  // same db and prefix: same entries
}

TEST_F(RedisCacheTest, Password) {
  ASSERT_EQ(server_.Cli({"CONFIG", "SET", "requirepass", "pw-right"}), "OK");
  RedisCacheOptions right = Options(), wrong = Options();
  right.password = "pw-right";
  wrong.password = "pw-wrong";
  ::testing::internal::CaptureStderr();
  auto bad = NewRedisCache(wrong);
  bad->Put("k", "v");
  EXPECT_FALSE(bad->Get("k").has_value());
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.find("pw-wrong"), std::string::npos) << log;
  EXPECT_EQ(CountLines(log, "unavailable", "127.0.0.1:" + std::to_string(server_.port())), 1)
      << log;
  auto good = NewRedisCache(right);
  good->Put("k", "v");
  EXPECT_EQ(good->Get("k"), "v");
  auto via_url =
      OpenCache("redis://:pw-right@127.0.0.1:" + std::to_string(server_.port()) + "/0", 0);
  ASSERT_TRUE(via_url.ok());
  EXPECT_EQ((*via_url)->Get("k"), "v");
}

// Redis stopped, then started again on the same port: calls stay fast misses
// and no-ops, the outage and the recovery are logged once each, and the same
// cache object uses Redis again by itself.
TEST_F(RedisCacheTest, ServerStoppedAndRestarted) {
  RedisCacheOptions options = Options();
  auto cache = NewRedisCache(options);
  cache->Put("k", "v");
  ASSERT_EQ(cache->Get("k"), "v");

  ::testing::internal::CaptureStderr();
  server_.Stop();
  double slowest = 0;
  auto outage = Clock::now();
  int calls = 0;
  while (MillisSince(outage) < 1500) {
    auto t = Clock::now();
    cache->Put("k" + std::to_string(calls), "v");
    slowest = std::max(slowest, MillisSince(t));
    t = Clock::now();
    EXPECT_FALSE(cache->Get("k").has_value());
    slowest = std::max(slowest, MillisSince(t));
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_LT(slowest, options.command_timeout_ms + 300.0);
  ASSERT_EQ(server_.Start(), "");
  auto restarted = Clock::now();
  double back_after = WaitUntilCaching(cache.get(), 5000);
  std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_GE(back_after, 0) << "the cache never used Redis again; log:\n" << log;
  // It waits for the retry interval at most (plus scheduling).
  EXPECT_LT(MillisSince(restarted), options.retry_interval_ms + 1000.0);
  const std::string endpoint = "127.0.0.1:" + std::to_string(server_.port());
  EXPECT_EQ(CountLines(log, "unavailable", endpoint), 1) << log;
  EXPECT_EQ(CountLines(log, "is back", endpoint), 1) << log;
  // And it really is Redis: a second object sees what the first put.
  cache->Put("after", "restart");
  EXPECT_EQ(NewRedisCache(options)->Get("after"), "restart");
  std::printf("%d calls while stopped, slowest %.1f ms; using Redis again %.0f ms after restart\n",
              calls * 2, slowest, back_after);
}

// A hung Redis (SIGSTOP: connections are accepted, nothing answers) costs one
// call the timeout; after that, calls return at once and at most about one a
// second waits for the timeout again, until Redis answers again.
TEST_F(RedisCacheTest, HungServer) {
  RedisCacheOptions options = Options();
  auto cache = NewRedisCache(options);
  cache->Put("k", "v");
  ASSERT_EQ(cache->Get("k"), "v");

  ::testing::internal::CaptureStderr();
  server_.Pause();
  double slowest = 0;
  int slow_calls = 0, calls = 0;
  auto start = Clock::now();
  while (MillisSince(start) < 2500) {
    auto t = Clock::now();
    EXPECT_FALSE(cache->Get("k").has_value());
    double ms = MillisSince(t);
    slowest = std::max(slowest, ms);
    slow_calls += ms > options.command_timeout_ms / 2.0;
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  server_.Resume();
  double back_after = WaitUntilCaching(cache.get(), 5000);
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_LT(slowest, options.command_timeout_ms + 300.0);
  // The first failure and one probe per second; not one per call.
  EXPECT_GE(slow_calls, 1);
  EXPECT_LE(slow_calls, 4) << "of " << calls << " calls";
  EXPECT_GT(calls, 50);
  ASSERT_GE(back_after, 0) << log;
  const std::string endpoint = "127.0.0.1:" + std::to_string(server_.port());
  EXPECT_EQ(CountLines(log, "unavailable", endpoint), 1) << log;
  EXPECT_EQ(CountLines(log, "is back", endpoint), 1) << log;
  std::printf("%d calls while hung, %d slow, slowest %.1f ms; back after %.0f ms\n", calls,
              slow_calls, slowest, back_after);
}

// A Clear that Redis refuses (here: out of memory with noeviction) must not
// leave the old entries visible to this object, and is applied once Redis
// accepts writes again, for every object sharing it.
TEST_F(RedisCacheTest, RefusedClearIsAppliedLater) {
  RedisCacheOptions options = Options();
  options.retry_interval_ms = 300;
  auto a = NewRedisCache(options);
  auto b = NewRedisCache(options);
  a->Put("k", "old");
  ASSERT_EQ(b->Get("k"), "old");

  ::testing::internal::CaptureStderr();
  ASSERT_EQ(server_.Cli({"CONFIG", "SET", "maxmemory-policy", "noeviction"}), "OK");
  ASSERT_EQ(server_.Cli({"CONFIG", "SET", "maxmemory", "1"}), "OK");
  a->Clear();
  EXPECT_FALSE(a->Get("k").has_value());  // stale otherwise
  EXPECT_GE(OutOfMemoryRefusals(), 1);
  // Calls are misses until the retry interval has passed; then one call
  // tries the Clear again, which is refused too.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        EXPECT_FALSE(a->Get("k").has_value());
        return OutOfMemoryRefusals() >= 2;
      },
      std::chrono::seconds(5), std::chrono::milliseconds(20)))
      << "the Clear was not tried again";
  EXPECT_FALSE(a->Get("k").has_value());
  ASSERT_EQ(server_.Cli({"CONFIG", "SET", "maxmemory", "0"}), "OK");
  double back_after = WaitUntilCaching(a.get(), 5000);
  std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_GE(back_after, 0) << log;
  EXPECT_FALSE(a->Get("k").has_value());
  EXPECT_FALSE(b->Get("k").has_value());
  EXPECT_NE(log.find("Clear refused"), std::string::npos) << log;
  EXPECT_EQ(log.find("Clear refused"), log.rfind("Clear refused")) << "logged once:\n" << log;
}

}  // namespace
}  // namespace pixseek
