// RepairDatabase: salvages what is intact in a damaged database and says
// exactly what was lost (pixseek/database_check.h). The index is opened for
// writing with salvage, which takes its writer's lock and holds it until the
// repair ends; the Database object is not used, so nothing runs its
// Reconcile, which would delete the records whose vectors were lost before
// they are restored.
#include <algorithm>
#include <cmath>
#include <iterator>

#include "core/files.h"
#include "pixseek/database_check.h"
#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/model_registry.h"
#include "service/check_context.h"
#include "service/dba.h"
#include "service/fit.h"
#include "service/model_resolution.h"
#include "service/projection.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;

// Vectors added to the index per call (one log record each).
constexpr size_t kAddBatch = 256;
// The index refuses vectors further than this from unit length.
constexpr double kUnitTolerance = 1e-3;
// A thumbnail's longer side (as the build and uploads make them).
constexpr int kThumbnailSide = 256;

CheckIssue Entry(std::string part, std::string message, std::vector<int64_t> ids = {}) {
  CheckIssue issue;
  issue.part = std::move(part);
  issue.message = std::move(message);
  issue.ids = std::move(ids);
  return issue;
}

std::string Count(size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// What turns a stored base feature into the index's vector, as
// Database::Open sets it up: the PCA in the database directory, a trained
// model's head, or nothing (then no model is needed).
Result<FeatureProjection> LoadProjection(const CheckContext& ctx) {
  const DatabaseManifest& m = *ctx.manifest;
  if (m.pca_dimension > 0) {
    PIXSEEK_ASSIGN_OR_RETURN(PcaTransform pca, PcaTransform::Load(ctx.dir / kPcaFileName));
    return FeatureProjection(std::move(pca));
  }
  if (m.head_sha256.empty()) return FeatureProjection(m.dimension);
  ModelRequest request;
  request.name = m.model;
  request.home = ctx.options.home.empty() ? DefaultPixseekHome() : ctx.options.home;
  request.db_dir = ctx.dir;
  PIXSEEK_ASSIGN_OR_RETURN(ResolvedModel resolved, ResolveModel(request));
  if (resolved.model.card.trained.head_sha256 != m.head_sha256) {
    return Status::FailedPrecondition("the installed model '" + m.model +
                                      "' does not have the head this database was indexed with");
  }
  if (resolved.model.card.runtime == Runtime::kOnnx) {
    PIXSEEK_ASSIGN_OR_RETURN(resolved.model.card.onnx.engine,
                             ParseCardEnum<Engine>(m.engine.empty() ? "opencv" : m.engine));
  }
  auto fitted = OpenFittedEmbedder(resolved.model, ctx.dir, 0);
  if (!fitted.ok()) return fitted.status();
  return fitted->projection;
}

// Opens the index for writing, salvaging damaged files; lists what the
// salvage did. Null (and a loss) when even a salvaging open fails;
// Unavailable when another process is writing the database.
Result<std::unique_ptr<VectorIndex>> OpenForRepair(const CheckContext& ctx, RepairReport* r) {
  std::vector<IndexFileCheck> salvaged;
  auto open = [&]() -> Result<std::unique_ptr<VectorIndex>> {
    PIXSEEK_ASSIGN_OR_RETURN(VectorIndexSpec spec,
                             IndexSpecOf(*ctx.manifest, ctx.dir, ctx.options.vector_url));
    spec.read_only = false;
    spec.salvaged = &salvaged;
    return OpenVectorIndex(spec);
  };
  Result<std::unique_ptr<VectorIndex>> index = open();
  if (!index.ok() && index.status().code() == StatusCode::kUnavailable) {
    return Status::Unavailable("database " + ctx.dir.string() +
                               " is open for writing by another process (a running `pixseek "
                               "serve`?); stop it, then run `pixseek check --db " +
                               ctx.dir.string() + " --repair` again (" + index.status().message() +
                               ")");
  }
  for (const IndexFileCheck& f : salvaged) {
    std::string message = f.damage + "; " + f.summary;
    if (!f.damaged_copy.empty()) {
      message += "; the damaged file is kept as " + RelativeName(ctx.dir, f.damaged_copy);
    }
    r->actions.push_back(Entry("index", message, f.lost_ids));
  }
  if (!index.ok()) {
    r->lost.push_back(Entry("index", "the index cannot be opened even by a salvaging open (" +
                                         index.status().message() + "); no vector was restored"));
    return std::unique_ptr<VectorIndex>();
  }
  return std::move(*index);
}

// The index's vector for one stored base feature, or nullopt when the
// feature cannot give one.
Result<std::optional<std::vector<float>>> VectorFor(const CheckContext& ctx,
                                                    const FeatureProjection& projection,
                                                    const VectorIndex& index, int64_t id) {
  using Vector = std::optional<std::vector<float>>;
  auto feature = ctx.store->GetFeature(id);
  const size_t in = static_cast<size_t>(projection.input_dimension());
  if (!feature.ok() || !FeatureFault(*feature, in).empty()) return Vector();
  std::vector<float> v(static_cast<size_t>(projection.output_dimension()));
  projection.Apply(feature->data(), 1, v.data());
  double norm2 = 0;
  for (float x : v) norm2 += double{x} * x;
  if (!std::isfinite(norm2) || std::abs(norm2 - 1.0) > kUnitTolerance) return Vector();
  // A DBA index holds augmented vectors; a restored one joins them as an
  // inserted one does.
  const DbaOptions& dba = ctx.manifest->dba;
  if (dba.enabled()) {
    PIXSEEK_ASSIGN_OR_RETURN(v, AugmentJoining(index, *ctx.store, projection, v, -1, dba));
  }
  return Vector(std::move(v));
}

// Makes the index agree with the store: vectors without a record are
// removed, and records without a vector get it back from their stored base
// feature (those without one are listed as lost).
Status RestoreVectors(const CheckContext& ctx, VectorIndex& index, RepairReport* r) {
  std::vector<int64_t> stored;
  for (const ImageRecord& rec : ctx.records) stored.push_back(rec.id);
  const std::vector<int64_t> indexed = index.Ids();
  std::vector<int64_t> no_record, no_vector;
  std::set_difference(indexed.begin(), indexed.end(), stored.begin(), stored.end(),
                      std::back_inserter(no_record));
  std::set_difference(stored.begin(), stored.end(), indexed.begin(), indexed.end(),
                      std::back_inserter(no_vector));
  if (!no_record.empty()) {
    PIXSEEK_RETURN_IF_ERROR(index.Remove(no_record));
    r->actions.push_back(
        Entry("consistency",
              "removed " + Count(no_record.size(), "vector", "vectors") + " that had no record",
              no_record));
  }
  if (no_vector.empty()) return Status::Ok();
  auto projection = LoadProjection(ctx);
  if (!projection.ok()) {
    r->lost.push_back(Entry("consistency",
                            Count(no_vector.size(), "record has", "records have") +
                                " no vector, and the stored base features cannot be projected (" +
                                projection.status().message() +
                                "); install the database's model and repair again",
                            no_vector));
    return Status::Ok();
  }
  std::vector<int64_t> restored, unrestorable, batch_ids;
  std::vector<float> batch;
  auto flush = [&]() -> Status {
    if (batch_ids.empty()) return Status::Ok();
    PIXSEEK_RETURN_IF_ERROR(index.Add(batch_ids.size(), batch_ids.data(), batch.data()));
    restored.insert(restored.end(), batch_ids.begin(), batch_ids.end());
    batch_ids.clear();
    batch.clear();
    return Status::Ok();
  };
  for (int64_t id : no_vector) {
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<std::vector<float>> v,
                             VectorFor(ctx, *projection, index, id));
    if (!v) {
      unrestorable.push_back(id);
      continue;
    }
    batch_ids.push_back(id);
    batch.insert(batch.end(), v->begin(), v->end());
    if (batch_ids.size() == kAddBatch) PIXSEEK_RETURN_IF_ERROR(flush());
  }
  PIXSEEK_RETURN_IF_ERROR(flush());
  if (!restored.empty()) {
    r->actions.push_back(Entry("consistency",
                               "restored " + Count(restored.size(), "vector", "vectors") +
                                   " missing from the index (lost with damage to it, or never "
                                   "written) from the stored base features",
                               restored));
  }
  if (!unrestorable.empty()) {
    r->lost.push_back(
        Entry("consistency",
              Count(unrestorable.size(), "image's vector is", "images' vectors are") +
                  " lost (no usable stored base feature): searches cannot find them, and the next "
                  "writable open removes their records; add their files again with `pixseek add`",
              unrestorable));
  }
  return Status::Ok();
}

