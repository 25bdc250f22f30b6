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

// ---- Model card ------------------------------------------------------------
//
// The enumerations of a card. In card.json each is a string (the names in
// CardEnum<E>::kNames below, in enumerator order); FromJson parses them once,
// so code compares enumerators, never strings.

// What runs the model: "onnx" (OpenCV DNN or libtorch; see OnnxSection),
// "torchscript" (libtorch; Unsupported in a build without it), "kserve" (a
// remote KServe v2 / Triton server) or "sift-vlad" (no network).
enum class Runtime { kOnnx, kTorchScript, kKServe, kSiftVlad };
// Runtime "onnx" only: what runs the file. "opencv" (OpenCV DNN, any model
// it loads), "libtorch" (quantized QLinearConv models translated to libtorch
// and run in float, about 4x faster; see docs/model_card.md) or "auto"
// (libtorch where the plugin is built and the model translates, else
// opencv). An open embedder's card names the engine it uses.
enum class Engine { kOpenCv, kLibtorch, kAuto };
// Libtorch models (runtime "torchscript", or "onnx" on engine "libtorch"):
// "fp32", or "bf16" (weights and activations in bfloat16 on CPUs with
// AVX512_BF16 or AMX; about 1.25-1.4x faster, vectors within cosine 0.998 of
// fp32; falls back to fp32 with a warning on other CPUs).
enum class Precision { kFp32, kBf16 };
// "center" (shorter side to resize_shorter, then a centred crop) or "none"
// (plain resize to the input size).
enum class Crop { kCenter, kNone };
enum class Interpolation { kBilinear, kArea, kBicubic };
enum class ChannelOrder { kRgb, kBgr };
// "gap" (mean over HxW), "gmp" (max over HxW), "gem" (generalised mean over
// HxW, or over the patch tokens of an [N,T,D] output), "cls" (token 0 of
// [N,T,D]), "mean_tokens" (mean of tokens 1..T-1), or "none" ([N,D]).
enum class Pooling { kGap, kGmp, kGem, kCls, kMeanTokens, kNone };

// The JSON key and the names of each card enumeration, indexed by enumerator.
template <typename E>
struct CardEnum;
template <>
struct CardEnum<Runtime> {
  static constexpr std::string_view kField = "runtime";
  static constexpr std::array<std::string_view, 4> kNames = {"onnx", "torchscript", "kserve",
                                                             "sift-vlad"};
};
template <>
struct CardEnum<Engine> {
  static constexpr std::string_view kField = "engine";
  static constexpr std::array<std::string_view, 3> kNames = {"opencv", "libtorch", "auto"};
};
template <>
struct CardEnum<Precision> {
  static constexpr std::string_view kField = "precision";
  static constexpr std::array<std::string_view, 2> kNames = {"fp32", "bf16"};
};
template <>
struct CardEnum<Crop> {
  static constexpr std::string_view kField = "crop";
  static constexpr std::array<std::string_view, 2> kNames = {"center", "none"};
};
template <>
struct CardEnum<Interpolation> {
  static constexpr std::string_view kField = "interpolation";
  static constexpr std::array<std::string_view, 3> kNames = {"bilinear", "area", "bicubic"};
};
template <>
struct CardEnum<ChannelOrder> {
  static constexpr std::string_view kField = "channel_order";
  static constexpr std::array<std::string_view, 2> kNames = {"RGB", "BGR"};
};
template <>
struct CardEnum<Pooling> {
  static constexpr std::string_view kField = "pooling";
  static constexpr std::array<std::string_view, 6> kNames = {"gap", "gmp", "gem",
                                                             "cls", "mean_tokens", "none"};
};

// One name per enumerator (checked against each enumeration's last one).
static_assert(CardEnum<Runtime>::kNames.size() == size_t(Runtime::kSiftVlad) + 1);
static_assert(CardEnum<Engine>::kNames.size() == size_t(Engine::kAuto) + 1);
static_assert(CardEnum<Precision>::kNames.size() == size_t(Precision::kBf16) + 1);
static_assert(CardEnum<Crop>::kNames.size() == size_t(Crop::kNone) + 1);
static_assert(CardEnum<Interpolation>::kNames.size() == size_t(Interpolation::kBicubic) + 1);
static_assert(CardEnum<ChannelOrder>::kNames.size() == size_t(ChannelOrder::kBgr) + 1);
static_assert(CardEnum<Pooling>::kNames.size() == size_t(Pooling::kNone) + 1);

// The enumerations above, which have a CardEnum entry.
template <typename E>
concept CardEnumeration = requires { CardEnum<E>::kNames; };

// The name of `value` as card.json writes it ("onnx", "RGB", ...). The view
// is of a string literal, so .data() is NUL-terminated.
template <CardEnumeration E>
constexpr std::string_view ToString(E value) {
  return CardEnum<E>::kNames[static_cast<size_t>(value)];
}

