// The TorchScript embedder: any traced or scripted module run by libtorch on
// the CPU, with the card's preprocessing (NetworkEmbedder, shared with ONNX) and
// its pooling ("gap", "gmp", "gem", "cls", "mean_tokens", "none") done here in
// torch. libtorch stays inside this file: every c10::Error is caught here and
// becomes a Status. This file is the plugin pixseek_torch.so, loaded only when
// a TorchScript model is opened (torch_loader.cc), so that every other
// command starts without loading libtorch's hundreds of libraries.
#include "embed/torch_embedder.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <malloc.h>

#include <ATen/Parallel.h>
#include <torch/script.h>

#include "embed/network_embedder.h"
#include "embed/onnx_to_torchscript.h"
#include "embed/preprocess.h"

namespace pixseek {
namespace {

constexpr double kGemEps = 1e-6;

// libtorch messages carry C++ backtraces and TorchScript tracebacks; keep the
// line that says what went wrong.
std::string TorchMessage(const c10::Error& e) {
  std::string all = e.what_without_backtrace();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    std::string line = all.substr(start, end - start);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  if (lines.empty()) return "unknown libtorch error";
  // A scripted op failing reports "The following operation failed..." first
  // and the actual "RuntimeError: ..." last.
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (it->find("Error: ") != std::string::npos) return *it;
  }
  return lines.front();
}

std::string ShapeOf(const torch::Tensor& t) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  return ShapeToString(shape);
}

// A forward pass allocates and frees tens of MB of activations. By default
// glibc hands such blocks back to the kernel on free (mmap above 32 MB,
// heap trimming above 2x the adaptive threshold), and the next pass
// page-faults them in again. Measured forward rates on 2 cores, without and
// with these settings: MobileNetV2 (libtorch engine, batch 4) 30-36 -> 188-222
// images/s, ResNet-50 (batch 8) 22 -> 34-37. Keeping freed memory in the heap
// costs the peak working set in RSS, which a process that runs a network
// keeps needing anyway. (32 MB is glibc's ceiling for the mmap threshold:
// MobileNetV2 at batch 8, whose first activations are 38 MB, still runs at
// 60-80 images/s, hence its card's batch of 4.)
void KeepFreedMemoryForReuse() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);   // glibc's maximum on 64-bit
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  });
}

int DefaultThreads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// An Embedder backed by a torch::jit::Module in eval mode.
//
// Thread-safety: as NetworkEmbedder. Owns the module.
class TorchEmbedder final : public NetworkEmbedder {
 public:
  TorchEmbedder(ModelCard card, torch::jit::Module module)
      : NetworkEmbedder(std::move(card)),
        module_(std::move(module)),
        bf16_(this->card().precision == Precision::kBf16),
        threads_(DefaultThreads()) {}

  void SetThreads(int threads) override { threads_ = threads > 0 ? threads : DefaultThreads(); }