Status MakeThumbnail(const fs::path& image_file, const fs::path& thumb,
                     const DecodeLimits& limits) {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           ReadFileLimited(image_file, limits.max_bytes));
  DecodeOptions options;
  options.limits = limits;
  options.min_short_side = kThumbnailSide;
  PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, options));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> jpeg,
                           EncodeThumbnail(decoded.image, kThumbnailSide));
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(thumb.parent_path()));
  return WriteFileAtomic(thumb, jpeg);
}

// Thumbnails missing or unreadable are made again from their image files.
void RemakeThumbnails(const CheckContext& ctx, RepairReport* r) {
  std::vector<int64_t> made, cannot;
  for (const ImageRecord& rec : ctx.records) {
    const fs::path thumb = ThumbnailFile(ctx.dir, rec.id);
    if (ThumbnailFault(thumb, ctx.options.limits).empty()) continue;
    if (MakeThumbnail(StoredFile(ctx.dir, rec), thumb, ctx.options.limits).ok()) {
      made.push_back(rec.id);
    } else {
      cannot.push_back(rec.id);
    }
  }
  if (!made.empty()) {
    r->actions.push_back(Entry(
        "thumbnails",
        "made " + Count(made.size(), "thumbnail", "thumbnails") + " again from the image files",
        made));
  }
  if (!cannot.empty()) {
    r->lost.push_back(Entry("thumbnails",
                            Count(cannot.size(), "thumbnail", "thumbnails") +
                                " cannot be made again: the image files are gone or unreadable",
                            cannot));
  }
}

