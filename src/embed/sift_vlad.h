// The SIFT-VLAD embedder (runtime "sift-vlad"): RootSIFT descriptors
// aggregated with VLAD over a codebook learned per collection, then power and
// L2 normalisation. Descriptors and the codebook are declared in
// pixseek/feature_fit.h; the codebook is learned in src/train. Internal to
// the embed module.
#ifndef PIXSEEK_EMBED_SIFT_VLAD_H_
#define PIXSEEK_EMBED_SIFT_VLAD_H_

#include <filesystem>
#include <memory>

#include "pixseek/embedder.h"
#include "pixseek/status.h"

namespace pixseek {

// Opens the embedder of a sift-vlad `card` with the codebook file written from
// SiftVladCodebook::Serialize. DataLoss when the file is damaged; InvalidArgument
// when its size does not match card.dimension.
Result<std::unique_ptr<Embedder>> OpenSiftVladEmbedder(const ModelCard& card,
                                                       const std::filesystem::path& codebook_file);

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_SIFT_VLAD_H_
