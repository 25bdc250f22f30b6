// CheckDatabase: reads every part of a database directory and reports what
// is damaged, without changing anything (pixseek/database_check.h).
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "core/hash.h"
#include "pixseek/database_check.h"
#include "pixseek/feature_fit.h"
#include "pixseek/image.h"
#include "service/check_context.h"
#include "service/fit.h"
#include "service/vector_store.h"

namespace pixseek {

namespace fs = std::filesystem;

namespace {

// Records listed per page when reading the store.
constexpr size_t kPage = 1000;
// A stored base feature is L2-normalised; more than this off is damage.
constexpr double kUnitTolerance = 1e-2;
// Thumbnails are decoded at the smallest DCT scale that keeps this side:
// every byte is read, few pixels are made.
constexpr int kThumbnailProbeSide = 8;

std::string Plural(size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// (The ids are copied: a caller may build the message from them in the
// same call.)
CheckIssue Issue(std::string message, const std::vector<int64_t>& ids = {}) {
  CheckIssue issue;
  issue.message = std::move(message);
  issue.ids = ids;
  std::sort(issue.ids.begin(), issue.ids.end());
  return issue;
}

// The part when what it needs could not be read.
CheckPart NotChecked(const std::string& name, const std::string& why) {
  CheckPart part;
  part.name = name;
  part.checked = false;
  part.summary = "not checked: " + why;
  return part;
}

CheckPart CheckManifest(const CheckContext& ctx) {
  CheckPart part;
  part.name = "manifest";
  if (!ctx.manifest.ok()) {
    part.summary = "cannot be read; nothing that depends on it can be checked";
    part.damage.push_back(Issue(ctx.manifest.status().message()));
    return part;
  }
  const DatabaseManifest& m = *ctx.manifest;
  part.summary = "model " + m.model + ", " + std::to_string(m.dimension) + "-d vectors, " +
                 m.index_kind + " index" + (m.index_dir.empty() ? "" : " in " + m.index_dir) +
                 ", metadata in " + m.metadata_store;
  if (m.pca_dimension > 0) {
    auto pca = PcaTransform::Load(ctx.dir / kPcaFileName);
    if (!pca.ok()) {
      part.damage.push_back(Issue(pca.status().message()));
    } else if (pca->output_dimension() != m.dimension) {
      part.damage.push_back(
          Issue(std::string(kPcaFileName) + " gives " + std::to_string(pca->output_dimension()) +
                "-d vectors, the manifest records " + std::to_string(m.dimension)));
    } else {
      part.summary += "; " + std::string(kPcaFileName) + " intact";
    }
  }
  return part;
}

CheckPart CheckMetadata(const CheckContext& ctx) {
  CheckPart part;
  part.name = "metadata";
  if (ctx.store == nullptr) {
    if (ctx.store_status.code() == StatusCode::kFailedPrecondition) {
      return NotChecked(part.name, ctx.store_status.message());
    }
    part.summary = "cannot be opened";
    part.damage.push_back(Issue(ctx.store_status.message()));
    return part;
  }
  part.summary = Plural(ctx.records.size(), "record", "records");
  if (Status s = ctx.store->CheckIntegrity(); !s.ok()) {
    part.damage.push_back(Issue("integrity check: " + s.message()));
  } else {
    part.summary += ", integrity check passed";
  }
  if (ctx.manifest.ok() && !ctx.manifest->id.empty()) {
    auto recorded = ctx.store->GetSetting("database_id");
    if (!recorded.ok()) {
      part.damage.push_back(Issue(recorded.status().message()));
    } else if (*recorded && **recorded != ctx.manifest->id) {
      part.damage.push_back(Issue("the store belongs to another database (its database_id is " +
                                  **recorded + ", the manifest's " + ctx.manifest->id + ")"));
    }
  }
  return part;
}

// The index part; *ids gets the ids whose vectors can be read (nullopt when
// the index could not be read at all) and *writer whether a writer has it.
CheckPart CheckIndex(const CheckContext& ctx, std::optional<std::vector<int64_t>>* ids,
                     bool* writer) {
  CheckPart part;
  part.name = "index";
  if (!ctx.manifest.ok()) return NotChecked(part.name, "needs the manifest");
  auto spec = IndexSpecOf(*ctx.manifest, ctx.dir, ctx.options.vector_url);
  Result<IndexVerifyReport> report =
      spec.ok() ? VerifyVectorIndex(*spec) : Result<IndexVerifyReport>(spec.status());
  if (!report.ok()) {
    part.summary = "cannot be read";
    part.damage.push_back(Issue(report.status().message()));
    return part;
  }
  std::string summary;
  for (const IndexFileCheck& f : report->files) {
    const std::string name = RelativeName(ctx.dir, f.file);
    if (!f.summary.empty()) summary += (summary.empty() ? "" : "; ") + name + ": " + f.summary;
    if (!f.damage.empty()) {
      std::string message = f.damage;
      if (!f.lost_ids.empty()) {
        message += " (" + Plural(f.lost_ids.size(), "vector", "vectors") + " known to be lost)";
      }
      part.damage.push_back(Issue(message, f.lost_ids));
    }
    if (!f.note.empty()) part.notes.push_back(Issue(name + ": " + f.note));
  }
  part.summary = Plural(report->ids.size(), "readable vector", "readable vectors") +
                 (summary.empty() ? "" : "; " + summary);
  *writer = report->writer_active;
  if (report->writer_active) {
    part.notes.push_back(
        Issue("another process (a running server?) has the index open for writing: what it writes "
              "meanwhile may look half-done here; stop it and check again to be sure"));
  }
  *ids = std::move(report->ids);
  return part;
}

CheckPart CheckConsistency(const CheckContext& ctx,
                           const std::optional<std::vector<int64_t>>& indexed, bool writer) {
  if (ctx.store == nullptr || !indexed) {
    return NotChecked("consistency", "needs both the metadata and the index");
  }
  CheckPart part;
  part.name = "consistency";
  std::vector<int64_t> stored;
  stored.reserve(ctx.records.size());
  for (const ImageRecord& r : ctx.records) stored.push_back(r.id);
  std::vector<int64_t> no_vector, no_record;
  std::set_difference(stored.begin(), stored.end(), indexed->begin(), indexed->end(),
                      std::back_inserter(no_vector));
  std::set_difference(indexed->begin(), indexed->end(), stored.begin(), stored.end(),
                      std::back_inserter(no_record));
  part.summary = Plural(stored.size(), "record", "records") + ", " +
                 Plural(indexed->size(), "vector", "vectors");
  // A writer's insert in flight is a record without a vector for a moment.
  std::vector<CheckIssue>& where = writer ? part.notes : part.damage;
  if (!no_vector.empty()) {
    where.push_back(Issue(Plural(no_vector.size(), "record has", "records have") +
                              " no vector in the index (lost with damage to the index, or left "
                              "by an interrupted write): searches cannot find them; a repair "
                              "restores them from their stored base features",
                          no_vector));
  }
  if (!no_record.empty()) {
    where.push_back(Issue(Plural(no_record.size(), "vector has", "vectors have") +
                              " no record (an interrupted write, or a removal lost with damage "
                              "to the index): a repair removes them",
                          no_record));
  }
  return part;
}

// The length of the stored base features: the index's dimension when
// nothing follows the network, else the length of the first one stored.
int BaseDimension(const CheckContext& ctx) {
  const DatabaseManifest& m = *ctx.manifest;
  if (m.pca_dimension == 0 && m.head_sha256.empty()) return m.dimension;
  for (const ImageRecord& r : ctx.records) {
    auto feature = ctx.store->GetFeature(r.id);
    if (feature.ok()) return static_cast<int>(feature->size());
  }
  return 0;
}

CheckPart CheckFeatures(const CheckContext& ctx) {
  if (ctx.store == nullptr || !ctx.manifest.ok()) {
    return NotChecked("features", "needs the manifest and the metadata");
  }
  CheckPart part;
  part.name = "features";
  const int dim = BaseDimension(ctx);
  std::map<std::string, std::vector<int64_t>> faults;
  std::set<int64_t> seen;
  int64_t last = 0;
  Status scan = Status::DataLoss("no stored feature");
  if (dim > 0) {
    scan = ctx.store->ScanFeatures(dim, [&](std::span<const int64_t> ids,
                                            std::span<const float> rows) {
      for (size_t i = 0; i < ids.size(); ++i) {
        std::string fault = FeatureFault(rows.subspan(i * size_t(dim), size_t(dim)), size_t(dim));
        if (!fault.empty()) faults[fault].push_back(ids[i]);
        seen.insert(ids[i]);
        last = ids[i];
      }
      return Status::Ok();
    });
  }
  if (!scan.ok() && scan.code() != StatusCode::kDataLoss) {
    part.summary = "cannot be read";
    part.damage.push_back(Issue(scan.message()));
    return part;
  }
  if (!scan.ok() && dim > 0) {
    // A feature of another length stops the scan: read the rest one by one.
    for (const ImageRecord& r : ctx.records) {
      if (r.id <= last) continue;
      auto feature = ctx.store->GetFeature(r.id);
      if (feature.ok()) {
        std::string fault = FeatureFault(*feature, size_t(dim));
        if (!fault.empty()) faults[fault].push_back(r.id);
        seen.insert(r.id);
      } else if (feature.status().code() == StatusCode::kDataLoss) {
        faults["not whole floats"].push_back(r.id);
        seen.insert(r.id);
      }
    }
  }
  for (auto& [fault, ids] : faults) {
    part.damage.push_back(
        Issue(Plural(ids.size(), "stored base feature is ", "stored base features are ") + fault +
                  ": a repair cannot restore these images' vectors from them",
              ids));
  }
  std::vector<int64_t> missing;
  for (const ImageRecord& r : ctx.records) {
    if (seen.count(r.id) == 0) missing.push_back(r.id);
  }
  part.summary = Plural(seen.size(), "base feature", "base features") +
                 (dim > 0 ? " of " + std::to_string(dim) + " floats" : "");
  if (!missing.empty()) {
    part.notes.push_back(Issue(Plural(missing.size(), "record has", "records have") +
                                   " no stored base feature (added before features were kept): "
                                   "a repair cannot restore their vectors",
                               missing));
  }
  return part;
}

CheckPart CheckThumbnails(const CheckContext& ctx) {
  if (ctx.store == nullptr) return NotChecked("thumbnails", "needs the metadata");
  CheckPart part;
  part.name = "thumbnails";
  std::map<std::string, std::vector<int64_t>> faults;
  std::unordered_set<int64_t> ids;
  for (const ImageRecord& r : ctx.records) {
    ids.insert(r.id);
    std::string fault = ThumbnailFault(ThumbnailFile(ctx.dir, r.id), ctx.options.limits);
    if (!fault.empty()) faults[fault].push_back(r.id);
  }
  size_t bad = 0;
  for (auto& [fault, list] : faults) {
    bad += list.size();
    part.damage.push_back(Issue(Plural(list.size(), "thumbnail is ", "thumbnails are ") + fault +
                                    ": a repair makes them again from the image files",
                                list));
  }
  size_t orphans = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(ctx.dir / "thumbs", ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() != ".jpg") continue;
    try {
      if (ids.count(std::stoll(p.stem().string())) == 0) ++orphans;
    } catch (const std::exception&) {
      ++orphans;
    }
  }
  part.summary = std::to_string(ctx.records.size() - bad) + " of " +
                 Plural(ctx.records.size(), "thumbnail", "thumbnails") + " readable";
  if (orphans > 0) {
    part.notes.push_back(Issue(Plural(orphans, "thumbnail belongs", "thumbnails belong") +
                               " to no record (left by an interrupted removal)"));
  }
  return part;
}

// Why an uploaded file no longer matches its record ("" when it does).
std::string UploadFault(const fs::path& file, const ImageRecord& r) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return "missing";
  const auto size = fs::file_size(file, ec);
  if (ec) return "unreadable";
  if (static_cast<int64_t>(size) != r.size_bytes) return "of another size than recorded";
  auto bytes = ReadFileLimited(file, size + 1);
  if (!bytes.ok()) return "unreadable";
  if (Sha256Hex(*bytes) != r.sha256)
    return "changed (the sha256 of the bytes is not the one recorded)";
  return "";
}

// Uploads (DIR/images: the database's own copies) and files indexed in
// place (the user's: only whether they are still there).
void CheckFiles(const CheckContext& ctx, CheckPart* uploads, CheckPart* files) {
  uploads->name = "uploads";
  files->name = "files";
  std::map<std::string, std::vector<int64_t>> faults;
  std::vector<int64_t> gone;
  std::set<fs::path> referenced;
  size_t uploaded = 0;
  for (const ImageRecord& r : ctx.records) {
    const fs::path file = StoredFile(ctx.dir, r);
    if (IsUpload(ctx.dir, file)) {
      ++uploaded;
      referenced.insert(file);
      std::string fault = UploadFault(file, r);
      if (!fault.empty()) faults[fault].push_back(r.id);
    } else {
      std::error_code ec;
      if (!fs::exists(file, ec)) gone.push_back(r.id);
    }
  }
  for (auto& [fault, ids] : faults) {
    uploads->damage.push_back(Issue(
        Plural(ids.size(), "uploaded file is ", "uploaded files are ") + fault +
            ": their records and vectors stay, a repair cannot restore the files (restore them "
            "from a backup, or remove the images with `pixseek remove ID`)",
        ids));
  }
  size_t orphans = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(ctx.dir / "images", ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_regular_file(ec) && referenced.count(it->path().lexically_normal()) == 0) {
      ++orphans;
    }
  }
  uploads->summary = Plural(uploaded, "uploaded file", "uploaded files");
  if (orphans > 0) {
    uploads->notes.push_back(Issue(Plural(orphans, "file", "files") + " under " +
                                   (ctx.dir / "images").string() +
                                   " belong to no record (an interrupted upload or removal)"));
  }
  files->summary =
      Plural(ctx.records.size() - uploaded, "file indexed in place", "files indexed in place");
  if (!gone.empty()) {
    files->notes.push_back(Issue(
        Plural(gone.size(), "image file indexed in place is", "image files indexed in place are") +
            " gone (moved or deleted): the images stay searchable, but their files cannot be "
            "served, and a lost thumbnail or vector cannot be made again from them",
        gone));
  }
}

