// The Redis cache: Cache on a Redis server through hiredis, shared by every
// process that uses the same server and key prefix.
//
// Invalidation. Clear() must empty the cache for every process sharing the
// Redis, at once. Keys are "<prefix><generation>:<key>", where the generation
// is a random token kept in "<prefix>generation"; Clear stores a new token,
// which makes every older entry unreachable in one atomic command (the old
// entries then go by their TTL). SCAN+UNLINK of the prefix was the other
// choice: it costs O(entries) per Clear, is not atomic (a Put racing the scan
// survives it, other processes read half-cleared data meanwhile) and one that
// fails halfway leaves old entries readable. Reading the generation costs no
// extra round trip: each Get pipelines "GET generation" with the GET of the
// entry under the generation this object saw last; when the two differ,
// another process cleared, and the entry is looked up again under the new
// generation. Tokens are random rather than an INCR counter so that a
// generation key lost to eviction or a Redis restart can never bring an old
// generation (and its stale entries) back.
//
// A search result computed before a Clear and stored after it must not
// survive the Clear. The caller reads generation() before computing and
// passes it to PutIfCurrent, which writes under that generation: after a
// Clear by any process the write lands in a dead generation, with no WATCH
// or script needed (and is skipped when this object already knows of the
// Clear).
//
// A Clear that cannot reach Redis stays pending: this object answers nothing
// from Redis until it has stored a new generation (other processes see stale
// entries until then; nothing better is possible while Redis is unreachable).
//
// Failures. A call that fails on the connection marks Redis down: for the next
// retry_interval_ms every call is an immediate miss or no-op, then one call
// (the "probe") tries again; the first failure and the recovery are each
// logged once. Socket reads and writes are bounded by command_timeout_ms, so
// a hung Redis costs a call about that long, and only until it is marked down.
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pixseek/cache.h"

namespace pixseek {
namespace {

using Clock = std::chrono::steady_clock;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

// What became of a command: answered, answered with an error (the connection
// is still usable), the connection failed (it must be dropped), or Redis
// refused to store a new generation for a Clear.
enum class Outcome { kOk, kReplyError, kConnectionError, kClearRefused };

// Blocks SIGPIPE in this thread while alive. hiredis writes with write(2), and
// a write to a connection that Redis reset would otherwise kill the process;
// a library must not change the process's signal dispositions, so the signal
// is blocked here and one raised meanwhile is consumed before unblocking.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~ScopedSigpipeBlock() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec zero{};
        sigtimedwait(&pipe_, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

timeval Millis(int ms) {
  ms = std::max(ms, 1);
  return timeval{ms / 1000, (ms % 1000) * 1000};
}

// Queues one command (binary-safe arguments) on the connection's output buffer.
bool Append(redisContext* c, std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()) ==
         REDIS_OK;
}

// Reads the next reply (flushing the output buffer first). False when the
// connection failed; c->errstr says why.
bool Read(redisContext* c, ReplyPtr* reply) {
  void* r = nullptr;
  if (redisGetReply(c, &r) != REDIS_OK || r == nullptr) return false;
  reply->reset(static_cast<redisReply*>(r));
  return true;
}

bool IsString(const ReplyPtr& r) { return r->type == REDIS_REPLY_STRING; }
std::string_view Text(const ReplyPtr& r) { return {r->str, r->len}; }

// Cache on Redis. Thread-safety: every method may be called concurrently.
// Connections come from a small pool (up to options.pool_size, each used by
// one thread at a time) rather than one connection behind a mutex: a round
// trip takes tens of microseconds even on loopback, and a server answering
// many concurrent searches would queue every cache call behind one socket.
// Owns its connections; copies keys and values.
class RedisCache final : public Cache {
 public:
  explicit RedisCache(RedisCacheOptions options)
      : options_(std::move(options)),
        generation_key_(options_.key_prefix + "generation"),
        endpoint_(options_.unix_socket.empty()
                      ? (options_.host.find(':') != std::string::npos ? "[" + options_.host + "]"
                                                                      : options_.host) +
                            ":" + std::to_string(options_.port)
                      : options_.unix_socket),
        rng_(std::random_device{}()) {}

  std::optional<std::string> Get(const std::string& key) override {
    std::optional<std::string> value;
    Run([&](redisContext* c) { return GetOn(c, key, &value); });
    ++(value ? hits_ : misses_);
    return value;
  }

  void Put(const std::string& key, std::string value) override {
    Run([&](redisContext* c) {
      std::string generation = Generation();
      if (generation.empty()) {
        Outcome o = EnsureGeneration(c, &generation);
        if (o != Outcome::kOk) return o;
      }
      return PutOn(c, key, value, generation);
    });
  }

