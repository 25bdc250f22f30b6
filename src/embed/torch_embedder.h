// The libtorch embedders, opened by OpenEmbedder for cards with runtime
// "torchscript", and for runtime "onnx" with engine "libtorch" or "auto". Internal to the embed module; libtorch's headers stay
// inside torch_embedder.cc.
#ifndef PIXSEEK_EMBED_TORCH_EMBEDDER_H_
#define PIXSEEK_EMBED_TORCH_EMBEDDER_H_

#include <filesystem>
#include <memory>

#include "pixseek/embedder.h"

namespace pixseek {

// Loads a traced or scripted module, embeds one grey image to check that it
// runs and that the pooled output has card.dimension entries. Errors:
// Internal with libtorch's message (not a TorchScript file, the forward pass
// failed), InvalidArgument (output shape does not fit the card's pooling or
// dimension), Unsupported (built without libtorch-dev).
Result<std::unique_ptr<Embedder>> OpenTorchScript(const ModelCard& card,
                                                  const std::filesystem::path& model_file);

// Runs a quantized ONNX model (QLinearConv and friends, as in the ONNX Model
// Zoo's int8 CNNs) on libtorch: the graph is translated to TorchScript at
// load time (onnx_to_torchscript.h) and run in float on oneDNN. The
// returned embedder's card says engine "libtorch". Errors: Unsupported for
// an operator the translation lacks (named) or a build without libtorch,
// InvalidArgument for a file that is not ONNX or an unknown output_layer.
Result<std::unique_ptr<Embedder>> OpenOnnxOnTorch(const ModelCard& card,
                                                  const std::filesystem::path& model_file);

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_TORCH_EMBEDDER_H_
