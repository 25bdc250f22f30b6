// A pixseek database: one directory that holds the vector index, the metadata
// store, thumbnails and uploaded files, tied to one embedding model.
//
// Layout of DB/ (docs/architecture.md, "The database directory", has every
// file and manifest key):
//   pixseek.json     manifest: format version, model and its sha256,
//                    dimension, index kind and parameters, metadata store,
//                    creation time and id, PCA, ONNX engine (written once at
//                    creation; src/service/manifest.h)
//   metadata.db      SQLite metadata (ImageRecord rows; -wal/-shm beside it),
//                    unless the metadata lives in MariaDB
//                    (DatabaseOptions::metadata_url)
//   index/           the disk graph index (kind "disk", the default;
//                    docs/index_format.md), or
//   vectors.flat     the exact index's log (kind "flat");
//   gen-N/           after `pixseek reindex`: the index built for the new
//                    model (gen-N/index/ or gen-N/vectors.flat), named by
//                    the manifest's index_dir
//   sift-vlad-codebook.bin  the SIFT-VLAD codebook (model "sift-vlad" only)
//   pca.bin          PCA(-whitening) learned at creation (when asked for)
//   thumbs/NN/ID.jpg thumbnails, NN = ID % 100
//   images/HH/SHA.ext files uploaded over HTTP (HH = first two hex digits)
//   build_jobs.json  builds started over HTTP, resumed after a restart
#ifndef PIXSEEK_DATABASE_H_
#define PIXSEEK_DATABASE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pixseek/cache.h"
#include "pixseek/embedder.h"
#include "pixseek/feature_fit.h"
#include "pixseek/image.h"
#include "pixseek/index_params.h"
#include "pixseek/metadata_store.h"
#include "pixseek/status.h"
#include "pixseek/trained_head.h"
#include "pixseek/vector_index.h"