  // The generation this object saw last: no round trip, except before the
  // first call that reached Redis. One that is already stale (another
  // process cleared since) only costs the PutIfCurrent that uses it.
  CacheGeneration generation() override {
    std::string generation = Generation();
    if (generation.empty()) {
      Run([&](redisContext* c) { return EnsureGeneration(c, &generation); });
    }
    return {generation};
  }

  void PutIfCurrent(const std::string& key, std::string value,
                    const CacheGeneration& seen) override {
    if (seen.token.empty()) return;
    Run([&](redisContext* c) {
      // A Clear that this object saw (its own, or another process's) drops
      // the value here; one it has not seen yet leaves it under the dead
      // generation `seen`, unreachable.
      if (Generation() != seen.token) return Outcome::kOk;
      return PutOn(c, key, value, seen.token);
    });
  }

  void Clear() override {
    {
      std::lock_guard lock(gen_mu_);
      ++clears_requested_;
    }
    // Run stores the new generation before running the (empty) body; when
    // Redis is unreachable the Clear stays pending (see the file comment).
    Run([](redisContext*) { return Outcome::kOk; });
  }

  CacheStats stats() const override {
    std::lock_guard lock(gen_mu_);
    return CacheStats{hits_.load(), misses_.load(), entries_, bytes_};
  }

 private:
  struct Conn {
    ContextPtr ctx;
    uint64_t epoch = 0;  // epoch_ when connected; older ones predate a failure
  };

  // Runs `body` on a connected connection with any pending Clear applied
  // first. Does nothing while Redis is marked down (unless this call is the
  // probe). The body's outputs are only meaningful when it returns kOk.
  void Run(const std::function<Outcome(redisContext*)>& body) {
    ScopedSigpipeBlock no_sigpipe;
    bool probe = false;
    if (!Admit(&probe)) return;
    std::unique_ptr<Conn> conn = Acquire();
    // An outage may have been declared while this call waited for a connection.
    if (!probe && down_.load()) return Release(std::move(conn));
    bool fresh = false;
    for (int attempt = 0;; ++attempt) {
      if (conn->ctx && conn->epoch != epoch_.load()) conn->ctx.reset();
      if (!conn->ctx) {
        std::string error;
        if (!Connect(conn.get(), &error)) {
          Fail(error, probe);
          return Release(std::move(conn));
        }
        fresh = true;
      }
      std::string refusal;
      Outcome outcome = ApplyPendingClear(conn->ctx.get(), &refusal);
      if (outcome == Outcome::kClearRefused) {
        // Serving entries now could serve stale ones: this counts as an
        // outage, retried after the interval.
        Fail("Clear refused: " + refusal, probe);
        return Release(std::move(conn));
      }
      if (outcome == Outcome::kOk) outcome = body(conn->ctx.get());
      if (outcome != Outcome::kConnectionError) {
        if (probe) Recover();
        return Release(std::move(conn));
      }
      std::string error = conn->ctx->errstr;
      bool timed_out = conn->ctx->err == REDIS_ERR_IO && error == std::strerror(EAGAIN);
      conn->ctx.reset();
      // A pooled connection that Redis closed since its last use (its idle
      // timeout, a restart) fails at once: one retry on a new connection
      // tells that apart from an outage. A timeout already cost the full
      // wait and is not retried.
      if (!fresh && attempt == 0 && !timed_out) continue;
      Fail(error, probe);
      return Release(std::move(conn));
    }
  }

  // False when Redis is marked down and it is not yet time to try it again
  // (or another call is trying right now). Sets *probe for the one call that
  // tries.
  bool Admit(bool* probe) {
    if (!down_.load()) return true;
    std::lock_guard lock(state_mu_);
    if (!down_.load()) return true;
    if (probing_ || Clock::now() < next_attempt_) return false;
    probing_ = true;
    *probe = true;
    return true;
  }

  void Fail(const std::string& error, bool probe) {
    std::lock_guard lock(state_mu_);
    ++epoch_;  // every pooled connection predates this failure: replace them
    next_attempt_ = Clock::now() + std::chrono::milliseconds(options_.retry_interval_ms);
    if (probe) probing_ = false;
    if (!down_.load()) {
      down_.store(true);
      std::fprintf(stderr,
                   "pixseek: redis cache at %s unavailable (%s); running without the cache, "
                   "retrying every %d ms\n",
                   endpoint_.c_str(), error.c_str(), options_.retry_interval_ms);
    }
  }

  void Recover() {
    std::lock_guard lock(state_mu_);
    probing_ = false;
    if (down_.load()) {
      down_.store(false);
      std::fprintf(stderr, "pixseek: redis cache at %s is back\n", endpoint_.c_str());
    }
  }

