// EmbedBatcher: dynamic batching of single-image embeddings, as Triton's
// dynamic batcher does. Concurrent callers (search and upload requests)
// preprocess their image on their own thread, then queue it; one batcher
// thread runs the network on everything queued, up to max_batch images, in a
// single forward pass and hands each caller its row.
//
// Why: a forward pass over N images costs less than N passes of one (the
// network's weights are read once, the matrix products are larger), and the
// callers stop queueing one by one behind the embedder's lock.
#ifndef PIXSEEK_EMBED_EMBED_BATCHER_H_
#define PIXSEEK_EMBED_EMBED_BATCHER_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/status.h"

namespace pixseek {

// Thread-safety: Embed and stats may be called from any number of threads.
// The embedder is borrowed and must outlive the batcher; `embedder_mu` is the
// lock every other user of the embedder holds while calling it.
class EmbedBatcher {
 public:
  // The embedder must split preprocessing from the network
  // (preprocessed_size() > 0); `Supports` says whether it does.
  EmbedBatcher(Embedder& embedder, std::mutex& embedder_mu, EmbedBatchingOptions options);
  ~EmbedBatcher();  // finishes what is queued, then stops the thread
  EmbedBatcher(const EmbedBatcher&) = delete;
  EmbedBatcher& operator=(const EmbedBatcher&) = delete;

  static bool Supports(const Embedder& embedder) { return embedder.preprocessed_size() > 0; }
  // The batch size `options` give for `embedder`: options.max_batch, or the
  // card's when that is 0; at least 1. Batching is worth a thread above 1.
  static int EffectiveMaxBatch(const Embedder& embedder, const EmbedBatchingOptions& options) {
    return std::max(1, options.max_batch > 0 ? options.max_batch : embedder.card().max_batch);
  }

  // Embeds one image into out[0..dimension()). Preprocessing errors are the
  // caller's own; a failed forward pass fails every image of its batch.
  // A batch waits at most max_wait, and only while other callers are still
  // preprocessing, so a caller alone never waits.
  Status Embed(const Image& image, float* out);

  int max_batch() const { return max_batch_; }
  // Callers whose image is preprocessed and waits for, or is in, a forward pass.
  int waiting() const;
  EmbedBatcherStats stats() const;

 private:
  struct Request {
    std::vector<float> input;  // preprocessed_size() floats
    float* out = nullptr;
    Status status;
    bool done = false;
  };

  void Run();  // the batcher thread
  // One forward pass over `batch`; fills each request's out and status.
  void RunBatch(const std::vector<Request*>& batch);

  Embedder& embedder_;
  std::mutex& embedder_mu_;
  const int max_batch_;
  const std::chrono::microseconds max_wait_;
  const size_t input_floats_;
  const size_t dimension_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable queued_;  // a request arrived, or stop_
  std::condition_variable done_;    // some request is done
  std::deque<Request*> queue_;
  int preparing_ = 0;  // callers preprocessing: images the batch may wait for
  int running_ = 0;    // images in the forward pass now
  bool stop_ = false;
  EmbedBatcherStats stats_;

  std::vector<float> batch_input_;   // batcher thread only
  std::vector<float> batch_output_;  // batcher thread only
  std::thread thread_;               // last: starts after the members above
};

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_EMBED_BATCHER_H_
