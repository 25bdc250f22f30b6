// The three services of the design (build, query, upload) and evaluation.
// Each borrows a Database, which must outlive it. CLI and HTTP both call these.
#ifndef PIXSEEK_SERVICES_H_
#define PIXSEEK_SERVICES_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/status.h"
#include "pixseek/trained_head.h"

namespace pixseek {

// ---- Build service -------------------------------------------------------

struct BuildOptions {
  bool show_progress = true;   // progress bar / lines on progress_out
  FILE* progress_out = stderr;
  int decode_threads = 0;      // 0 = one per core
  // Set to true from another thread (or a signal handler) to stop early; the
  // images finished so far stay stored and a re-run continues.
  const std::atomic<bool>* cancel = nullptr;
  // Called after each file with (processed, total, failed).
  std::function<void(uint64_t, uint64_t, uint64_t)> on_progress;
  // Also checks that every image already stored has its vector in the index,
  // and stores it again when not. For a build that resumes one a crash
  // interrupted on another process: that process may have died between the
  // metadata commit of its last batch and the batch's vectors (a restart of
  // that process would repair this itself; a build taken over by another
  // does not restart anything). Costs one index lookup per stored image.
  bool verify_stored = false;
};

struct BuildFailure {
  std::string path;
  std::string reason;
};

struct BuildReport {
  uint64_t total = 0;     // image-like files found
  uint64_t indexed = 0;   // newly stored
  uint64_t skipped = 0;   // already stored (same path and content hash)
  std::vector<BuildFailure> failed;
  double seconds = 0;
  bool cancelled = false;
};

class BuildService {
 public:
  explicit BuildService(Database& db) : db_(db) {}
  // Walks `root` recursively and stores every image not stored yet. A file
  // whose path is stored with another hash is replaced. Bad files are listed
  // in the report, never fatal; so are symbolic links that lead outside
  // `root`, which are never followed (a link to a file under `root` is stored
  // as that file). Files are opened without following links. InvalidArgument
  // for an empty root; NotFound when root is not a directory.
  Result<BuildReport> Build(const std::filesystem::path& root, const BuildOptions& options);

 private:
  Database& db_;
};

// Builds started over HTTP run as jobs, one at a time, in the background.
struct BuildJobStatus {
  int64_t id = 0;
  std::string path;
  std::string state;  // "queued", "running", "done", "failed"
  uint64_t processed = 0;
  uint64_t total = 0;
  uint64_t failed = 0;
  uint64_t indexed = 0;
  uint64_t skipped = 0;
  double rate = 0;   // files per second
  double eta_s = 0;  // seconds left at that rate
  // Filled in when the job ends: the first kMaxBuildJobFailures of them
  // (`failed` counts them all).
  std::vector<BuildFailure> failures;
  std::string error;  // why a job failed
};
inline constexpr size_t kMaxBuildJobFailures = 1000;

struct BuildJobsOptions {
  // Only folders under one of these may be built (a server must never read
  // arbitrary paths a client names); without any, Start refuses every build.
  std::vector<std::filesystem::path> import_roots;
  // The running node's hold on the builds (the store's lease "build") lasts
  // this long unless renewed, and it renews every lease_ttl / 3: a node that
  // dies during a job leaves it to another node after about lease_ttl.
  std::chrono::milliseconds lease_ttl{6000};
  // How often an idle node looks in the store for jobs to run (queued ones,
  // and ones whose node died); Start on this node wakes it at once.
  std::chrono::milliseconds poll_interval{1000};
};

// Runs BuildService jobs in the background, one at a time, in the order
// started, and shares them with every other process on the same metadata
// store (the nodes of a multi-node deployment). The jobs live in the store
// (MetadataStore's jobs, kind "build"): any node accepts one and every node
// answers Get and List from the store. Only the holder of the store's lease
// "build" runs jobs; each node polls for work and takes the lease when it is
// free or has expired, so a node killed during a job leaves it to another,
// which runs it again (a build skips the images already stored). A node that
// loses the lease (it stalled, or lost the store for longer than lease_ttl)
// stops its job and writes nothing more to it. Jobs that were queued or
// running when every node stopped run again at the next start.
//
// DB/build_jobs.json, where jobs were kept before, is imported into the
// store on construction (its ids kept, jobs that were queued or running
// queued again) and renamed to build_jobs.json.imported (a damaged one to
// build_jobs.json.damaged, after a message).
//
// Thread-safety: all methods may be called concurrently. Owns two threads
// (the runner and the lease keeper); the destructor stops the running job,
// leaves it queued and gives the lease up, so that another node can resume it
// at once.
class BuildJobs {
 public:
  BuildJobs(Database& db, BuildJobsOptions options);
  BuildJobs(Database& db, std::vector<std::filesystem::path> import_roots);
  ~BuildJobs();
  BuildJobs(const BuildJobs&) = delete;
  BuildJobs& operator=(const BuildJobs&) = delete;

