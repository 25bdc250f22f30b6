// TrainBackbone: fine-tunes the last blocks of a network end to end with a
// metric loss, on the CPU with libtorch. Part of the plugin pixseek_train.so
// (loaded by src/train/train_loader.cc); every c10::Error is caught here and
// becomes a Status.
//
// One run: load the network (TorchScript, or an ONNX model translated to
// TorchScript when its weights are parameters), freeze all but the last
// `trainable_blocks` blocks (backbone_blocks.h), time a few batches for
// on_estimate, measure the base network's validation mAP (epoch 0), then
// train epochs of P x K batches of augmented images (backbone_data.h; the
// next batch is decoded on other threads while the network runs this one),
// validating after each and keeping the best; write the best as TorchScript
// and load it back to check that it gives the same vectors.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "core/parallel.h"
#include "embed/onnx_to_torchscript.h"
#include "embed/preprocess.h"
#include "train/torch/backbone_blocks.h"
#include "train/torch/backbone_data.h"
#include "train/torch/losses.h"
#include "train/train_plugin.h"

namespace pixseek::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr double kGemEps = 1e-6;       // as the embedder's GeM
constexpr int kEstimateBatches = 2;    // timed after one warm-up batch
constexpr double kSavedTolerance = 1e-4;  // max |difference| of reloaded vectors

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// libtorch's message without its C++ backtrace: its first line.
std::string TorchMessage(const c10::Error& e) {
  std::string all = e.what_without_backtrace();
  return all.substr(0, all.find('\n'));
}

std::string ShapeOf(const torch::Tensor& t) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  return ShapeToString(shape);
}

// See KeepFreedMemoryForReuse in src/embed/torch_embedder.cc: every batch
// allocates and frees the same large activations (and here their
// gradients), which glibc would otherwise hand back to the kernel each time.
void KeepFreedMemoryForReuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

// ---- Input checks -----------------------------------------------------------

Status CheckSet(const LabelledImages& set, std::string_view what) {
  const std::string name(what);
  if (set.size == 0) return Status::InvalidArgument(name + " set is empty");
  if (set.labels.size() != set.size) {
    return Status::InvalidArgument(name + " set: " + std::to_string(set.labels.size()) +
                                   " labels for " + std::to_string(set.size) + " images");
  }
  if (!set.decode) return Status::InvalidArgument(name + " set has no decode function");
  for (size_t i = 0; i < set.size; ++i) {
    if (set.labels[i] < 0) {
      return Status::InvalidArgument(name + " set: image " + std::to_string(i) +
                                     " has a negative label");
    }
  }
  return Status::Ok();
}

Status CheckOptions(const ModelCard& card, const BackboneTrainOptions& options) {
  const MetricTrainOptions& m = options.metric;
  auto bad = [](std::string s) { return Status::InvalidArgument(std::move(s)); };
  if (options.trainable_blocks < 1) return bad("trainable_blocks must be at least 1");
  if (m.dimension != 0 && m.dimension != card.dimension) {
    return bad("a fine-tuned backbone keeps the card's dimension " +
               std::to_string(card.dimension) + " (got dimension " +
               std::to_string(m.dimension) + ")");
  }
  if (m.batch_classes < 2 || m.per_class < 2) {
    return bad("batches need P >= 2 classes of K >= 2 images (got P = " +
               std::to_string(m.batch_classes) + ", K = " + std::to_string(m.per_class) + ")");
  }
  if (m.epochs < 1) return bad("epochs must be at least 1");
  if (m.patience < 1) return bad("patience must be at least 1");
  if (!(options.learning_rate > 0) || !std::isfinite(options.learning_rate)) {
    return bad("the learning rate must be positive");
  }
  if (!(m.margin >= 0) || !(m.koleo >= 0) || m.xbm < 0 || m.threads < 0) {
    return bad("margin, KoLeo weight, cross-batch memory and threads must be >= 0");
  }
  return Status::Ok();
}

