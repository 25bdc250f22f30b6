// TrainBackbone (the plugin pixseek_train.so) on a random-weight ResNet-18
// exported at test time at a 64 px input, trained on synthetic pictures of
// four colours: the estimate comes first, only the last block changes, the
// written network loads in the TorchScript embedder, cancel keeps the base
// network, bad input is InvalidArgument and ONNX models are refused with the
// reason. Skips without the plugin (libtorch) or python3-torchvision.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>

#include "core/hash.h"
#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/train.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using testing::Python;
using testing::RunCommand;
using testing::TempDir;

constexpr int kSide = 64;
constexpr int kDimension = 512;  // ResNet-18's last conv map

// torchvision's ResNet-18 without avgpool and fc (as tools/export_model.py
// exports ResNet-50), random weights, traced at kSide px.
constexpr char kExportScript[] = R"(
import sys, torch, torch.nn as nn, torchvision
torch.manual_seed(0)
class ConvFeatures(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body
    def forward(self, x):
        return self.body(x)
net = torchvision.models.resnet18(weights=None)
features = ConvFeatures(nn.Sequential(*list(net.children())[:-2])).eval()
traced = torch.jit.trace(features, torch.zeros(1, 3, 64, 64))
traced.save(sys.argv[1])
)";

// The exported model, once per script version (each TEST runs in its own
// process under ctest); nullopt when torchvision is missing.
std::optional<fs::path> ExportedResNet18() {
  const std::string script = kExportScript;
  const fs::path dir = fs::path(PIXSEEK_TEST_BIN_DIR) / "backbone_models" /
                       Sha256Hex(std::vector<uint8_t>(script.begin(), script.end())).substr(0, 12);
  const fs::path model = dir / "resnet18.pt";
  if (fs::exists(model)) return model;
  if (RunCommand({Python(), "-c", "import torch, torchvision"}).exit_code != 0) return {};
  fs::create_directories(dir);
  const fs::path tmp = dir / ("resnet18.pt.tmp" + std::to_string(::getpid()));
  auto r = RunCommand({Python(), "-c", kExportScript, tmp.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  fs::rename(tmp, model);
  return model;
}

ModelCard ResNetCard() {
  ModelCard card;
  card.name = "resnet18-test";
  card.runtime = Runtime::kTorchScript;
  card.file = "resnet18.pt";
  card.dimension = kDimension;
  card.max_batch = 16;
  card.preprocess.input_width = card.preprocess.input_height = kSide;
  card.preprocess.resize_shorter = 72;
  card.output.pooling = Pooling::kGap;
  return card;
}

// `per_class` encoded pictures of each of four base colours; label = colour.
// The decode function owns the encoded files.
LabelledImages MakePictures(int per_class, uint32_t seed) {
  // Colours 50 levels apart under shapes up to 60 levels off them: the
  // random network does not tell the classes apart perfectly, so
  // fine-tuning has something to learn.
  static const int kColours[4][3] = {{150, 100, 100}, {100, 150, 100}, {100, 100, 150},
                                     {140, 140, 90}};
  auto files = std::make_shared<std::vector<std::vector<uint8_t>>>();
  LabelledImages p;
  for (int c = 0; c < 4; ++c) {
    for (int i = 0; i < per_class; ++i) {
      files->push_back(testing::SyntheticImage(".png", 80, 80, kColours[c][0], kColours[c][1],
                                               kColours[c][2], seed + 100 * c + i));
      p.labels.push_back(c);
    }
  }
  p.size = files->size();
  p.decode = [files](size_t i) -> std::optional<Image> {
    auto decoded = DecodeImage((*files)[i]);
    if (!decoded.ok()) return std::nullopt;
    return decoded->image;
  };
  return p;
}

BackboneTrainOptions SmallRun() {
  BackboneTrainOptions o;
  o.trainable_blocks = 1;
  o.learning_rate = 3e-4f;
  o.metric.epochs = 2;
  o.metric.patience = 2;
  o.metric.batch_classes = 4;
  o.metric.per_class = 2;  // 6 steps an epoch
  o.metric.threads = 2;
  return o;
}

std::map<std::string, torch::Tensor> Parameters(const fs::path& file) {
  std::map<std::string, torch::Tensor> out;
  torch::jit::Module m = torch::jit::load(file.string());
  for (const auto& p : m.named_parameters()) out[p.name] = p.value.detach().clone();
  return out;
}

class BackboneTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Bad options reach the plugin's checks: Unsupported means no plugin.
    BackboneTrainOptions bad;
    bad.trainable_blocks = 0;
    auto probe = TrainBackbone(ResNetCard(), "x.pt", train_, validation_, bad,
                               dir_.path() / "out.pt");
    if (probe.status().code() == StatusCode::kUnsupported) {
      GTEST_SKIP() << "no training plugin: " << probe.status().message();
    }
  }

  fs::path out() const { return dir_.path() / "tuned.pt"; }

  TempDir dir_;
  LabelledImages train_ = MakePictures(12, 1);
  // Pictures trained on, so that two epochs surely improve on them.
  LabelledImages validation_ = MakePictures(4, 1);
};