std::string IdList(const std::vector<int64_t>& ids) {
  constexpr size_t kShown = 20;
  std::string s;
  for (size_t i = 0; i < ids.size() && i < kShown; ++i) {
    s += (i ? ", " : "") + std::to_string(ids[i]);
  }
  if (ids.size() > kShown) s += ", ... (" + std::to_string(ids.size()) + " in all)";
  return s;
}

nlohmann::json IssueJson(const CheckIssue& issue) {
  nlohmann::json j = {{"message", issue.message}, {"ids", issue.ids}};
  if (!issue.part.empty()) j["part"] = issue.part;
  return j;
}

nlohmann::json IssuesJson(const std::vector<CheckIssue>& issues) {
  nlohmann::json list = nlohmann::json::array();
  for (const CheckIssue& issue : issues) list.push_back(IssueJson(issue));
  return list;
}

nlohmann::json ReportJson(const CheckReport& report) {
  nlohmann::json parts = nlohmann::json::array();
  for (const CheckPart& p : report.parts) {
    parts.push_back({{"part", p.name},
                     {"ok", p.checked && !p.damaged()},
                     {"checked", p.checked},
                     {"summary", p.summary},
                     {"damage", IssuesJson(p.damage)},
                     {"notes", IssuesJson(p.notes)}});
  }
  return {{"database", report.dir.string()}, {"ok", !report.damaged()}, {"parts", parts}};
}

