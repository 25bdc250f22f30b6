// The TorchScript embedder (libtorch) with models exported at test time by
// tools/export_model.py: every pooling against the vector the script computes
// in Python for the same image, batch consistency, the split preprocess /
// forward path, bad files and cards, and the CLI building and querying a
// database with an exported model. Skips when python3-torchvision or libtorch
// is missing.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "core/hash.h"
#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::RunCommand;

const fs::path kScript = fs::path(PIXSEEK_SOURCE_DIR) / "tools" / "export_model.py";

using testing::Python;

bool HaveTorchvision() {
  static const bool have =
      RunCommand({Python(), "-c", "import torch, torchvision"}).exit_code == 0;
  return have;
}

// Whether this build has libtorch: a non-model file gives Internal (libtorch
// rejected it) rather than Unsupported (no libtorch).
bool TorchBuilt() {
  static const bool built = [] {
    testing::TempDir tmp;
    std::ofstream(tmp.path() / "x.pt") << "not a model";
    ModelCard card;
    card.runtime = Runtime::kTorchScript;
    card.dimension = 16;
    auto e = OpenEmbedder(card, tmp.path() / "x.pt");
    return e.status().code() != StatusCode::kUnsupported;
  }();
  return built;
}

#define SKIP_WITHOUT_TORCH()                                                             \
  do {                                                                                   \
    if (!TorchBuilt()) GTEST_SKIP() << "built without libtorch (install libtorch-dev)";  \
    if (!HaveTorchvision()) {                                                            \
      GTEST_SKIP() << Python() << " cannot import torchvision (install python3-torchvision)"; \
    }                                                                                    \
  } while (0)

// Where exported models are kept between test processes (each TEST runs in
// its own process under ctest): keyed by the script's hash, so editing the
// script re-exports.
fs::path ModelCacheDir() {
  return fs::path(PIXSEEK_TEST_BIN_DIR) / "torch_models" /
         Sha256Hex(testing::ReadBytes(kScript)).substr(0, 12);
}

// The test image for the reference vectors: 36 x 36 (the tiny models'
// resize_shorter), so neither side resamples and only the crop is applied.
fs::path ReferenceImage(const fs::path& dir) {
  fs::path png = dir / "reference.png";
  if (!fs::exists(png)) {
    cv::Mat m(36, 36, CV_8UC3);
    cv::RNG rng(7);
    rng.fill(m, cv::RNG::UNIFORM, 0, 256);
    const fs::path tmp = dir / ("reference." + std::to_string(::getpid()) + ".png");
    cv::imwrite(tmp.string(), m);
    fs::rename(tmp, png);
  }
  return png;
}

struct Exported {
  fs::path model;      // DIR/<name>.pt
  ModelCard card;      // from DIR/<name>.pt.json
  std::vector<float> reference;
};

// Exports `arch` with `flags` once (cached), with the reference vector.
Exported Export(const std::string& arch, const std::vector<std::string>& flags) {
  const fs::path root = ModelCacheDir();
  fs::create_directories(root);
  std::string key = arch;
  for (const auto& f : flags) key += f;
  const fs::path dir = root / key;
  const fs::path image = ReferenceImage(root);
  if (!fs::exists(dir / "done")) {
    const fs::path tmp = root / (key + ".tmp" + std::to_string(::getpid()));
    std::vector<std::string> argv = {Python(), kScript.string(), arch, "--out", tmp.string(),
                                     "--reference", image.string()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::ofstream(tmp / "done") << r.out;
    std::error_code ec;
    fs::rename(tmp, dir, ec);  // another process may have won the race
    if (ec) fs::remove_all(tmp, ec);
  }
  Exported e;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".pt") e.model = entry.path();
  }
  std::ifstream card_in(e.model.string() + ".json");
  std::string card_text((std::istreambuf_iterator<char>(card_in)), {});
  auto card = ModelCard::FromJson(card_text);
  EXPECT_TRUE(card.ok()) << card.status().ToString();
  if (card.ok()) e.card = *card;
  std::ifstream ref_in(e.model.string() + ".reference.json");
  e.reference = json::parse(ref_in)["vector"].get<std::vector<float>>();
  return e;
}