  // Queues a build of `path`. InvalidArgument for an empty path;
  // PermissionDenied when no import root is configured or the path lies
  // outside them; NotFound when it is not a directory; the store's error
  // (Unavailable) when the job cannot be recorded.
  Result<int64_t> Start(const std::filesystem::path& path);
  // NotFound for an unknown job; the store's error when it cannot be read.
  Result<BuildJobStatus> Get(int64_t id) const;
  // The newest 100 jobs, oldest first; the store's error when it cannot be
  // read.
  Result<std::vector<BuildJobStatus>> List() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---- Query service -------------------------------------------------------

// The most results one search returns (CLI, HTTP and QueryService alike).
inline constexpr size_t kMaxTopK = 1000;

// What happens between the index's answer and the response
// (src/service/rerank.h; docs/quality.md has their measured effect):
//   kNone     the index's ranking as it is;
//   kQe       alpha-query expansion: the query is replaced by the
//             L2-normalised mean of itself and its top qe_n results, each
//             weighted by its similarity^qe_alpha, and searched again;
//   kDba      the database's augmented vectors (DbaOptions), searched with
//             the query as it is; FailedPrecondition on a database without
//             DBA (a DBA database searches its augmented vectors whatever
//             the method: they are the vectors it holds);
//   kDbaQe    kDba, then alpha-query expansion against the augmented
//             vectors (the combination of the literature);
//   kSpatial  the top spatial_top results re-ordered by the number of
//             RANSAC-consistent RootSIFT matches with the query image
//             (instance search: the same object or scene, not the same
//             category); it reads the query's and the results' image files.
enum class RerankMethod { kNone, kQe, kDba, kDbaQe, kSpatial };
// The methods' names, in enum order: the one list that the CLI, the config
// file and HTTP accept (inline, so that the configuration reads them
// without linking the services).
inline constexpr std::string_view kRerankMethodNames[] = {"none", "qe", "dba", "dba+qe",
                                                          "spatial"};
inline std::string_view ToString(RerankMethod method) {
  return kRerankMethodNames[static_cast<size_t>(method)];
}
// "none", "qe", "dba", "dba+qe", "spatial"; InvalidArgument listing them
// otherwise.
inline Result<RerankMethod> ParseRerankMethod(std::string_view name) {
  std::string list;
  for (size_t i = 0; i < std::size(kRerankMethodNames); ++i) {
    if (name == kRerankMethodNames[i]) return static_cast<RerankMethod>(i);
    list += (i == 0 ? "" : ", ") + std::string(kRerankMethodNames[i]);
  }
  return Status::InvalidArgument("rerank must be one of " + list + "; got '" +
                                 std::string(name) + "'");
}

struct RerankOptions {
  RerankMethod method = RerankMethod::kNone;
  int qe_n = 10;           // alpha-QE: results averaged into the query, 1..kMaxQeN
  float qe_alpha = 3.0f;   // alpha-QE: weight exponent, 0..20
  int spatial_top = 20;    // spatial: results verified (each costs a SIFT match), 1..kMaxSpatialTop
};
inline constexpr int kMaxQeN = 100;
inline constexpr int kMaxSpatialTop = 200;
// InvalidArgument naming the field out of range.
[[nodiscard]] Status ValidateRerank(const RerankOptions& options);

struct QueryParams {
  size_t top_k = 10;        // 1..kMaxTopK
  float min_score = -1.0f;  // hits below are dropped
  // The index's per-query settings (search_list: 0 = the index's default).
  SearchParams search;
  // Results only of this category (ImageRecord::label): "" = any, "auto" =
  // the query's predicted category (any when none is predicted), else that
  // label. Applied as filter.label (both set and different: no results).
  std::string category;
  // Results only of the images whose records pass this filter. It is applied
  // inside the index search, so top_k results come back whenever top_k
  // stored images pass it (and score >= min_score).
  RecordFilter filter;
  // Re-ranking of the index's results (RerankMethod).
  RerankOptions rerank;
};

struct QueryHit {
  int64_t id = 0;
  float score = 0;
  ImageRecord record;
};

struct QueryResponse {
  std::vector<QueryHit> hits;
  // The query's category: the trained head's classifier when the model has
  // one, else a score-weighted vote of the nearest neighbours' labels;
  // nullopt when the database has no labels to predict.
  std::optional<CategoryPrediction> category;
  double took_ms = 0;
  bool cached = false;
};

// What users write for RecordFilter's fields (HTTP parameters, CLI flags).
// A time bound (added_after, added_before): unix seconds ("1764547200"), a
// UTC date ("2026-12-01", its midnight) or a UTC date and time
// ("2026-12-01T08:30:00Z", the Z optional). InvalidArgument otherwise.
Result<int64_t> ParseFilterTime(std::string_view text);
// An image format: ImageFormatName()'s names in any case, "jpg" for "jpeg"
// and "tif" for "tiff". InvalidArgument listing the names otherwise.
Result<std::string> ParseFilterFormat(std::string_view text);

class QueryService {
 public:
  explicit QueryService(Database& db) : db_(db) {}
  // Searches with an encoded image. Errors as DecodeImage, and
  // InvalidArgument for bad params.
  Result<QueryResponse> SearchImage(std::span<const uint8_t> bytes, const QueryParams& params);
  // Searches with the vector of a stored image (it finds itself first).
  // NotFound for an unknown id.
  Result<QueryResponse> SearchById(int64_t id, const QueryParams& params);

