// Runs the pixseek binary as a real child process for end-to-end tests.
#ifndef PIXSEEK_TESTS_SUBPROCESS_H_
#define PIXSEEK_TESTS_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace pixseek::testing {

struct CommandResult {
  int exit_code = -1;  // -signal when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] with the arguments, waits, and returns its exit code and output.
CommandResult RunCommand(const std::vector<std::string>& argv);

// A child process running in the background, with stderr captured through a
// pipe. Killed (SIGKILL) on destruction if still running.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Reads stderr until a line containing `needle` arrives (returned), or
  // until `timeout_ms` passes or the child exits (empty string).
  std::string WaitForLine(const std::string& needle, int timeout_ms);
  // Sends `sig` and waits for the exit; returns the exit code (-signal).
  int Stop(int sig);
  pid_t pid() const { return pid_; }
  const std::string& stderr_text() const { return err_; }

 private:
  pid_t pid_ = -1;
  int err_fd_ = -1;
  std::string err_;
  int status_ = 0;
  bool exited_ = false;
};

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_SUBPROCESS_H_