namespace pixseek {

class EmbeddingEngine;

struct DatabaseOptions {
  std::filesystem::path dir;
  // Model name for a new database; empty = DefaultModelName(). For an existing
  // database, a non-empty name must equal the recorded one
  // (FailedPrecondition otherwise).
  std::string model;
  // Where models are installed; empty = DefaultPixseekHome().
  std::filesystem::path home;
  // Download the model when it is not installed (build only). For a new
  // database with no `model` given, the default model neither installed nor
  // downloadable falls back to "sift-vlad" with a warning on stderr.
  bool pull_missing_model = false;
  // For a new database: PCA (pca.dimension > 0), or PCA-whitening, learned
  // from a sample of fit_root's images and applied to every vector after the
  // model. An existing database keeps what it was created with
  // (FailedPrecondition when another PCA is asked for).
  PcaOptions pca;
  // Preprocessing of a new database (include/pixseek/image.h): greyscale,
  // denoising and the size cap of uploaded copies, recorded in its manifest
  // and applied to every image embedded (build, upload, query, eval,
  // reindex). nullopt = the database's (none for a new one); set for an
  // existing database, grey and denoise must equal the recorded ones, and a
  // stored_max_side > 0 the recorded cap (FailedPrecondition otherwise).
  std::optional<ImagePreprocessing> preprocessing;
  // The folder a new database is built from: models learned per collection
  // (sift-vlad) and PCA learn from up to fit_sample of its images, spread
  // evenly. Without it such a database cannot be created.
  std::filesystem::path fit_root;
  size_t fit_sample = 2000;
  DecodeLimits limits;
  // Where image metadata lives: "sqlite://PATH" or
  // "mysql://USER:PASS@HOST:PORT/DB" (MariaDB or MySQL, one database per
  // pixseek database). Empty = sqlite://DIR/metadata.db. The manifest records
  // the store (without its password) so that a database built on MariaDB is
  // never opened on an empty SQLite file by mistake (FailedPrecondition).
  std::string metadata_url;
  // Where the vectors live when they are not in the database directory: a
  // server that several pixseek nodes can share. Empty = the embedded index
  // (index_kind). "milvus://[USER:PASSWORD@]HOST[:PORT]/COLLECTION[?token=T]"
  // = Milvus (index kind "milvus"): a new database given it is made there
  // (index_kind must then be empty or "milvus"; InvalidArgument otherwise).
  // The manifest records the URL without its password or token; an existing
  // database opens only with the URL of the same host and collection when
  // its vectors are in Milvus, and only without one when they are in its
  // own index (FailedPrecondition saying what to set). InvalidArgument for
  // another scheme. Vectors move from an embedded index to a server with
  // `pixseek migrate` (MigrateDatabase, include/pixseek/migrate.h).
  std::string vector_url;
  // The query cache: empty or "memory://" = in-process LRU of cache_bytes;
  // "redis://[:PASS@]HOST:PORT/N[?ttl=S&prefix=P]" = Redis (OpenCache).
  std::string cache_url;
  size_t cache_bytes = 64u << 20;
  int threads = 0;  // 0 = all cores
  // Dynamic batching of the single images that searches and uploads embed
  // (EmbedOne). Embedders that cannot split preprocessing from the network
  // (sift-vlad) embed one at a time whatever this says.
  EmbedBatchingOptions batching;
  // Open for reading only (query, eval, stats): works while another process
  // (a running server) writes the database, and sees its state as of the
  // open. Insert/Remove fail with FailedPrecondition.
  bool read_only = false;
  // Vector index of a new database: a VectorIndexKinds() name ("disk", the
  // disk graph index, or "flat", exact search with every vector in RAM).
  // Empty = the first kind ("disk"). An existing database keeps its kind.
  std::string index_kind;
  // The index parameters set for this run (include/pixseek/index_params.h):
  // over the defaults and what the manifest recorded at creation. A
  // creation-time parameter that differs from the recorded one is
  // FailedPrecondition; one the index kind lacks is InvalidArgument.
  IndexParams index_params;
  // Compact the index on a background thread after writes (a server);
  // otherwise the owner calls Compact/CompactIfNeeded.
  bool background_compaction = false;
  // Hears of a compaction's progress (phase, done, total), e.g. the one at
  // the end of `pixseek build`; may be empty. VectorIndexSpec says more.
  std::function<void(const char* phase, size_t done, size_t total)> compaction_progress;
};

struct DatabaseStats {
  int64_t count = 0;  // searchable images (vectors in the index)
  int dimension = 0;
  std::string model;
  std::string index_kind;
  // The server holding the vectors, without its password or token
  // ("milvus://HOST:PORT/COLLECTION"); empty for an embedded index.
  std::string vector_store;
  // The index's own figures (VectorIndex::Stats).
  std::vector<IndexStat> index;
  int base_dimension = 0;      // the network's output (what training reads)
  int64_t base_features = 0;   // images whose base feature is stored
  bool trained_head = false;   // the model has a head from `pixseek train`
  // The filters and the size cap of uploaded copies, recorded in the
  // manifest when the database was built (all off when none was asked).
  ImagePreprocessing preprocessing;
};

// Database-side augmentation (DBA, src/service/dba.h): every stored vector
// is replaced by the L2-normalised mean of its n nearest stored vectors
// (itself included), each weighted by its similarity^alpha. It is part of
// what the index holds, so it is set by a reindex and recorded in the
// manifest ("dba": {"n", "alpha"}); images added later are augmented from
// their neighbours as they are inserted.
struct DbaOptions {
  int n = 0;            // neighbours averaged, itself included: 0 = off, else 2..kMaxDbaN
  float alpha = 3.0f;   // weight exponent, 0..kMaxDbaAlpha (0 = plain mean)
  bool enabled() const { return n > 0; }
};
inline constexpr int kMaxDbaN = 100;
inline constexpr float kMaxDbaAlpha = 20.0f;

struct ReindexOptions {
  std::string model;  // the installed model to switch to
  // The new generation's DBA: nullopt keeps the database's (n = 0 turns it
  // off). The same model with another DBA is a valid reindex: the stored
  // base features are projected and augmented, no image is read.
  std::optional<DbaOptions> dba;
  std::FILE* progress_out = stderr;
  bool show_progress = true;
  // Set from another thread or a signal handler: the reindex stops and the
  // database keeps its current model and index.
  const std::atomic<bool>* cancel = nullptr;
  // Called with (done, total) images as the new index is filled.
  std::function<void(uint64_t, uint64_t)> on_progress;
};

struct ReindexReport {
  std::string from_model, to_model;
  uint64_t images = 0;
  // True when the new model runs the same network (a trained head): the
  // stored base features were projected and no image was read.
  bool from_base_features = false;
  uint64_t failed = 0;  // images that could not be read again (re-embedding)
  DbaOptions dba;       // the DBA the new index carries
  double seconds = 0;
};

// One image for Database::InsertBatch: what Database::Insert takes. The
// spans borrow the caller's buffers for the duration of the call.
struct NewImage {
  ImageRecord record;
  std::span<const float> base_feature;  // base_dimension() floats
  std::span<const uint8_t> thumbnail_jpeg;
};

// Owns the parts of one database. Thread-safety: every method may be called
// concurrently; Embed is serialised internally (one network instance).
class Database {
 public:
  // Opens DB, creating it when `create` is true and it does not exist
  // (never when options.read_only).
  // NotFound when it does not exist and create is false; FailedPrecondition
  // when options.model differs from the database's model; DataLoss when a file
  // of the database is damaged.
  static Result<std::unique_ptr<Database>> Open(const DatabaseOptions& options, bool create);

