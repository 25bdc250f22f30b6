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
#include "bench_ann/ground_truth.h"
#include "bench_embed/embed_bench.h"
#include "core/phase_progress.h"
#include "pixseek/config.h"
#include "pixseek/database.h"
#include "pixseek/database_check.h"
#include "pixseek/disk_index.h"
#include "pixseek/migrate.h"
#include "pixseek/model_registry.h"
#include "pixseek/server.h"
#include "pixseek/services.h"
#include "pixseek/train_service.h"
#include "pixseek/vector_index.h"

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
  std::string vector_url;
  std::string cache_url;
  int threads = 0;
  size_t max_bytes = DecodeLimits{}.max_bytes;
  uint64_t max_pixels = DecodeLimits{}.max_pixels;
  std::string index_kind;
  // Index parameters given as flags, parsed and checked against the
  // parameter table when given, each with its flag as its source.
  IndexParams index_params;
  int batch_max = 0;
  double batch_wait_ms = 0;
  std::string config_file;  // parsed before the flags (ConfigFileFromArgs)

  explicit DbFlags(const DatabaseOptions& from)
      : base(from),
        db(from.dir.string()),
        model(from.model),
        metadata_url(from.metadata_url),
        vector_url(from.vector_url),
        cache_url(from.cache_url),
        threads(from.threads),
        max_bytes(from.limits.max_bytes),
        max_pixels(from.limits.max_pixels),
        index_kind(from.index_kind),
        batch_max(from.batching.max_batch),
        batch_wait_ms(static_cast<double>(from.batching.max_wait.count()) / 1000.0) {}
};

// Why an index parameter's flag does nothing for a command that does not
// offer it.
std::string MisplacedFlagMessage(const IndexParamSpec& spec, const std::string& command) {
  const std::string flag = ParamFlag(spec);
  if (spec.phase == ParamPhase::kCreate) {
    return flag + " has no effect on `pixseek " + command +
           "`: it is fixed when a database is created (pixseek build)";
  }
  return flag + " has no effect on `pixseek " + command + "`; it applies to " +
         ParamCommandList(spec.commands);
}

// The index parameters' flags from the parameter table
// (include/pixseek/index_params.h): the ones that act on `command` are
// offered, the others are hidden and refused with a message that says where
// they act. `build` also chooses the kind of a new database (`migrate` takes
// build's parameters, but its vector URL chooses the kind).
void AddIndexFlags(CLI::App* cmd, DbFlags& f, ParamCommand command) {
  const std::string name = cmd->get_name();
  if (command == kCmdBuild && name == "build") {
    std::vector<std::string> kinds;
    std::string help = "Vector index of a new database:";
    for (const VectorIndexKind& kind : VectorIndexKinds()) {
      kinds.push_back(kind.name);
      help += std::string(kinds.size() == 1 ? " " : "; ") + kind.name + " (" + kind.summary +
              (kinds.size() == 1 ? ", the default)" : ")");
    }
    cmd->add_option("--index", f.index_kind, help)->check(CLI::IsMember(kinds));
  } else {
    cmd->add_option_function<std::string>(
           "--index",
           [name](const std::string&) {
             throw CLI::ValidationError(
                 "--index", "has no effect on `pixseek " + name +
                                (name == "migrate" ? "`: the vector URL chooses the index kind"
                                                   : "`: a database's index kind is chosen "
                                                     "when it is created (pixseek build)"));
           })
        ->group("");
  }
  for (const IndexParamSpec& spec : AllIndexParams()) {
    const std::string flag = ParamFlag(spec);
    if ((spec.commands & command) == 0) {
      const std::string why = MisplacedFlagMessage(spec, name);
      cmd->add_option_function<std::string>(
             flag, [why](const std::string&) { throw CLI::ValidationError(why); })
          ->group("");
      continue;
    }
    std::string help = spec.doc;
    help += std::string(" (") + (spec.phase == ParamPhase::kCreate ? "new database; " : "") +
            "default " + spec.default_value + ")";
    cmd->add_option_function<std::string>(
        flag,
        [&f, spec](const std::string& text) {
          auto value = ParseParam(spec, text);
          if (!value.ok()) throw CLI::ValidationError(ParamFlag(spec), value.status().message());
          f.index_params.Set(spec.name, *value, ParamFlag(spec));
        },
        help);
  }
}

// The preprocessing this command asks for, over the configuration file's
// (a flag given names it; none given leaves the database's).
ImagePreprocessing& AskedPreprocessing(DbFlags& f) {
  if (!f.base.preprocessing) f.base.preprocessing.emplace();
  return *f.base.preprocessing;
}

// --vector-url, beside --metadata-url on every command that takes that.
void AddVectorUrlFlag(CLI::App* cmd, DbFlags& f) {
  cmd->add_option("--vector-url", f.vector_url,
                  "Vector store on a server: milvus://[USER:PASS@]HOST:PORT/COLLECTION "
                  "(or $PIXSEEK_VECTOR_URL; default: the index in the database directory)");
}

void AddDbFlags(CLI::App* cmd, DbFlags& f, bool with_model) {
  cmd->add_option("--config", f.config_file,
                  "TOML configuration file (default $PIXSEEK_CONFIG; see docs/configuration.md)");
  cmd->add_option("--db", f.db, "Database directory (or $PIXSEEK_DB)");
  cmd->add_option("--metadata-url", f.metadata_url,
                  "Metadata store: sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB "
                  "(or $PIXSEEK_METADATA_URL; default: SQLite in the database directory)");
  AddVectorUrlFlag(cmd, f);
  cmd->add_option("--cache-url", f.cache_url,
                  "Query cache: memory:// or redis://HOST:PORT/N (or $PIXSEEK_CACHE_URL)");
  if (with_model) {
    cmd->add_option("--model", f.model,
                    "Model name (default: " + DefaultModelName() + " for a new database)");
  }
  cmd->add_option("--threads", f.threads, "Worker threads (0 = all cores)");
  cmd->add_option("--max-bytes", f.max_bytes, "Largest image file accepted, in bytes");
  cmd->add_option("--max-pixels", f.max_pixels, "Largest image accepted, in pixels");
  // Preprocessing (include/pixseek/image.h): chosen when a database is
  // built, recorded in its manifest and applied by every later command; on
  // an existing database, given flags must match what it recorded.
  cmd->add_flag_callback(
      "--grey", [&f] { AskedPreprocessing(f).grey = true; },
      "Embed images in greyscale (fixed when the database is built)");
  cmd->add_flag_callback(
      "--denoise", [&f] { AskedPreprocessing(f).denoise = true; },
      "Denoise images (bilateral filter) before embedding (fixed when the database is built)");
}