 private:
  // What re-ranking needs to know of a query beside its vector.
  struct QueryOrigin {
    int64_t id = -1;               // a stored image's id (SearchById), else -1
    const Image* image = nullptr;  // its pixels when searched by image
  };
  // The nearest `k` stored images to `query` with their records, best first,
  // re-ranked as params.rerank says (ids removed meanwhile are dropped);
  // only ids in `allowed` when it is given.
  Result<std::vector<QueryHit>> Nearest(std::span<const float> query, const QueryOrigin& origin,
                                        size_t k, const QueryParams& params,
                                        const IdFilter* allowed = nullptr);
  // The answer to a query (`query`: its vector in the index; `base`: its
  // base feature, empty when unknown): its category, and its top_k hits
  // with score >= min_score that pass the category and the filter.
  Result<QueryResponse> Answer(std::span<const float> base, std::span<const float> query,
                               const QueryOrigin& origin, const QueryParams& params);
  // Joins metadata to cached hits (dropping ids removed meanwhile).
  Result<std::vector<QueryHit>> Join(const std::vector<SearchHit>& hits);
  Database& db_;
};

// ---- Upload service ------------------------------------------------------

class UploadService {
 public:
  explicit UploadService(Database& db) : db_(db) {}
  // Stores uploaded bytes under DB/images/ and indexes them, recording the
  // path relative to the database directory (Database::UploadPath). `name`
  // is the client's file name (for display only; never used as a path).
  Result<int64_t> AddBytes(std::span<const uint8_t> bytes, const std::string& name);
  // Indexes a file in place (by its absolute path without links), as the
  // build does.
  Result<int64_t> AddFile(const std::filesystem::path& file, const std::string& label);
  Status Remove(int64_t id);