// Damage a repair leaves as it is, from the check before it: it cannot be
// rebuilt from anything pixseek keeps, and nothing is deleted.
void ListUnrepaired(const CheckReport& before, RepairReport* r) {
  for (const CheckPart& part : before.parts) {
    if (part.name != "manifest" && part.name != "metadata" && part.name != "features" &&
        part.name != "uploads") {
      continue;
    }
    if (!part.checked) r->lost.push_back(Entry(part.name, part.summary));
    for (const CheckIssue& issue : part.damage) {
      std::string what = issue.message;
      if (part.name == "metadata") {
        what +=
            "; pixseek cannot rebuild the metadata store (restore it from a backup, or "
            "recover a SQLite file with sqlite3's .recover)";
      }
      r->lost.push_back(Entry(part.name, what + " (not repaired)", issue.ids));
    }
  }
}

}  // namespace

Result<RepairReport> RepairDatabase(const CheckOptions& options) {
  RepairReport r;
  PIXSEEK_ASSIGN_OR_RETURN(r.before, CheckDatabase(options));
  PIXSEEK_ASSIGN_OR_RETURN(CheckContext ctx, OpenCheckContext(options));
  if (!ctx.manifest.ok()) {
    r.lost.push_back(Entry("manifest", ctx.manifest.status().message() +
                                           "; nothing can be repaired without the manifest "
                                           "(restore pixseek.json from a backup)"));
    r.after = r.before;
    return r;
  }
  {
    // Held until the repair is done: no other writer can start meanwhile.
    PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex> index, OpenForRepair(ctx, &r));
    if (index != nullptr && ctx.store != nullptr) {
      PIXSEEK_RETURN_IF_ERROR(RestoreVectors(ctx, *index, &r));
      if (Status s = index->CompactIfNeeded(); !s.ok()) {
        r.lost.push_back(Entry("index", "compaction failed (" + s.message() +
                                            "); the restored vectors stay in the log and are "
                                            "merged by a later compaction"));
      }
    } else if (index != nullptr) {
      r.lost.push_back(Entry("consistency", "the metadata store cannot be opened (" +
                                                ctx.store_status.message() +
                                                "): no vector was restored"));
    }
    if (ctx.store != nullptr) RemakeThumbnails(ctx, &r);
    ListUnrepaired(r.before, &r);
  }
  ctx.store.reset();
  PIXSEEK_ASSIGN_OR_RETURN(r.after, CheckDatabase(options));
  return r;
}

}  // namespace pixseek