TEST_F(BackboneTrainingTest, TrainsOnlyTheLastBlockAndWritesALoadableNetwork) {
  auto model = ExportedResNet18();
  if (!model) GTEST_SKIP() << Python() << " cannot import torchvision";
  BackboneTrainOptions options = SmallRun();
  int estimates = 0;
  int epochs_reported = 0;
  options.on_estimate = [&](double epoch_s, double images_s) {
    ++estimates;
    EXPECT_EQ(epochs_reported, 0) << "the estimate comes before any epoch";
    EXPECT_GT(epoch_s, 0);
    EXPECT_GT(images_s, 0);
  };
  options.metric.on_epoch = [&](const EpochReport& r) {
    EXPECT_EQ(r.epoch, epochs_reported++);
    EXPECT_EQ(r.epochs, 2);
  };

  auto result = TrainBackbone(ResNetCard(), *model, train_, validation_, options,
                              out());
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(estimates, 1);
  EXPECT_EQ(result->epochs_run, 2);
  EXPECT_EQ(result->history.size(), 3u);  // epoch 0 = the base network
  EXPECT_EQ(epochs_reported, 3);
  EXPECT_GT(result->images_per_second, 0);
  std::string maps;
  for (const auto& h : result->history) {
    maps += " " + std::to_string(h.validation_map) + " (loss " + std::to_string(h.loss) + ")";
  }
  ASSERT_FALSE(result->keeps_base) << "validation mAP by epoch:" << maps;
  EXPECT_GT(result->validation_map_best, result->validation_map_base);
  EXPECT_EQ(result->model_file, out());

  // "body.7" is layer4; with one trainable block only layer4.1 learns.
  auto before = Parameters(*model);
  auto after = Parameters(out());
  ASSERT_EQ(before.size(), after.size());
  for (const char* frozen : {"body.0.weight", "body.1.weight", "body.7.0.conv1.weight"}) {
    EXPECT_TRUE(torch::equal(before.at(frozen), after.at(frozen))) << frozen;
  }
  EXPECT_FALSE(torch::equal(before.at("body.7.1.conv2.weight"), after.at("body.7.1.conv2.weight")));

  auto embedder = OpenEmbedder(ResNetCard(), out());
  ASSERT_TRUE(embedder.ok()) << embedder.status().ToString();
  Image image = *validation_.decode(0);
  const Image* images[] = {&image};
  std::vector<float> v(kDimension);
  ASSERT_TRUE((*embedder)->Embed(images, v.data()).ok());
  double norm = 0;
  for (float x : v) norm += x * x;
  EXPECT_NEAR(norm, 1.0, 1e-4);
}

TEST_F(BackboneTrainingTest, CancelKeepsTheBaseNetwork) {
  auto model = ExportedResNet18();
  if (!model) GTEST_SKIP() << Python() << " cannot import torchvision";
  std::atomic<bool> cancel{true};
  BackboneTrainOptions options = SmallRun();
  options.metric.cancel = &cancel;
  auto result = TrainBackbone(ResNetCard(), *model, train_, validation_, options,
                              out());
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_TRUE(result->cancelled);
  EXPECT_EQ(result->epochs_run, 0);
  EXPECT_TRUE(result->keeps_base);
  EXPECT_FALSE(fs::exists(out()));
}

TEST_F(BackboneTrainingTest, RejectsBadInput) {
  BackboneTrainOptions options = SmallRun();
  options.trainable_blocks = 0;
  auto r = TrainBackbone(ResNetCard(), "x.pt", train_, validation_, options, out());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();

  LabelledImages short_labels = train_;
  short_labels.labels.pop_back();
  r = TrainBackbone(ResNetCard(), "x.pt", short_labels, validation_, SmallRun(), out());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();

  ModelCard sift;
  sift.runtime = Runtime::kSiftVlad;
  sift.dimension = 128;
  r = TrainBackbone(sift, "x", train_, validation_, SmallRun(), out());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << r.status().ToString();
}