 private:
  Database& db_;
};

// ---- Labelled collections and their splits -------------------------------

// A stored image under a root, labelled by its first folder level below it.
struct LabelledImage {
  int64_t id = 0;
  std::string path;
  std::string label;
};

// The stored images under `root` that lie in a folder, sorted by path.
Result<std::vector<LabelledImage>> ListLabelledImages(const MetadataStore& store,
                                                      const std::filesystem::path& root);

// How a labelled collection is divided between training and measurement, so
// that what training bought is measured on data it never saw:
//   kNone     everything is used for both;
//   kImages   within each class, sorted by path, every third image (the 3rd,
//             6th, ...) is held out;
//   kClasses  the classes, sorted by name, are halved: the first half
//             (rounded up) trains, the rest is held out.
enum class DataSplit { kNone, kImages, kClasses };
// "none", "images", "classes"; InvalidArgument otherwise.
Result<DataSplit> ParseDataSplit(std::string_view name);
std::string_view ToString(DataSplit split);

struct SplitParts {
  std::vector<LabelledImage> train;     // kNone: everything
  std::vector<LabelledImage> held_out;  // kNone: everything
};
// Deterministic: the same images give the same parts, in path order.
SplitParts SplitLabelled(const std::vector<LabelledImage>& images, DataSplit split);

// ---- Evaluation ----------------------------------------------------------

// Retrieval metrics, each a mean over queries (docs/quality.md defines
// them). Relevance is binary: same label.
struct EvalMetrics {
  double map = 0;          // mean average precision over the full ranking
  double map_at_100 = 0;   // AP@100: precision summed over the top 100 / min(R, 100)
  double p_at_1 = 0;
  double p_at_10 = 0;
  double p_at_100 = 0;
  double r_at_1 = 0;
  double r_at_10 = 0;
  double r_at_100 = 0;
  double ndcg_at_10 = 0;   // binary gains, log2(rank + 1) discount
  double ndcg_at_100 = 0;
  // Interpolated precision (the best precision at this recall or more) at
  // recall 0, 0.01, ..., 1: kPrCurvePoints entries. The 11-point curve is
  // every tenth of them.
  std::vector<double> pr_curve = std::vector<double>(kPrCurvePoints, 0.0);
  uint64_t queries = 0;