Image DecodeFile(const fs::path& path) {
  auto bytes = testing::ReadBytes(path);
  auto decoded = DecodeImage(bytes);
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  return decoded.ok() ? decoded->image : Image{};
}

Image Synthetic(uint32_t seed, int w, int h) {
  auto bytes = testing::SyntheticImage(".png", w, h, 40 * seed % 256, 90, 200, seed);
  auto decoded = DecodeImage(bytes);
  EXPECT_TRUE(decoded.ok());
  return decoded->image;
}

double Norm(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

struct Variant {
  const char* arch;
  std::vector<std::string> flags;
  const char* pooling;  // what the card says
  int dimension;
};

class TorchPoolingTest : public ::testing::TestWithParam<Variant> {};

// The C++ embedder (OpenCV preprocessing, libtorch forward, pooling here)
// gives the vector that torchvision's transforms, the same module and the
// script's pooling give in Python.
TEST_P(TorchPoolingTest, MatchesPythonReference) {
  SKIP_WITHOUT_TORCH();
  const Variant& v = GetParam();
  Exported e = Export(v.arch, v.flags);
  ASSERT_FALSE(e.model.empty());
  EXPECT_EQ(e.card.runtime, Runtime::kTorchScript);
  EXPECT_EQ(ToString(e.card.output.pooling), v.pooling);
  EXPECT_EQ(e.card.dimension, v.dimension);
  auto embedder = OpenEmbedder(e.card, e.model);
  ASSERT_TRUE(embedder.ok()) << embedder.status().ToString();
  ASSERT_EQ((*embedder)->dimension(), v.dimension);

  Image image = DecodeFile(ModelCacheDir() / "reference.png");
  std::vector<float> out(v.dimension);
  const Image* images[] = {&image};
  ASSERT_TRUE((*embedder)->Embed(images, out.data()).ok());
  EXPECT_NEAR(Norm(out), 1.0, 1e-5);
  ASSERT_EQ(e.reference.size(), out.size());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], e.reference[i], 2e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(
    Poolings, TorchPoolingTest,
    ::testing::Values(Variant{"tiny_cnn", {"--pooling", "gap"}, "gap", 16},
                      Variant{"tiny_cnn", {"--pooling", "gem", "--gem-p", "2.5"}, "gem", 16},
                      Variant{"tiny_cnn", {"--pooling", "gem", "--learnable-gem"}, "none", 16},
                      Variant{"tiny_vit", {"--pooling", "cls"}, "cls", 32},
                      Variant{"tiny_vit", {"--pooling", "mean_tokens"}, "mean_tokens", 32},
                      Variant{"tiny_vit", {"--pooling", "gem"}, "gem", 32}),
    [](const ::testing::TestParamInfo<Variant>& info) {
      std::string name = std::string(info.param.arch) + "_" + info.param.pooling;
      if (info.param.flags.size() > 2) name += "_" + std::to_string(info.index);
      return name;
    });

// Any batch size, and the split Preprocess + EmbedPreprocessed path, give
// the same vectors as one image at a time.
// precision bf16: the same model within cosine 0.99 of the fp32 reference
// where the CPU computes bf16 (the card then says bf16), exact otherwise.
TEST(TorchEmbedTest, Bf16IsCloseToTheReference) {
  SKIP_WITHOUT_TORCH();
  for (const char* arch : {"tiny_cnn", "tiny_vit"}) {
    Exported e = Export(arch, {"--pooling", std::string(arch) == "tiny_cnn" ? "gap" : "cls"});
    e.card.precision = Precision::kBf16;
    auto embedder = OpenEmbedder(e.card, e.model);
    ASSERT_TRUE(embedder.ok()) << embedder.status().ToString();
    const std::string ran(ToString((*embedder)->card().precision));
    Image image = DecodeFile(ModelCacheDir() / "reference.png");
    std::vector<float> out(static_cast<size_t>(e.card.dimension));
    const Image* images[] = {&image};
    ASSERT_TRUE((*embedder)->Embed(images, out.data()).ok());
    double dot = 0;
    for (size_t i = 0; i < out.size(); ++i) dot += static_cast<double>(out[i]) * e.reference[i];
    EXPECT_GT(dot, ran == "bf16" ? 0.99 : 0.99999) << arch << " " << ran;
  }
}

TEST(TorchEmbedTest, BatchesAndSplitPathAgree) {
  SKIP_WITHOUT_TORCH();
  Exported e = Export("tiny_vit", {"--pooling", "mean_tokens"});
  ModelCard card = e.card;
  card.max_batch = 2;  // 5 images: batches of 2, 2, 1
  auto opened = OpenEmbedder(card, e.model);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Embedder& embedder = **opened;
  std::vector<Image> images;
  for (uint32_t s = 1; s <= 5; ++s) images.push_back(Synthetic(s, 50 + 13 * s, 40 + 7 * s));
  std::vector<const Image*> ptrs;
  for (const auto& im : images) ptrs.push_back(&im);
  const size_t d = static_cast<size_t>(embedder.dimension());
  std::vector<float> batched(5 * d), single(5 * d), split(5 * d);
  ASSERT_TRUE(embedder.Embed(ptrs, batched.data()).ok());
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(embedder.Embed(std::span(&ptrs[i], 1), single.data() + i * d).ok());
  }
  ASSERT_EQ(embedder.preprocessed_size(), 3u * 32 * 32);
  std::vector<float> input(5 * embedder.preprocessed_size());
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(embedder.Preprocess(images[i], input.data() + i * embedder.preprocessed_size()).ok());
  }
  embedder.SetThreads(1);
  ASSERT_TRUE(embedder.EmbedPreprocessed(input.data(), 5, split.data()).ok());
  for (size_t i = 0; i < 5 * d; ++i) {
    EXPECT_NEAR(batched[i], single[i], 1e-5) << i;
    EXPECT_NEAR(split[i], single[i], 1e-6) << i;
  }
  // Different images give different vectors (the model is not constant).
  double dot = 0;
  for (size_t c = 0; c < d; ++c) dot += single[c] * single[d + c];
  EXPECT_LT(dot, 0.9999);

  Image empty;
  const Image* bad[] = {&empty};
  EXPECT_EQ(embedder.Embed(bad, batched.data()).code(), StatusCode::kInvalidArgument);
}

