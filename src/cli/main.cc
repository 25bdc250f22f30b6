// pixseek command-line interface: build, query, add, remove, serve, eval,
// stats, model management and the benchmarks (bench ann, bench embed). Every
// command is a thin layer over the service layer (include/pixseek/services.h)
// or, for the benchmarks, over src/bench_ann and src/bench_embed; errors
// print one clear line and exit 1.
#include <pthread.h>
#include <signal.h>

#include <csignal>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_ann/ann_bench.h"
#include "bench_embed/embed_bench.h"
#include "pixseek/config.h"
#include "pixseek/database.h"
#include "pixseek/model_registry.h"
#include "pixseek/server.h"
#include "pixseek/services.h"
#include "server/api_json.h"

namespace pixseek {
namespace {

using nlohmann::json;

// Options shared by the commands that open a database. Each starts as the
// configuration file and environment set it; a flag given overrides it.
struct DbFlags {
  DatabaseOptions base;  // the configuration file and environment
  std::string db;
  std::string model;
  std::string metadata_url;
  std::string cache_url;
  int threads = 0;
  size_t max_bytes = DecodeLimits{}.max_bytes;
  uint64_t max_pixels = DecodeLimits{}.max_pixels;
  std::string index_kind;
  DiskIndexParams disk;
  int batch_max = 0;
  double batch_wait_ms = 0;
  std::string config_file;  // parsed before the flags (ConfigFileFromArgs)