void AppendIssues(const std::vector<CheckIssue>& issues, const char* mark, std::string* out) {
  for (const CheckIssue& issue : issues) {
    *out += std::string("      ") + mark + " " + issue.message;
    if (!issue.ids.empty()) *out += " [ids " + IdList(issue.ids) + "]";
    *out += "\n";
  }
}

std::string PartsText(const CheckReport& report) {
  std::string out;
  for (const CheckPart& p : report.parts) {
    const char* state = !p.checked ? "SKIPPED" : p.damaged() ? "DAMAGED" : "ok";
    char head[64];
    std::snprintf(head, sizeof head, "  %-12s %-8s ", p.name.c_str(), state);
    out += head + p.summary + "\n";
    AppendIssues(p.damage, "!", &out);
    AppendIssues(p.notes, "-", &out);
  }
  return out;
}

}  // namespace

bool CheckReport::damaged() const {
  return std::any_of(parts.begin(), parts.end(),
                     [](const CheckPart& p) { return !p.checked || p.damaged(); });
}

Result<CheckReport> CheckDatabase(const CheckOptions& options) {
  PIXSEEK_ASSIGN_OR_RETURN(CheckContext ctx, OpenCheckContext(options));
  CheckReport report;
  report.dir = ctx.dir;
  report.parts.push_back(CheckManifest(ctx));
  report.parts.push_back(CheckMetadata(ctx));
  std::optional<std::vector<int64_t>> indexed;
  bool writer = false;
  report.parts.push_back(CheckIndex(ctx, &indexed, &writer));
  report.parts.push_back(CheckConsistency(ctx, indexed, writer));
  report.parts.push_back(CheckFeatures(ctx));
  report.parts.push_back(CheckThumbnails(ctx));
  CheckPart uploads, files;
  if (ctx.store != nullptr) {
    CheckFiles(ctx, &uploads, &files);
  } else {
    uploads = NotChecked("uploads", "needs the metadata");
    files = NotChecked("files", "needs the metadata");
  }
  report.parts.push_back(std::move(uploads));
  report.parts.push_back(std::move(files));
  return report;
}