Status CheckInputs(const ModelCard& card, const LabelledImages& train,
                   const LabelledImages& validation, const BackboneTrainOptions& options) {
  // Not card.Validate(): the plugin does not carry the card parser. The
  // caller's card comes from the registry, validated; these are what this
  // file divides by or allocates from.
  if (card.dimension <= 0 || card.preprocess.input_width <= 0 ||
      card.preprocess.input_height <= 0) {
    return Status::InvalidArgument("model card: dimension and input size must be positive");
  }
  PIXSEEK_RETURN_IF_ERROR(CheckSet(train, "training"));
  PIXSEEK_RETURN_IF_ERROR(CheckSet(validation, "validation"));
  return CheckOptions(card, options);
}

// ---- The network ------------------------------------------------------------

// Why an ONNX model is refused when its translation has no parameters.
constexpr char kOnnxConstantWeights[] =
    "its translation to TorchScript holds the weights as dequantized int8 constants "
    "(module buffers, not parameters), and clamps every activation to the range "
    "calibrated for those int8 weights, so there is nothing to train that would still "
    "be this model; fine-tune a TorchScript export instead (tools/export_model.py)";

Result<torch::jit::Module> LoadOnnx(const ModelCard& card, const fs::path& model_file) {
  const std::string refusal = "cannot fine-tune ONNX model " + model_file.filename().string() + ": ";
  Result<torch::jit::Module> translated =
      TranslateQuantizedOnnx(model_file, card.onnx.output_layer, /*channels_last=*/false);
  if (translated.status().code() == StatusCode::kUnsupported) {
    return Status::Unsupported(refusal + "only quantized (QLinear) ONNX models translate to " +
                               "TorchScript, and this one does not (" +
                               translated.status().message() +
                               "); fine-tune a TorchScript export instead (tools/export_model.py)");
  }
  if (!translated.ok()) return translated.status();
  if (translated->parameters().size() == 0) {
    return Status::Unsupported(refusal + kOnnxConstantWeights);
  }
  return translated;
}

Result<torch::jit::Module> LoadNetwork(const ModelCard& card, const fs::path& model_file) {
  if (card.runtime == Runtime::kOnnx) return LoadOnnx(card, model_file);
  if (card.runtime != Runtime::kTorchScript) {
    return Status::Unsupported("cannot fine-tune a model of runtime \"" +
                               std::string(ToString(card.runtime)) +
                               "\": only torchscript and onnx models have a network here");
  }
  std::error_code ec;
  if (!fs::exists(model_file, ec)) {
    return Status::NotFound("model file " + model_file.string() + " does not exist");
  }
  try {
    return torch::jit::load(model_file.string(), torch::kCPU);
  } catch (const c10::Error& e) {
    return Status::Internal("libtorch cannot load model " + model_file.string() + ": " +
                            TorchMessage(e));
  }
}

// Freezes every parameter but those of the last `trainable` blocks and
// returns those; `names` gets the blocks trained, for messages.
Result<std::vector<torch::Tensor>> FreezeAllButLast(torch::jit::Module& module, int trainable,
                                                    std::string* names) {
  std::vector<std::string> param_names;
  std::vector<torch::Tensor> params;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    param_names.push_back(p.name);
    params.push_back(p.value);
  }
  if (params.empty()) return Status::Unsupported("the network has no parameters to train");
  const std::vector<ParameterBlock> blocks = GroupIntoBlocks(param_names);
  const size_t first = blocks.size() - std::min<size_t>(blocks.size(), trainable);
  std::vector<torch::Tensor> trained;
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (b >= first) *names += (names->empty() ? "" : ", ") + blocks[b].name;
    for (size_t i : blocks[b].parameters) {
      params[i].requires_grad_(b >= first);
      if (b >= first) trained.push_back(params[i]);
    }
  }
  return trained;
}