 private:
  // One forward pass over n <= max_batch preprocessed images.
  Status RunBatch(const float* input, size_t n, float* out) override {
    const ModelCard& card = this->card();
    const int64_t batch = static_cast<int64_t>(n);
    try {
      // OpenMP's thread count is per calling thread, and callers (build
      // pipeline, server threads) change: check it on every pass, but set it
      // only when it differs. Setting it is not cheap: doing so on every
      // pass halved MobileNetV2's forward rate (208 -> 83 images/s).
      if (at::get_num_threads() != threads_) at::set_num_threads(threads_);
      c10::InferenceMode inference;
      torch::Tensor x = torch::from_blob(
          const_cast<float*>(input),
          {batch, 3, card.preprocess.input_height, card.preprocess.input_width}, torch::kFloat);
      if (bf16_) x = x.to(torch::kBFloat16);
      std::vector<torch::jit::IValue> inputs{x};
      torch::jit::IValue result = module_.forward(inputs);
      if (result.isTuple() && !result.toTupleRef().elements().empty()) {
        result = result.toTupleRef().elements()[0];  // (features, ...) modules
      }
      if (!result.isTensor()) {
        return Status::InvalidArgument("TorchScript module returned a " +
                                       result.tagKind() + ", expected a tensor");
      }
      torch::Tensor y = result.toTensor();
      if (y.dim() < 2 || y.size(0) != batch) {
        return Status::InvalidArgument("model output has shape " + ShapeOf(y) +
                                       ", expected a batch of " + std::to_string(batch));
      }
      y = y.to(torch::kFloat);
      PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor pooled, Pool(y));
      pooled = pooled.contiguous();
      if (pooled.size(1) != card.dimension) {
        return Status::InvalidArgument("model output " + ShapeOf(y) + " pooled with \"" +
                                       PoolingName() + "\" has dimension " +
                                       std::to_string(pooled.size(1)) +
                                       " but the card says dimension " +
                                       std::to_string(card.dimension));
      }
      const size_t d = static_cast<size_t>(card.dimension);
      std::memcpy(out, pooled.data_ptr<float>(), n * d * sizeof(float));
    } catch (const c10::Error& e) {
      return Status::Internal("TorchScript forward failed: " + TorchMessage(e));
    } catch (const std::exception& e) {
      return Status::Internal(std::string("TorchScript forward failed: ") + e.what());
    }
    if (card.output.l2_normalize) NormalizeRows(out, n);
    return Status::Ok();
  }

  std::string PoolingName() const { return std::string(ToString(card().output.pooling)); }

  // The card's pooling of `y` into [N, D]; InvalidArgument when the output's
  // rank does not fit it.
  Result<torch::Tensor> Pool(const torch::Tensor& y) const {
    const Pooling p = card().output.pooling;
    const double gem_p = card().output.gem_p;
    if (p == Pooling::kNone) {
      // [N,D], or [N,D,1,1] from a conv head.
      bool ok = y.dim() == 2;
      if (!ok && y.dim() > 2) ok = y.numel() == y.size(0) * y.size(1);
      if (!ok) return ShapeError("[N,D]", y);
      return y.flatten(1);
    }
    if (!PoolingAcceptsRank(p, static_cast<size_t>(y.dim()))) {
      return ShapeError(PoolingShapes(p), y);
    }
    if (y.dim() == 4) {  // gap, gmp or gem over the cells
      if (y.size(2) * y.size(3) == 0) return ShapeError(PoolingShapes(p), y);
      if (p == Pooling::kGap) return y.mean({2, 3});
      if (p == Pooling::kGmp) return y.amax({2, 3});
      return y.clamp_min(kGemEps).pow(gem_p).mean({2, 3}).pow(1.0 / gem_p);
    }
    // Token poolings on [N,T,D], the class token first.
    if (y.size(1) < (p == Pooling::kCls ? 1 : 2)) return ShapeError("[N,T,D] (T >= 2)", y);
    if (p == Pooling::kCls) return y.select(1, 0);
    torch::Tensor patches = y.slice(1, 1);
    if (p == Pooling::kMeanTokens) return patches.mean(1);
    return patches.clamp_min(kGemEps).pow(gem_p).mean(1).pow(1.0 / gem_p);
  }

  Status ShapeError(std::string_view expected, const torch::Tensor& y) const {
    return Status::InvalidArgument("pooling \"" + PoolingName() + "\" needs an " +
                                   std::string(expected) + " output, got " + ShapeOf(y));
  }

  void NormalizeRows(float* out, size_t n) const {
    const size_t d = static_cast<size_t>(card().dimension);
    for (size_t i = 0; i < n; ++i) {
      float* row = out + i * d;
      double norm = 0.0;
      for (size_t c = 0; c < d; ++c) norm += static_cast<double>(row[c]) * row[c];
      norm = std::sqrt(norm);
      if (norm > 0.0) {  // an all-zero vector stays zero rather than NaN
        const float inv = static_cast<float>(1.0 / norm);
        for (size_t c = 0; c < d; ++c) row[c] *= inv;
      }
    }
  }

  torch::jit::Module module_;
  const bool bf16_;  // the module's weights are bfloat16: so is the input
  int threads_;      // intra-op threads of a forward pass
};

// Whether the CPU computes in bfloat16 natively (AVX512_BF16 or AMX);
// elsewhere libtorch emulates it, more slowly than fp32.
bool CpuHasBf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    line += ' ';
    return line.find(" avx512_bf16 ") != std::string::npos ||
           line.find(" amx_bf16 ") != std::string::npos;
  }
  return false;
}

