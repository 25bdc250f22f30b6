// Card-driven preprocessing and pooling shared by every embedder that runs a
// network on an NCHW float tensor (ONNX locally, KServe/Triton remotely, ...),
// so that the same card gives the same input tensor and the same vectors
// whichever runtime executes the network. Internal to the embed module.
#ifndef PIXSEEK_EMBED_PREPROCESS_H_
#define PIXSEEK_EMBED_PREPROCESS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <string>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

// InvalidArgument when images[index] is null, empty, or its buffer does not
// hold width * height * 3 bytes.
Status CheckEmbedImage(const Image* image, size_t index);

// Resizes and crops `image` as `spec` says and writes the normalised
// channels, in its channel order, to three planes at `dst` (each
// input_height x input_width floats). `image` must have passed
// CheckEmbedImage. May throw cv::Exception (callers catch at their boundary).
void PreprocessImage(const PreprocessSpec& spec, const Image& image, float* dst);

// "[2,1280,7,7]".
std::string ShapeToString(std::span<const int64_t> shape);

// The pooling rules, one table for every runtime: the output shapes a
// pooling takes ("[N,C,H,W] or [N,T,D]" for messages) and whether it takes
// an output of this rank.
std::string_view PoolingShapes(Pooling pooling);
bool PoolingAcceptsRank(Pooling pooling, size_t rank);

// Pools a network output of `shape` into N rows of card.dimension floats at
// `out`, L2-normalised when card.output says so: "gap"/"gmp"/"gem" over the
// cells of [N,C,H,W]; "cls" (token 0), "mean_tokens" or "gem" over the patch
// tokens 1..T-1 of [N,T,D]; "none" for [N,D] or [N,D,1,1]. `data` holds the
// product of `shape` floats, row-major. InvalidArgument names the shape when
// it does not fit the card or the expected batch `n`.
Status PoolFeatures(const ModelCard& card, const float* data, std::span<const int64_t> shape,
                    int n, float* out);

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_PREPROCESS_H_
