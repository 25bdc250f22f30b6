// Database::Reindex: switching a database to another model without
// downtime. The new index is built in a folder of its own (gen-N) while the
// current one keeps answering; the writes made meanwhile are caught up under
// the write lock, and the manifest, replaced atomically, is the commit point.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "core/files.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "pixseek/database.h"
#include "service/database_generation.h"
#include "service/dba.h"
#include "service/fit.h"
#include "service/indexing.h"
#include "service/model_resolution.h"

namespace pixseek {
namespace {

// Images handed to the index (and to the network) at a time.
constexpr size_t kChunk = 256;

bool Cancelled(const ReindexOptions& options) {
  return options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed);
}

// The folder of the generation after `index_dir` ("" -> gen-1, gen-N -> gen-N+1).
std::string NextIndexDir(const std::string& index_dir) {
  int n = 0;
  if (index_dir.starts_with("gen-")) n = std::atoi(index_dir.c_str() + 4);
  return "gen-" + std::to_string(n + 1);
}

std::vector<int64_t> Difference(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int64_t> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

}  // namespace

// What one reindex carries from step to step.
struct Database::Rebuild {
  explicit Rebuild(const ReindexOptions& o) : options(o) {}
  const ReindexOptions& options;
  std::unique_ptr<Generation> next;
  // The new network differs from the current one: every image is embedded
  // again and its new base feature is stored at the switch.
  bool new_network = false;
  std::vector<int64_t> embedded_ids;
  std::vector<float> embedded_features;
  ReindexReport report;
  std::optional<ProgressBar> bar;
  uint64_t done = 0;

  void Advance(uint64_t n, uint64_t total) {
    done += n;
    if (bar) bar->Update(done, report.failed);
    if (options.on_progress) options.on_progress(done, total);
  }
};

// Projects stored base features into the new index. Images without one (a
// database from before base features were kept) are embedded again.
Status Database::FillFromBaseFeatures(Rebuild& r) {
  Generation& next = *r.next;
  const int base_dimension = next.embedding->dimension();
  const auto out_dimension = static_cast<size_t>(next.projection.output_dimension());
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> all, store_->AllIds());
  std::vector<int64_t> with_feature;
  std::vector<float> projected;
  PIXSEEK_RETURN_IF_ERROR(store_->ScanFeatures(
      base_dimension, [&](std::span<const int64_t> ids, std::span<const float> rows) -> Status {
        if (Cancelled(r.options)) return Status::Cancelled("reindex cancelled");
        projected.resize(ids.size() * out_dimension);
        next.projection.Apply(rows.data(), ids.size(), projected.data());
        PIXSEEK_RETURN_IF_ERROR(next.index->Add(ids.size(), ids.data(), projected.data()));
        with_feature.insert(with_feature.end(), ids.begin(), ids.end());
        r.Advance(ids.size(), all.size());
        return Status::Ok();
      }));
  const std::vector<int64_t> missing = Difference(all, with_feature);
  if (missing.empty()) return Status::Ok();
  std::fprintf(stderr, "pixseek: %zu images have no stored base feature; embedding them again\n",
               missing.size());
  r.new_network = true;  // their features are stored at the switch
  return EmbedInto(r, missing);
}

// Reads, decodes and embeds `ids` with the new network, adds them to the new
// index and keeps their base features for the switch. Images that cannot be
// read any more are counted and left out.
Status Database::EmbedInto(Rebuild& r, std::span<const int64_t> ids) {
  Generation& next = *r.next;
  const auto base_dimension = static_cast<size_t>(next.embedding->dimension());
  const auto out_dimension = static_cast<size_t>(next.projection.output_dimension());
  const DecodeOptions decode = DecodeOptionsFor(next.embedding->card(), options_.limits);
  const int threads = ThreadCount(options_.threads);
  for (size_t begin = 0; begin < ids.size(); begin += kChunk) {
    if (Cancelled(r.options)) return Status::Cancelled("reindex cancelled");
    const size_t n = std::min(kChunk, ids.size() - begin);
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> records,
                             store_->GetMany(ids.subspan(begin, n)));
    std::vector<std::optional<Image>> decoded(records.size());
    ParallelFor(records.size(), threads,
                [&](size_t i) { decoded[i] = DecodeFile(FilePath(records[i]), decode); });
    std::vector<const Image*> images;
    std::vector<int64_t> kept;
    for (size_t i = 0; i < records.size(); ++i) {
      if (decoded[i]) {
        images.push_back(&*decoded[i]);
        kept.push_back(records[i].id);
      } else {
        std::fprintf(stderr, "pixseek: cannot read %s again; it leaves the index\n",
                     records[i].path.c_str());
        ++r.report.failed;
      }
    }
    std::vector<float> base(images.size() * base_dimension);
    PIXSEEK_RETURN_IF_ERROR(EmbedFiltered(*next.embedding, preprocessing_, images, base.data()));
    std::vector<float> vectors(images.size() * out_dimension);
    next.projection.Apply(base.data(), images.size(), vectors.data());
    PIXSEEK_RETURN_IF_ERROR(next.index->Add(kept.size(), kept.data(), vectors.data()));
    r.embedded_ids.insert(r.embedded_ids.end(), kept.begin(), kept.end());
    r.embedded_features.insert(r.embedded_features.end(), base.begin(), base.end());
    r.Advance(n, ids.size());
  }
  return Status::Ok();
}