// The card's pooling of a network output, differentiable (the same rules
// as the TorchScript embedder's, src/embed/torch_embedder.cc).
Result<torch::Tensor> Pool(const ModelCard& card, const torch::Tensor& y) {
  const Pooling p = card.output.pooling;
  const double gem_p = card.output.gem_p;
  const bool fits = p == Pooling::kNone ? y.dim() >= 2 && y.numel() == y.size(0) * y.size(1)
                                        : PoolingAcceptsRank(p, static_cast<size_t>(y.dim()));
  if (!fits || (y.dim() == 3 && y.size(1) < 2)) {
    return Status::InvalidArgument("pooling \"" + std::string(ToString(p)) + "\" needs an " +
                                   std::string(PoolingShapes(p)) + " output, got " + ShapeOf(y));
  }
  if (p == Pooling::kNone) return y.flatten(1);
  if (y.dim() == 4) {
    if (p == Pooling::kGap) return y.mean({2, 3});
    if (p == Pooling::kGmp) return y.amax({2, 3});
    return y.clamp_min(kGemEps).pow(gem_p).mean({2, 3}).pow(1.0 / gem_p);
  }
  if (p == Pooling::kCls) return y.select(1, 0);
  torch::Tensor patches = y.slice(1, 1);
  if (p == Pooling::kMeanTokens) return patches.mean(1);
  return patches.clamp_min(kGemEps).pow(gem_p).mean(1).pow(1.0 / gem_p);
}

// The L2-normalised embeddings of a preprocessed batch: what the loss and
// the validation see.
Result<torch::Tensor> Embed(const ModelCard& card, torch::jit::Module& module,
                            const torch::Tensor& x) {
  torch::jit::IValue out = module.forward({x});
  if (out.isTuple() && !out.toTupleRef().elements().empty()) {
    out = out.toTupleRef().elements()[0];  // (features, ...) modules
  }
  if (!out.isTensor()) {
    return Status::InvalidArgument("the network returned a " + out.tagKind() +
                                   ", expected a tensor");
  }
  PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor pooled, Pool(card, out.toTensor().to(torch::kFloat)));
  if (pooled.size(1) != card.dimension) {
    return Status::InvalidArgument("the network's pooled output has dimension " +
                                   std::to_string(pooled.size(1)) + ", the card says " +
                                   std::to_string(card.dimension));
  }
  return torch::nn::functional::normalize(pooled,
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

// ---- Training ---------------------------------------------------------------

using Batches = std::vector<std::vector<int64_t>>;

struct BatchesRun {
  double loss_sum = 0;
  int losses = 0;        // batches that gave a loss
  size_t images = 0;     // rows trained on
  bool complete = true;  // false when cancelled before the last batch
};

// One fine-tuning run; see the file comment. Not thread-safe; owns the
// network, its optimiser and the cross-batch memory.
class BackboneTrainer {
 public:
  BackboneTrainer(const ModelCard& card, torch::jit::Module module,
                  std::vector<torch::Tensor> trained, const LabelledImages& train,
                  const LabelledImages& validation, const BackboneTrainOptions& options)
      : card_(card),
        module_(std::move(module)),
        trained_(std::move(trained)),
        train_(train),
        validation_(validation),
        options_(options),
        threads_(ThreadCount(options.metric.threads)),
        rng_(options.metric.seed),
        optimizer_(trained_, torch::optim::AdamOptions(options.learning_rate)) {
    if (options.metric.xbm > 0) memory_.emplace(options.metric.xbm, card.dimension);
    // Eval mode throughout, trained blocks included: batch norm uses its
    // running statistics (its scale and shift are still learned) and
    // dropout is off. P x K batches of 32 augmented images of a few
    // classes give noisy, biased batch statistics that validation (eval
    // mode) would then not see; and a traced export has eval mode baked
    // into its graph anyway, so this makes scripted and traced networks
    // train alike.
    module_.eval();
  }

  Result<BackboneTrainResult> Run(const fs::path& out_file);

 private:
  Status Estimate(BackboneTrainResult& result);
  Result<double> ValidationMap();
  Result<BatchesRun> RunBatches(const Batches& batches, uint32_t epoch, bool update);
  Result<std::optional<double>> Step(const ImageBatch& batch, bool update);
  void Report(BackboneTrainResult& result, EpochReport report, Clock::time_point start);
  void KeepBest();
  void RestoreBest();
  Status SaveAndCheck(const fs::path& out_file);
  bool Cancelled() const {
    return options_.metric.cancel != nullptr && options_.metric.cancel->load();
  }
  ImageBatch Load(const std::vector<int64_t>& rows, std::optional<AugmentSeed> augment) const {
    return LoadBatch(card_, augment ? train_ : validation_, rows, augment, threads_);
  }

  const ModelCard& card_;
  torch::jit::Module module_;
  std::vector<torch::Tensor> trained_;  // parameters of module_ with requires_grad
  std::vector<torch::Tensor> best_;     // copies of trained_ at the best epoch
  const LabelledImages& train_;
  const LabelledImages& validation_;
  const BackboneTrainOptions& options_;
  const int threads_;
  std::mt19937 rng_;  // batch sampling
  torch::optim::Adam optimizer_;
  std::optional<CrossBatchMemory> memory_;  // XBM, when options.metric.xbm > 0
};

Result<std::optional<double>> BackboneTrainer::Step(const ImageBatch& batch, bool update) {
  if (batch.x.size(0) < 2) return std::optional<double>();  // no pair to learn from
  PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor z, Embed(card_, module_, batch.x));
  torch::Tensor loss =
      BatchLoss(options_.metric, z, batch.y, memory_ && memory_->size() > 0 ? &*memory_ : nullptr);
  optimizer_.zero_grad();
  // No violating pair gives a constant 0: nothing to step.
  if (loss.requires_grad()) loss.backward();
  if (update) {
    optimizer_.step();
    if (memory_) memory_->Enqueue(z.detach(), batch.y);
  } else {
    optimizer_.zero_grad();
  }
  return std::optional<double>(loss.item<double>());
}

