// `pixseek bench embed`: see embed_bench.h. The pixseek pipeline uses only
// the public Embedder API (Preprocess on worker threads, EmbedPreprocessed on
// batches), so it measures what the build pipeline can reach.
#include "core/bounded_queue.h"
#include "bench_embed/embed_bench.h"

#include <stdio.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/files.h"
#include "core/parallel.h"
#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/model_registry.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

bool IsImageFile(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* kExts[] = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

// Image files under `root`, sorted, at most `limit` (0 = all).
Result<std::vector<fs::path>> ListImages(const fs::path& root, size_t limit) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return Status::NotFound(root.string() + " is not a directory");
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(
           root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && IsImageFile(it->path())) files.push_back(it->path());
  }
  if (ec) return Status::Internal("cannot list " + root.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());
  if (limit > 0 && files.size() > limit) files.resize(limit);
  if (files.empty()) return Status::NotFound("no images under " + root.string());
  return files;
}

struct ResolvedModel {
  ModelCard card;
  fs::path card_path;
  fs::path model_file;
};

Result<ResolvedModel> ResolveModel(const EmbedBenchOptions& options) {
  ResolvedModel m;
  std::error_code ec;
  if (fs::is_regular_file(options.model, ec)) {
    m.card_path = options.model;
    PIXSEEK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(m.card_path));
    Result<ModelCard> card = ModelCard::FromJson(text);
    if (!card.ok()) return card.status().WithContext(m.card_path.string());
    m.card = std::move(card).value();
    m.model_file = m.card_path.parent_path() / m.card.file;
    return m;
  }
  ModelRegistry registry(options.home);
  PIXSEEK_ASSIGN_OR_RETURN(InstalledModel installed, registry.Find(options.model));
  m.card = installed.card;
  m.card_path = installed.dir / "card.json";
  m.model_file = installed.model_file;
  return m;
}

// Decoding as the database does it: JPEGs shrunk in the DCT domain to about
// what preprocessing needs.
DecodeOptions DecodeFor(const ModelCard& c) {
  DecodeOptions o;
  int need = std::min(c.preprocess.input_width, c.preprocess.input_height);
  if (c.preprocess.crop == Crop::kCenter) need = std::max(need, c.preprocess.resize_shorter);
  o.min_short_side = need;
  return o;
}

// One preprocessed image, or why it failed.
struct Item {
  std::vector<float> tensor;
  Status status;
};


Status ReadAndDecode(const fs::path& path, const DecodeOptions& decode, Image* image) {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           ReadFileLimited(path, decode.limits.max_bytes));
  PIXSEEK_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImage(bytes, decode));
  *image = std::move(decoded.image);
  return Status::Ok();
}

// Read + decode of every file on `threads` workers; images per second.
double BenchDecode(const std::vector<fs::path>& files, const DecodeOptions& decode,
                   int threads) {
  const auto start = Clock::now();
  ParallelFor(files.size(), threads, [&](size_t i) {
    Image image;
    (void)ReadAndDecode(files[i], decode, &image);  // failures count as done
  });
  return static_cast<double>(files.size()) / Seconds(start);
}

// The network and pooling alone, on one batch of real preprocessed images
// run as many times as the files fill batches.
Result<double> BenchForward(Embedder& embedder, const std::vector<fs::path>& files,
                            const DecodeOptions& decode) {
  const size_t per = embedder.preprocessed_size();
  const size_t batch = std::min(files.size(), static_cast<size_t>(embedder.card().max_batch));
  std::vector<float> input(batch * per);
  for (size_t i = 0; i < batch; ++i) {
    Image image;
    PIXSEEK_RETURN_IF_ERROR(ReadAndDecode(files[i], decode, &image).WithContext(files[i].string()));
    PIXSEEK_RETURN_IF_ERROR(embedder.Preprocess(image, input.data() + i * per));
  }
  std::vector<float> out(batch * static_cast<size_t>(embedder.dimension()));
  // Warm-up: TorchScript's profiling executor optimises over the first runs.
  for (int i = 0; i < 2; ++i) {
    PIXSEEK_RETURN_IF_ERROR(embedder.EmbedPreprocessed(input.data(), batch, out.data()));
  }
  const auto start = Clock::now();
  for (size_t done = 0; done < files.size(); done += batch) {
    const size_t n = std::min(batch, files.size() - done);
    PIXSEEK_RETURN_IF_ERROR(embedder.EmbedPreprocessed(input.data(), n, out.data()));
  }
  return static_cast<double>(files.size()) / Seconds(start);
}

