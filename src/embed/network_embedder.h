// NetworkEmbedder: what the embedders that run a network on an [N,3,H,W]
// float tensor share, whatever runs it (ONNX on OpenCV DNN or libtorch,
// TorchScript, a KServe server): the card's preprocessing, batching, and the
// dummy forward pass that checks a model when it is opened. Internal to the
// embed module.
#ifndef PIXSEEK_EMBED_NETWORK_EMBEDDER_H_
#define PIXSEEK_EMBED_NETWORK_EMBEDDER_H_

#include <cstddef>
#include <span>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

// A subclass runs the network and the pooling on one batch (RunBatch); this
// class does the rest of the Embedder contract.
//
// Thread-safety: Embed and EmbedPreprocessed from one thread at a time (the
// Embedder contract: they share the scratch buffer and the subclass's
// runtime); Preprocess, which only reads the card, from any number of
// threads. Owns its card and scratch buffer.
class NetworkEmbedder : public Embedder {
 public:
  const ModelCard& card() const final { return card_; }

  // 3 * input_height * input_width.
  size_t preprocessed_size() const final;
  // CheckEmbedImage, then the card's preprocessing (preprocess.h); Internal
  // when OpenCV fails.
  Status Preprocess(const Image& image, float* dst) const final;
  // Checks every image, then preprocesses them card().max_batch at a time
  // and runs EmbedPreprocessed on each batch.
  Status Embed(std::span<const Image* const> images, float* out) final;
  // Splits the n images into batches of at most batch_size() for RunBatch.
  Status EmbedPreprocessed(const float* input, size_t n, float* out) final;

  // Embeds a mid-grey image once, which checks that the network runs and
  // that its pooled output has card().dimension entries. Openers call it
  // before handing the embedder out; its errors are RunBatch's.
  Status SelfCheck();

 protected:
  explicit NetworkEmbedder(ModelCard card) : card_(std::move(card)) {}

  // The most images one RunBatch call takes: card().max_batch, unless the
  // runtime knows better (a remote model with a fixed batch size).
  virtual size_t batch_size() const;

  // Runs the network and the card's pooling on n (1..batch_size())
  // preprocessed images at `input` and writes n * dimension() floats to
  // `out`. Errors as Embed's.
  virtual Status RunBatch(const float* input, size_t n, float* out) = 0;

 private:
  const ModelCard card_;
  std::vector<float> scratch_;  // Embed's preprocessed batch
};

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_NETWORK_EMBEDDER_H_
