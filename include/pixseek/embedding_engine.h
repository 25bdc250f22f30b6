// One database's feature extractor: the embedder, the lock that serialises
// it and the dynamic batcher in front of it, owned together so that nothing
// calls the embedder without its lock.
#ifndef PIXSEEK_EMBEDDING_ENGINE_H_
#define PIXSEEK_EMBEDDING_ENGINE_H_

#include <memory>
#include <mutex>
#include <span>

#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

class EmbedBatcher;

// Thread-safety: every method may be called from any thread; Embed and
// EmbedPreprocessed take the embedder's lock, Preprocess needs none, EmbedOne
// goes through the batcher when there is one.
class EmbeddingEngine {
 public:
  // Batching is on when the embedder splits preprocessing from its network
  // and the effective batch size is above 1.
  EmbeddingEngine(std::unique_ptr<Embedder> embedder, const EmbedBatchingOptions& batching);
  ~EmbeddingEngine();  // stops the batcher before the embedder goes
  EmbeddingEngine(const EmbeddingEngine&) = delete;
  EmbeddingEngine& operator=(const EmbeddingEngine&) = delete;

  const ModelCard& card() const { return embedder_->card(); }
  int dimension() const { return embedder_->dimension(); }

  // images.size() * dimension() floats into out.
  Status Embed(std::span<const Image* const> images, float* out);
  size_t preprocessed_size() const { return embedder_->preprocessed_size(); }
  Status Preprocess(const Image& image, float* dst) const { return embedder_->Preprocess(image, dst); }
  Status EmbedPreprocessed(const float* input, size_t n, float* out);
  // One image, sharing a forward pass with other threads' images when
  // batching is on.
  Status EmbedOne(const Image& image, float* out);
  EmbedBatcherStats batcher_stats() const;

 private:
  std::unique_ptr<Embedder> embedder_;
  std::mutex mu_;  // serialises embedder_
  std::unique_ptr<EmbedBatcher> batcher_;  // null when batching is off
};

}  // namespace pixseek

#endif  // PIXSEEK_EMBEDDING_ENGINE_H_