std::string CheckReportJson(const CheckReport& report) { return ReportJson(report).dump(); }

std::string RepairReportJson(const RepairReport& report) {
  nlohmann::json j = {
      {"database", report.before.dir.string()},
      {"ok", !report.after.damaged()},
      {"before", ReportJson(report.before)},
      {"repair", {{"actions", IssuesJson(report.actions)}, {"lost", IssuesJson(report.lost)}}},
      {"after", ReportJson(report.after)}};
  return j.dump();
}

std::string CheckReportText(const CheckReport& report) {
  std::string out = "pixseek check " + report.dir.string() + "\n" + PartsText(report);
  if (report.damaged()) {
    out += "damage found: `pixseek check --db " + report.dir.string() +
           " --repair` salvages what is intact\n";
  } else {
    out += "no damage found\n";
  }
  return out;
}

std::string RepairReportText(const RepairReport& report) {
  std::string out = "pixseek check --repair " + report.before.dir.string() + "\nbefore:\n" +
                    PartsText(report.before);
  out += "repair:\n";
  if (report.actions.empty() && report.lost.empty()) out += "  nothing to repair\n";
  for (const CheckIssue& a : report.actions) {
    out += "  done  " + a.part + ": " + a.message;
    if (!a.ids.empty()) out += " [ids " + IdList(a.ids) + "]";
    out += "\n";
  }
  for (const CheckIssue& l : report.lost) {
    out += "  LOST  " + l.part + ": " + l.message;
    if (!l.ids.empty()) out += " [ids " + IdList(l.ids) + "]";
    out += "\n";
  }
  out += "after:\n" + PartsText(report.after);
  out += report.after.damaged() ? "damage remains (see LOST above)\n" : "the database is whole\n";
  return out;
}