// With the write lock held: adds the images stored since the new index was
// filled, drops those removed, and stores the new network's base features.
Status Database::CatchUp(Rebuild& r) {
  Generation& next = *r.next;
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> stored, store_->AllIds());
  std::vector<int64_t> indexed = next.index->Ids();
  std::sort(indexed.begin(), indexed.end());
  const std::vector<int64_t> removed = Difference(indexed, stored);
  if (!removed.empty()) PIXSEEK_RETURN_IF_ERROR(next.index->Remove(removed));
  const std::vector<int64_t> added = Difference(stored, indexed);
  if (r.new_network) {
    // Failed reads are not retried here; anything else new is embedded.
    std::vector<int64_t> todo;
    std::set_difference(added.begin(), added.end(), r.embedded_ids.begin(),
                        r.embedded_ids.end(), std::back_inserter(todo));
    PIXSEEK_RETURN_IF_ERROR(EmbedInto(r, todo));
    PIXSEEK_RETURN_IF_ERROR(store_->PutFeatures(
        r.embedded_ids, next.embedding->dimension(), r.embedded_features));
  } else {
    const auto out_dimension = static_cast<size_t>(next.projection.output_dimension());
    std::vector<float> vector(out_dimension);
    for (int64_t id : added) {
      PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> base, store_->GetFeature(id));
      next.projection.Apply(base.data(), 1, vector.data());
      PIXSEEK_RETURN_IF_ERROR(next.index->Add(1, &id, vector.data()));
    }
  }
  // Images stored meanwhile join the augmented index as an insert does.
  std::vector<int64_t> now_indexed = next.index->Ids();
  std::sort(now_indexed.begin(), now_indexed.end());
  return AugmentAdded(*next.index, *store_, next.projection, Difference(now_indexed, indexed),
                      next.manifest.dba);
}

Result<ReindexReport> Database::Reindex(const ReindexOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options_.read_only) return Status::FailedPrecondition("database is open read-only");
  std::unique_lock<std::mutex> one_at_a_time(reindex_mu_, std::try_to_lock);
  if (!one_at_a_time.owns_lock()) {
    return Status::FailedPrecondition("a reindex of " + options_.dir.string() +
                                      " is already running");
  }
  // The new generation would be built into the same server collection as
  // the current one (the spec's URL), mixing both models' vectors.
  if (!current().manifest.vector_store.empty()) {
    return Status::FailedPrecondition(
        "database " + options_.dir.string() + " keeps its vectors in " +
        current().manifest.vector_store +
        "; a reindex of a database on a vector server is not supported yet (build a new "
        "database on another collection with the new model)");
  }
  if (options.dba && (options.dba->n < 0 || options.dba->n > kMaxDbaN ||
                      !(options.dba->alpha >= 0 && options.dba->alpha <= kMaxDbaAlpha))) {
    return Status::InvalidArgument("DBA needs n in [0, " + std::to_string(kMaxDbaN) +
                                   "] and alpha in [0, " + std::to_string(kMaxDbaAlpha) + "]");
  }
  Rebuild r(options);
  r.report.from_model = current().model_name;
  r.report.to_model = options.model;
  PIXSEEK_ASSIGN_OR_RETURN(r.next, OpenNextGeneration(options.model));
  if (options.dba) r.next->manifest.dba = *options.dba;  // else the current one's, kept
  r.report.dba = r.next->manifest.dba;
  PIXSEEK_RETURN_IF_ERROR(Fill(r));

  std::lock_guard<std::mutex> lock(write_mu_);
  if (Cancelled(options)) return Status::Cancelled("reindex cancelled");
  PIXSEEK_RETURN_IF_ERROR(CatchUp(r));
  PIXSEEK_RETURN_IF_ERROR(Commit(r));
  r.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r.report;
}

