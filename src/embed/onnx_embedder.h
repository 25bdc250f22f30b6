// Runtime "onnx": the ONNX embedder on OpenCV DNN, and the choice of engine
// (card.onnx.engine) between it and libtorch (torch_embedder.h). Internal to
// the embed module; OpenCV's headers stay inside onnx_embedder.cc.
#ifndef PIXSEEK_EMBED_ONNX_EMBEDDER_H_
#define PIXSEEK_EMBED_ONNX_EMBEDDER_H_

#include <filesystem>
#include <memory>

#include "pixseek/embedder.h"
#include "pixseek/status.h"

namespace pixseek {

// Opens an ONNX model on the card's engine: "opencv"; "libtorch"
// (OpenOnnxOnTorch); or "auto", libtorch where it can run the model, else
// OpenCV (whose error a broken file then gives). The embedder's card names
// the engine used. Errors: Unsupported (a pooling OpenCV's engine lacks;
// libtorch absent or unable, for engine "libtorch"), InvalidArgument (an
// output_layer the network lacks), Internal (the runtime rejected the model,
// or the dummy forward pass failed, with its message).
Result<std::unique_ptr<Embedder>> OpenOnnxEmbedder(const ModelCard& card,
                                                   const std::filesystem::path& model_file);

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_ONNX_EMBEDDER_H_