  std::unique_ptr<Conn> Acquire() {
    std::unique_lock lock(pool_mu_);
    const int pool_size = std::max(options_.pool_size, 1);
    pool_cv_.wait(lock, [&] { return !idle_.empty() || created_ < pool_size; });
    if (!idle_.empty()) {
      std::unique_ptr<Conn> conn = std::move(idle_.back());
      idle_.pop_back();
      return conn;
    }
    ++created_;
    return std::make_unique<Conn>();
  }

  void Release(std::unique_ptr<Conn> conn) {
    {
      std::lock_guard lock(pool_mu_);
      idle_.push_back(std::move(conn));
    }
    pool_cv_.notify_one();
  }

  // Connects, authenticates and selects the database.
  bool Connect(Conn* conn, std::string* error) {
    const uint64_t epoch = epoch_.load();
    const timeval connect_timeout = Millis(options_.connect_timeout_ms);
    ContextPtr ctx(
        options_.unix_socket.empty()
            ? redisConnectWithTimeout(options_.host.c_str(), options_.port, connect_timeout)
            : redisConnectUnixWithTimeout(options_.unix_socket.c_str(), connect_timeout));
    if (!ctx) {
      *error = "out of memory";
      return false;
    }
    if (ctx->err) {
      *error = ctx->errstr;
      return false;
    }
    if (redisSetTimeout(ctx.get(), Millis(options_.command_timeout_ms)) != REDIS_OK) {
      *error = ctx->errstr;
      return false;
    }
    int pending = 0;
    if (!options_.password.empty()) {
      if (options_.user.empty()) {
        Append(ctx.get(), {"AUTH", options_.password});
      } else {
        Append(ctx.get(), {"AUTH", options_.user, options_.password});
      }
      ++pending;
    }
    const std::string db = std::to_string(options_.db);
    if (options_.db != 0) {
      Append(ctx.get(), {"SELECT", db});
      ++pending;
    }
    for (int i = 0; i < pending; ++i) {
      ReplyPtr reply;
      if (!Read(ctx.get(), &reply)) {
        *error = ctx->errstr;
        return false;
      }
      // Redis's error text (e.g. WRONGPASS ...) never contains the password.
      if (reply->type == REDIS_REPLY_ERROR) {
        *error = std::string(Text(reply));
        return false;
      }
    }
    conn->ctx = std::move(ctx);
    conn->epoch = epoch;
    return true;
  }

  std::string DataKey(std::string_view generation, std::string_view key) const {
    std::string k;
    k.reserve(options_.key_prefix.size() + generation.size() + 1 + key.size());
    k.append(options_.key_prefix).append(generation).append(":").append(key);
    return k;
  }

  std::string NewToken() {
    std::lock_guard lock(gen_mu_);
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng_()));
    return buf;
  }

  std::string Generation() const {
    std::lock_guard lock(gen_mu_);
    return generation_;
  }

  // Records the generation read from Redis; a new one means a Clear (by this
  // object or another process), so the local size estimate starts over.
  void Observe(std::string_view generation) {
    std::lock_guard lock(gen_mu_);
    if (generation_ == generation) return;
    generation_ = generation;
    entries_ = 0;
    bytes_ = 0;
  }

  // Reads the generation, creating one when the key is missing (first use,
  // eviction, a Redis restart).
  Outcome EnsureGeneration(redisContext* c, std::string* generation) {
    const std::string token = NewToken();
    Append(c, {"SET", generation_key_, token, "NX"});
    Append(c, {"GET", generation_key_});
    ReplyPtr set, get;
    if (!Read(c, &set) || !Read(c, &get)) return Outcome::kConnectionError;
    if (!IsString(get)) return ReplyError(get);
    *generation = Text(get);
    Observe(*generation);
    return Outcome::kOk;
  }

  Outcome ApplyPendingClear(redisContext* c, std::string* refusal) {
    uint64_t requested;
    {
      std::lock_guard lock(gen_mu_);
      requested = clears_requested_;
      if (clears_applied_ >= requested) return Outcome::kOk;
    }
    const std::string token = NewToken();
    Append(c, {"SET", generation_key_, token});
    ReplyPtr reply;
    if (!Read(c, &reply)) return Outcome::kConnectionError;
    if (reply->type != REDIS_REPLY_STATUS) {
      *refusal = reply->type == REDIS_REPLY_ERROR ? std::string(Text(reply)) : "unexpected reply";
      return Outcome::kClearRefused;
    }
    Observe(token);
    std::lock_guard lock(gen_mu_);
    clears_applied_ = std::max(clears_applied_, requested);
    return Outcome::kOk;
  }