// The size cap of uploaded copies, fixed when a database is built.
void AddStoredCopyFlags(CLI::App* cmd, DbFlags& f) {
  cmd->add_option_function<int>(
         "--store-max-side", [&f](int side) { AskedPreprocessing(f).stored_max_side = side; },
         "New database: re-encode uploads larger than this many pixels on the longer side "
         "(0 = keep uploads as sent)")
      ->check(CLI::Range(0, 1 << 16));
  cmd->add_option_function<int>(
         "--store-quality", [&f](int quality) { AskedPreprocessing(f).stored_quality = quality; },
         "With --store-max-side: JPEG quality of the re-encoded copies (default 90)")
      ->check(CLI::Range(1, 100));
}

DatabaseOptions ToOptions(const DbFlags& f, const std::string& home, bool read_only = false) {
  DatabaseOptions o = f.base;
  o.read_only = read_only;
  o.dir = f.db;
  o.model = f.model;
  if (!home.empty()) o.home = home;
  o.metadata_url = f.metadata_url;
  o.vector_url = f.vector_url;
  o.cache_url = f.cache_url;
  o.threads = f.threads;
  o.limits.max_bytes = f.max_bytes;
  o.limits.max_pixels = f.max_pixels;
  o.index_kind = f.index_kind;
  for (const auto& [name, entry] : f.index_params.values()) {
    o.index_params.Set(name, entry.value, entry.source);
  }
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
  // Before the database is created: an empty DIR must leave nothing behind.
  if (dir.empty()) return Fail(Status::InvalidArgument("the folder to build is empty; name one"));
  DatabaseOptions options = ToOptions(flags, home);
  options.pull_missing_model = true;
  // A new database learns its codebook (sift-vlad) and PCA from this folder.
  options.fit_root = dir;
  options.fit_sample = fit_sample;
  options.pca = pca;
  // The compaction at the end (the disk index's graph over everything the
  // build stored) takes minutes on a large folder: phase lines on stderr.
  PhaseProgress compaction_lines("build: compacting the index", &std::cerr);
  options.compaction_progress = [&compaction_lines](const char* phase, size_t done, size_t total) {
    compaction_lines.Update(phase, done, total);
  };
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
  // Uploads are recorded relative to the database: show where they lie.
  for (QueryHit& h : response->hits) h.record.path = (*db)->FilePath(h.record).string();
  if (as_json) {
    std::cout << SearchResponseToJson(*response) << std::endl;
  } else {
    if (response->category) {
      std::printf("category: %s (%.0f%% confident)\n", response->category->label.c_str(),
                  100.0 * response->category->confidence);
    }
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
  options.background_compaction = true;  // uploads must not wait for it
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
  std::printf("%-16s %7llu %7.4f %7.4f %7.4f %7.4f %7.4f %7.4f\n", name,
              static_cast<unsigned long long>(m.queries), m.map, m.map_at_100, m.p_at_1,
              m.p_at_10, m.r_at_10, m.ndcg_at_10);
}

void PrintEvalTable(const EvalReport& report) {
  std::printf("%-16s %7s %7s %7s %7s %7s %7s %7s\n", "label", "queries", "mAP", "mAP@100",
              "P@1", "P@10", "R@10", "NDCG@10");
  for (const auto& [label, m] : report.per_label) PrintMetricsRow(label.c_str(), m);
  PrintMetricsRow("macro", report.macro);
  PrintMetricsRow("overall", report.overall);
  if (report.split != DataSplit::kNone) {
    std::printf("(split %s: %llu held-out images)\n", std::string(ToString(report.split)).c_str(),
                static_cast<unsigned long long>(report.images));
  }
  if (report.index_queries > 0) {
    std::printf("index (%llu sampled queries): recall@%d %.4f, mAP@100 %.4f (exact %.4f)\n",
                static_cast<unsigned long long>(report.index_queries), report.index_k,
                report.index_recall_at_k, report.index_map_at_k, report.index_exact_map_at_k);
  }
}

int RunEval(const std::string& home, const DbFlags& flags, const std::string& dir,
            const std::string& query_dir, const std::string& split_name,
            const std::string& report_dir, RerankOptions rerank, const std::string& rerank_name,
            bool as_json) {
  auto split = ParseDataSplit(split_name);
  if (!split.ok()) return Fail(split.status());
  auto method = ParseRerankMethod(rerank_name);
  if (!method.ok()) return Fail(method.status());
  rerank.method = *method;
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  EvalOptions options;
  options.show_progress = true;  // on stderr, as build does
  options.split = *split;
  options.rerank = rerank;
  auto report = query_dir.empty() ? Evaluate(**db, dir, options)
                                  : EvaluateQueries(**db, dir, query_dir, options);
  if (!report.ok()) return Fail(report.status());
  if (report->failed_queries > 0) {
    std::fprintf(stderr, "warning: %llu query images could not be read or decoded (skipped)\n",
                 static_cast<unsigned long long>(report->failed_queries));
  }
  if (!report_dir.empty()) {
    Status written = WriteEvalReportHtml(**db, *report, report_dir);
    if (!written.ok()) return Fail(written);
    std::fprintf(stderr, "report: %s\n", (std::filesystem::path(report_dir) / "report.html").c_str());
  }
  if (as_json) {
    std::cout << EvalReportJson(*report) << std::endl;
  } else {
    PrintEvalTable(*report);
  }
  return 0;
}

int RunStats(const std::string& home, const DbFlags& flags) {
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  auto s = (*db)->Stats();
  if (!s.ok()) return Fail(s.status());
  std::cout << StatsToJson(*s) << std::endl;
  return 0;
}

int RunCompact(const std::string& home, const DbFlags& flags) {
  PhaseProgress lines("compact", &std::cerr);
  DatabaseOptions options = ToOptions(flags, home);
  options.compaction_progress = [&lines](const char* phase, size_t done, size_t total) {
    lines.Update(phase, done, total);
  };
  auto db = Database::Open(options, false);
  if (!db.ok()) return Fail(db.status());
  Status s = (*db)->Compact();
  if (!s.ok()) return Fail(s);
  auto stats = (*db)->Stats();
  if (!stats.ok()) return Fail(stats.status());
  std::cout << StatsToJson(*stats) << std::endl;
  return 0;
}

json CardJson(const InstalledModel& m) {
  return json{{"name", m.card.name},       {"runtime", std::string(ToString(m.card.runtime))},
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

// One line on what a trained model was made from and what it measured.
std::string TrainedSummary(const InstalledModel& m) {
  const json t = json::parse(m.card.trained.training, nullptr, /*allow_exceptions=*/false);
  std::string line = "trained on '" + m.card.trained.base + "'";
  if (!t.is_object()) return line;
  char figures[160];
  std::snprintf(figures, sizeof figures,
                ", %s %s, %lld images, split %s: validation mAP %.4f -> %.4f",
                t.value("fine_tune", "head").c_str(), t.value("loss", "?").c_str(),
                static_cast<long long>(t.value("train_images", 0)),
                t.value("split", "none").c_str(), t.value("validation_map_before", 0.0),
                t.value("validation_map_after", 0.0));
  return line + figures + (t.value("keeps_base", false) ? " (base features kept)" : "");
}

int RunModelList(const std::string& home) {
  ModelRegistry registry = Registry(home);
  auto installed = registry.List();
  std::printf("installed in %s:\n", registry.models_dir().c_str());
  if (installed.empty()) std::printf("  (none)\n");
  for (const auto& m : installed) {
    std::printf("  %-16s %-6s %5d-d  %s\n", m.card.name.c_str(), ToString(m.card.runtime).data(),
                m.card.dimension, m.model_file.c_str());
    if (!m.card.trained.base.empty()) std::printf("  %16s %s\n", "", TrainedSummary(m).c_str());
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

int RunBenchGt(GroundTruthOptions options) {
  options.progress = &std::cerr;
  Status s = ComputeGroundTruth(options);
  if (!s.ok()) return Fail(s);
  std::cerr << "bench gt: wrote " << options.out.string() << "\n";
  return 0;
}

int RunBenchEmbed(const std::string& home, EmbedBenchOptions options) {
  options.home = Registry(home).home();
  Status s = RunEmbedBench(options, std::cout);
  return s.ok() ? 0 : Fail(s);
}

int RunTrain(const std::string& home, const DbFlags& flags, TrainRequest request,
             const std::string& loss, const std::string& split, const std::string& fine_tune,
             bool as_json) {
  auto parsed_loss = ParseMetricLoss(loss);
  if (!parsed_loss.ok()) return Fail(parsed_loss.status());
  request.metric.loss = *parsed_loss;
  auto parsed_split = ParseDataSplit(split);
  if (!parsed_split.ok()) return Fail(parsed_split.status());
  request.split = *parsed_split;
  auto parsed_fine_tune = ParseFineTune(fine_tune);
  if (!parsed_fine_tune.ok()) return Fail(parsed_fine_tune.status());
  request.fine_tune = *parsed_fine_tune;
  request.metric.threads = flags.threads;
  // Training only reads the database: it may run while a server serves it.
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  std::signal(SIGINT, OnInterrupt);
  auto report = TrainModel(**db, request, &g_cancel);
  if (!report.ok()) return Fail(report.status());
  if (as_json) {
    std::cout << LearningJobs::TrainReportJson(*report) << std::endl;
  } else {
    std::printf("trained '%s' on '%s' (%s, %llu images, %d classes) in %.1f s: validation mAP "
                "%.4f -> %.4f%s\n",
                report->model.c_str(), report->base_model.c_str(), report->loss.c_str(),
                static_cast<unsigned long long>(report->train_images), report->classes,
                report->seconds, report->validation_map_before, report->validation_map_after,
                report->keeps_base ? " (the base features are kept)" : "");
    if (report->keeps_base && report->best_epoch == 0 && report->validation_map_after >= 0 &&
        report->validation_gain_lower_bound != 0) {
      std::printf("the best epoch's gain was not consistent across the validation classes "
                  "(95%% lower bound %.4f): the model keeps the base ranking and adds its "
                  "classifier\n",
                  report->validation_gain_lower_bound);
    }
    if (report->cancelled) std::printf("interrupted: the best epoch so far was kept\n");
    std::printf("switch a database to it with: pixseek reindex --db %s --model %s\n",
                (*db)->dir().c_str(), report->model.c_str());
  }
  return 0;
}

int RunReindex(const std::string& home, const DbFlags& flags, const std::string& model,
               const std::optional<DbaOptions>& dba, bool as_json) {
  auto db = Database::Open(ToOptions(flags, home), false);
  if (!db.ok()) return Fail(db.status());
  std::signal(SIGINT, OnInterrupt);
  ReindexOptions options;
  options.model = model;
  options.dba = dba;
  options.cancel = &g_cancel;
  auto report = (*db)->Reindex(options);
  if (!report.ok()) return Fail(report.status());
  if (as_json) {
    std::cout << LearningJobs::ReindexReportJson(*report) << std::endl;
  } else {
    std::printf("reindexed %llu images from '%s' to '%s' in %.1f s (%s)\n",
                static_cast<unsigned long long>(report->images), report->from_model.c_str(),
                report->to_model.c_str(), report->seconds,
                report->from_base_features ? "stored base features, no image read"
                                           : "every image embedded again");
    if (report->dba.enabled()) {
      std::printf("the index holds DBA vectors (n = %d, alpha = %g)\n", report->dba.n,
                  report->dba.alpha);
    }
  }
  return 0;
}

int RunMigrate(const std::string& home, const DbFlags& flags, size_t batch_rows, bool as_json) {
  const DatabaseOptions db = ToOptions(flags, home);
  MigrateOptions options;
  options.dir = db.dir;
  options.home = db.home;
  options.vector_url = db.vector_url;
  options.metadata_url = db.metadata_url;
  options.index_params = db.index_params;
  options.batch_rows = batch_rows;
  options.cancel = &g_cancel;
  // For the resumption tests (tests/migrate_test.cc): a crash after N batches.
  if (const char* n = std::getenv("PIXSEEK_MIGRATE_KILL_AFTER_BATCHES"); n != nullptr) {
    options.kill_after_batches = std::strtoull(n, nullptr, 10);
  }
  std::signal(SIGINT, OnInterrupt);
  auto report = MigrateDatabase(options);
  if (!report.ok()) {
    if (report.status().code() == StatusCode::kCancelled) {
      std::fprintf(stderr, "pixseek: migrate interrupted; run the same command again to "
                           "continue (the database is unchanged until the copy is complete)\n");
      return 130;
    }
    return Fail(report.status());
  }
  if (as_json) {
    json old = json::array();
    for (const auto& f : report->old_files) old.push_back(f.string());
    std::cout << json{{"images", report->images},
                      {"vectors_copied", report->vectors_copied},
                      {"vectors_present", report->vectors_present},
                      {"rows_copied", report->rows_copied},
                      {"rows_present", report->rows_present},
                      {"stale_removed", report->stale_removed},
                      {"vector_store", report->vector_store},
                      {"metadata_store", report->metadata_store},
                      {"old_files", old},
                      {"seconds", report->seconds}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::printf("migrated %llu images in %.1f s: vectors in %s, metadata in %s\n",
              static_cast<unsigned long long>(report->images), report->seconds,
              report->vector_store.c_str(),
              report->metadata_store == "sqlite" ? (options.dir / "metadata.db").c_str()
                                                 : report->metadata_store.c_str());
  std::printf("(%llu vectors and %llu rows copied now, %llu and %llu by an earlier run)\n",
              static_cast<unsigned long long>(report->vectors_copied),
              static_cast<unsigned long long>(report->rows_copied),
              static_cast<unsigned long long>(report->vectors_present),
              static_cast<unsigned long long>(report->rows_present));
  std::printf("every command now needs --vector-url (or PIXSEEK_VECTOR_URL, or vector_url in "
              "the config)%s\n",
              report->metadata_store == "sqlite" ? "" : " and --metadata-url");
  if (!report->old_files.empty()) {
    std::string rm = "rm -r --";
    for (const auto& f : report->old_files) rm += " '" + f.string() + "'";
    std::printf("the database no longer uses its old local files; once you no longer need them "
                "(a backup of the embedded database), remove them with:\n  %s\n",
                rm.c_str());
  }
  return 0;
}

// What every command's flags bind to, and the exit code its callback sets.
// Commands' own arguments live in a state object their callback holds.
struct Cli {
  explicit Cli(const Config& config)
      : home(config.database.home.string()), flags(config.database), server(config.server) {}
  std::string home;
  DbFlags flags;
  ServerOptions server;
  bool as_json = false;
  int rc = 0;
};

void AddMigrateCommand(CLI::App& app, Cli& cli) {
  auto batch_rows = std::make_shared<size_t>(MigrateOptions{}.batch_rows);
  auto* cmd = app.add_subcommand(
      "migrate",
      "Move an embedded database's vectors (and with --metadata-url its rows) to servers; "
      "resumable");
  AddDbFlags(cmd, cli.flags, false);
  AddIndexFlags(cmd, cli.flags, kCmdBuild);
  cmd->add_option("--batch-rows", *batch_rows, "Rows copied per request to a server")
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->capture_default_str();
  cmd->add_flag("--json", cli.as_json, "Print a JSON summary");
  cmd->callback([&cli, batch_rows] {
    cli.rc = RunMigrate(cli.home, cli.flags, *batch_rows, cli.as_json);
  });
}

// The metric-learning flags of `pixseek train` (pixseek/train.h).
void AddMetricFlags(CLI::App* train, MetricTrainOptions& m, std::string& loss) {
  train->add_option("--loss", loss, "triplet, triplet-per-query or contrastive")
      ->capture_default_str();
  train->add_option("--margin", m.margin,
                    "Loss margin (default: 0.1 triplet, 0.5 contrastive)")
      ->check(CLI::Range(0.0, 2.0));
  train->add_option("--xbm", m.xbm, "Cross-batch memory: rows of earlier batches (0 = off)")
      ->check(CLI::Range(0, 1 << 20));
  train->add_option("--koleo", m.koleo, "Weight of the KoLeo regulariser (0 = off)")
      ->check(CLI::Range(0.0, 10.0));
  train->add_option("--dim", m.dimension, "Output dimension of the head (0 = the base's; cut to the base's when above)")
      ->check(CLI::Range(0, 1 << 16))
      ->capture_default_str();
  train->add_option("--epochs", m.epochs, "Most epochs")->check(CLI::Range(1, 10000))
      ->capture_default_str();
  train->add_option("--batch-classes", m.batch_classes, "Classes per batch (P)")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  train->add_option("--per-class", m.per_class, "Images of each class per batch (K)")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  train->add_option("--lr", m.learning_rate, "Learning rate")->check(CLI::Range(1e-7, 10.0))
      ->capture_default_str();
  train->add_option("--patience", m.patience,
                    "Epochs without a better validation mAP before stopping")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
}

void AddTrainCommand(CLI::App& app, Cli& cli) {
  struct State {
    TrainRequest request;
    std::string loss = "contrastive", split = "none", fine_tune = "head";
  };
  auto st = std::make_shared<State>();
  TrainRequest& r = st->request;
  MetricTrainOptions& m = r.metric;
  auto* train = app.add_subcommand(
      "train", "Learn a model from the stored images under DIR (labels = first folder level)");
  train->add_option("DIR", r.root, "Folder the database was built from")->required();
  AddDbFlags(train, cli.flags, false);
  AddIndexFlags(train, cli.flags, ParamCommand{0});
  train->add_option("--name", r.name, "Name of the new model")->required();
  AddMetricFlags(train, m, st->loss);
  train->add_option("--fine-tune", st->fine_tune,
                    "head (a projection and classifier on the stored base features) or "
                    "backbone (the network's last blocks, from the images)")
      ->capture_default_str();
  train->add_option("--trainable-blocks", r.trainable_blocks,
                    "With --fine-tune backbone: blocks at the end of the network trained")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  train->add_option("--backbone-lr", r.backbone_learning_rate,
                    "With --fine-tune backbone: learning rate of the network's weights")
      ->check(CLI::Range(1e-9, 1.0))
      ->capture_default_str();
  train->add_option("--split", st->split,
                    "none, images (every third image of each class held out) or classes (the "
                    "second half held out); measure with `pixseek eval --split` the same")
      ->capture_default_str();
  train->add_option("--val-fraction", r.validation_fraction,
                    "Share of the training part kept to validate on (images, or classes with "
                    "--split classes)")
      ->check(CLI::Range(0.01, 0.9))
      ->capture_default_str();
  train->add_option("--seed", m.seed, "Random seed (the same data and seed, the same model)")
      ->capture_default_str();
  train->add_flag("--json", cli.as_json, "Print a JSON summary");
  train->callback([&cli, st] {
    cli.rc = RunTrain(cli.home, cli.flags, st->request, st->loss, st->split, st->fine_tune,
                      cli.as_json);
  });
}

void AddReindexCommand(CLI::App& app, Cli& cli) {
  auto model = std::make_shared<std::string>();
  auto* reindex = app.add_subcommand(
      "reindex", "Switch a database to another model (a trained head needs no image read)");
  AddDbFlags(reindex, cli.flags, false);
  AddIndexFlags(reindex, cli.flags, ParamCommand{0});
  reindex->add_option("--model", *model, "The installed model to switch to")->required();
  struct DbaFlags {
    int n = -1;  // -1 = keep the database's
    float alpha = DbaOptions{}.alpha;
  };
  auto dba = std::make_shared<DbaFlags>();
  reindex->add_option("--dba", dba->n,
                      "Database-side augmentation: each stored vector becomes the weighted mean "
                      "of its N nearest (itself included); 0 = off (default: keep the "
                      "database's). The same --model reindexes from the stored features")
      ->check(CLI::Range(0, kMaxDbaN));
  reindex->add_option("--dba-alpha", dba->alpha, "With --dba: weight = similarity^alpha")
      ->check(CLI::Range(0.0f, kMaxDbaAlpha));
  reindex->add_flag("--json", cli.as_json, "Print JSON");
  reindex->callback([&cli, model, dba] {
    std::optional<DbaOptions> options;
    if (dba->n >= 0) options = DbaOptions{dba->n, dba->alpha};
    cli.rc = RunReindex(cli.home, cli.flags, *model, options, cli.as_json);
  });
}

void AddBuildCommand(CLI::App& app, Cli& cli) {
  struct State {
    std::string dir;
    PcaOptions pca;
    size_t fit_sample = DatabaseOptions{}.fit_sample;
  };
  auto st = std::make_shared<State>();
  auto* cmd = app.add_subcommand("build", "Index every image under DIR into a database");
  cmd->add_option("DIR", st->dir, "Folder of images (walked recursively)")->required();
  AddDbFlags(cmd, cli.flags, true);
  AddIndexFlags(cmd, cli.flags, kCmdBuild);
  AddStoredCopyFlags(cmd, cli.flags);
  cmd->add_flag("--json", cli.as_json, "Print a JSON summary");
  cmd->add_option("--pca", st->pca.dimension,
                  "New database: reduce vectors to DIM with PCA learned from the images")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--whiten", st->pca.whiten, "With --pca: PCA-whitening (shrunk; see --shrinkage)");
  cmd->add_option("--shrinkage", st->pca.shrinkage,
                  "With --whiten: 0 = plain whitening .. 1 = none (default " +
                      std::to_string(PcaOptions{}.shrinkage).substr(0, 4) + ")")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--fit-sample", st->fit_sample,
                  "New database: images sampled to learn the codebook (sift-vlad) and PCA")
      ->check(CLI::Range(1, 1 << 30));
  cmd->callback([&cli, st] {
    cli.rc = RunBuild(cli.home, cli.flags, st->dir, cli.as_json, st->pca, st->fit_sample);
  });
}

// --rerank (into `method`, parsed by ParseRerankMethod, the one list of
// methods) and the re-ranking's parameters, starting from the config file's.
void AddRerankFlags(CLI::App* cmd, RerankOptions& rerank, std::string& method) {
  cmd->add_option("--rerank", method,
                  "Re-rank the index's results: none, qe (alpha-query expansion), dba (the "
                  "database's augmented vectors; see reindex --dba), dba+qe, or spatial "
                  "(RANSAC-verified RootSIFT matches, for the same object or scene)");
  cmd->add_option("--qe-n", rerank.qe_n, "qe: results averaged into the query")
      ->check(CLI::Range(1, kMaxQeN));
  cmd->add_option("--qe-alpha", rerank.qe_alpha, "qe: weight = similarity^alpha")
      ->check(CLI::Range(0.0, 20.0));
  cmd->add_option("--spatial-top", rerank.spatial_top, "spatial: results verified")
      ->check(CLI::Range(1, kMaxSpatialTop));
}

// A search's filter as written on the command line (the times and the
// format are parsed once the flags are read).
struct FilterFlags {
  std::optional<std::string> label, added_after, added_before, format;
  int min_width = 0;
  int min_height = 0;
};

void AddFilterFlags(CLI::App* cmd, FilterFlags& f) {
  cmd->add_option("--label", f.label, "Only images of this label (first folder level at build)");
  cmd->add_option("--added-after", f.added_after,
                  "Only images added at or after this time: unix seconds, 2026-12-01 or "
                  "2026-12-01T08:30:00Z (UTC)");
  cmd->add_option("--added-before", f.added_before, "Only images added before this time");
  cmd->add_option("--format", f.format, "Only images of this format: jpeg, png, webp, bmp, "
                                        "tiff or gif");
  cmd->add_option("--min-width", f.min_width, "Only images at least this wide (pixels)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--min-height", f.min_height, "Only images at least this tall (pixels)")
      ->check(CLI::Range(0, 1 << 20));
}

Result<RecordFilter> ParseFilterFlags(const FilterFlags& f) {
  RecordFilter filter;
  filter.label = f.label;
  if (f.added_after) {
    PIXSEEK_ASSIGN_OR_RETURN(filter.added_after, ParseFilterTime(*f.added_after));
  }
  if (f.added_before) {
    PIXSEEK_ASSIGN_OR_RETURN(filter.added_before, ParseFilterTime(*f.added_before));
  }
  if (f.format) {
    PIXSEEK_ASSIGN_OR_RETURN(filter.format, ParseFilterFormat(*f.format));
  }
  filter.min_width = f.min_width;
  filter.min_height = f.min_height;
  return filter;
}

void AddQueryCommand(CLI::App& app, Cli& cli) {
  struct State {
    std::string image;
    QueryParams params;
    std::string rerank;
    FilterFlags filter;
  };
  auto st = std::make_shared<State>();
  st->params.rerank = cli.server.rerank;
  st->rerank = ToString(cli.server.rerank.method);
  auto* cmd = app.add_subcommand("query", "Find the stored images most similar to IMAGE");
  cmd->add_option("IMAGE", st->image, "Query image file")->required();
  AddDbFlags(cmd, cli.flags, false);
  AddIndexFlags(cmd, cli.flags, kCmdQuery);
  cmd->add_option("-k,--top-k", st->params.top_k, "Number of results")
      ->check(CLI::Range(size_t{1}, kMaxTopK));
  cmd->add_option("--min-score", st->params.min_score,
                  "Drop results below this cosine similarity");
  cmd->add_option("--category", st->params.category,
                  "Only results of this category: auto (the query's predicted category) or a "
                  "label (first folder level at build)");
  AddFilterFlags(cmd, st->filter);
  AddRerankFlags(cmd, st->params.rerank, st->rerank);
  cmd->add_flag("--json", cli.as_json, "Print JSON");
  cmd->callback([&cli, st] {
    auto method = ParseRerankMethod(st->rerank);
    if (!method.ok()) {
      cli.rc = Fail(method.status());
      return;
    }
    st->params.rerank.method = *method;
    auto filter = ParseFilterFlags(st->filter);
    if (!filter.ok()) {
      cli.rc = Fail(filter.status());
      return;
    }
    st->params.filter = *std::move(filter);
    cli.rc = RunQuery(cli.home, cli.flags, st->image, st->params, cli.as_json);
  });
}

void AddWriteCommands(CLI::App& app, Cli& cli) {
  auto files = std::make_shared<std::vector<std::string>>();
  auto* add = app.add_subcommand("add", "Add image files to a database");
  add->add_option("FILE", *files, "Image files")->required();
  AddDbFlags(add, cli.flags, false);
  AddIndexFlags(add, cli.flags, kCmdAdd);
  add->add_flag("--json", cli.as_json, "Print JSON");
  add->callback([&cli, files] { cli.rc = RunAdd(cli.home, cli.flags, *files, cli.as_json); });

  auto ids = std::make_shared<std::vector<int64_t>>();
  auto* remove = app.add_subcommand("remove", "Remove images by id");
  remove->add_option("ID", *ids, "Image ids")->required();
  AddDbFlags(remove, cli.flags, false);
  AddIndexFlags(remove, cli.flags, kCmdRemove);
  remove->callback([&cli, ids] { cli.rc = RunRemove(cli.home, cli.flags, *ids); });

  auto* compact = app.add_subcommand(
      "compact", "Fold the index's recent changes into its long-term form (a new disk graph)");
  AddDbFlags(compact, cli.flags, false);
  AddIndexFlags(compact, cli.flags, kCmdCompact);
  compact->callback([&cli] { cli.rc = RunCompact(cli.home, cli.flags); });
}

void AddServeCommand(CLI::App& app, Cli& cli) {
  ServerOptions& so = cli.server;
  DbFlags& flags = cli.flags;
  auto* cmd = app.add_subcommand("serve", "Serve the HTTP API and web page");
  AddDbFlags(cmd, flags, false);
  AddIndexFlags(cmd, flags, kCmdServe);
  cmd->add_option("--host", so.host, "Address to bind");
  cmd->add_option("--port", so.port, "Port (0 = any free port)");
  cmd->add_option("--max-request-bytes", so.max_request_bytes, "Largest request body");
  cmd->add_option("--import-root", so.import_roots,
                  "Folder under which POST /api/v1/builds may index (repeatable); "
                  "without one, builds over HTTP are refused");
  cmd->add_flag("--quiet", [&so](int64_t) { so.log_requests = false; },
                "Do not log each request");
  cmd->add_option("--log-format", so.log_format, "Request log: text or json")
      ->check(CLI::IsMember({"text", "json"}));
  cmd->add_option("--max-concurrent", so.max_concurrent_requests,
                  "Requests handled at once before answering 503 (0 = 4 x threads)");
  cmd->add_option("--rate-limit", so.rate_limit_per_s,
                  "Requests per second per client (0 = no limit); over it: 429");
  cmd->add_option("--rate-burst", so.rate_burst, "Burst allowed by --rate-limit");
  cmd->add_option("--batch-max", flags.batch_max,
                  "Dynamic batching: most concurrent query images in one forward pass "
                  "(0 = the model card's max_batch, 1 = off)")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--batch-wait-ms", flags.batch_wait_ms,
                  "Dynamic batching: how long a query may wait for others to join its batch")
      ->check(CLI::Range(0.0, 1000.0));
  cmd->add_flag("--keyed-reads", so.keyed_reads,
                "Searches and reads need an API key too (keys: $PIXSEEK_API_KEYS or "
                "api_keys in the config file, never on the command line)");
  auto* hide = cmd->add_flag(
      "--hide-paths", [&so](int64_t) { so.hide_paths = true; },
      "Answers show no absolute server paths: records' paths relative to their library "
      "root (default when API keys are set)");
  cmd->add_flag("--show-paths", [&so](int64_t) { so.hide_paths = false; },
                "Answers show records' absolute server paths (default without API keys)")
      ->excludes(hide);
  cmd->callback([&cli] { cli.rc = RunServe(cli.home, cli.flags, cli.server); });
}

void AddReadCommands(CLI::App& app, Cli& cli) {
  struct State {
    std::string dir;
    std::string queries;
    std::string split = "none";
    std::string report;
    RerankOptions rerank;
    std::string rerank_name;
  };
  auto st = std::make_shared<State>();
  st->rerank = cli.server.rerank;
  st->rerank_name = ToString(cli.server.rerank.method);
  auto* eval = app.add_subcommand(
      "eval", "Leave-one-out retrieval quality (labels = first folder level under DIR)");
  eval->add_option("DIR", st->dir, "Folder the database was built from")->required();
  AddDbFlags(eval, cli.flags, false);
  AddIndexFlags(eval, cli.flags, kCmdEval);
  eval->add_option("--queries", st->queries,
                   "Query images from this folder (labels = its first folder level) instead "
                   "of leave-one-out, e.g. sketches against photos");
  eval->add_option("--split", st->split,
                   "Measure only the part training did not see: none (everything), images "
                   "(every third image of each class) or classes (the second half of the "
                   "classes); queries and gallery are both the held-out images (with --queries, the "
                   "gallery only)");  // checked by ParseDataSplit, the one list of splits
  eval->add_option("--report", st->report,
                   "Also write REPORT/report.html: figures, precision-recall curve, per-class "
                   "table and the worst classes' results, in one self-contained file");
  AddRerankFlags(eval, st->rerank, st->rerank_name);
  eval->add_flag("--json", cli.as_json, "Print JSON");
  eval->callback([&cli, st] {
    cli.rc = RunEval(cli.home, cli.flags, st->dir, st->queries, st->split, st->report,
                     st->rerank, st->rerank_name, cli.as_json);
  });

  auto* stats = app.add_subcommand("stats", "Print database statistics as JSON");
  AddDbFlags(stats, cli.flags, false);
  AddIndexFlags(stats, cli.flags, ParamCommand{0});
  stats->callback([&cli] { cli.rc = RunStats(cli.home, cli.flags); });

  auto kind = std::make_shared<std::string>();
  auto* params = app.add_subcommand(
      "index-params", "Print the index parameters as a Markdown table (docs/configuration.md)");
  params->add_option("--kind", *kind, "One index kind (default: all)");
  params->callback([&cli, kind] {
    for (const VectorIndexKind& k : VectorIndexKinds()) {
      if (!kind->empty() && *kind != k.name) continue;
      std::cout << "### " << k.name << ": " << k.summary << "\n\n";
      if (k.params.empty()) {
        std::cout << "No parameters.\n\n";
      } else {
        std::cout << ParamsMarkdown(k.params) << "\n";
      }
    }
    cli.rc = 0;
  });
}

// `pixseek dups`: groups of near-identical stored images (FindDuplicates).
// Text: one line per group, the copy to keep first, as "id path".
int RunDups(const std::string& home, const DbFlags& flags, float threshold, bool as_json) {
  auto db = Database::Open(ToOptions(flags, home, /*read_only=*/true), false);
  if (!db.ok()) return Fail(db.status());
  DuplicateOptions options;
  options.threshold = threshold;
  options.threads = flags.threads;
  auto report = FindDuplicates(**db, options);
  if (!report.ok()) return Fail(report.status());
  if (as_json) {
    std::cout << DuplicateReportJson(*report) << std::endl;
    return 0;
  }
  for (const std::vector<int64_t>& group : report->groups) {
    auto records = (*db)->store().GetMany(group);
    if (!records.ok()) return Fail(records.status());
    std::string line;
    for (const ImageRecord& r : *records) {
      line += (line.empty() ? "" : "  ") + std::to_string(r.id) + " " +
              (*db)->FilePath(r).string();
    }
    std::cout << line << "\n";
  }
  std::fprintf(stderr, "%llu groups among %llu images (cosine >= %.3f, %.2f s)\n",
               static_cast<unsigned long long>(report->total_groups),
               static_cast<unsigned long long>(report->images), report->threshold,
               report->seconds);
  return 0;
}

void AddDupsCommand(CLI::App& app, Cli& cli) {
  auto threshold = std::make_shared<float>(kDefaultDuplicateThreshold);
  auto* dups = app.add_subcommand(
      "dups", "List groups of near-identical stored images (the copy to keep first)");
  AddDbFlags(dups, cli.flags, false);
  AddIndexFlags(dups, cli.flags, ParamCommand{0});
  dups->add_option("--threshold", *threshold,
                   "Cosine at or above which two images are copies (0..1]")
      ->capture_default_str();
  dups->add_flag("--json", cli.as_json, "Print JSON: {\"groups\": [[id, ...], ...]}");
  dups->callback([&cli, threshold] {
    cli.rc = RunDups(cli.home, cli.flags, *threshold, cli.as_json);
  });
}

void AddModelCommands(CLI::App& app, Cli& cli) {
  struct State {
    std::string arg;
    std::optional<std::string> url, card, name;
  };
  auto st = std::make_shared<State>();
  auto* model = app.add_subcommand("model", "Manage feature-extraction models");
  model->require_subcommand(1);
  model->add_subcommand("list", "List installed and known models")->callback([&cli] {
    cli.rc = RunModelList(cli.home);
  });
  auto* pull = model->add_subcommand("pull", "Download a known model and check its sha256");
  pull->add_option("NAME", st->arg)->required();
  pull->add_option("--url", st->url, "Download from this URL instead (a mirror)");
  pull->callback([&cli, st] { cli.rc = RunModelPull(cli.home, st->arg, st->url); });
  auto* import = model->add_subcommand("import", "Register a local model file");
  import->add_option("FILE", st->arg)->required();
  import->add_option("--card", st->card, "Model card JSON (not needed for known models)");
  import->add_option("--name", st->name, "Name to register it under");
  import->callback(
      [&cli, st] { cli.rc = RunModelImport(cli.home, st->arg, st->card, st->name); });
  auto* info = model->add_subcommand("info", "Print an installed model's card");
  info->add_option("NAME", st->arg)->required();
  info->callback([&cli, st] { cli.rc = RunModelInfo(cli.home, st->arg); });
}

void AddBenchAnnCommand(CLI::App* bench, Cli& cli) {
  struct State {
    AnnBenchOptions ann;
    std::string base, queries, gt, workdir;
  };
  auto st = std::make_shared<State>();
  AnnBenchOptions& ann = st->ann;
  auto* cmd = bench->add_subcommand(
      "ann", "Compare approximate nearest-neighbour indexes on a big-ann data set (JSON rows)");
  cmd->add_option("--base", st->base, "Base vectors (.fbin)")->required();
  cmd->add_option("--queries", st->queries, "Query vectors (.fbin)")->required();
  cmd->add_option("--gt", st->gt, "Ground truth (.ibin); default: exact search");
  cmd->add_option("--k", ann.k, "Neighbours per query")->check(CLI::Range(1, 1000));
  cmd->add_option("--L", ann.L, "Search list sweep, comma-separated")->delimiter(',');
  cmd->add_option("--threads", ann.threads, "Query (and build) threads")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--peers", ann.peers,
                  "Peers run besides disk and exact, comma-separated (default: "
                  "hnswlib,faiss-hnsw,faiss-ivfpq)")
      ->delimiter(',');
  cmd->add_flag("!--no-exact", ann.run_exact,
               "Skip the exact scan candidate (its recall is 1 by definition; use with --gt)");
  cmd->add_option("--ram-budget", ann.ram_budget, "RAM budget in bytes (0 = none)");
  cmd->add_flag("--interleave", ann.interleave,
                "Build every candidate first, then measure them in turn at each L (needs the "
                "RAM of all at once)");
  cmd->add_option("--rounds", ann.rounds, "With --interleave: times the whole sweep runs")
      ->check(CLI::Range(1, 100));
  cmd->add_option("--workdir", st->workdir, "Where index files go (default: a temp dir)");
  cmd->add_option("--limit-base", ann.limit_base,
                  "Use only the first N base vectors (ground truth then computed)");
  auto& disk = ann.disk;
  cmd->add_option("--disk-R", disk.max_degree, "Disk index: graph degree R");
  cmd->add_option("--disk-build-L", disk.build_list, "Disk index: build list L");
  cmd->add_option("--disk-alpha", disk.alpha, "Disk index: pruning alpha");
  cmd->add_option("--disk-passes", disk.passes, "Disk index: build passes (1 or 2)");
  const IndexParamSpec* storage = FindParam(DiskIndexParamSpecs(), "storage");
  cmd->add_option("--disk-storage", disk.storage, std::string("Disk index: ") + storage->doc)
      ->check(CLI::IsMember(std::vector<std::string>(storage->choices.begin(),
                                                     storage->choices.end())));
  cmd->add_option("--disk-pq-bytes", disk.pq_bytes, "Disk index: PQ bytes (0 = from budget)");
  cmd->add_option("--build-ram-budget", disk.build_ram_budget,
                  "Disk index: peak build RAM in bytes (0 = 4 GiB)");
  cmd->add_option("--disk-W", disk.beam_width, "Disk index: beam width");
  cmd->add_option("--disk-in-flight", disk.queries_in_flight,
                  "Disk index: queries in flight per thread");
  cmd->add_flag("--disk-reuse", disk.reuse,
                "Disk index: reuse the index file already in --workdir");
  cmd->callback([&cli, st] {
    st->ann.base = st->base;
    st->ann.queries = st->queries;
    st->ann.gt = st->gt;
    st->ann.workdir = st->workdir;
    cli.rc = RunBenchAnn(st->ann);
  });
}

// `pixseek bench gt`: exact ground truth streamed from disk (bench_ann/ground_truth.h).
void AddBenchGtCommand(CLI::App* bench, Cli& cli) {
  struct State {
    GroundTruthOptions gt;
    std::string base, queries, out;
  };
  auto st = std::make_shared<State>();
  GroundTruthOptions& gt = st->gt;
  auto* cmd = bench->add_subcommand(
      "gt", "Exact k nearest neighbours (squared L2) of queries in a base streamed from disk (.ibin)");
  cmd->add_option("--base", st->base, "Base vectors (.fbin)")->required();
  cmd->add_option("--queries", st->queries, "Query vectors (.fbin)")->required();
  cmd->add_option("--out", st->out, "Ground truth to write (.ibin)")->required();
  cmd->add_option("--k", gt.k, "Neighbours per query")->check(CLI::Range(1, 100000));
  cmd->add_option("--threads", gt.threads, "Threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--block-bytes", gt.block_bytes,
                  "RAM for base blocks in bytes (two are held; default 256 MiB)")
      ->check(CLI::Range(uint64_t{1} << 20, uint64_t{1} << 40));
  cmd->add_option("--limit-base", gt.limit_base, "Use only the first N base vectors");
  cmd->callback([&cli, st] {
    st->gt.base = st->base;
    st->gt.queries = st->queries;
    st->gt.out = st->out;
    cli.rc = RunBenchGt(st->gt);
  });
}

void AddBenchEmbedCommand(CLI::App* bench, Cli& cli) {
  struct State {
    EmbedBenchOptions options;
    std::string images, script;
  };
  auto st = std::make_shared<State>();
  EmbedBenchOptions& eb = st->options;
  auto* cmd = bench->add_subcommand(
      "embed", "Feature-extraction throughput: pixseek's pipeline against plain Python");
  cmd->add_option("--model", eb.model, "Installed model name or card JSON")->required();
  cmd->add_option("--images", st->images, "Folder of images (recursive)")->required();
  cmd->add_option("--threads", eb.threads, "Decode workers and forward threads")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--limit", eb.limit, "First N images (0 = all)");
  cmd->add_flag("--no-python", [&eb](int64_t) { eb.python = false; },
                "Skip the Python pipeline");
  cmd->add_option("--python", eb.python_bin,
                  "Python interpreter (default $PIXSEEK_PYTHON or /usr/bin/python3)");
  cmd->add_option("--python-script", st->script,
                  "The Python pipeline (default tools/bench_embed.py of the source tree)");
  cmd->callback([&cli, st] {
    st->options.images = st->images;
    st->options.python_script = st->script;
    cli.rc = RunBenchEmbed(cli.home, st->options);
  });
}

// `pixseek check [--repair]` (pixseek/database_check.h). Exit status: 0 no
// damage (after --repair: none left), 1 damage found (or left), 2 the check
// could not run (no database, another writer during --repair).
void AddCheckCommand(CLI::App& app, Cli& cli) {
  auto repair = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "check", "Verify every part of a database; --repair salvages what is intact");
  cmd->add_option("--config", cli.flags.config_file,
                  "TOML configuration file (default $PIXSEEK_CONFIG; see docs/configuration.md)");
  cmd->add_option("--db", cli.flags.db, "Database directory (or $PIXSEEK_DB)");
  cmd->add_option("--metadata-url", cli.flags.metadata_url,
                  "The metadata store when it is MariaDB (or $PIXSEEK_METADATA_URL)");
  AddVectorUrlFlag(cmd, cli.flags);
  cmd->add_flag("--repair", *repair,
                "Salvage what is intact and say what was lost (the database must not be open "
                "for writing: stop a running server first)");
  cmd->add_flag("--json", cli.as_json, "Print the report as JSON");
  cmd->callback([&cli, repair] {
    CheckOptions options;
    options.dir = cli.flags.db;
    options.metadata_url = cli.flags.metadata_url;
    options.vector_url = cli.flags.vector_url;
    options.home = cli.home;
    options.limits.max_bytes = cli.flags.max_bytes;
    options.limits.max_pixels = cli.flags.max_pixels;
    if (*repair) {
      auto report = RepairDatabase(options);
      if (!report.ok()) {
        Fail(report.status());
        cli.rc = 2;
        return;
      }
      std::cout << (cli.as_json ? RepairReportJson(*report) + "\n" : RepairReportText(*report));
      cli.rc = report->after.damaged() ? 1 : 0;
      return;
    }
    auto report = CheckDatabase(options);
    if (!report.ok()) {
      Fail(report.status());
      cli.rc = 2;
      return;
    }
    std::cout << (cli.as_json ? CheckReportJson(*report) + "\n" : CheckReportText(*report));
    cli.rc = report->damaged() ? 1 : 0;
  });
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
  Cli cli(config);
  app.add_option("--home", cli.home,
                 "Where models live (default $PIXSEEK_HOME or ~/.local/share/pixseek)");
  AddBuildCommand(app, cli);
  AddQueryCommand(app, cli);
  AddWriteCommands(app, cli);
  AddServeCommand(app, cli);
  AddReadCommands(app, cli);
  AddDupsCommand(app, cli);
  AddModelCommands(app, cli);
  AddTrainCommand(app, cli);
  AddReindexCommand(app, cli);
  AddCheckCommand(app, cli);
  AddMigrateCommand(app, cli);
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  AddBenchAnnCommand(bench, cli);
  AddBenchGtCommand(bench, cli);
  AddBenchEmbedCommand(bench, cli);

  CLI11_PARSE(app, argc, argv);
  return cli.rc;
}