TEST(TorchEmbedTest, BadFilesAreRejectedCleanly) {
  SKIP_WITHOUT_TORCH();
  Exported e = Export("tiny_cnn", {"--pooling", "gap"});
  testing::TempDir tmp;
  auto open = [&](const fs::path& file) { return OpenEmbedder(e.card, file).status(); };

  EXPECT_EQ(open(tmp.path() / "missing.pt").code(), StatusCode::kNotFound);

  std::ofstream(tmp.path() / "text.pt") << "this is not a TorchScript archive";
  Status s = open(tmp.path() / "text.pt");
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  EXPECT_NE(s.message().find("libtorch cannot load model"), std::string::npos) << s.ToString();

  testing::WriteBytes(tmp.path() / "empty.pt", {});
  EXPECT_EQ(open(tmp.path() / "empty.pt").code(), StatusCode::kInternal);

  auto bytes = testing::ReadBytes(e.model);
  bytes.resize(bytes.size() / 2);
  testing::WriteBytes(tmp.path() / "truncated.pt", bytes);
  s = open(tmp.path() / "truncated.pt");
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();

  // An ONNX file under a torchscript card is not a TorchScript archive either.
  if (auto onnx = testing::SharedMobilenet()) {
    EXPECT_EQ(open(*onnx).code(), StatusCode::kInternal);
  }
}

