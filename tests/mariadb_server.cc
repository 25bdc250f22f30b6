// A private mariadbd for tests; see mariadb_server.h.
#include "mariadb_server.h"

#include <arpa/inet.h>
#include <mysql.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace pixseek::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMariadbd = "/usr/sbin/mariadbd";
constexpr const char* kInstallDb = "/usr/bin/mariadb-install-db";

#ifndef PIXSEEK_TEST_BIN_DIR
#define PIXSEEK_TEST_BIN_DIR "/tmp"
#endif

// A port nobody listens on now. The server may lose a race for it; Start
// then tries another.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The server's settings: small and fast to start, nothing durable beyond
// what the tests need (a commit is in the OS page cache, which survives a
// SIGKILL of the server, not a power cut).
void WriteConfig(const fs::path& file, const fs::path& datadir, const fs::path& run_dir, int port) {
  std::ofstream out(file);
  out << "[mariadbd]\n"
      << "datadir=" << datadir.string() << "\n"
      << "socket=" << (run_dir / "mysqld.sock").string() << "\n"
      << "pid-file=" << (run_dir / "mysqld.pid").string() << "\n"
      << "log-error=" << (run_dir / "error.log").string()
      << "\n"
      // Its own temporary files: servers sharing /tmp can collide on names.
      << "tmpdir=" << run_dir.string() << "\n"
      << "port=" << port << "\n"
      << "bind-address=127.0.0.1\n"
      << "skip-name-resolve\n"
      << "skip-log-bin\n"
      << "performance-schema=OFF\n"
      << "innodb-buffer-pool-size=16M\n"
      << "innodb-log-file-size=4M\n"
      << "innodb-flush-log-at-trx-commit=2\n"
      << "innodb-doublewrite=0\n"
      << "key-buffer-size=1M\n"
      << "max-connections=200\n";
  // mariadbd refuses to run as root unless told to.
  if (geteuid() == 0) out << "user=root\n";
}

// "10.11.19-MariaDB-0+deb12u1" from "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for ...",
// reduced to characters safe in a file name.
std::string ServerVersion() {
  CommandResult r = RunCommand({kMariadbd, "--version"});
  std::istringstream words(r.out);
  std::string word, version;
  while (words >> word) {
    if (word == "Ver" && words >> version) break;
  }
  std::string safe;
  for (char c : version) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') safe.push_back(c);
  }
  return safe.empty() ? "unknown" : safe.substr(0, 60);
}

// A freshly installed data directory to copy, made once per build tree and
// server version. Several test processes may race to make it: each installs
// into its own directory and renames it into place; losers use the winner's.
std::string TemplateDir(fs::path* out) {
  fs::path dir = fs::path(PIXSEEK_TEST_BIN_DIR) / ("mariadb-template-" + ServerVersion());
  *out = dir;
  if (fs::exists(dir / "mysql")) return {};
  fs::path staging = dir.string() + ".tmp." + std::to_string(getpid());
  fs::remove_all(staging);
  fs::create_directories(staging / "run");
  WriteConfig(staging / "my.cnf", staging / "data", staging / "run", FreePort());
  CommandResult r = RunCommand({kInstallDb, "--defaults-file=" + (staging / "my.cnf").string(),
                                "--auth-root-authentication-method=normal", "--skip-test-db"});
  if (r.exit_code != 0) {
    std::string log = ReadFile(staging / "run" / "error.log");
    fs::remove_all(staging);
    return "mariadb-install-db failed (exit " + std::to_string(r.exit_code) + "); its log:\n" +
           log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  }
  std::error_code ec;
  fs::rename(staging / "data", dir, ec);  // fails when another process won
  fs::remove_all(staging);
  if (!fs::exists(dir / "mysql")) return "cannot create the MariaDB template " + dir.string();
  return {};
}