Result<BatchesRun> BackboneTrainer::RunBatches(const Batches& batches, uint32_t epoch,
                                               bool update) {
  BatchesRun run;
  const uint32_t seed = options_.metric.seed;
  auto load = [&](size_t b) {
    return Load(batches[b], AugmentSeed{seed, epoch, static_cast<uint32_t>(b)});
  };
  std::future<ImageBatch> next;
  if (!batches.empty()) next = std::async(std::launch::async, load, 0);
  for (size_t b = 0; b < batches.size(); ++b) {
    ImageBatch batch = next.get();
    if (b + 1 < batches.size()) next = std::async(std::launch::async, load, b + 1);
    PIXSEEK_ASSIGN_OR_RETURN(std::optional<double> loss, Step(batch, update));
    if (loss) {
      run.loss_sum += *loss;
      ++run.losses;
    }
    run.images += static_cast<size_t>(batch.x.size(0));
    if (Cancelled()) {
      run.complete = b + 1 == batches.size();
      break;
    }
  }
  return run;
}

Result<double> BackboneTrainer::ValidationMap() {
  torch::NoGradGuard no_grad;
  const size_t chunk = static_cast<size_t>(std::max(1, card_.max_batch));
  std::vector<torch::Tensor> zs, ys;
  for (size_t begin = 0; begin < validation_.size; begin += chunk) {
    std::vector<int64_t> rows;
    for (size_t i = begin; i < std::min(validation_.size, begin + chunk); ++i) rows.push_back(i);
    ImageBatch batch = Load(rows, std::nullopt);
    if (batch.x.size(0) == 0) continue;
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor z, Embed(card_, module_, batch.x));
    zs.push_back(z);
    ys.push_back(batch.y);
  }
  if (zs.empty()) return Status::InvalidArgument("no validation image could be decoded");
  return LeaveOneOutMap(torch::cat(zs), torch::cat(ys));
}

