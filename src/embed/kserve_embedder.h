// The remote embedder: the network runs on a server that speaks the KServe v2
// (Open Inference Protocol) HTTP/REST API, such as NVIDIA Triton Inference
// Server; preprocessing and pooling run here, from the card. Opened by
// OpenEmbedder for cards with runtime "kserve". Internal to the embed module;
// cpp-httplib stays inside kserve_embedder.cc.
#ifndef PIXSEEK_EMBED_KSERVE_EMBEDDER_H_
#define PIXSEEK_EMBED_KSERVE_EMBEDDER_H_

#include <memory>

#include "pixseek/embedder.h"

namespace pixseek {

// Checks server readiness, model readiness and the model's metadata against
// the card (input/output names, datatypes, shapes), then embeds one grey
// image to check the output dimension. Errors: Unavailable (server down, not
// ready, timed out; names the server), FailedPrecondition (the metadata does
// not match the card; names the mismatch), NotFound (no such model on the
// server), InvalidArgument/Internal (the server's error message), DataLoss
// (a malformed or truncated reply).
Result<std::unique_ptr<Embedder>> OpenKServeEmbedder(const ModelCard& card);

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_KSERVE_EMBEDDER_H_