// The card's precision applied to `module` (whose weights become bfloat16
// for "bf16"); the card as run, with "fp32" where the CPU lacks bf16.
Result<ModelCard> ApplyPrecision(ModelCard card, torch::jit::Module& module) {
  if (card.precision != Precision::kBf16) return card;
  if (!CpuHasBf16()) {
    std::fprintf(stderr,
                 "pixseek: warning: model '%s' asks for precision bf16, but this CPU has "
                 "neither AVX512_BF16 nor AMX; running it in fp32\n",
                 card.name.c_str());
    card.precision = Precision::kFp32;
    return card;
  }
  try {
    module.to(torch::kBFloat16);
  } catch (const c10::Error& e) {
    return Status::Internal("cannot convert the model to bf16: " + TorchMessage(e));
  }
  return card;
}

// The embedder for a loaded module, checked by one forward pass.
Result<std::unique_ptr<Embedder>> MakeEmbedder(const ModelCard& card, torch::jit::Module module,
                                               const std::filesystem::path& model_file) {
  KeepFreedMemoryForReuse();
  auto embedder = std::make_unique<TorchEmbedder>(card, std::move(module));
  Status check = embedder->SelfCheck();
  if (!check.ok()) return check.WithContext("model " + model_file.filename().string());
  return std::unique_ptr<Embedder>(std::move(embedder));
}

}  // namespace

Result<std::unique_ptr<Embedder>> OpenTorchScript(const ModelCard& card,
                                                  const std::filesystem::path& model_file) {
  torch::jit::Module module;
  try {
    module = torch::jit::load(model_file.string(), torch::kCPU);
    module.eval();
  } catch (const c10::Error& e) {
    return Status::Internal("libtorch cannot load model " + model_file.string() + ": " +
                            TorchMessage(e));
  } catch (const std::exception& e) {
    return Status::Internal("libtorch cannot load model " + model_file.string() + ": " +
                            e.what());
  }
  PIXSEEK_ASSIGN_OR_RETURN(ModelCard run_card, ApplyPrecision(card, module));
  // Freezing (weights become constants, batch norm folded into the convs)
  // and conversion to oneDNN ops: measured 10x faster for ResNet-50 on this
  // CPU, since Debian's libtorch otherwise runs convolutions through the
  // reference BLAS. A module the passes cannot handle runs as loaded.
  try {
    module = torch::jit::optimize_for_inference(module);
  } catch (const std::exception&) {
  }
  return MakeEmbedder(run_card, std::move(module), model_file);
}

Result<std::unique_ptr<Embedder>> OpenOnnxOnTorch(const ModelCard& card,
                                                  const std::filesystem::path& model_file) {
  PIXSEEK_ASSIGN_OR_RETURN(torch::jit::Module module,
                           TranslateQuantizedOnnx(model_file, card.onnx.output_layer, /*channels_last=*/true));
  ModelCard resolved = card;
  resolved.onnx.engine = Engine::kLibtorch;
  PIXSEEK_ASSIGN_OR_RETURN(resolved, ApplyPrecision(std::move(resolved), module));
  // Freezing makes the weights constants of the graph. (Not
  // optimize_for_inference: libtorch 1.13's oneDNN pass computes wrong
  // values for this graph, cosine 0.24 to the unoptimised module, where
  // the channels-last convolutions already run on oneDNN.)
  try {
    module = torch::jit::freeze(module);
  } catch (const c10::Error& e) {
    return Status::Internal("libtorch cannot freeze the translated " + model_file.filename().string() +
                            ": " + TorchMessage(e));
  }
  return MakeEmbedder(resolved, std::move(module), model_file);
}

}  // namespace pixseek

// The plugin's one entry point, looked up by name with dlsym (torch_loader.cc).
extern "C" __attribute__((visibility("default"))) void PixseekOpenTorchScript(
    const pixseek::ModelCard& card, const char* model_file,
    pixseek::Result<std::unique_ptr<pixseek::Embedder>>* out) {
  *out = pixseek::OpenTorchScript(card, model_file);
}

extern "C" __attribute__((visibility("default"))) void PixseekOpenOnnxOnTorch(
    const pixseek::ModelCard& card, const char* model_file,
    pixseek::Result<std::unique_ptr<pixseek::Embedder>>* out) {
  *out = pixseek::OpenOnnxOnTorch(card, model_file);
}