// A float ONNX model does not translate to TorchScript; a quantized one
// does, but its weights are constants: both are refused, saying why.
TEST_F(BackboneTrainingTest, OnnxModelsAreRefusedWithTheReason) {
  testing::WriteBytes(dir_.path() / "tiny.onnx", testing::MakeTinyOnnxModel(16, 7));
  auto tiny = ModelCard::FromJson(testing::TinyModelCardJson(16, "tiny.onnx"));
  ASSERT_TRUE(tiny.ok());
  auto r = TrainBackbone(*tiny, dir_.path() / "tiny.onnx", train_, validation_,
                         SmallRun(), out());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << r.status().ToString();
  EXPECT_NE(r.status().message().find("only quantized (QLinear) ONNX models"), std::string::npos)
      << r.status().message();

  if (RunCommand({Python(), "-c", "import onnx, numpy"}).exit_code != 0) {
    GTEST_SKIP() << Python() << " cannot import onnx (install python3-onnx)";
  }
  const fs::path script = fs::path(PIXSEEK_SOURCE_DIR) / "tests" / "make_qlinear_onnx.py";
  auto made = RunCommand({Python(), script.string(), dir_.path().string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ModelCard q = *tiny;
  q.file = "q.onnx";
  q.dimension = 4;
  q.preprocess.input_width = q.preprocess.input_height = q.preprocess.resize_shorter = 8;
  q.onnx.output_layer = "onnx_node!features_DequantizeLinear";
  r = TrainBackbone(q, dir_.path() / "q.onnx", train_, validation_, SmallRun(),
                    out());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << r.status().ToString();
  EXPECT_NE(r.status().message().find("dequantized int8 constants"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(fs::exists(out()));
}

// Not a test: the figures for the record (bench/RESULTS.md). One epoch of
// TrainBackbone (2 trainable blocks, P = 8, K = 4) on PACS photo, every
// tenth image held out for validation, with the TorchScript model (and its
// card beside it, <model>.json) named by $PIXSEEK_BACKBONE_BENCH_MODEL, e.g.
// a ResNet-50 from tools/export_model.py resnet50 --weights random.
TEST(BackboneTrainingBench, OneEpochOnPacsPhoto) {
  const char* env = std::getenv("PIXSEEK_BACKBONE_BENCH_MODEL");
  if (env == nullptr || *env == '\0') GTEST_SKIP() << "set PIXSEEK_BACKBONE_BENCH_MODEL";
  const fs::path model = env;
  auto card = ModelCard::FromJson(std::string(
      std::istreambuf_iterator<char>(std::ifstream(model.string() + ".json").rdbuf()), {}));
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  auto shared = testing::SharedDir();
  if (!shared || !fs::exists(*shared / "data/pacs/photo")) GTEST_SKIP() << "no PACS photo";
  std::vector<fs::path> files[2];  // train, validation
  LabelledImages sets[2];
  int label = 0;
  std::vector<fs::path> classes;
  for (const auto& c : fs::directory_iterator(*shared / "data/pacs/photo")) classes.push_back(c);
  std::sort(classes.begin(), classes.end());
  for (const auto& c : classes) {
    std::vector<fs::path> images;
    for (const auto& f : fs::directory_iterator(c)) images.push_back(f);
    std::sort(images.begin(), images.end());
    for (size_t i = 0; i < images.size(); ++i) {
      files[i % 10 == 0].push_back(images[i]);
      sets[i % 10 == 0].labels.push_back(label);
    }
    ++label;
  }
  for (int s = 0; s < 2; ++s) {
    sets[s].size = files[s].size();
    sets[s].decode = [f = &files[s]](size_t i) -> std::optional<Image> {
      auto bytes = ReadFileLimited((*f)[i], 64 << 20);
      if (!bytes.ok()) return std::nullopt;
      auto decoded = DecodeImage(*bytes);
      if (!decoded.ok()) return std::nullopt;
      return decoded->image;
    };
  }
  BackboneTrainOptions options;
  options.trainable_blocks = 2;
  options.metric.batch_classes = 8;  // PACS has 7: PkBatches takes what there is
  options.metric.per_class = 4;
  options.metric.epochs = 1;
  options.on_estimate = [](double epoch_s, double images_s) {
    std::printf("estimate: %.1f s per epoch, %.2f images/s\n", epoch_s, images_s);
  };
  options.metric.on_epoch = [](const EpochReport& r) {
    std::printf("epoch %d: loss %.4f, validation mAP %.4f, %.1f s, %.2f images/s\n", r.epoch,
                r.loss, r.validation_map, r.seconds, r.rows_per_second);
  };
  TempDir dir;
  auto result = TrainBackbone(*card, model, sets[0], sets[1], options, dir.path() / "tuned.pt");
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  std::printf("train %zu, validation %zu images; %.1f s per epoch, %.2f images/s training, "
              "%.1f s in all\n", sets[0].size, sets[1].size, result->epoch_seconds,
              result->images_per_second, result->seconds);
}

}  // namespace
}  // namespace pixseek