// Times forward + backward on a few batches of a provisional epoch (the
// sampler's own state is not advanced) and tells on_estimate.
Status BackboneTrainer::Estimate(BackboneTrainResult& result) {
  std::mt19937 provisional = rng_;
  Batches batches = PkBatches(train_.labels, options_.metric.batch_classes,
                              options_.metric.per_class, provisional);
  if (batches.empty()) {
    return Status::InvalidArgument(
        "training needs at least 2 classes with 2 or more images each");
  }
  const size_t timed = std::min<size_t>(batches.size() - 1, kEstimateBatches);
  PIXSEEK_RETURN_IF_ERROR(RunBatches({batches[0]}, 0, /*update=*/false).status());  // warm-up
  double seconds = 0;
  size_t images = 0;
  if (timed > 0) {
    const auto start = Clock::now();
    PIXSEEK_ASSIGN_OR_RETURN(BatchesRun run,
                             RunBatches(Batches(batches.begin() + 1, batches.begin() + 1 + timed),
                                        0, /*update=*/false));
    seconds = Since(start);
    images = run.images;
  }
  if (images == 0 || seconds <= 0) return Status::Ok();  // too little to time
  const double per_image = seconds / static_cast<double>(images);
  size_t epoch_images = 0;
  for (const auto& b : batches) epoch_images += b.size();
  // Validation runs forward only, about a third of forward + backward.
  result.images_per_second = 1.0 / per_image;
  result.epoch_seconds = per_image * (static_cast<double>(epoch_images) +
                                      static_cast<double>(validation_.size) / 3.0);
  if (options_.on_estimate) options_.on_estimate(result.epoch_seconds, result.images_per_second);
  return Status::Ok();
}

void BackboneTrainer::KeepBest() {
  best_.clear();
  for (const auto& p : trained_) best_.push_back(p.detach().clone());
}

void BackboneTrainer::RestoreBest() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < trained_.size() && i < best_.size(); ++i) trained_[i].copy_(best_[i]);
}

// Writes the module (through a temporary file, so that a failed save
// leaves no half-written model) and loads it back: its vectors for the
// first validation images must be those of the module in memory.
Status BackboneTrainer::SaveAndCheck(const fs::path& out_file) {
  const fs::path tmp = out_file.string() + ".tmp";
  module_.save(tmp.string());
  std::error_code ec;
  fs::rename(tmp, out_file, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Status::Internal("cannot write " + out_file.string() + ": " + ec.message());
  }
  torch::jit::Module loaded = torch::jit::load(out_file.string(), torch::kCPU);
  loaded.eval();
  torch::NoGradGuard no_grad;
  std::vector<int64_t> rows;
  for (size_t i = 0; i < std::min<size_t>(validation_.size, 4); ++i) rows.push_back(i);
  ImageBatch batch = Load(rows, std::nullopt);
  if (batch.x.size(0) == 0) return Status::Ok();
  PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor a, Embed(card_, module_, batch.x));
  PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor b, Embed(card_, loaded, batch.x));
  const double diff = (a - b).abs().max().item<double>();
  if (!(diff <= kSavedTolerance)) {
    return Status::Internal("the saved network " + out_file.string() +
                            " gives different vectors when loaded back (max difference " +
                            std::to_string(diff) + ")");
  }
  return Status::Ok();
}

void BackboneTrainer::Report(BackboneTrainResult& result, EpochReport report,
                             Clock::time_point start) {
  report.epochs = options_.metric.epochs;
  report.best_validation_map = std::max(result.validation_map_best, report.validation_map);
  report.seconds = Since(start);
  if (report.epoch > 0) {
    report.eta_s = report.seconds / report.epoch * (report.epochs - report.epoch);
  }
  result.history.push_back(report);
  if (options_.metric.on_epoch) options_.metric.on_epoch(report);
}

