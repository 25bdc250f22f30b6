#include "embed/embed_batcher.h"

#include <algorithm>
#include <cstring>

namespace pixseek {

EmbedBatcher::EmbedBatcher(Embedder& embedder, std::mutex& embedder_mu,
                           EmbedBatchingOptions options)
    : embedder_(embedder),
      embedder_mu_(embedder_mu),
      max_batch_(EffectiveMaxBatch(embedder, options)),
      max_wait_(std::max(std::chrono::microseconds(0), options.max_wait)),
      input_floats_(embedder.preprocessed_size()),
      dimension_(static_cast<size_t>(embedder.dimension())),
      thread_([this] { Run(); }) {}

EmbedBatcher::~EmbedBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  queued_.notify_all();
  thread_.join();
}

Status EmbedBatcher::Embed(const Image& image, float* out) {
  if (out == nullptr) return Status::InvalidArgument("Embed: output buffer is null");
  if (input_floats_ == 0) {
    return Status::Unsupported("this embedder cannot batch (no separate preprocessing step)");
  }
  Request request;
  request.input.resize(input_floats_);
  request.out = out;
  // Preprocessing runs here, on the caller's thread, in parallel with the
  // network and with the other callers.
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++preparing_;
  }
  const Status prepared = embedder_.Preprocess(image, request.input.data());

  std::unique_lock<std::mutex> lock(mu_);
  --preparing_;
  if (!prepared.ok()) {
    queued_.notify_one();  // the batcher may be waiting for this image
    return prepared;
  }
  if (stop_) return Status::Unavailable("the embedder is shutting down");
  queue_.push_back(&request);
  queued_.notify_one();
  done_.wait(lock, [&] { return request.done; });
  return request.status;
}

EmbedBatcherStats EmbedBatcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EmbedBatcherStats stats = stats_;
  stats.waiting = queue_.size() + static_cast<uint64_t>(running_);
  return stats;
}

int EmbedBatcher::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size()) + running_;
}

void EmbedBatcher::Run() {
  std::vector<Request*> batch;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    queued_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and nothing left to do
    // Wait for images known to be on their way (callers still
    // preprocessing), up to max_wait after the first one queued; a lone
    // caller is never held back. While the previous pass ran, images queued
    // and the batch may be full already.
    const auto ready = [&] {
      return stop_ || preparing_ == 0 || queue_.size() >= static_cast<size_t>(max_batch_);
    };
    if (max_wait_.count() > 0 && !ready()) {
      queued_.wait_until(lock, std::chrono::steady_clock::now() + max_wait_, ready);
    }
    batch.clear();
    while (!queue_.empty() && batch.size() < static_cast<size_t>(max_batch_)) {
      batch.push_back(queue_.front());
      queue_.pop_front();
    }
    running_ = static_cast<int>(batch.size());
    lock.unlock();
    RunBatch(batch);
    lock.lock();
    running_ = 0;
    for (Request* r : batch) r->done = true;
    ++stats_.batches;
    stats_.images += batch.size();
    stats_.max_seen = std::max<uint64_t>(stats_.max_seen, batch.size());
    done_.notify_all();
  }
}

void EmbedBatcher::RunBatch(const std::vector<Request*>& batch) {
  const size_t n = batch.size();
  batch_input_.resize(n * input_floats_);
  batch_output_.resize(n * dimension_);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(batch_input_.data() + i * input_floats_, batch[i]->input.data(),
                input_floats_ * sizeof(float));
  }
  Status status;
  {
    std::lock_guard<std::mutex> lock(embedder_mu_);
    status = embedder_.EmbedPreprocessed(batch_input_.data(), n, batch_output_.data());
  }
  for (size_t i = 0; i < n; ++i) {
    batch[i]->status = status;
    if (status.ok()) {
      std::memcpy(batch[i]->out, batch_output_.data() + i * dimension_, dimension_ * sizeof(float));
    }
  }
}

}  // namespace pixseek
