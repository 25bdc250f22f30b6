// Feature extraction: the Embedder interface and the model card that drives it.
#ifndef PIXSEEK_EMBEDDER_H_
#define PIXSEEK_EMBEDDER_H_

#include <array>
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
  std::string runtime = "onnx";     // "onnx" (OpenCV DNN); later "torchscript", ...
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
  std::string pooling = "gap";      // "gap" (mean over HxW), "gmp", or "none" (already a vector)
  int dimension = 0;                // length of the final vector
  bool l2_normalize = true;
  int max_batch = 16;               // largest batch one forward pass takes

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
};

// Opens the model described by `card`, whose file is `model_file`. Checks the
// output dimension against card.dimension with one dummy forward pass.
// Errors: NotFound (no file), InvalidArgument (card), Unsupported (runtime),
// Internal (the runtime rejected the model, with its message).
Result<std::unique_ptr<Embedder>> OpenEmbedder(
    const ModelCard& card, const std::filesystem::path& model_file);

}  // namespace pixseek

#endif  // PIXSEEK_EMBEDDER_H_
