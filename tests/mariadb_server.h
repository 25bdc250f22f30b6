// A private MariaDB server for tests: a real mariadbd on 127.0.0.1 with its
// own data directory, port and socket, a password user for the store's URL,
// and stop/start/pause in the middle of a test.
#ifndef PIXSEEK_TESTS_MARIADB_SERVER_H_
#define PIXSEEK_TESTS_MARIADB_SERVER_H_

#include <memory>
#include <string>

#include "subprocess.h"
#include "test_util.h"

namespace pixseek::testing {

// Owns the server process and its directory; the destructor kills the
// server and removes the directory. Admin, Url and port may be called from
// any thread; Start, Stop, Pause, Resume and CreateDatabase from one at a
// time.
//
// The data directory is copied from a template that mariadb-install-db makes
// once per build tree and server version (PIXSEEK_TEST_BIN_DIR), so a start
// costs about a second instead of the installer's several.
class MariadbServer {
 public:
  // The user the store connects as, and its password: it has characters a
  // URL must percent-encode, so every test also checks the decoding.
  static constexpr const char* kUser = "pixseek_test";
  static constexpr const char* kPassword = "p@ss:w/rd%42 #?";

  // Empty when mariadbd and mariadb-install-db are installed, else why not
  // (for GTEST_SKIP).
  static std::string MissingReason();

  // One server for the whole test process, started on first use. nullptr
  // (and `why`) when it cannot start.
  static MariadbServer* Shared(std::string* why);

  MariadbServer();
  ~MariadbServer();
  MariadbServer(const MariadbServer&) = delete;
  MariadbServer& operator=(const MariadbServer&) = delete;

  // Starts the server and waits until it accepts connections: the first
  // time on a new data directory and a free port, later on the same ones.
  // Empty on success, else the reason with the end of the server's log.
  std::string Start();
  // Stops the server with `sig` (SIGTERM: clean shutdown; SIGKILL: crash)
  // and waits for it to exit. The data directory and port are kept.
  void Stop(int sig);
  // Freezes and thaws the server process (a hung server).
  void Pause();
  void Resume();
  bool running() const { return process_ != nullptr; }

  int port() const { return port_; }
  // Creates an empty database with a new name; returns its name, or an
  // empty string and `error`.
  std::string CreateDatabase(std::string* error);
  // mysql://kUser:kPassword@127.0.0.1:port/database, percent-encoded.
  std::string Url(const std::string& database) const;
  // Runs `sql` (one or more statements separated by ';') as root over the
  // Unix socket, in one session: empty on success, else the server's error. `first_value`, when
  // given, receives the first column of the first row.
  std::string Admin(const std::string& sql, std::string* first_value = nullptr);

 private:
  std::string Prepare();
  std::string WaitReady(size_t log_offset);
  std::string LogTail() const;

  TempDir dir_;
  std::unique_ptr<ChildProcess> process_;
  int port_ = 0;
  bool prepared_ = false;
  int next_database_ = 0;
};

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_MARIADB_SERVER_H_
