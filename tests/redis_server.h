// A private redis-server for tests: 127.0.0.1 on a free port, its own
// directory, no persistence, stopped, paused and restarted at will.
#ifndef PIXSEEK_TESTS_REDIS_SERVER_H_
#define PIXSEEK_TESTS_REDIS_SERVER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "subprocess.h"
#include "test_util.h"

namespace pixseek::testing {

// One redis-server child process. Not thread-safe (tests drive it from the
// main thread). Owns the process (killed on destruction) and its directory.
class RedisServer {
 public:
  // $PIXSEEK_REDIS_SERVER, else /usr/bin/redis-server or
  // /usr/local/bin/redis-server when executable; nullopt when none is.
  static std::optional<std::string> FindBinary();

  RedisServer();
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts the server and waits until it answers PING. The first start picks
  // a free port; later ones reuse it (a restart looks like the same server
  // coming back, empty). Empty string on success, else what went wrong.
  std::string Start();
  // Stops it (SIGTERM) and waits for the exit; its data is gone.
  void Stop();
  // SIGSTOP / SIGCONT: a hung server that still accepts connections.
  void Pause();
  void Resume();

  int port() const { return port_; }
  std::string url(int db = 0) const;
  std::string unix_socket() const;
  // Runs redis-cli against the server and returns its output, trailing
  // newline removed (e.g. Cli({"DBSIZE"}) == "3").
  std::string Cli(const std::vector<std::string>& args) const;

 private:
  std::string binary_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_REDIS_SERVER_H_
