// pixseek_milvus_test_server: the Milvus REST API v2 test server
// (tests/milvus_server.h) as a process, for tests that stop, kill and
// restart it.
//
//   pixseek_milvus_test_server --dir DIR [--port P] [--token T]
//
// Once it accepts connections it prints "listening on 127.0.0.1:<port>" as
// one flushed line on stdout, and the same line on stderr (for
// tests/subprocess.h's ChildProcess, which reads stderr). SIGTERM or SIGINT
// stops it cleanly: the collections are closed and their writer locks
// released, so a new server can open the same directory at once. Exit codes:
// 0 after a clean stop, 1 when it cannot start, 2 for bad arguments.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "milvus_server.h"

int main(int argc, char** argv) {
  pixseek::testing::MilvusTestServerOptions options;
  std::string dir;
  CLI::App app{
      "A Milvus REST API v2 test server over pixseek's flat index (tests only; it "
      "implements the subset of Milvus that pixseek uses)"};
  app.add_option("--dir", dir, "Directory where the collections persist")->required();
  app.add_option("--port", options.port, "Port on 127.0.0.1; 0 picks a free one")
      ->check(CLI::Range(0, 65535));
  app.add_option("--token", options.token,
                 "When set, every request needs \"Authorization: Bearer <token>\"");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  options.dir = dir;

  // Block the stop signals in every thread (the server's threads inherit the
  // mask) and wait for them here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  pixseek::testing::MilvusTestServer server(options);
  if (std::string error = server.Start(); !error.empty()) {
    std::cerr << "pixseek_milvus_test_server: " << error << std::endl;
    return 1;
  }
  const std::string line = "listening on 127.0.0.1:" + std::to_string(server.port());
  std::cout << line << std::endl;  // endl flushes
  std::cerr << line << std::endl;

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  server.Stop();
  std::cerr << "pixseek_milvus_test_server: stopped (signal " << sig << ")" << std::endl;
  return 0;
}
