#include "pixseek/embedding_engine.h"

#include "embed/embed_batcher.h"

namespace pixseek {

EmbeddingEngine::EmbeddingEngine(std::unique_ptr<Embedder> embedder,
                                 const EmbedBatchingOptions& batching)
    : embedder_(std::move(embedder)) {
  if (EmbedBatcher::Supports(*embedder_) &&
      EmbedBatcher::EffectiveMaxBatch(*embedder_, batching) > 1) {
    batcher_ = std::make_unique<EmbedBatcher>(*embedder_, mu_, batching);
  }
}

EmbeddingEngine::~EmbeddingEngine() { batcher_.reset(); }

Status EmbeddingEngine::Embed(std::span<const Image* const> images, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
  return embedder_->Embed(images, out);
}

Status EmbeddingEngine::EmbedPreprocessed(const float* input, size_t n, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
  return embedder_->EmbedPreprocessed(input, n, out);
}

Status EmbeddingEngine::EmbedOne(const Image& image, float* out) {
  if (batcher_) return batcher_->Embed(image, out);
  const Image* images[] = {&image};
  return Embed(images, out);
}

EmbedBatcherStats EmbeddingEngine::batcher_stats() const {
  return batcher_ ? batcher_->stats() : EmbedBatcherStats{};
}

}  // namespace pixseek
