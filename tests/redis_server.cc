// The RedisServer test fixture: a private redis-server child process.
#include "redis_server.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

namespace pixseek::testing {
namespace {

bool Executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// A port nobody listens on right now (the kernel's pick for port 0). Another
// process could take it before redis-server binds it; Start retries then.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string CliBinary(const std::string& server) {
  std::string dir = server.substr(0, server.rfind('/') + 1);
  return Executable(dir + "redis-cli") ? dir + "redis-cli" : "/usr/bin/redis-cli";
}

}  // namespace

std::optional<std::string> RedisServer::FindBinary() {
  if (const char* env = std::getenv("PIXSEEK_REDIS_SERVER")) {
    if (Executable(env)) return std::string(env);
    return std::nullopt;
  }
  for (const char* path : {"/usr/bin/redis-server", "/usr/local/bin/redis-server"}) {
    if (Executable(path)) return std::string(path);
  }
  return std::nullopt;
}

RedisServer::RedisServer() : binary_(FindBinary().value_or("")) {}

RedisServer::~RedisServer() {
  if (process_) {
    Resume();  // a paused server would not see SIGTERM until continued
    process_->Stop(SIGKILL);
  }
}

std::string RedisServer::Start() {
  if (binary_.empty()) return "redis-server not found";
  if (process_) return "already running";
  const bool first = port_ == 0;
  std::string why;
  for (int attempt = 0; attempt < (first ? 5 : 1); ++attempt) {
    if (first) port_ = FreePort();
    if (port_ == 0) return "no free port";
    const std::string dir = dir_.path().string();
    // No persistence (--save "" and no AOF): a restart comes back empty.
    std::vector<std::string> argv = {binary_, "--port", std::to_string(port_)};
    for (const char* arg : {"--bind", "127.0.0.1", "--unixsocketperm", "700", "--save", "",
                            "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}) {
      argv.push_back(arg);
    }
    argv.insert(argv.end(),
                {"--dir", dir, "--unixsocket", unix_socket(), "--logfile", dir + "/redis.log"});
    process_ = std::make_unique<ChildProcess>(argv);
    if (WaitFor([&] { return Cli({"PING"}) == "PONG"; }, std::chrono::seconds(10),
                std::chrono::milliseconds(20))) {
      return "";
    }
    process_->Stop(SIGKILL);
    process_.reset();
    why = "redis-server on port " + std::to_string(port_) +
          " did not answer PING within 10 s (see its log in " + dir + ")";
  }
  if (first) port_ = 0;
  return why;
}

void RedisServer::Stop() {
  if (!process_) return;
  Resume();
  process_->Stop(SIGTERM);
  process_.reset();
}

void RedisServer::Pause() {
  if (process_) ::kill(process_->pid(), SIGSTOP);
}

void RedisServer::Resume() {
  if (process_) ::kill(process_->pid(), SIGCONT);
}

std::string RedisServer::url(int db) const {
  return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
}

std::string RedisServer::unix_socket() const { return (dir_.path() / "redis.sock").string(); }

std::string RedisServer::Cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {CliBinary(binary_), "-h", "127.0.0.1", "-p",
                                   std::to_string(port_)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out = RunCommand(argv).out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace pixseek::testing