// --- CheckContext (check_context.h) ---

Result<CheckContext> OpenCheckContext(const CheckOptions& options) {
  if (options.dir.empty()) {
    return Status::InvalidArgument(
        "no database directory given (--db, $PIXSEEK_DB or [database] dir in the config file)");
  }
  CheckContext ctx;
  ctx.options = options;
  ctx.dir = fs::absolute(options.dir).lexically_normal();
  std::error_code ec;
  const fs::path manifest = ctx.dir / kManifestFileName;
  const bool sqlite = options.metadata_url.empty();
  if (!fs::is_directory(ctx.dir, ec) ||
      (!fs::exists(manifest, ec) && (!sqlite || !fs::exists(ctx.dir / "metadata.db", ec)))) {
    return Status::NotFound("no pixseek database at " + ctx.dir.string());
  }
  ctx.manifest = ReadManifest(manifest);
  if (sqlite && ctx.manifest.ok() && ctx.manifest->metadata_store != "sqlite") {
    ctx.store_status =
        Status::FailedPrecondition("the metadata lives in " + ctx.manifest->metadata_store +
                                   "; give its URL with --metadata-url (or $PIXSEEK_METADATA_URL)");
    return ctx;
  }
  if (sqlite && !fs::exists(ctx.dir / "metadata.db", ec)) {
    ctx.store_status = Status::DataLoss((ctx.dir / "metadata.db").string() + " is missing");
    return ctx;
  }
  auto store = OpenMetadataStore(CheckedStoreUrl(ctx));
  if (!store.ok()) {
    ctx.store_status = store.status();
    return ctx;
  }
  ListOptions page;
  page.limit = kPage;
  for (;;) {
    auto records = (*store)->List(page);
    if (!records.ok()) {
      ctx.store_status = records.status();
      return ctx;
    }
    if (records->empty()) break;
    page.after_id = records->back().id;
    for (ImageRecord& r : *records) ctx.records.push_back(std::move(r));
  }
  ctx.store = std::move(*store);
  return ctx;
}

