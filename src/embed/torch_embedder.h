// The TorchScript embedder (libtorch), opened by OpenEmbedder for cards with
// runtime "torchscript". Internal to the embed module; libtorch's headers stay
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

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_TORCH_EMBEDDER_H_
