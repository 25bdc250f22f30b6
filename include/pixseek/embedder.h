// Feature extraction: the Embedder interface and the model card that drives it.
#ifndef PIXSEEK_EMBEDDER_H_
#define PIXSEEK_EMBEDDER_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

// A JSON document beside each model file that says how to run it. Field names
// in JSON are the member names below; defaults are those of an ImageNet CNN.
struct ModelCard {
  std::string name;                 // registry name, e.g. "mobilenetv2"
  std::string runtime = "onnx";     // "onnx", "torchscript", "kserve" or "sift-vlad"
  // Runtime "onnx" only: what runs the file. "opencv" (OpenCV DNN, any
  // model it loads), "libtorch" (quantized QLinearConv models translated to
  // libtorch and run in float, about 4x faster; see docs/model_card.md) or
  // "auto" (libtorch where the plugin is built and the model translates,
  // else opencv). An open embedder's card names the engine it uses.
  std::string engine = "opencv";
  // Libtorch models (runtime "torchscript", or "onnx" on engine "libtorch"):
  // "fp32", or "bf16" (weights and activations in bfloat16 on CPUs with
  // AVX512_BF16 or AMX; about 1.25-1.4x faster, vectors within cosine 0.998
  // of fp32; falls back to fp32 with a warning on other CPUs).
  std::string precision = "fp32";
  std::string file;                 // model file name, relative to the card
  std::string sha256;               // of the model file; empty = not checked
  int input_width = 224;
  int input_height = 224;
  int resize_shorter = 256;         // resize shorter side to this, then crop
  std::string crop = "center";      // "center" or "none" (plain resize to input)
  std::string interpolation = "bilinear";  // "bilinear", "area" or "bicubic"
  float scale = 1.0f / 255.0f;      // pixel value multiplier before mean/std
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};
  std::string channel_order = "RGB";  // "RGB" or "BGR"
  std::string output_layer;         // layer to forward to; empty = network output
  // "gap" (mean over HxW), "gmp" (max over HxW), "gem" (generalised mean
  // over HxW, or over the patch tokens of an [N,T,D] output), "cls" (token 0
  // of [N,T,D]), "mean_tokens" (mean of tokens 1..T-1), or "none" ([N,D]).
  std::string pooling = "gap";
  float gem_p = 3.0f;               // GeM exponent (pooling "gem"); inputs clamped to >= 1e-6
  int dimension = 0;                // length of the final vector
  bool l2_normalize = true;
  int max_batch = 16;               // largest batch one forward pass takes
  // Runtime "sift-vlad" only (no network): the grey image is shrunk to fit
  // input_width x input_height, at most max_keypoints RootSIFT descriptors
  // are kept (the strongest), and dimension / 128 is the codebook size.
  int max_keypoints = 1000;
  bool intra_normalize = true;      // L2-normalise each VLAD block
  // Runtime "kserve" only: the network runs on a remote server that speaks
  // the KServe v2 HTTP/REST inference protocol (NVIDIA Triton and others);
  // preprocessing and pooling stay local. See docs/model_card.md.
  std::string server_url;           // "http://host:port" (or https://)
  std::string remote_model;         // model name on the server
  std::string remote_version;       // model version; empty = the server's choice
  std::string input_tensor;         // name of the [N,3,H,W] input tensor
  std::string output_tensor;        // name of the output tensor to pool
  std::string input_datatype = "FP32";  // KServe datatype of the input (FP32 only)
  bool binary_data = true;          // binary tensor extension; false = JSON tensors
  int timeout_ms = 30000;           // per HTTP request

  // Parses and validates a card. InvalidArgument names the bad field.
  static Result<ModelCard> FromJson(std::string_view json_text);
  std::string ToJson() const;
  // Checks ranges and enumerations. InvalidArgument names the bad field.
  Status Validate() const;
};

// Turns images into L2-normalised feature vectors.
//
// Thread-safety: an Embedder may be called from one thread at a time; the
// caller serialises (the service layer owns one and locks around it).
class Embedder {
 public:
  virtual ~Embedder() = default;

  virtual const ModelCard& card() const = 0;
  int dimension() const { return card().dimension; }

  // Embeds images.size() images into `out`, which must hold
  // images.size() * dimension() floats, row-major. Batches internally by
  // card().max_batch. Errors: InvalidArgument for an empty image, Internal
  // for a runtime failure (the runtime's message is kept).
  virtual Status Embed(std::span<const Image* const> images, float* out) = 0;

  // Embed split in two, for pipelines that preprocess on worker threads while
  // the network runs (bench embed). Embedders that run a network on an
  // [N,3,H,W] float tensor implement them; the others keep these defaults.
  //
  // Floats one preprocessed image takes (3 * input_height * input_width), or
  // 0 when this embedder does not split (then only Embed works).
  virtual size_t preprocessed_size() const { return 0; }
  // Resizes, crops and normalises one image as the card says into `dst`
  // (preprocessed_size() floats). Thread-safe, unlike Embed.
  virtual Status Preprocess(const Image& /*image*/, float* /*dst*/) const {
    return Status::Unsupported("this embedder has no separate preprocessing step");
  }
  // Runs the network and the pooling on n preprocessed images at `input` and
  // writes n * dimension() floats to `out`; same errors as Embed.
  virtual Status EmbedPreprocessed(const float* /*input*/, size_t /*n*/, float* /*out*/) {
    return Status::Unsupported("this embedder has no separate preprocessing step");
  }
  // Threads one forward pass may use (intra-op); 0 = the core count.
  virtual void SetThreads(int /*threads*/) {}
};

// Dynamic batching of single-image embeddings (EmbedBatcher): concurrent
// searches and uploads share forward passes.
struct EmbedBatchingOptions {
  // Most images one forward pass takes; 0 = the model card's max_batch,
  // 1 = no batching (each caller runs its own pass).
  int max_batch = 0;
  // How long a batch may wait for images still being preprocessed by other
  // callers (a caller alone never waits). Images that queue up while the
  // network is busy form the next batch at once. 0 = take what is queued.
  std::chrono::microseconds max_wait{2000};
};

// Counters since construction, for /metrics.
struct EmbedBatcherStats {
  uint64_t batches = 0;    // forward passes run
  uint64_t images = 0;     // images embedded (sum of batch sizes)
  uint64_t max_seen = 0;   // largest batch so far
  uint64_t waiting = 0;    // now: images queued for, or in, a forward pass
};

// Opens the model described by `card`, whose file is `model_file`. Checks the
// output dimension against card.dimension with one dummy forward pass.
// Errors: NotFound (no file), InvalidArgument (card), Unsupported (runtime),
// Internal (the runtime rejected the model, with its message). Runtime
// "kserve" does not read model_file: it checks the server's readiness and
// model metadata instead (Unavailable when the server cannot be reached,
// FailedPrecondition when the metadata does not fit the card).
Result<std::unique_ptr<Embedder>> OpenEmbedder(
    const ModelCard& card, const std::filesystem::path& model_file);

}  // namespace pixseek

#endif  // PIXSEEK_EMBEDDER_H_