std::string CheckedStoreUrl(const CheckContext& ctx) {
  if (!ctx.options.metadata_url.empty()) return ctx.options.metadata_url;
  return "sqlite://" + (ctx.dir / "metadata.db").string();
}

Result<VectorIndexSpec> IndexSpecOf(const DatabaseManifest& manifest, const fs::path& dir,
                                    const std::string& vector_url) {
  PIXSEEK_RETURN_IF_ERROR(CheckVectorStore(manifest, vector_url, dir.string()));
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* kind, FindVectorIndexKind(manifest.index_kind));
  VectorIndexSpec spec;
  spec.kind = kind->name;
  if (IsServerIndexKind(kind->name)) spec.url = vector_url;
  spec.dir = dir / manifest.index_dir;
  spec.dimension = manifest.dimension;
  spec.read_only = true;
  PIXSEEK_ASSIGN_OR_RETURN(
      spec.params, MergeParams(kind->name, kind->params, manifest.index_params, IndexParams{},
                               /*existing=*/true));
  return spec;
}

fs::path ThumbnailFile(const fs::path& dir, int64_t id) {
  char shard[8];
  std::snprintf(shard, sizeof shard, "%02d", static_cast<int>(id % 100));
  return dir / "thumbs" / shard / (std::to_string(id) + ".jpg");
}

fs::path StoredFile(const fs::path& dir, const ImageRecord& record) {
  const fs::path path(record.path);
  return (path.is_relative() ? dir / path : path).lexically_normal();
}

bool IsUpload(const fs::path& dir, const fs::path& file) {
  const fs::path rel = file.lexically_relative(dir / "images");
  return !rel.empty() && !rel.string().starts_with("..");
}

std::string RelativeName(const fs::path& dir, const fs::path& file) {
  const fs::path rel = file.lexically_relative(dir);
  return rel.empty() || rel.string().starts_with("..") ? file.string() : rel.string();
}

std::string FeatureFault(std::span<const float> v, size_t dim) {
  if (v.size() != dim) return "of another length";
  double norm2 = 0;
  for (float x : v) {
    if (!std::isfinite(x)) return "not finite";
    norm2 += double{x} * x;
  }
  if (std::abs(norm2 - 1.0) > kUnitTolerance) return "not of unit length";
  return "";
}

std::string ThumbnailFault(const fs::path& file, const DecodeLimits& limits) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec) return "missing";
  if (size == 0) return "empty";
  auto bytes = ReadFileLimited(file, limits.max_bytes);
  if (!bytes.ok()) return "unreadable";
  DecodeOptions options;
  options.limits = limits;
  options.min_short_side = kThumbnailProbeSide;
  auto decoded = DecodeImage(*bytes, options);
  if (!decoded.ok() || decoded->image.empty()) return "not decodable";
  return "";
}

}  // namespace pixseek