// The whole pipeline: workers read, decode and preprocess; this thread runs
// full batches through the network as they fill.
Result<double> BenchEndToEnd(Embedder& embedder, const std::vector<fs::path>& files,
                             const DecodeOptions& decode, int threads, size_t* failed) {
  const size_t per = embedder.preprocessed_size();
  const size_t batch = static_cast<size_t>(embedder.card().max_batch);
  const size_t dim = static_cast<size_t>(embedder.dimension());
  const auto start = Clock::now();
  BoundedQueue<Item> queue(2 * batch);
  std::thread producers([&] {
    ParallelFor(files.size(), threads, [&](size_t i) {
      Item item;
      Image image;
      item.status = ReadAndDecode(files[i], decode, &image);
      if (item.status.ok()) {
        item.tensor.resize(per);
        item.status = embedder.Preprocess(image, item.tensor.data());
      }
      queue.Push(std::move(item));
    });
    queue.Close();
  });
  std::vector<float> input(batch * per), out(batch * dim);
  Status status;
  size_t n = 0;
  auto flush = [&] {
    if (n > 0 && status.ok()) status = embedder.EmbedPreprocessed(input.data(), n, out.data());
    n = 0;
  };
  *failed = 0;
  while (std::optional<Item> item = queue.Pop()) {
    if (!item->status.ok()) {
      ++*failed;
      continue;
    }
    std::copy(item->tensor.begin(), item->tensor.end(), input.begin() + n * per);
    if (++n == batch) flush();
  }
  flush();
  producers.join();
  PIXSEEK_RETURN_IF_ERROR(status);
  return static_cast<double>(files.size()) / Seconds(start);
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string DefaultPython() {
  if (const char* env = std::getenv("PIXSEEK_PYTHON"); env != nullptr && env[0] != '\0') {
    return env;
  }
  std::error_code ec;
  return fs::exists("/usr/bin/python3", ec) ? "/usr/bin/python3" : "python3";
}

// Runs the Python pipeline and returns its rows.
Result<std::vector<nlohmann::ordered_json>> RunPython(const EmbedBenchOptions& options, const ResolvedModel& model) {
  const std::string python = options.python_bin.empty() ? DefaultPython() : options.python_bin;
  const fs::path script = options.python_script.empty()
                              ? fs::path(PIXSEEK_SOURCE_DIR) / "tools" / "bench_embed.py"
                              : options.python_script;
  std::error_code ec;
  if (!fs::is_regular_file(script, ec)) {
    return Status::NotFound("the Python pipeline " + script.string() +
                            " is missing (give --python-script, or --no-python)");
  }
  std::string cmd = ShellQuote(python) + " " + ShellQuote(script.string()) + " --card " +
                    ShellQuote(model.card_path.string()) + " --model-file " +
                    ShellQuote(model.model_file.string()) + " --images " +
                    ShellQuote(options.images.string()) + " --threads " +
                    std::to_string(options.threads) + " --limit " +
                    std::to_string(options.limit) + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return Status::Internal("cannot run " + python);
  std::string output;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output.append(buf, got);
  const int rc = ::pclose(pipe);
  std::vector<nlohmann::ordered_json> rows;
  size_t start = 0;
  while (start < output.size()) {
    size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] != '{') continue;
    auto row = nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_object() && row.contains("pipeline")) rows.push_back(std::move(row));
  }
  if (rc != 0 || rows.empty()) {
    if (output.size() > 2000) output = "..." + output.substr(output.size() - 2000);
    return Status::Internal("the Python pipeline (" + python + " " + script.string() +
                            ") failed: " + output);
  }
  return rows;
}

}  // namespace

Status RunEmbedBench(const EmbedBenchOptions& options, std::ostream& out) {
  if (options.threads < 1) return Status::InvalidArgument("--threads must be at least 1");
  PIXSEEK_ASSIGN_OR_RETURN(ResolvedModel model, ResolveModel(options));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<fs::path> files, ListImages(options.images, options.limit));
  PIXSEEK_ASSIGN_OR_RETURN(std::unique_ptr<Embedder> embedder,
                           OpenEmbedder(model.card, model.model_file));
  if (embedder->preprocessed_size() == 0) {
    return Status::Unsupported("runtime " + std::string(ToString(model.card.runtime)) +
                               " has no separate preprocessing step to benchmark");
  }
  embedder->SetThreads(options.threads);
  const DecodeOptions decode = DecodeFor(model.card);

  auto row = [&](const char* pipeline, const char* stage, double rate) {
    nlohmann::ordered_json r = {{"pipeline", pipeline},
                                {"stage", stage},
                                {"images_per_s", std::round(rate * 100.0) / 100.0},
                                {"images", files.size()},
                                {"threads", options.threads},
                                {"model", model.card.name}};
    out << r.dump() << std::endl;
  };
  // Page cache warm for every stage alike (and for Python after us).
  const double decode_rate = BenchDecode(files, decode, options.threads);
  row("pixseek", "decode", decode_rate);
  PIXSEEK_ASSIGN_OR_RETURN(double forward_rate, BenchForward(*embedder, files, decode));
  row("pixseek", "forward", forward_rate);
  size_t failed = 0;
  PIXSEEK_ASSIGN_OR_RETURN(double e2e_rate,
                           BenchEndToEnd(*embedder, files, decode, options.threads, &failed));
  row("pixseek", "end_to_end", e2e_rate);
  if (failed > 0) {
    out << json({{"pipeline", "pixseek"}, {"failed_images", failed}}).dump() << std::endl;
  }

  json ratio = nullptr;
  if (options.python) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<nlohmann::ordered_json> rows,
                             RunPython(options, model));
    for (const auto& r : rows) {
      out << r.dump() << std::endl;
      if (r.value("stage", "") == "end_to_end" && r.value("images_per_s", 0.0) > 0.0) {
        ratio = std::round(e2e_rate / r["images_per_s"].get<double>() * 1000.0) / 1000.0;
      }
    }
  }
  out << json({{"ratio_vs_python", ratio}}).dump() << std::endl;
  return Status::Ok();
}

}  // namespace pixseek