  Outcome GetOn(redisContext* c, const std::string& key, std::optional<std::string>* value) {
    std::string generation = Generation();
    if (generation.empty()) {
      Outcome o = EnsureGeneration(c, &generation);
      if (o != Outcome::kOk) return o;
    }
    Append(c, {"GET", generation_key_});
    Append(c, {"GET", DataKey(generation, key)});
    ReplyPtr current, entry;
    if (!Read(c, &current) || !Read(c, &entry)) return Outcome::kConnectionError;
    if (current->type == REDIS_REPLY_NIL) {
      // The generation key is gone, so every entry is unreachable: a miss.
      return EnsureGeneration(c, &generation);
    }
    if (!IsString(current)) return ReplyError(current);
    if (Text(current) != generation) {
      // Another process cleared since this object last looked.
      generation = Text(current);
      Observe(generation);
      Append(c, {"GET", DataKey(generation, key)});
      if (!Read(c, &entry)) return Outcome::kConnectionError;
    }
    if (entry->type == REDIS_REPLY_NIL) return Outcome::kOk;
    if (!IsString(entry)) return ReplyError(entry);
    value->emplace(Text(entry));
    return Outcome::kOk;
  }

  // Stores the entry under `generation`. If that is no longer the current
  // one (another process cleared meanwhile), the entry lands in a dead
  // generation and expires unread, which is right: it was computed before
  // that Clear.
  Outcome PutOn(redisContext* c, const std::string& key, const std::string& value,
                const std::string& generation) {
    const std::string ttl = std::to_string(options_.ttl_seconds);
    Append(c, {"GET", generation_key_});
    if (options_.ttl_seconds > 0) {
      Append(c, {"SET", DataKey(generation, key), value, "EX", ttl});
    } else {
      Append(c, {"SET", DataKey(generation, key), value});
    }
    ReplyPtr current, set;
    if (!Read(c, &current) || !Read(c, &set)) return Outcome::kConnectionError;
    if (set->type != REDIS_REPLY_STATUS) return ReplyError(set);
    if (current->type == REDIS_REPLY_NIL) {
      std::lock_guard lock(gen_mu_);
      generation_.clear();  // read (and recreated) again on the next call
      return Outcome::kOk;
    }
    if (!IsString(current)) return ReplyError(current);
    if (Text(current) != generation) {
      Observe(Text(current));
      return Outcome::kOk;
    }
    std::lock_guard lock(gen_mu_);
    if (generation_ == generation) {
      // Overwrites and expiry are not seen here: an estimate.
      ++entries_;
      bytes_ += key.size() + value.size();
    }
    return Outcome::kOk;
  }

  // An error answer (e.g. OOM under maxmemory-policy noeviction): the call is
  // a miss or a no-op; logged once per cache object.
  Outcome ReplyError(const ReplyPtr& reply) {
    if (!logged_reply_error_.exchange(true)) {
      const std::string text =
          reply->type == REDIS_REPLY_ERROR ? std::string(Text(reply)) : "unexpected reply type";
      std::fprintf(stderr, "pixseek: redis cache at %s answered: %s\n", endpoint_.c_str(),
                   text.c_str());
    }
    return Outcome::kReplyError;
  }

  const RedisCacheOptions options_;
  const std::string generation_key_;
  const std::string endpoint_;  // for log lines: host:port or the socket path

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Conn>> idle_;  // GUARDED_BY(pool_mu_)
  int created_ = 0;                          // GUARDED_BY(pool_mu_)

  std::mutex state_mu_;
  std::atomic<bool> down_{false};   // written under state_mu_
  std::atomic<uint64_t> epoch_{0};  // written under state_mu_
  bool probing_ = false;            // GUARDED_BY(state_mu_)
  Clock::time_point next_attempt_;  // GUARDED_BY(state_mu_)

  mutable std::mutex gen_mu_;
  std::string generation_;         // GUARDED_BY(gen_mu_): last seen; empty = unknown
  uint64_t clears_requested_ = 0;  // GUARDED_BY(gen_mu_)
  uint64_t clears_applied_ = 0;    // GUARDED_BY(gen_mu_)
  size_t entries_ = 0;             // GUARDED_BY(gen_mu_)
  size_t bytes_ = 0;               // GUARDED_BY(gen_mu_)
  std::mt19937_64 rng_;            // GUARDED_BY(gen_mu_)

  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<bool> logged_reply_error_{false};
};

}  // namespace

std::unique_ptr<Cache> NewRedisCache(const RedisCacheOptions& options) {
  return std::make_unique<RedisCache>(options);
}

}  // namespace pixseek