TEST(TorchEmbedTest, CardThatDoesNotFitTheModelIsRejectedAtOpen) {
  SKIP_WITHOUT_TORCH();
  Exported cnn = Export("tiny_cnn", {"--pooling", "gap"});
  ModelCard card = cnn.card;
  card.dimension = 17;  // the model gives 16
  Status s = OpenEmbedder(card, cnn.model).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("dimension"), std::string::npos) << s.ToString();

  card = cnn.card;
  card.output.pooling = Pooling::kCls;  // a conv map has no tokens
  s = OpenEmbedder(card, cnn.model).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("[N,T,D]"), std::string::npos) << s.ToString();

  Exported vit = Export("tiny_vit", {"--pooling", "cls"});
  card = vit.card;
  card.output.pooling = Pooling::kGap;  // tokens are not a conv map
  EXPECT_EQ(OpenEmbedder(card, vit.model).status().code(), StatusCode::kInvalidArgument);
  card = vit.card;
  card.preprocess.input_width = card.preprocess.input_height = 48;  // the traced ViT only takes 32 x 32
  card.preprocess.resize_shorter = 48;
  s = OpenEmbedder(card, vit.model).status();
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  EXPECT_NE(s.message().find("TorchScript forward failed"), std::string::npos) << s.ToString();
}

// `pixseek model import DIR/<file>` finds the card the script wrote beside
// the file; a database built with the model answers queries.
TEST(TorchEmbedTest, CliBuildsAndQueriesWithAnExportedModel) {
  SKIP_WITHOUT_TORCH();
  Exported e = Export("tiny_cnn", {"--pooling", "gem"});
  testing::TempDir tmp;
  const fs::path home = tmp.path() / "home", images = tmp.path() / "images",
                 db = tmp.path() / "db";
  auto pixseek = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {PIXSEEK_BINARY, "--home", home.string()});
    return RunCommand(args);
  };
  auto r = pixseek({"model", "import", e.model.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["name"], e.card.name) << r.out;

  for (int i = 0; i < 8; ++i) {
    const char* label = i % 2 ? "blue" : "orange";
    fs::create_directories(images / label);
    testing::WriteBytes(images / label / ("p" + std::to_string(i) + ".jpg"),
                        testing::SyntheticImage(".jpg", 120, 90, i % 2 ? 20 : 240,
                                                i % 2 ? 40 : 140, i % 2 ? 220 : 20, i + 1));
  }
  r = pixseek({"build", images.string(), "--db", db.string(), "--model", e.card.name, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = pixseek({"stats", "--db", db.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 8);

  const fs::path query = images / "blue" / "p3.jpg";
  r = pixseek({"query", query.string(), "--db", db.string(), "-k", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json answer = json::parse(r.out);
  ASSERT_EQ(answer["results"].size(), 3u);
  EXPECT_EQ(answer["results"][0]["path"], fs::canonical(query).string());
  EXPECT_NEAR(answer["results"][0]["score"].get<double>(), 1.0, 1e-4);
}

// `pixseek bench embed` prints the pixseek and Python rows for each stage as
// JSON lines and the ratio last.
TEST(TorchEmbedTest, BenchEmbedPrintsBothPipelines) {
  SKIP_WITHOUT_TORCH();
  Exported e = Export("tiny_cnn", {"--pooling", "gap"});
  testing::TempDir tmp;
  for (int i = 0; i < 6; ++i) {
    testing::WriteBytes(tmp.path() / ("b" + std::to_string(i) + ".jpg"),
                        testing::SyntheticImage(".jpg", 80, 60, 30 * i, 100, 200, i + 1));
  }
  auto r = RunCommand({PIXSEEK_BINARY, "bench", "embed", "--model", e.model.string() + ".json",
                       "--images", tmp.path().string(), "--threads", "1", "--limit", "5",
                       "--python", Python()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<json> rows;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 7u) << r.out;
  std::set<std::string> seen;
  for (size_t i = 0; i < 6; ++i) {
    seen.insert(rows[i]["pipeline"].get<std::string>() + "/" + rows[i]["stage"].get<std::string>());
    EXPECT_GT(rows[i]["images_per_s"].get<double>(), 0.0) << rows[i];
    EXPECT_EQ(rows[i]["images"], 5) << rows[i];
  }
  EXPECT_EQ(seen, (std::set<std::string>{"pixseek/decode", "pixseek/forward", "pixseek/end_to_end",
                                         "python/decode", "python/forward", "python/end_to_end"}));
  EXPECT_GT(rows[6]["ratio_vs_python"].get<double>(), 0.0) << r.out;
}

}  // namespace
}  // namespace pixseek
