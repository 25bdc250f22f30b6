// Query latency of one database through each interface, in one run:
//   in-process QueryService (uncached and cached), HTTP (pixseek serve's
//   server, in-process, on 127.0.0.1) and the CLI (a new `pixseek query`
//   process per query, which loads the model each time).
// Usage: pixseek_bench_query --db DB --images DIR [--home H] [--limit N]
//        [--pixseek PATH_TO_BINARY]
// Prints one JSON object per line:
//   {"interface":..,"cached":..,"queries":..,"p50_ms":..,"p99_ms":..,"mean_ms":..}
#include <httplib.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <string>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/server.h"
#include "pixseek/services.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

void PrintRow(const std::string& interface, bool cached, std::vector<double> ms) {
  if (ms.empty()) return;
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (double v : ms) sum += v;
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, static_cast<size_t>(p * ms.size()))]; };
  nlohmann::json row = {{"interface", interface}, {"cached", cached},
                        {"queries", ms.size()},  {"p50_ms", pct(0.5)},
                        {"p99_ms", pct(0.99)},   {"mean_ms", sum / ms.size()}};
  std::cout << row.dump() << std::endl;
}

double Since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pixseek query latency benchmark"};
  std::string db_dir, images_dir, home, binary;
  size_t limit = 100;
  app.add_option("--db", db_dir)->required();
  app.add_option("--images", images_dir, "Folder of query images")->required();
  app.add_option("--home", home);
  app.add_option("--limit", limit, "Queries per interface");
  app.add_option("--pixseek", binary, "pixseek binary for the CLI rows (skipped when empty)");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::vector<uint8_t>> queries;
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::recursive_directory_iterator(images_dir)) {
    if (!e.is_regular_file()) continue;
    auto bytes = pixseek::ReadFileLimited(e.path(), 64 << 20);
    if (!bytes.ok() || pixseek::SniffFormat(*bytes) == pixseek::ImageFormat::kUnknown) continue;
    queries.push_back(std::move(*bytes));
    paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  if (queries.size() > limit) queries.resize(limit);
  if (paths.size() > limit) paths.resize(limit);
  if (queries.empty()) {
    std::fprintf(stderr, "no images in %s\n", images_dir.c_str());
    return 1;
  }

  pixseek::DatabaseOptions options;
  options.dir = db_dir;
  options.home = home;
  auto db = pixseek::Database::Open(options, false);
  if (!db.ok()) {
    std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
    return 1;
  }
  pixseek::QueryService service(**db);
  pixseek::QueryParams params;
  std::vector<double> uncached, cached;
  (*db)->cache().Clear();
  for (const auto& q : queries) {
    auto t = Clock::now();
    auto r = service.SearchImage(q, params);
    uncached.push_back(Since(t));
    if (!r.ok()) std::fprintf(stderr, "query failed: %s\n", r.status().ToString().c_str());
  }
  for (const auto& q : queries) {
    auto t = Clock::now();
    (void)service.SearchImage(q, params);
    cached.push_back(Since(t));
  }
  PrintRow("in-process", false, uncached);
  PrintRow("in-process", true, cached);

  pixseek::ServerOptions server_options;
  server_options.port = 0;
  server_options.log_requests = false;
  pixseek::HttpServer server(**db, server_options);
  if (auto s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  httplib::Client client("127.0.0.1", server.port());
  for (bool warm : {false, true}) {
    if (!warm) (*db)->cache().Clear();
    std::vector<double> ms;
    for (const auto& q : queries) {
      httplib::MultipartFormDataItems form = {
          {"image", std::string(q.begin(), q.end()), "q.jpg", "application/octet-stream"}};
      auto t = Clock::now();
      auto res = client.Post("/api/v1/search?top_k=10", form);
      ms.push_back(Since(t));
      if (!res || res->status != 200) std::fprintf(stderr, "HTTP query failed\n");
    }
    PrintRow("http", warm, ms);
  }
  server.Stop();

  if (!binary.empty()) {
    std::vector<double> ms;
    const size_t n = std::min<size_t>(paths.size(), 20);  // a process per query is slow
    for (size_t i = 0; i < n; ++i) {
      std::vector<std::string> args = {binary, "query", paths[i], "--db", db_dir, "--json"};
      if (!home.empty()) args.insert(args.begin() + 1, {"--home", home});
      std::vector<char*> argv_c;
      for (auto& a : args) argv_c.push_back(a.data());
      argv_c.push_back(nullptr);
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
      auto t = Clock::now();
      pid_t pid;
      if (posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv_c.data(), environ) == 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        ms.push_back(Since(t));
      }
      posix_spawn_file_actions_destroy(&actions);
    }
    PrintRow("cli-process", false, ms);
  }
  return 0;
}