std::string PercentEncode(const std::string& text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace

std::string MariadbServer::MissingReason() {
  for (const char* binary : {kMariadbd, kInstallDb}) {
    if (access(binary, X_OK) != 0) {
      return std::string(binary) +
             " is not installed (Debian package mariadb-server); "
             "MariaDB store tests skipped";
    }
  }
  return {};
}

MariadbServer* MariadbServer::Shared(std::string* why) {
  static std::string error;
  static std::unique_ptr<MariadbServer> server = [] {
    error = MissingReason();
    if (!error.empty()) return std::unique_ptr<MariadbServer>();
    auto s = std::make_unique<MariadbServer>();
    error = s->Start();
    if (!error.empty()) s.reset();
    return s;
  }();
  if (server == nullptr) *why = error;
  return server.get();
}

MariadbServer::MariadbServer() = default;

MariadbServer::~MariadbServer() {
  if (process_ != nullptr) process_->Stop(SIGKILL);
}

std::string MariadbServer::Prepare() {
  fs::path template_dir;
  std::string error = TemplateDir(&template_dir);
  if (!error.empty()) return error;
  std::error_code ec;
  fs::copy(template_dir, dir_.path() / "data", fs::copy_options::recursive, ec);
  if (ec) return "cannot copy the MariaDB template: " + ec.message();
  fs::create_directories(dir_.path() / "run");
  prepared_ = true;
  return {};
}

std::string MariadbServer::LogTail() const {
  std::string log = ReadFile(dir_.path() / "run" / "error.log");
  return log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
}

std::string MariadbServer::WaitReady(size_t log_offset) {
  const fs::path log_file = dir_.path() / "run" / "error.log";
  std::string fresh;
  const bool ended = WaitFor(
      [&] {
        std::string log = ReadFile(log_file);
        fresh = log.size() > log_offset ? log.substr(log_offset) : "";
        return fresh.find("ready for connections") != std::string::npos ||
               fresh.find("[ERROR] Aborting") != std::string::npos;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(20));
  if (!ended) return "mariadbd did not become ready in 60 s:\n" + LogTail();
  if (fresh.find("ready for connections") != std::string::npos) return {};
  return "mariadbd aborted:\n" + fresh;
}

std::string MariadbServer::Start() {
  if (process_ != nullptr) return {};
  const bool first = !prepared_;
  if (first) {
    std::string error = Prepare();
    if (!error.empty()) return error;
  }
  const fs::path cnf = dir_.path() / "my.cnf";
  // A fresh port can be taken between FreePort and the server's bind:
  // try a few. A restart keeps its port.
  std::string error;
  for (int attempt = 0; attempt < (first ? 3 : 1); ++attempt) {
    if (first) port_ = FreePort();
    WriteConfig(cnf, dir_.path() / "data", dir_.path() / "run", port_);
    std::error_code ec;
    size_t offset = fs::exists(dir_.path() / "run" / "error.log")
                        ? static_cast<size_t>(fs::file_size(dir_.path() / "run" / "error.log"))
                        : 0;
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kMariadbd, "--defaults-file=" + cnf.string()});
    error = WaitReady(offset);
    if (error.empty()) break;
    process_->Stop(SIGKILL);
    process_.reset();
    if (error.find("Bind on TCP/IP port") == std::string::npos) break;
  }
  if (!error.empty()) return error;
  if (first) {
    std::string user = std::string("'") + kUser + "'@'%'";
    for (const std::string& sql :
         {"CREATE USER IF NOT EXISTS " + user + " IDENTIFIED BY '" + kPassword + "'",
          "GRANT ALL PRIVILEGES ON *.* TO " + user}) {
      error = Admin(sql);
      if (!error.empty()) return "cannot create the test user: " + error;
    }
  }
  return {};
}

void MariadbServer::Stop(int sig) {
  if (process_ == nullptr) return;
  process_->Stop(sig);
  process_.reset();
}

void MariadbServer::Pause() {
  if (process_ == nullptr) return;
  kill(process_->pid(), SIGSTOP);
  // The stop reaches each thread asynchronously; a thread already running
  // could still answer a query. Wait until every thread shows state T.
  const fs::path tasks = fs::path("/proc") / std::to_string(process_->pid()) / "task";
  WaitFor(
      [&] {
        std::error_code ec;
        for (const auto& task : fs::directory_iterator(tasks, ec)) {
          std::string stat = ReadFile(task.path() / "stat");
          // "pid (comm) S ...": the state follows the last ')'.
          size_t paren = stat.rfind(')');
          if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') {
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(5), std::chrono::milliseconds(2));
}

void MariadbServer::Resume() {
  if (process_ != nullptr) kill(process_->pid(), SIGCONT);
}

std::string MariadbServer::Admin(const std::string& sql, std::string* first_value) {
  MYSQL* m = mysql_init(nullptr);
  unsigned timeout = 30;
  mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
  const std::string socket = (dir_.path() / "run" / "mysqld.sock").string();
  if (mysql_real_connect(m, "localhost", "root", "", nullptr, 0, socket.c_str(),
                         CLIENT_MULTI_STATEMENTS) == nullptr) {
    std::string error = std::string("cannot connect as root: ") + mysql_error(m);
    mysql_close(m);
    return error;
  }
  std::string error;
  if (mysql_real_query(m, sql.data(), sql.size()) != 0) {
    error = mysql_error(m);
  } else {
    // Several statements give several results: read them all.
    bool first = true;
    for (;;) {
      if (MYSQL_RES* res = mysql_store_result(m)) {
        MYSQL_ROW row = mysql_fetch_row(res);
        if (first && first_value != nullptr && row != nullptr && row[0] != nullptr) {
          *first_value = row[0];
        }
        first = false;
        mysql_free_result(res);
      }
      int next = mysql_next_result(m);
      if (next > 0) error = mysql_error(m);
      if (next != 0) break;
    }
  }
  mysql_close(m);
  return error;
}

std::string MariadbServer::CreateDatabase(std::string* error) {
  std::string name =
      "pixseek_test_" + std::to_string(getpid()) + "_" + std::to_string(next_database_++);
  *error = Admin("CREATE DATABASE `" + name + "` CHARACTER SET utf8mb4");
  return error->empty() ? name : std::string();
}

std::string MariadbServer::Url(const std::string& database) const {
  return "mysql://" + PercentEncode(kUser) + ":" + PercentEncode(kPassword) +
         "@127.0.0.1:" + std::to_string(port_) + "/" + database;
}

}  // namespace pixseek::testing