  explicit DbFlags(const DatabaseOptions& from)
      : base(from),
        db(from.dir.string()),
        model(from.model),
        metadata_url(from.metadata_url),
        cache_url(from.cache_url),
        threads(from.threads),
        max_bytes(from.limits.max_bytes),
        max_pixels(from.limits.max_pixels),
        index_kind(from.index_kind),
        disk(from.disk_params),
        batch_max(from.batching.max_batch),
        batch_wait_ms(static_cast<double>(from.batching.max_wait.count()) / 1000.0) {}
};

// The disk index's parameters; each overrides the default chosen from the
// data size and RAM budget.
void AddIndexFlags(CLI::App* cmd, DbFlags& f) {
  cmd->add_option("--index", f.index_kind, "Vector index of a new database: disk (default) or flat")
      ->check(CLI::IsMember({"disk", "flat"}));
  DiskIndexParams& d = f.disk;
  cmd->add_option("--ram-budget", d.ram_budget,
                  "Disk index: bytes of RAM for PQ codes and node cache (0 = 10% of the vectors)");
  cmd->add_option("--build-ram-budget", d.build_ram_budget,
                  "Disk index: peak bytes of RAM for a graph build (0 = 4 GiB)");
  cmd->add_option("--storage", d.storage, "Disk index: full-vector storage on disk")
      ->check(CLI::IsMember({"fp32", "fp16", "int8"}));
  cmd->add_option("--max-degree", d.max_degree, "Disk index: graph degree R")->check(CLI::Range(1, 512));
  cmd->add_option("--build-list", d.build_list, "Disk index: build list L")->check(CLI::Range(1, 4096));
  cmd->add_option("--alpha", d.alpha, "Disk index: pruning alpha")->check(CLI::Range(1.0, 4.0));
  cmd->add_option("--pq-bytes", d.pq_bytes, "Disk index: PQ code bytes (0 = from the RAM budget)");
  cmd->add_option("--search-list", d.search_list, "Disk index: search list L (0 = max(64, 2k))");
  cmd->add_option("--beam-width", d.beam_width, "Disk index: reads per search step")
      ->check(CLI::Range(1, 64));
}

void AddDbFlags(CLI::App* cmd, DbFlags& f, bool with_model) {
  cmd->add_option("--config", f.config_file,
                  "TOML configuration file (default $PIXSEEK_CONFIG; see docs/configuration.md)");
  cmd->add_option("--db", f.db, "Database directory (or $PIXSEEK_DB)");
  cmd->add_option("--metadata-url", f.metadata_url,
                  "Metadata store: sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB "
                  "(or $PIXSEEK_METADATA_URL; default: SQLite in the database directory)");
  cmd->add_option("--cache-url", f.cache_url,
                  "Query cache: memory:// or redis://HOST:PORT/N (or $PIXSEEK_CACHE_URL)");
  if (with_model) {
    cmd->add_option("--model", f.model,
                    "Model name (default: " + DefaultModelName() + " for a new database)");
  }
  cmd->add_option("--threads", f.threads, "Worker threads (0 = all cores)");
  cmd->add_option("--max-bytes", f.max_bytes, "Largest image file accepted, in bytes");
  cmd->add_option("--max-pixels", f.max_pixels, "Largest image accepted, in pixels");
}

DatabaseOptions ToOptions(const DbFlags& f, const std::string& home, bool read_only = false) {
  DatabaseOptions o = f.base;
  o.read_only = read_only;
  o.dir = f.db;
  o.model = f.model;
  if (!home.empty()) o.home = home;
  o.metadata_url = f.metadata_url;
  o.cache_url = f.cache_url;
  o.threads = f.threads;
  o.limits.max_bytes = f.max_bytes;
  o.limits.max_pixels = f.max_pixels;
  o.index_kind = f.index_kind;
  o.disk_params = f.disk;
  o.batching.max_batch = f.batch_max;
  o.batching.max_wait = std::chrono::microseconds(static_cast<int64_t>(f.batch_wait_ms * 1000.0));
  return o;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "pixseek: error: %s\n", s.ToString().c_str());
  return 1;
}

std::atomic<bool> g_cancel{false};

void OnInterrupt(int) {
  if (g_cancel.exchange(true)) {
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
    std::raise(SIGINT);
  }
}

int RunBuild(const std::string& home, const DbFlags& flags, const std::string& dir, bool as_json,
             const PcaOptions& pca, size_t fit_sample) {
  DatabaseOptions options = ToOptions(flags, home);
  options.pull_missing_model = true;
  // A new database learns its codebook (sift-vlad) and PCA from this folder.
  options.fit_root = dir;
  options.fit_sample = fit_sample;
  options.pca = pca;
  auto db = Database::Open(options, /*create=*/true);
  if (!db.ok()) return Fail(db.status());
  std::signal(SIGINT, OnInterrupt);
  BuildOptions build;
  build.cancel = &g_cancel;
  build.decode_threads = flags.threads;
  auto report = BuildService(**db).Build(dir, build);
  if (!report.ok()) return Fail(report.status());
  if (as_json) {
    json failed = json::array();
    for (const auto& f : report->failed) failed.push_back({{"path", f.path}, {"reason", f.reason}});
    json out = {{"indexed", report->indexed}, {"skipped", report->skipped},
                {"failed", failed},           {"total", report->total},
                {"seconds", report->seconds}, {"cancelled", report->cancelled}};
    std::cout << out.dump() << std::endl;
  } else {
    std::printf("indexed %llu, already stored %llu, failed %zu of %llu files in %.1f s (%.1f/s)\n",
                static_cast<unsigned long long>(report->indexed),
                static_cast<unsigned long long>(report->skipped), report->failed.size(),
                static_cast<unsigned long long>(report->total), report->seconds,
                report->seconds > 0 ? static_cast<double>(report->indexed) / report->seconds : 0.0);
    for (const auto& f : report->failed) {
      std::printf("  failed: %s: %s\n", f.path.c_str(), f.reason.c_str());
    }
    if (report->cancelled) std::printf("interrupted; run the same command again to continue\n");
  }
  return report->cancelled ? 130 : 0;
}

int RunQuery(const std::string& home, const DbFlags& flags, const std::string& image,
             const QueryParams& params, bool as_json) {
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  auto bytes = ReadFileLimited(image, flags.max_bytes);
  if (!bytes.ok()) return Fail(bytes.status());
  auto response = QueryService(**db).SearchImage(*bytes, params);
  if (!response.ok()) return Fail(response.status().WithContext(image));
  if (as_json) {
    json results = json::array();
    for (const auto& h : response->hits) {
      results.push_back({{"id", h.id}, {"path", h.record.path}, {"score", h.score}});
    }
    std::cout << json{{"results", results}, {"took_ms", response->took_ms}}.dump() << std::endl;
  } else {
    std::printf("%-4s %-7s %-8s %s\n", "rank", "score", "id", "path");
    int rank = 0;
    for (const auto& h : response->hits) {
      std::printf("%-4d %.4f  %-8lld %s\n", ++rank, h.score, static_cast<long long>(h.id),
                  h.record.path.c_str());
    }
    std::printf("(%zu results in %.1f ms)\n", response->hits.size(), response->took_ms);
  }
  return 0;
}

int RunAdd(const std::string& home, const DbFlags& flags, const std::vector<std::string>& files,
           bool as_json) {
  auto db = Database::Open(ToOptions(flags, home), false);
  if (!db.ok()) return Fail(db.status());
  UploadService upload(**db);
  json ids = json::array(), failed = json::array();
  for (const auto& f : files) {
    auto id = upload.AddFile(f, "");
    if (id.ok()) {
      ids.push_back(*id);
      if (!as_json) std::printf("added %s as id %lld\n", f.c_str(), static_cast<long long>(*id));
    } else {
      failed.push_back({{"path", f}, {"reason", id.status().ToString()}});
      if (!as_json) std::fprintf(stderr, "pixseek: cannot add %s: %s\n", f.c_str(),
                                 id.status().ToString().c_str());
    }
  }
  if (as_json) std::cout << json{{"ids", ids}, {"failed", failed}}.dump() << std::endl;
  return failed.empty() ? 0 : 1;
}

int RunRemove(const std::string& home, const DbFlags& flags, const std::vector<int64_t>& ids) {
  auto db = Database::Open(ToOptions(flags, home), false);
  if (!db.ok()) return Fail(db.status());
  int rc = 0;
  for (int64_t id : ids) {
    Status s = (*db)->Remove(id);
    if (s.ok()) {
      std::printf("removed %lld\n", static_cast<long long>(id));
    } else {
      rc = Fail(s);
    }
  }
  return rc;
}

int RunServe(const std::string& home, const DbFlags& flags, ServerOptions server_options) {
  // Signals go to one waiting thread, which stops the server cleanly.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  DatabaseOptions options = ToOptions(flags, home);
  options.disk.background_compaction = true;  // uploads must not wait for it
  auto db = Database::Open(options, false);
  if (!db.ok()) return Fail(db.status());
  HttpServer server(**db, server_options);
  Status s = server.Start();
  if (!s.ok()) return Fail(s);
  auto stats = (*db)->Stats();
  std::fprintf(stderr, "pixseek: serving %lld images (%s) on http://%s:%d/\n",
               stats.ok() ? static_cast<long long>(stats->count) : 0LL,
               (*db)->model_name().c_str(), server_options.host.c_str(), server.port());
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "pixseek: stopping (signal %d)\n", sig);
    server.Stop();
  });
  server.Wait();
  pthread_kill(waiter.native_handle(), SIGTERM);  // wakes the waiter if Stop came elsewhere
  waiter.join();
  return 0;
}

