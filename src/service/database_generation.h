// Database::Generation: what the index holds (the model, its network and
// projection, the index and the manifest that records them), replaced as a
// whole by Database::Reindex. Internal to the service module
// (database.cc, reindex.cc).
#ifndef PIXSEEK_SERVICE_DATABASE_GENERATION_H_
#define PIXSEEK_SERVICE_DATABASE_GENERATION_H_

#include <memory>
#include <span>
#include <string>

#include "pixseek/database.h"
#include "pixseek/embedding_engine.h"
#include "pixseek/model_registry.h"
#include "service/manifest.h"
#include "service/projection.h"

namespace pixseek {

struct Database::Generation {
  std::string model_name;
  InstalledModel model;
  DatabaseManifest manifest;                   // as written for this generation
  std::unique_ptr<EmbeddingEngine> embedding;  // the network: base features
  FeatureProjection projection{0};             // base features -> index vectors
  VectorIndexSpec spec;  // how the index was opened (its folder, kind, parameters)
  std::unique_ptr<VectorIndex> index;
};

// Embeds images into base features after the database's preprocessing
// filters (copies of the images; the originals are left as they are).
[[nodiscard]] Status EmbedFiltered(EmbeddingEngine& embedding,
                                   const ImagePreprocessing& preprocessing,
                                   std::span<const Image* const> images, float* out);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_DATABASE_GENERATION_H_