// Fills the next generation's index without the write lock: from the stored
// base features when its model runs the current network, else by embedding
// every image again; then DBA and compaction.
Status Database::Fill(Rebuild& r) {
  const Generation& now = current();
  Generation& next = *r.next;
  const bool same_network = !now.model.card.sha256.empty() &&
                            next.model.card.sha256 == now.model.card.sha256 &&
                            next.embedding->dimension() == now.embedding->dimension();
  r.report.from_base_features = same_network;
  PIXSEEK_ASSIGN_OR_RETURN(uint64_t total, store_->CountFeatures());
  r.bar.emplace("reindex", same_network ? total : now.index->size(), r.options.progress_out,
                r.options.show_progress);
  if (same_network) {
    PIXSEEK_RETURN_IF_ERROR(FillFromBaseFeatures(r));
  } else {
    r.new_network = true;
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> ids, store_->AllIds());
    PIXSEEK_RETURN_IF_ERROR(EmbedInto(r, ids));
  }
  // DBA (src/service/dba.h) replaces the vectors just added by their
  // augmented ones, before the index takes its long-term form.
  PIXSEEK_RETURN_IF_ERROR(AugmentIndex(next.index, next.spec, next.manifest.dba));
  // The long-term form of the index is made before the switch, so that the
  // first searches on it are as fast as later ones.
  PIXSEEK_RETURN_IF_ERROR(next.index->Compact());
  r.bar->Finish(r.done, r.report.failed);
  r.bar.reset();  // the catch-up is short and says nothing
  return Status::Ok();
}

// With the write lock held: the manifest is replaced (the commit point: a
// kill before it leaves the old database, after it the new one; the old
// folder is removed by the next writer to open it), then the store's
// settings, and the database switches to the new generation.
Status Database::Commit(Rebuild& r) {
  Generation& next = *r.next;
  next.manifest.reindexed_at = static_cast<int64_t>(std::time(nullptr));
  PIXSEEK_RETURN_IF_ERROR(WriteManifest(options_.dir / kManifestFileName, next.manifest));
  for (const auto& [key, value] :
       {std::pair<std::string, std::string>{"model", next.manifest.model},
        {"dimension", std::to_string(next.manifest.dimension)}}) {
    if (Status s = store_->SetSetting(key, value); !s.ok()) {
      std::fprintf(stderr, "pixseek: warning: the store did not record the new %s: %s\n",
                   key.c_str(), s.ToString().c_str());
    }
  }
  r.report.images = next.index->size();
  Adopt(std::move(r.next));
  cache_->Clear();
  return Status::Ok();
}

// The model `name` opened as the next generation of this database: its
// network and head, its manifest, and an empty index in a new folder.
Result<std::unique_ptr<Database::Generation>> Database::OpenNextGeneration(
    const std::string& name) {
  const Generation& now = current();
  auto next = std::make_unique<Generation>();
  ModelRequest request;
  request.name = name;
  request.home = options_.home;
  request.db_dir = options_.dir;
  PIXSEEK_ASSIGN_OR_RETURN(ResolvedModel resolved, ResolveModel(request));
  next->model = std::move(resolved.model);
  next->model_name = resolved.name;
  ModelCard& card = next->model.card;
  if (LearnsPerCollection(card)) {
    return Status::Unsupported("model '" + name +
                               "' learns from its collection (sift-vlad); build a new database "
                               "with it instead");
  }
  // The same ONNX network must run on the same engine for its base
  // features to stay comparable.
  if (card.runtime == Runtime::kOnnx && card.sha256 == now.model.card.sha256) {
    card.onnx.engine = now.model.card.onnx.engine;
  }
  PIXSEEK_ASSIGN_OR_RETURN(FittedEmbedder fitted, OpenFittedEmbedder(next->model, options_.dir, 0));
  next->projection = std::move(fitted.projection);
  next->embedding =
      std::make_unique<EmbeddingEngine>(std::move(fitted.embedder), options_.batching);

  DatabaseManifest& m = next->manifest;
  m = now.manifest;
  m.model = next->model_name;
  m.model_sha256 = card.sha256;
  m.head_sha256 = card.trained.head_sha256;
  m.dimension = next->projection.output_dimension();
  m.pca_dimension = 0;
  m.pca_whiten = false;
  m.engine = card.runtime == Runtime::kOnnx ? std::string(ToString(card.onnx.engine)) : "";
  m.index_dir = NextIndexDir(now.manifest.index_dir);

  next->spec = now.spec;
  next->spec.dir = options_.dir / m.index_dir;
  next->spec.dimension = m.dimension;
  std::error_code ec;
  std::filesystem::remove_all(next->spec.dir, ec);  // left by a killed reindex
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(next->spec.dir));
  PIXSEEK_ASSIGN_OR_RETURN(next->index, OpenVectorIndex(next->spec));
  return next;
}

}  // namespace pixseek