  ~Database();

  const DatabaseOptions& options() const { return options_; }
  const std::filesystem::path& dir() const { return options_.dir; }
  // The model whose vectors the index holds now (Reindex changes it; the
  // references these return stay valid for the Database's lifetime).
  const std::string& model_name() const;
  // Length of the index's vectors (after PCA or a trained head).
  int dimension() const;
  // Length of the base features: the network's output, before PCA or a head.
  int base_dimension() const;
  const ModelCard& card() const;
  // The model's trained head (projection and classifier), or nullptr.
  const TrainedHead* head() const;
  // The DBA the index's vectors carry (n = 0: none).
  DbaOptions dba() const;

  VectorIndex& index();
  MetadataStore& store() { return *store_; }
  // Search results, cleared whenever images are added or removed.
  Cache& cache() { return *cache_; }
  // Query base features by content hash: they depend only on the image and
  // the network, so a change of the database keeps them and a repeated query
  // after an upload costs a search, not a forward pass.
  Cache& feature_cache() { return *feature_cache_; }

  // Decode options suited to the model (DCT downscaling to its input size).
  DecodeOptions decode_options() const;
  // The preprocessing recorded in the manifest at creation. Embed,
  // Preprocess and EmbedOne apply its filters themselves; callers use it
  // for the size cap of uploaded copies.
  const ImagePreprocessing& preprocessing() const { return preprocessing_; }

  // Embeds images into base features (serialised across threads): out holds
  // images.size() * base_dimension() floats. Project turns them into the
  // index's vectors; Insert takes them as they are.
  Status Embed(std::span<const Image* const> images, float* out);
  // Embed in two steps, for pipelines that preprocess on worker threads while
  // the network runs: preprocessed_size() floats per image (0 when the
  // embedder cannot split; then only Embed works), Preprocess (thread-safe,
  // no lock) and EmbedPreprocessed (serialised like Embed; base features).
  size_t preprocessed_size() const;
  Status Preprocess(const Image& image, float* dst) const;
  Status EmbedPreprocessed(const float* input, size_t n, float* out);
  // Embeds one image into its base feature (base_dimension() floats),
  // sharing a forward pass with other threads' images (dynamic batching,
  // options().batching) where the embedder allows.
  Status EmbedOne(const Image& image, float* out);
  // The index's vectors (n rows of dimension()) of n base features.
  void Project(const float* base, size_t n, float* out) const;
  // Dynamic batching counters; all zero when it is off.
  EmbedBatcherStats batcher_stats() const;

  // Stores one image: metadata with its base feature (base_dimension()
  // floats), thumbnail, the projected vector, in that order, then clears the
  // cache. On failure nothing of it remains. Returns the new id.
  Result<int64_t> Insert(const ImageRecord& record, std::span<const float> base_feature,
                         std::span<const uint8_t> thumbnail_jpeg);
  // Stores several images as Insert does, in the same order of steps but
  // each step once for all of them: one metadata transaction, the
  // thumbnails, one append to the index's log. So a batch costs one sync of
  // the metadata and one of the index rather than one each per image, with
  // the same promise: every image is durable when OK is returned, and a
  // crash before that leaves rows without vectors, which the next writable
  // open removes (Reconcile). All or nothing: on failure none of them
  // remains (a caller that wants to know which image was refused stores
  // them one by one). Returns the ids in order. InvalidArgument and
  // AlreadyExists as Insert; FailedPrecondition for a DBA index (each of its
  // vectors is augmented from the images stored before it: use Insert).
  Result<std::vector<int64_t>> InsertBatch(std::span<const NewImage> images);

  // Removes an image everywhere (vector first, so it stops matching at once).
  // NotFound for an unknown id.
  Status Remove(int64_t id);

  // Serialises work on one content (uploads of the same bytes, which share
  // one file under images/): one of 64 mutexes, picked by the hex sha256.
  std::mutex& ContentMutex(std::string_view sha256);

  std::filesystem::path ThumbnailPath(int64_t id) const;
  // Where an upload of these bytes is written. Its record holds the path
  // relative to dir() ("images/HH/SHA.ext"), so that a database directory
  // that is moved or restored elsewhere keeps its uploads.
  std::filesystem::path UploadPath(const std::string& sha256, std::string_view format) const;
  // Where `record`'s file lies: a relative path (an upload) under dir(); an
  // absolute one (a file indexed in place, or an upload of an older
  // database) as recorded. Every reader of stored files resolves them here.
  std::filesystem::path FilePath(const ImageRecord& record) const;
  // Records `folder` (absolute, without links) as one this database indexes
  // files in place from: every build's folder, every added file's folder.
  // ReadImageFile serves no file outside them (nor outside dir() for
  // uploads). Kept in the store's settings ("library_roots").
  Status AddLibraryRoot(const std::filesystem::path& folder);