Result<BackboneTrainResult> BackboneTrainer::Run(const fs::path& out_file) {
  const auto start = Clock::now();
  BackboneTrainResult result;
  PIXSEEK_RETURN_IF_ERROR(Estimate(result));
  PIXSEEK_ASSIGN_OR_RETURN(result.validation_map_base, ValidationMap());
  result.validation_map_best = result.validation_map_base;
  Report(result, {.epoch = 0, .validation_map = result.validation_map_base}, start);

  double train_seconds = 0;
  size_t train_images = 0;
  int since_best = 0;
  for (int epoch = 1; epoch <= options_.metric.epochs && !result.cancelled; ++epoch) {
    const auto epoch_start = Clock::now();
    const Batches batches = PkBatches(train_.labels, options_.metric.batch_classes,
                                      options_.metric.per_class, rng_);
    PIXSEEK_ASSIGN_OR_RETURN(BatchesRun run,
                             RunBatches(batches, static_cast<uint32_t>(epoch), /*update=*/true));
    const double seconds = Since(epoch_start);
    train_seconds += seconds;
    train_images += run.images;
    result.cancelled = Cancelled();
    if (!run.complete) break;  // a part-trained epoch is not validated
    PIXSEEK_ASSIGN_OR_RETURN(double map, ValidationMap());
    result.epochs_run = epoch;
    Report(result,
           {.epoch = epoch,
            .loss = run.losses > 0 ? run.loss_sum / run.losses : 0.0,
            .validation_map = map,
            .rows_per_second = seconds > 0 ? run.images / seconds : 0.0},
           start);
    if (map > result.validation_map_best) {
      result.validation_map_best = map;
      result.best_epoch = epoch;
      KeepBest();
      since_best = 0;
    } else if (++since_best >= options_.metric.patience) {
      break;
    }
  }
  if (train_seconds > 0) {
    result.images_per_second = static_cast<double>(train_images) / train_seconds;
  }
  if (result.epochs_run > 0) result.epoch_seconds = Since(start) / result.epochs_run;
  result.keeps_base = result.best_epoch == 0;
  if (!result.keeps_base) {
    RestoreBest();
    PIXSEEK_RETURN_IF_ERROR(SaveAndCheck(out_file));
    result.model_file = out_file;
  }
  result.seconds = Since(start);
  return result;
}

Result<BackboneTrainResult> FineTune(const ModelCard& card, const fs::path& model_file,
                                     const LabelledImages& train,
                                     const LabelledImages& validation,
                                     const BackboneTrainOptions& options,
                                     const fs::path& out_file) {
  PIXSEEK_RETURN_IF_ERROR(CheckInputs(card, train, validation, options));
  PIXSEEK_ASSIGN_OR_RETURN(torch::jit::Module module, LoadNetwork(card, model_file));
  std::string blocks;
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<torch::Tensor> trained,
                           FreezeAllButLast(module, options.trainable_blocks, &blocks));
  std::fprintf(stderr, "pixseek: fine-tuning %s (%zu parameter tensors): %s\n",
               card.name.c_str(), trained.size(), blocks.c_str());
  KeepFreedMemoryForReuse();
  if (at::get_num_threads() != ThreadCount(options.metric.threads)) {
    at::set_num_threads(ThreadCount(options.metric.threads));
  }
  // The graph executor's optimised runs (from the third call on) wrap the
  // forward pass in an autodiff graph that differentiates through the
  // frozen blocks too: ResNet-50's estimate had not finished three batches
  // of 28 after 13 minutes. Run the graph as it is, so that autograd only
  // records what follows the first trained parameter.
  torch::jit::GraphOptimizerEnabledGuard plain_graph(false);
  BackboneTrainer trainer(card, std::move(module), std::move(trained), train, validation,
                          options);
  return trainer.Run(out_file);
}

}  // namespace
}  // namespace pixseek::train

// The plugin's entry point (declared in src/train/train_plugin.h).
extern "C" __attribute__((visibility("default"))) void PixseekTrainBackbone(
    const pixseek::ModelCard& card, const char* model_file,
    const pixseek::LabelledImages& train, const pixseek::LabelledImages& validation,
    const pixseek::BackboneTrainOptions& options, const char* out_file,
    pixseek::Result<pixseek::BackboneTrainResult>* out) {
  using pixseek::Status;
  try {
    *out = pixseek::train::FineTune(card, model_file, train, validation, options, out_file);
  } catch (const c10::Error& e) {
    *out = Status::Internal("fine-tuning failed in libtorch: " +
                            pixseek::train::TorchMessage(e));
  } catch (const std::exception& e) {
    *out = Status::Internal(std::string("fine-tuning failed: ") + e.what());
  }
}