void PrintMetricsRow(const char* name, const EvalMetrics& m) {
  std::printf("%-16s %7llu %7.4f %7.4f %7.4f %7.4f\n", name,
              static_cast<unsigned long long>(m.queries), m.map, m.p_at_1, m.p_at_10, m.r_at_10);
}

json MetricsJson(const EvalMetrics& m) {
  return {{"queries", m.queries}, {"map", m.map}, {"p_at_1", m.p_at_1},
          {"p_at_10", m.p_at_10}, {"r_at_10", m.r_at_10}};
}

int RunEval(const std::string& home, const DbFlags& flags, const std::string& dir,
            const std::string& query_dir, bool as_json) {
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  EvalQueryOptions query_options;
  query_options.show_progress = true;  // on stderr, as build does
  auto report = query_dir.empty() ? Evaluate(**db, dir)
                                  : EvaluateQueries(**db, dir, query_dir, query_options);
  if (!report.ok()) return Fail(report.status());
  if (report->failed_queries > 0) {
    std::fprintf(stderr, "warning: %llu query images could not be read or decoded (skipped)\n",
                 static_cast<unsigned long long>(report->failed_queries));
  }
  if (as_json) {
    json labels = json::object();
    for (const auto& [label, m] : report->per_label) labels[label] = MetricsJson(m);
    std::cout << json{{"overall", MetricsJson(report->overall)},
                      {"macro", MetricsJson(report->macro)},
                      {"per_label", labels},
                      {"images", report->images},
                      {"protocol", query_dir.empty() ? "leave-one-out" : "queries"},
                      {"failed_queries", report->failed_queries},
                      {"model", (*db)->model_name()},
                      {"seconds", report->seconds}}
                     .dump()
              << std::endl;
  } else {
    std::printf("%-16s %7s %7s %7s %7s %7s\n", "label", "queries", "mAP", "P@1", "P@10", "R@10");
    for (const auto& [label, m] : report->per_label) PrintMetricsRow(label.c_str(), m);
    PrintMetricsRow("macro", report->macro);
    PrintMetricsRow("overall", report->overall);
  }
  return 0;
}

