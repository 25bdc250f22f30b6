// The feature-extraction benchmark behind `pixseek bench embed`: pixseek's
// pipeline (read + decode on worker threads, preprocessing on the same
// workers, the network on batches in the calling thread, all overlapped)
// against a plain Python pipeline with the same model and thread count
// (tools/bench_embed.py, run as a child process).
//
// Prints one JSON object per line:
//   {"pipeline":"pixseek"|"python","stage":"decode"|"forward"|"end_to_end",
//    "images_per_s":X, "images":N, "threads":T, "model":NAME}
// and last {"ratio_vs_python":R} (pixseek end_to_end / python end_to_end,
// null without the Python rows). "decode" is read + decode; "forward" the
// network and pooling on preprocessed batches; "end_to_end" read + decode +
// preprocess + forward + pooling.
#ifndef PIXSEEK_BENCH_EMBED_EMBED_BENCH_H_
#define PIXSEEK_BENCH_EMBED_EMBED_BENCH_H_

#include <cstddef>
#include <filesystem>
#include <ostream>
#include <string>

#include "pixseek/status.h"

namespace pixseek {

struct EmbedBenchOptions {
  // An installed model's name, or the path of a model card JSON (the model
  // file is card.file beside it).
  std::string model;
  std::filesystem::path home;    // registry home for model names
  std::filesystem::path images;  // folder, searched recursively
  int threads = 2;               // decode workers and forward intra-op threads
  size_t limit = 0;              // first N images (sorted paths); 0 = all
  bool python = true;            // also run the Python pipeline
  // Interpreter and script for the Python rows. Empty: $PIXSEEK_PYTHON or
  // /usr/bin/python3 (Debian's, which has torch and cv2), and
  // tools/bench_embed.py of the source tree.
  std::string python_bin;
  std::filesystem::path python_script;
};

// Runs the benchmark and prints the rows to `out`. Errors: NotFound (model,
// folder, no images), the embedder's errors, Internal when the Python
// pipeline fails (its stderr is kept).
Status RunEmbedBench(const EmbedBenchOptions& options, std::ostream& out);

}  // namespace pixseek

#endif  // PIXSEEK_BENCH_EMBED_EMBED_BENCH_H_
