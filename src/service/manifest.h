// A database's manifest (DB/pixseek.json): what the database was made with,
// written once when it is created and checked on every open so that vectors
// of one model, index or store are never mixed with another's.
#ifndef PIXSEEK_SERVICE_MANIFEST_H_
#define PIXSEEK_SERVICE_MANIFEST_H_

#include <cstdint>
#include <filesystem>
#include <string>

#include "pixseek/database.h"
#include "pixseek/index_params.h"
#include "pixseek/status.h"

namespace pixseek {

inline constexpr char kManifestFileName[] = "pixseek.json";

struct DatabaseManifest {
  static constexpr int kFormatVersion = 1;

  int format_version = kFormatVersion;
  std::string model;
  std::string model_sha256;  // empty = not recorded (not checked)
  int dimension = 0;
  // Databases made before the disk index existed have no index_kind: flat.
  std::string index_kind = "flat";
  // The index's parameters as chosen at creation: every parameter of its
  // kind ("index_params"; databases of the first disk-index releases have
  // "disk_params", read the same way; older ones have none: the defaults).
  IndexParams index_params;
  // The metadata store without its password ("sqlite" for the database's own
  // SQLite file, the default).
  std::string metadata_store = "sqlite";
  // The server holding the vectors for a server index kind ("milvus"),
  // without its password or token: "milvus://HOST:PORT/COLLECTION" (absent
  // = empty: the index lives in the database directory).
  std::string vector_store;
  int64_t created_at = 0;
  // A random identifier given at creation (absent in older databases); the
  // metadata store records it too, so that no two databases share a store.
  std::string id;
  // PCA learned at creation (pca.bin; 0 = none): dimension is its output.
  int pca_dimension = 0;
  bool pca_whiten = false;
  // What ran an ONNX model ("opencv" or "libtorch"; their vectors differ
  // slightly, so a database keeps the one it was built with). Absent in
  // databases from before the libtorch engine: they are "opencv".
  std::string engine;
  // A trained model's head (its file's sha256; empty = none), checked on
  // open like model_sha256.
  std::string head_sha256;
  // Where the index's files are: "" = the database directory itself (as
  // created), or the folder "gen-N" that the last `pixseek reindex` built.
  std::string index_dir;
  int64_t reindexed_at = 0;  // unix seconds of the last reindex; 0 = never
  // The DBA the index's vectors carry ("dba": {"n", "alpha"}; absent = none).
  DbaOptions dba;
  // Filters applied to every image before the model, and the size cap of
  // uploaded copies ("preprocess": {"grey", "denoise", "stored_max_side",
  // "stored_quality"}; absent = none), fixed at creation.
  ImagePreprocessing preprocessing;
};

// DataLoss names the file when it is not a manifest; FailedPrecondition for
// another format version or an index kind this pixseek does not know.
Result<DatabaseManifest> ReadManifest(const std::filesystem::path& file);
// Written atomically (a crash leaves the old file or the new one).
Status WriteManifest(const std::filesystem::path& file, const DatabaseManifest& manifest);

// "PCA-whitening to 256-d" / "no PCA", for messages.
std::string DescribePca(const DatabaseManifest& manifest);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_MANIFEST_H_