int RunStats(const std::string& home, const DbFlags& flags) {
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  auto s = (*db)->Stats();
  if (!s.ok()) return Fail(s.status());
  std::cout << server::StatsJson(*s).dump() << std::endl;
  return 0;
}

int RunCompact(const std::string& home, const DbFlags& flags) {
  auto db = Database::Open(ToOptions(flags, home), false);
  if (!db.ok()) return Fail(db.status());
  Status s = (*db)->Compact();
  if (!s.ok()) return Fail(s);
  auto stats = (*db)->Stats();
  if (!stats.ok()) return Fail(stats.status());
  std::cout << server::StatsJson(*stats).dump() << std::endl;
  return 0;
}

json CardJson(const InstalledModel& m) {
  return json{{"name", m.card.name},       {"runtime", m.card.runtime},
              {"dimension", m.card.dimension}, {"sha256", m.card.sha256},
              {"file", m.model_file.string()}};
}

ModelRegistry Registry(const std::string& home) {
  return ModelRegistry(home.empty() ? DefaultPixseekHome() : std::filesystem::path(home));
}

// Prints an installed model as one JSON line (after pull and import).
int PrintInstalled(const Result<InstalledModel>& model) {
  if (!model.ok()) return Fail(model.status());
  std::cout << CardJson(*model).dump() << std::endl;
  return 0;
}

int RunModelList(const std::string& home) {
  ModelRegistry registry = Registry(home);
  auto installed = registry.List();
  std::printf("installed in %s:\n", registry.models_dir().c_str());
  if (installed.empty()) std::printf("  (none)\n");
  for (const auto& m : installed) {
    std::printf("  %-16s %-6s %5d-d  %s\n", m.card.name.c_str(), m.card.runtime.c_str(),
                m.card.dimension, m.model_file.c_str());
  }
  std::printf("known (pixseek model pull NAME):\n");
  for (const auto& k : KnownModels()) {
    std::printf("  %-16s %s\n", k.name.c_str(), k.description.c_str());
  }
  return 0;
}

int RunModelInfo(const std::string& home, const std::string& name) {
  auto m = Registry(home).Find(name);
  if (!m.ok()) {
    // A model learned per collection (sift-vlad) is never installed: its card.
    for (const auto& k : KnownModels()) {
      if (k.name == name && k.url.empty()) {
        std::cout << json::parse(k.card.ToJson()).dump(2) << std::endl;
        return 0;
      }
    }
    return Fail(m.status());
  }
  std::cout << json::parse(m->card.ToJson()).dump(2) << std::endl;
  return 0;
}

int RunModelPull(const std::string& home, const std::string& name,
                 const std::optional<std::string>& url) {
  uint64_t last_percent = 101;
  auto pulled = Registry(home).Pull(name, url, [&](uint64_t got, uint64_t total) {
    if (total == 0) return;
    uint64_t percent = got * 100 / total;
    if (percent != last_percent) {
      last_percent = percent;
      std::fprintf(stderr, "\rdownloading %s: %3llu%%", name.c_str(),
                   static_cast<unsigned long long>(percent));
    }
  });
  std::fprintf(stderr, "\n");
  return PrintInstalled(pulled);
}