  static constexpr int kPrCurvePoints = 101;
};

// One query of a class the evaluation found hard and what it retrieved:
// the strips of `pixseek eval --report`.
struct EvalExample {
  std::string label;
  int64_t query_id = -1;    // a stored image (leave-one-out), else -1
  std::string query_path;   // the query file (--queries), else the stored path
  double average_precision = 0;
  struct Hit {
    int64_t id = 0;
    std::string path;
    bool relevant = false;
  };
  std::vector<Hit> top;  // its best results, best first (up to 8)
};

struct EvalReport {
  EvalMetrics overall;                     // mean over all queries
  EvalMetrics macro;                       // mean over labels of per-label means
  std::map<std::string, EvalMetrics> per_label;
  DataSplit split = DataSplit::kNone;  // which part of the collection was measured
  std::string protocol = "leave-one-out";  // or "queries" (EvaluateQueries)
  std::string model;                       // the database's model
  RerankMethod rerank = RerankMethod::kNone;  // the re-ranking the queries went through
  // The gallery: the labelled stored images, or with a split only their
  // held-out part.
  uint64_t images = 0;
  uint64_t failed_queries = 0;  // query files that could not be read or decoded
  double seconds = 0;
  // The index against the exact ranking, on a sample of the same queries
  // (every query up to EvalOptions::index_sample, then an even spread):
  // recall of the exact top index_k in the index's top index_k, and AP@100
  // through the index's own top 100, beside the exact AP@100 of the same
  // sample (so the difference is the index's alone).
  uint64_t index_queries = 0;
  int index_k = 10;
  double index_recall_at_k = 0;
  double index_map_at_k = 0;
  double index_exact_map_at_k = 0;
  // The three classes with the lowest mAP, worst first: for each, the query
  // closest to the class mean AP and its top results.
  std::vector<EvalExample> examples;
};

struct EvalOptions {
  // kImages or kClasses: the gallery (and, leave-one-out, the queries) is
  // only the held-out part of `root`'s images; with kClasses and --queries,
  // queries of a training class are left out too (nothing of theirs is in
  // the gallery).
  DataSplit split = DataSplit::kNone;
  int threads = 0;         // ranking and decoding threads; 0 = one per core
  bool show_progress = false;
  std::FILE* progress_out = stderr;
  // Called after each chunk of queries with (queries done, total).
  std::function<void(uint64_t, uint64_t)> on_progress;
  // Set from another thread to stop; the evaluation then fails with Cancelled.
  const std::atomic<bool>* cancel = nullptr;
  // Queries scored at once: the memory bound is chunk x gallery floats.
  // 0 = at most 256, fewer for a gallery so large that a chunk would pass
  // 128 MiB. The figures do not depend on it.
  size_t chunk = 0;
  size_t index_sample = 1000;  // queries compared with the index; 0 = none
  // The queries' rankings go through this re-ranking, as a search's do
  // (FailedPrecondition for dba on a database without DBA).
  RerankOptions rerank;
};
using EvalQueryOptions = EvalOptions;

// Leave-one-out retrieval quality over the stored images that lie under
// `root`, labelled by their first folder level below it. Every such image is a
// query against all the others; relevant = same label. With a split
// (SplitLabelled), only the held-out images take part, as queries and as the
// gallery: figures never count an image training saw. Rankings are exact
// (every gallery vector scored, chunks of queries at a time, on all cores);
// the index's own ranking is measured apart (EvalReport::index_*).
// FailedPrecondition when fewer than two labelled (held-out) images are
// found; DataLoss when a stored vector is missing or has the wrong
// dimension; Cancelled when options.cancel was set.
Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root,
                            const EvalOptions& options);
Result<EvalReport> Evaluate(Database& db, const std::filesystem::path& root,
                            DataSplit split = DataSplit::kNone);

// Cross-folder retrieval quality (e.g. sketch queries against photos): every
// image in a labelled folder under `query_root` (label = its first folder
// level) is decoded, embedded and ranked exactly against the stored images
// under `root` (their held-out part with options.split); relevant = gallery
// images with the same label. Query files that cannot be decoded are counted
// in failed_queries, not fatal.
// FailedPrecondition when the gallery has fewer than two labelled images or
// there are no labelled queries; NotFound when query_root is not a folder.
Result<EvalReport> EvaluateQueries(Database& db, const std::filesystem::path& root,
                                   const std::filesystem::path& query_root,
                                   const EvalOptions& options = {});

// The report as the JSON of `pixseek eval --json` and of an evaluation job
// (keys in docs/quality.md).
std::string EvalReportJson(const EvalReport& report);

// Writes dir/report.html (dir created if need be): one self-contained page
// (inline CSS, JS and SVG, thumbnails as data: URIs) with the figures, the
// precision-recall curve, a per-class table and the examples' strips.
// Internal on a file that cannot be written.
Status WriteEvalReportHtml(const Database& db, const EvalReport& report,
                           const std::filesystem::path& dir);

// ---- Near-duplicates -------------------------------------------------------

// The default cosine above which two stored images count as copies of one
// another: measured on edited copies of PACS photos with MobileNetV2
// (docs/quality.md, "Near-duplicates").
inline constexpr float kDefaultDuplicateThreshold = 0.92f;

struct DuplicateOptions {
  float threshold = kDefaultDuplicateThreshold;  // cosine, (0, 1]
  int threads = 0;        // scanning threads; 0 = one per core
  size_t max_groups = 0;  // groups returned, largest first; 0 = all
};

struct DuplicateReport {
  // Groups of two or more ids, largest first, then by smallest id. In each,
  // the first id is the copy to keep (the most pixels, then the largest
  // file, then the oldest id); the others, the extra copies, ascend.
  std::vector<std::vector<int64_t>> groups;
  uint64_t total_groups = 0;  // before max_groups
  bool truncated = false;     // total_groups > max_groups
  uint64_t images = 0;        // stored vectors compared
  float threshold = 0;
  double seconds = 0;
};

// Groups of near-identical stored images: every pair of the index's vectors
// with cosine >= options.threshold, found exactly (all pairs, chunked BLAS
// products on all cores), joined transitively (a ~ b and b ~ c put a, b, c in
// one group). Reads only. InvalidArgument for a threshold outside (0, 1];
// DataLoss for a stored vector of the wrong dimension.
Result<DuplicateReport> FindDuplicates(Database& db, const DuplicateOptions& options = {});

// {"groups": [[id, ...], ...], "threshold", "images", "total_groups",
// "truncated", "seconds"}: the JSON of `pixseek dups --json` and of
// GET /api/v1/duplicates.
std::string DuplicateReportJson(const DuplicateReport& report);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICES_H_