  // `record`'s file as it was indexed, for serving it: opened without
  // following any symbolic link (OpenRegularNoFollow, src/core/files.h; an
  // upload beneath dir()), at most options().limits.max_bytes, and holding
  // the size and sha256 that the record holds.
  // NotFound when it is gone, is not a regular file, is (or lies under) a
  // symbolic link, or lies outside the library's folders (AddLibraryRoot;
  // a database from before they were recorded has none, and then any
  // absolute path is tried); FailedPrecondition when it changed since it was indexed;
  // ResourceExhausted over the limit. Messages name the image's id, never a
  // path (they reach HTTP clients).
  Result<std::vector<uint8_t>> ReadImageFile(const ImageRecord& record) const;
  // Image `id`'s thumbnail, opened like ReadImageFile beneath dir(), at most
  // max_bytes. NotFound when missing; messages never name a path.
  Result<std::vector<uint8_t>> ReadThumbnail(int64_t id, size_t max_bytes) const;

  Result<DatabaseStats> Stats() const;

  // VectorIndex::Compact: folds the index's pending changes into its
  // long-term form (the disk index's new disk graph); OK and nothing to do
  // for the flat index.
  Status Compact();
  // Compact() only when the changes exceed the index's threshold.
  Status CompactIfNeeded();

  // Switches the database to another installed model (src/service/reindex.cc):
  // a new index is built beside the current one, from the stored base
  // features when the model runs the same network (a head trained by
  // `pixseek train`), else by embedding every stored image again. Searches
  // and writes go on meanwhile; at the end the writes made since are added,
  // the manifest is replaced atomically and the database switches to the
  // new model and index in one step. A kill at any point leaves the old
  // database or the new one, both whole. The old generation stays in memory
  // until the Database is closed, so references handed out stay valid.
  // FailedPrecondition for a read-only database or base features missing;
  // NotFound for a model not installed; Cancelled when options.cancel is set.
  Result<ReindexReport> Reindex(const ReindexOptions& options);

 private:
  Database() = default;
  // What the index holds: the model, its network and projection, and the
  // index itself, replaced as a whole by Reindex.
  struct Generation;
  Generation& current() const { return *current_.load(std::memory_order_acquire); }
  // Makes `next` current (write_mu_ held).
  void Adopt(std::unique_ptr<Generation> next);
  // Removes index folders that the manifest no longer names (a reindex
  // finished or killed), when opened for writing.
  void RemoveStaleGenerations(const std::string& index_dir) const;
  // Reindex's parts (reindex.cc).
  struct Rebuild;
  Result<std::unique_ptr<Generation>> OpenNextGeneration(const std::string& model);
  Status FillFromBaseFeatures(Rebuild& r);
  Status EmbedInto(Rebuild& r, std::span<const int64_t> ids);
  Status Fill(Rebuild& r);
  Status CatchUp(Rebuild& r);
  Status Commit(Rebuild& r);

  // The steps of Open.
  struct Opening;
  Status ResolveIndex(Opening& o);
  Status OpenEmbedding(Opening& o);
  Status OpenIndexAndStores(Opening& o);
  Status Create(Opening& o);
  // Repairs what a crash between the steps of Insert/Remove can leave:
  // vectors without metadata are removed, metadata without a vector is
  // removed. Embedded indexes only (see Open: with the vectors on a shared
  // server, another node's insert in flight looks the same).
  Status Reconcile();
  // Writes the thumbnail of image `id` (not synced: it can be made again).
  Status WriteThumbnail(int64_t id, std::span<const uint8_t> jpeg) const;

  DatabaseOptions options_;
  ImagePreprocessing preprocessing_;  // from the manifest; fixed after Open
  std::atomic<Generation*> current_{nullptr};
  // Every generation opened, the current one last (guarded by write_mu_).
  std::vector<std::unique_ptr<Generation>> generations_;
  std::unique_ptr<MetadataStore> store_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<Cache> feature_cache_;
  std::mutex write_mu_;  // serialises Insert/Remove so the three stores agree
  std::mutex reindex_mu_;  // one Reindex at a time
  std::mutex roots_mu_;    // serialises AddLibraryRoot's read-modify-write
  std::array<std::mutex, 64> content_mu_;  // ContentMutex
};

}  // namespace pixseek

#endif  // PIXSEEK_DATABASE_H_