int RunModelImport(const std::string& home, const std::string& file,
                   const std::optional<std::string>& card,
                   const std::optional<std::string>& name) {
  std::optional<std::filesystem::path> card_path;
  if (card) card_path = *card;
  return PrintInstalled(Registry(home).Import(file, card_path, name));
}

int RunBenchAnn(AnnBenchOptions options) {
  options.progress = &std::cerr;
  Status s = RunAnnBench(options, std::cout);
  return s.ok() ? 0 : Fail(s);
}

int RunBenchEmbed(const std::string& home, EmbedBenchOptions options) {
  options.home = Registry(home).home();
  Status s = RunEmbedBench(options, std::cout);
  return s.ok() ? 0 : Fail(s);
}

}  // namespace
}  // namespace pixseek

int main(int argc, char** argv) {
  using namespace pixseek;
  // The configuration file and the environment come first; flags bound below
  // start from their values and override them when given.
  Config config;
  const GetEnv getenv = ProcessEnvironment();
  if (auto file = ConfigFileFromArgs(argc, argv, getenv)) {
    if (Status s = LoadConfigFile(*file, config); !s.ok()) return Fail(s);
  }
  if (Status s = ApplyEnvironment(config, getenv); !s.ok()) return Fail(s);

  CLI::App app{"pixseek: self-hosted content-based image retrieval"};
  app.require_subcommand(1);
  std::string home = config.database.home.string();
  app.add_option("--home", home, "Where models live (default $PIXSEEK_HOME or ~/.local/share/pixseek)");
  bool as_json = false;
  DbFlags flags(config.database);
  int rc = 0;

  auto* build = app.add_subcommand("build", "Index every image under DIR into a database");
  std::string dir;
  build->add_option("DIR", dir, "Folder of images (walked recursively)")->required();
  AddDbFlags(build, flags, true);
  AddIndexFlags(build, flags);
  build->add_flag("--json", as_json, "Print a JSON summary");
  PcaOptions pca;
  size_t fit_sample = DatabaseOptions{}.fit_sample;
  build->add_option("--pca", pca.dimension,
                    "New database: reduce vectors to DIM with PCA learned from the images")
      ->check(CLI::Range(1, 1 << 20));
  build->add_flag("--whiten", pca.whiten, "With --pca: PCA-whitening (shrunk; see --shrinkage)");
  build->add_option("--shrinkage", pca.shrinkage,
                    "With --whiten: 0 = plain whitening .. 1 = none (default " +
                        std::to_string(PcaOptions{}.shrinkage).substr(0, 4) + ")")
      ->check(CLI::Range(0.0, 1.0));
  build->add_option("--fit-sample", fit_sample,
                    "New database: images sampled to learn the codebook (sift-vlad) and PCA")
      ->check(CLI::Range(1, 1 << 30));
  build->callback([&] { rc = RunBuild(home, flags, dir, as_json, pca, fit_sample); });

  auto* query = app.add_subcommand("query", "Find the stored images most similar to IMAGE");
  std::string image;
  QueryParams params;
  query->add_option("IMAGE", image, "Query image file")->required();
  AddDbFlags(query, flags, false);
  AddIndexFlags(query, flags);
  query->add_option("-k,--top-k", params.top_k, "Number of results")->check(CLI::Range(1, 1000));
  query->add_option("--min-score", params.min_score, "Drop results below this cosine similarity");
  query->add_flag("--json", as_json, "Print JSON");
  query->callback([&] { rc = RunQuery(home, flags, image, params, as_json); });

  auto* add = app.add_subcommand("add", "Add image files to a database");
  std::vector<std::string> files;
  add->add_option("FILE", files, "Image files")->required();
  AddDbFlags(add, flags, false);
  AddIndexFlags(add, flags);
  add->add_flag("--json", as_json, "Print JSON");
  add->callback([&] { rc = RunAdd(home, flags, files, as_json); });

  auto* remove = app.add_subcommand("remove", "Remove images by id");
  std::vector<int64_t> ids;
  remove->add_option("ID", ids, "Image ids")->required();
  AddDbFlags(remove, flags, false);
  AddIndexFlags(remove, flags);
  remove->callback([&] { rc = RunRemove(home, flags, ids); });

  auto* serve = app.add_subcommand("serve", "Serve the HTTP API and web page");
  ServerOptions server_options = config.server;
  AddDbFlags(serve, flags, false);
  AddIndexFlags(serve, flags);
  serve->add_option("--host", server_options.host, "Address to bind");
  serve->add_option("--port", server_options.port, "Port (0 = any free port)");
  serve->add_option("--max-request-bytes", server_options.max_request_bytes,
                    "Largest request body");
  serve->add_option("--import-root", server_options.import_roots,
                    "Folder under which POST /api/v1/builds may index (repeatable); "
                    "without one, builds over HTTP are refused");
  serve->add_flag("--quiet", [&](int64_t) { server_options.log_requests = false; },
                  "Do not log each request");
  serve->add_option("--log-format", server_options.log_format, "Request log: text or json")
      ->check(CLI::IsMember({"text", "json"}));
  serve->add_option("--max-concurrent", server_options.max_concurrent_requests,
                    "Requests handled at once before answering 503 (0 = 4 x threads)");
  serve->add_option("--rate-limit", server_options.rate_limit_per_s,
                    "Requests per second per client (0 = no limit); over it: 429");
  serve->add_option("--rate-burst", server_options.rate_burst, "Burst allowed by --rate-limit");
  serve->add_option("--batch-max", flags.batch_max,
                    "Dynamic batching: most concurrent query images in one forward pass "
                    "(0 = the model card's max_batch, 1 = off)")
      ->check(CLI::Range(0, 4096));
  serve->add_option("--batch-wait-ms", flags.batch_wait_ms,
                    "Dynamic batching: how long a query may wait for others to join its batch")
      ->check(CLI::Range(0.0, 1000.0));
  serve->add_flag("--keyed-reads", server_options.keyed_reads,
                  "Searches and reads need an API key too (keys: $PIXSEEK_API_KEYS or "
                  "api_keys in the config file, never on the command line)");
  serve->callback([&] { rc = RunServe(home, flags, server_options); });

  auto* eval = app.add_subcommand(
      "eval", "Leave-one-out retrieval quality (labels = first folder level under DIR)");
  eval->add_option("DIR", dir, "Folder the database was built from")->required();
  AddDbFlags(eval, flags, false);
  AddIndexFlags(eval, flags);
  std::string eval_queries;
  eval->add_option("--queries", eval_queries,
                   "Query images from this folder (labels = its first folder level) instead "
                   "of leave-one-out, e.g. sketches against photos");
  eval->add_flag("--json", as_json, "Print JSON");
  eval->callback([&] { rc = RunEval(home, flags, dir, eval_queries, as_json); });

  auto* compact = app.add_subcommand(
      "compact", "Merge the disk index's recent changes into a new disk graph");
  AddDbFlags(compact, flags, false);
  AddIndexFlags(compact, flags);
  compact->callback([&] { rc = RunCompact(home, flags); });

  auto* stats = app.add_subcommand("stats", "Print database statistics as JSON");
  AddDbFlags(stats, flags, false);
  stats->callback([&] { rc = RunStats(home, flags); });

  auto* model = app.add_subcommand("model", "Manage feature-extraction models");
  model->require_subcommand(1);
  std::string model_arg;
  std::optional<std::string> url, card, name;
  model->add_subcommand("list", "List installed and known models")->callback([&] {
    rc = RunModelList(home);
  });
  auto* pull = model->add_subcommand("pull", "Download a known model and check its sha256");
  pull->add_option("NAME", model_arg)->required();
  pull->add_option("--url", url, "Download from this URL instead (a mirror)");
  pull->callback([&] { rc = RunModelPull(home, model_arg, url); });
  auto* import = model->add_subcommand("import", "Register a local model file");
  import->add_option("FILE", model_arg)->required();
  import->add_option("--card", card, "Model card JSON (not needed for known models)");
  import->add_option("--name", name, "Name to register it under");
  import->callback([&] { rc = RunModelImport(home, model_arg, card, name); });
  auto* info = model->add_subcommand("info", "Print an installed model's card");
  info->add_option("NAME", model_arg)->required();
  info->callback([&] { rc = RunModelInfo(home, model_arg); });

  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto* bench_ann = bench->add_subcommand(
      "ann", "Compare approximate nearest-neighbour indexes on a big-ann data set (JSON rows)");
  AnnBenchOptions ann;
  std::string ann_base, ann_queries, ann_gt, ann_workdir;
  bench_ann->add_option("--base", ann_base, "Base vectors (.fbin)")->required();
  bench_ann->add_option("--queries", ann_queries, "Query vectors (.fbin)")->required();
  bench_ann->add_option("--gt", ann_gt, "Ground truth (.ibin); default: exact search");
  bench_ann->add_option("--k", ann.k, "Neighbours per query")->check(CLI::Range(1, 1000));
  bench_ann->add_option("--L", ann.L, "Search list sweep, comma-separated")->delimiter(',');
  bench_ann->add_option("--threads", ann.threads, "Query (and build) threads")
      ->check(CLI::Range(1, 1024));
  bench_ann->add_option("--peers", ann.peers,
                        "Peers run besides disk and exact, comma-separated (default: "
                        "hnswlib,faiss-hnsw,faiss-ivfpq)")
      ->delimiter(',');
  bench_ann->add_option("--ram-budget", ann.ram_budget, "RAM budget in bytes (0 = none)");
  bench_ann->add_option("--workdir", ann_workdir, "Where index files go (default: a temp dir)");
  bench_ann->add_option("--limit-base", ann.limit_base,
                        "Use only the first N base vectors (ground truth then computed)");
  auto& disk = ann.disk;
  bench_ann->add_option("--disk-R", disk.max_degree, "Disk index: graph degree R");
  bench_ann->add_option("--disk-build-L", disk.build_list, "Disk index: build list L");
  bench_ann->add_option("--disk-alpha", disk.alpha, "Disk index: pruning alpha");
  bench_ann->add_option("--disk-passes", disk.passes, "Disk index: build passes (1 or 2)");
  bench_ann->add_option("--disk-storage", disk.storage, "Disk index: fp32, fp16 or int8")
      ->check(CLI::IsMember({"fp32", "fp16", "int8"}));
  bench_ann->add_option("--disk-pq-bytes", disk.pq_bytes, "Disk index: PQ bytes (0 = from budget)");
  bench_ann->add_option("--build-ram-budget", disk.build_ram_budget,
                        "Disk index: peak build RAM in bytes (0 = 4 GiB)");
  bench_ann->add_option("--disk-W", disk.beam_width, "Disk index: beam width");
  bench_ann->add_option("--disk-in-flight", disk.queries_in_flight,
                        "Disk index: queries in flight per thread");
  bench_ann->add_flag("--disk-reuse", disk.reuse,
                      "Disk index: reuse the index file already in --workdir");
  bench_ann->callback([&] {
    ann.base = ann_base;
    ann.queries = ann_queries;
    ann.gt = ann_gt;
    ann.workdir = ann_workdir;
    rc = RunBenchAnn(ann);
  });

  auto* bench_embed = bench->add_subcommand(
      "embed", "Feature-extraction throughput: pixseek's pipeline against plain Python");
  EmbedBenchOptions embed_bench;
  std::string embed_images, embed_script;
  bench_embed->add_option("--model", embed_bench.model, "Installed model name or card JSON")
      ->required();
  bench_embed->add_option("--images", embed_images, "Folder of images (recursive)")->required();
  bench_embed->add_option("--threads", embed_bench.threads, "Decode workers and forward threads")
      ->check(CLI::Range(1, 256));
  bench_embed->add_option("--limit", embed_bench.limit, "First N images (0 = all)");
  bench_embed->add_flag("--no-python", [&](int64_t) { embed_bench.python = false; },
                        "Skip the Python pipeline");
  bench_embed->add_option("--python", embed_bench.python_bin,
                          "Python interpreter (default $PIXSEEK_PYTHON or /usr/bin/python3)");
  bench_embed->add_option("--python-script", embed_script,
                          "The Python pipeline (default tools/bench_embed.py of the source tree)");
  bench_embed->callback([&] {
    embed_bench.images = embed_images;
    embed_bench.python_script = embed_script;
    rc = RunBenchEmbed(home, embed_bench);
  });

  CLI11_PARSE(app, argc, argv);
  return rc;
}