// The enumerator card.json calls `name`. InvalidArgument naming the field and
// the allowed names otherwise.
template <CardEnumeration E>
Result<E> ParseCardEnum(std::string_view name) {
  const auto& names = CardEnum<E>::kNames;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<E>(i);
  }
  std::string choices;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) choices += ", ";
    choices += "\"" + std::string(names[i]) + "\"";
  }
  return Status::InvalidArgument("model card: unknown " + std::string(CardEnum<E>::kField) +
                                 " \"" + std::string(name) + "\" (expected one of " + choices +
                                 ")");
}

// How an image becomes the network's [3,H,W] input (runtimes "onnx",
// "torchscript" and "kserve"; "sift-vlad" uses only the input size, as the
// box it shrinks images to fit).
struct PreprocessSpec {
  int input_width = 224;
  int input_height = 224;
  int resize_shorter = 256;  // resize shorter side to this, then crop
  Crop crop = Crop::kCenter;
  Interpolation interpolation = Interpolation::kBilinear;
  float scale = 1.0f / 255.0f;  // pixel value multiplier before mean/std
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};  // in the model's channel order
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};
  ChannelOrder channel_order = ChannelOrder::kRgb;
};

// How a network's output tensor becomes one vector per image (runtimes
// "onnx", "torchscript" and "kserve").
struct OutputSpec {
  Pooling pooling = Pooling::kGap;
  float gem_p = 3.0f;  // GeM exponent (pooling "gem"); inputs clamped to >= 1e-6
  bool l2_normalize = true;
};

// Runtime "onnx".
struct OnnxSection {
  Engine engine = Engine::kOpenCv;
  std::string output_layer;  // layer to forward to; empty = network output
};

// Runtime "sift-vlad" (no network): the grey image is shrunk to fit
// input_width x input_height, at most max_keypoints RootSIFT descriptors are
// kept (the strongest), and dimension / 128 is the codebook size.
struct SiftVladSection {
  int max_keypoints = 1000;
  bool intra_normalize = true;  // L2-normalise each VLAD block
};

// Runtime "kserve": the network runs on a remote server that speaks the
// KServe v2 HTTP/REST inference protocol (NVIDIA Triton and others);
// preprocessing and pooling stay local. See docs/model_card.md.
struct KServeSection {
  std::string server_url;              // "http://host:port" (or https://)
  std::string remote_model;            // model name on the server
  std::string remote_version;          // model version; empty = the server's choice
  std::string input_tensor;            // name of the [N,3,H,W] input tensor
  std::string output_tensor;           // name of the output tensor to pool
  std::string input_datatype = "FP32";  // KServe datatype of the input (FP32 only)
  bool binary_data = true;             // binary tensor extension; false = JSON tensors
  int timeout_ms = 30000;              // per HTTP request
};

// A model made by `pixseek train` from a base model (docs/training.md). A
// head-only model has no file of its own ("file" empty): it runs the base
// model's network, found in the registry by name and checked against
// base_sha256, then its head. A fine-tuned network has its own file.
struct TrainedSection {
  std::string base;         // the base model's name; empty = not a trained model
  std::string base_sha256;  // of the base model's file when it was trained
  std::string head;         // TrainedHead file beside the card; empty = none
  std::string head_sha256;
  // A JSON object: the training settings, a hash of the training data and
  // the validation figures, for `pixseek model list`; not interpreted.
  std::string training = "{}";
};

// A JSON document beside each model file that says how to run it. card.json
// is flat: its keys are the member names of the card and of its sections
// ("input_width", not "preprocess.input_width"). Defaults are those of an
// ImageNet CNN. Every section is always present and parsed; a runtime reads
// the ones it needs. ToJson writes "engine" only for runtime "onnx", and
// the sift_vlad and kserve sections only for their runtime, so that cards
// read as they always have.
struct ModelCard {
  std::string name;  // registry name, e.g. "mobilenetv2"
  Runtime runtime = Runtime::kOnnx;
  Precision precision = Precision::kFp32;  // libtorch models only (see Precision)
  std::string file;    // model file name, relative to the card
  std::string sha256;  // of the model file; empty = not checked
  int dimension = 0;   // length of the final vector
  int max_batch = 16;  // largest batch one forward pass takes
  PreprocessSpec preprocess;
  OutputSpec output;
  OnnxSection onnx;
  SiftVladSection sift_vlad;
  KServeSection kserve;
  TrainedSection trained;

  // Parses and validates a card. InvalidArgument names the bad field.
  static Result<ModelCard> FromJson(std::string_view json_text);
  // The JSON card.json holds, keys in a fixed order; FromJson(ToJson())
  // gives the card back.
  std::string ToJson() const;
  // Checks ranges and combinations. InvalidArgument names the bad field.
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
