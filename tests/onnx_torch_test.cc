// The libtorch ONNX engine (src/embed/onnx_to_torchscript.cc) on a small
// quantized network written at test time by tests/make_qlinear_onnx.py, with
// known answers computed there by numpy: the engine's float semantics
// (tight), and the exact int8 arithmetic of the ONNX operators (within a
// couple of quantization steps). Then what it does not run: other operators,
// a file that is not ONNX, an unknown output. Skips without libtorch (the
// plugin) or python3-onnx.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "pixseek/embedder.h"
#include "subprocess.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using testing::Python;
using testing::RunCommand;
using testing::TempDir;

constexpr int kBatch = 3, kSide = 8, kDim = 4;

// The card of the test network: raw pooled features (no L2), so the values
// compare directly with the script's.
ModelCard QCard(const std::string& engine, int max_batch) {
  ModelCard card;
  card.name = "qlinear-test";
  card.runtime = Runtime::kOnnx;
  card.onnx.engine = *ParseCardEnum<Engine>(engine);
  card.file = "q.onnx";
  card.preprocess.input_width = card.preprocess.input_height = kSide;
  card.preprocess.resize_shorter = kSide;
  card.onnx.output_layer = "onnx_node!features_DequantizeLinear";
  card.output.pooling = Pooling::kGap;
  card.dimension = kDim;
  card.output.l2_normalize = false;
  card.max_batch = max_batch;
  return card;
}

class QuantizedOnnxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = RunCommand({Python(), "-c", "import onnx, numpy"});
    if (r.exit_code != 0) GTEST_SKIP() << Python() << " cannot import onnx (install python3-onnx)";
    r = RunCommand({Python(), (fs::path(PIXSEEK_SOURCE_DIR) / "tests" / "make_qlinear_onnx.py").string(),
                    dir_.path().string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto probe = OpenEmbedder(QCard("libtorch", kBatch), model());
    if (probe.status().code() == StatusCode::kUnsupported &&
        probe.status().message().find("plugin") != std::string::npos) {
      GTEST_SKIP() << "built without libtorch: " << probe.status().message();
    }
    std::ifstream in(dir_.path() / "input.f32", std::ios::binary);
    input_.resize(static_cast<size_t>(kBatch) * 3 * kSide * kSide);
    in.read(reinterpret_cast<char*>(input_.data()), static_cast<std::streamsize>(input_.size() * 4));
    ASSERT_TRUE(in) << "input.f32";
    expected_ = nlohmann::json::parse(std::ifstream(dir_.path() / "expected.json"));
  }

  fs::path model() const { return dir_.path() / "q.onnx"; }

  std::vector<float> Run(Embedder& e) {
    std::vector<float> out(static_cast<size_t>(kBatch) * kDim);
    Status s = e.EmbedPreprocessed(input_.data(), kBatch, out.data());
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  TempDir dir_;
  std::vector<float> input_;
  nlohmann::json expected_;
};

TEST_F(QuantizedOnnxTest, MatchesTheKnownAnswers) {
  auto e = OpenEmbedder(QCard("libtorch", kBatch), model());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->card().onnx.engine, Engine::kLibtorch);
  const auto out = Run(**e);
  const double step = expected_["output_scale"].get<double>();
  for (int i = 0; i < kBatch; ++i) {
    for (int c = 0; c < kDim; ++c) {
      const float got = out[static_cast<size_t>(i * kDim + c)];
      EXPECT_NEAR(got, expected_["float"][i][c].get<double>(), 1e-4) << "image " << i << " dim " << c;
      EXPECT_NEAR(got, expected_["int8"][i][c].get<double>(), 2 * step) << "image " << i << " dim " << c;
    }
  }
}

TEST_F(QuantizedOnnxTest, SameAnswersForEveryBatchSize) {
  auto whole = OpenEmbedder(QCard("libtorch", kBatch), model());
  auto singles = OpenEmbedder(QCard("libtorch", 1), model());
  auto pairs = OpenEmbedder(QCard("libtorch", 2), model());
  ASSERT_TRUE(whole.ok() && singles.ok() && pairs.ok());
  const auto a = Run(**whole), b = Run(**singles), c = Run(**pairs);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-5) << i;
    EXPECT_NEAR(a[i], c[i], 1e-5) << i;
  }
}

// The graph's own output is a Sigmoid, which the engine does not run: asked
// for it (no output_layer), it names the operator; "auto" then tries OpenCV.
TEST_F(QuantizedOnnxTest, AnUnsupportedOperatorIsNamed) {
  ModelCard card = QCard("libtorch", kBatch);
  card.onnx.output_layer.clear();
  auto e = OpenEmbedder(card, model());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(e.status().message().find("Sigmoid"), std::string::npos) << e.status().message();
  EXPECT_NE(e.status().message().find("engine \"opencv\""), std::string::npos) << e.status().message();
}

TEST_F(QuantizedOnnxTest, AFloatModelRunsOnOpencvUnderAuto) {
  const fs::path tiny = dir_.path() / "tiny.onnx";
  testing::WriteBytes(tiny, testing::MakeTinyOnnxModel(8, 1));
  auto card = ModelCard::FromJson(testing::TinyModelCardJson(8, "tiny.onnx"));
  ASSERT_TRUE(card.ok());
  card->onnx.engine = Engine::kLibtorch;
  auto strict = OpenEmbedder(*card, tiny);
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(strict.status().message().find("operator "), std::string::npos) << strict.status().message();
  card->onnx.engine = Engine::kAuto;
  auto fallback = OpenEmbedder(*card, tiny);
  ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
  EXPECT_EQ((*fallback)->card().onnx.engine, Engine::kOpenCv);
}

TEST_F(QuantizedOnnxTest, AFileThatIsNotOnnxIsInvalidArgument) {
  const fs::path junk = dir_.path() / "junk.onnx";
  testing::WriteBytes(junk, std::vector<uint8_t>(4096, 0xAB));
  auto e = OpenEmbedder(QCard("libtorch", kBatch), junk);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("not an ONNX model"), std::string::npos) << e.status().message();
  // Truncated: the real file cut in half.
  auto bytes = testing::ReadBytes(model());
  bytes.resize(bytes.size() / 2);
  testing::WriteBytes(junk, bytes);
  e = OpenEmbedder(QCard("libtorch", kBatch), junk);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << e.status().ToString();
  // "auto" falls back to OpenCV, which rejects it too: an error, no crash.
  e = OpenEmbedder(QCard("auto", kBatch), junk);
  EXPECT_FALSE(e.ok());
}

// Weights whose data does not fit their shape (cut short; a shape of 2^62
// values): errors naming the initializer, nothing allocated for the claim.
TEST_F(QuantizedOnnxTest, DamagedWeightsAreInvalidArgument) {
  const std::string script = R"(
import sys, onnx
m = onnx.load(sys.argv[1])
w = next(i for i in m.graph.initializer if i.name == "c1_w")
if sys.argv[3] == "short":
    w.raw_data = w.raw_data[:-5]
else:
    del w.dims[:]
    w.dims.extend([1 << 31, 1 << 31])
onnx.save(m, sys.argv[2])
)";
  for (const char* how : {"short", "huge"}) {
    const fs::path damaged = dir_.path() / (std::string(how) + ".onnx");
    auto r = RunCommand({Python(), "-c", script, model().string(), damaged.string(), how});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto e = OpenEmbedder(QCard("libtorch", kBatch), damaged);
    ASSERT_FALSE(e.ok()) << how;
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << how << ": " << e.status().ToString();
    EXPECT_NE(e.status().message().find("c1_w"), std::string::npos) << e.status().message();
  }
}

TEST_F(QuantizedOnnxTest, UnknownOutputAndWrongDimensionAreInvalidArgument) {
  ModelCard card = QCard("libtorch", kBatch);
  card.onnx.output_layer = "onnx_node!no_such_layer";
  auto e = OpenEmbedder(card, model());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("no_such_layer"), std::string::npos) << e.status().message();
  card = QCard("libtorch", kBatch);
  card.dimension = 16;
  e = OpenEmbedder(card, model());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << e.status().ToString();
}

// bf16 where the CPU has it (the card then says so), else fp32 with a
// warning: either way close to the known answers.
TEST_F(QuantizedOnnxTest, Bf16IsCloseToTheKnownAnswers) {
  ModelCard card = QCard("libtorch", kBatch);
  card.precision = Precision::kBf16;
  auto e = OpenEmbedder(card, model());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  const std::string ran(ToString((*e)->card().precision));
  EXPECT_TRUE(ran == "bf16" || ran == "fp32") << ran;
  const auto out = Run(**e);
  for (int i = 0; i < kBatch; ++i) {
    for (int c = 0; c < kDim; ++c) {
      const double want = expected_["float"][i][c].get<double>();
      EXPECT_NEAR(out[static_cast<size_t>(i * kDim + c)], want, ran == "bf16" ? 0.02 * std::abs(want) + 0.02 : 1e-4)
          << "image " << i << " dim " << c << " (" << ran << ")";
    }
  }
}

TEST(ModelCardEngineTest, ParsedValidatedAndPrinted) {
  auto card = ModelCard::FromJson(R"({"dimension": 8, "engine": "libtorch"})");
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  EXPECT_EQ(card->onnx.engine, Engine::kLibtorch);
  EXPECT_NE(card->ToJson().find("\"engine\": \"libtorch\""), std::string::npos);
  EXPECT_EQ(ModelCard::FromJson(R"({"dimension": 8})")->onnx.engine, Engine::kOpenCv);
  auto bad = ModelCard::FromJson(R"({"dimension": 8, "engine": "tensorrt"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("engine"), std::string::npos);
  // precision: fp32 (default, not printed) or bf16, which needs libtorch.
  EXPECT_EQ(card->precision, Precision::kFp32);
  EXPECT_EQ(card->ToJson().find("precision"), std::string::npos);
  auto bf16 = ModelCard::FromJson(R"({"dimension": 8, "runtime": "torchscript", "precision": "bf16"})");
  ASSERT_TRUE(bf16.ok()) << bf16.status().ToString();
  EXPECT_NE(bf16->ToJson().find("\"precision\": \"bf16\""), std::string::npos);
  for (const char* json : {R"({"dimension": 8, "precision": "fp16"})",
                           R"({"dimension": 8, "engine": "opencv", "precision": "bf16"})",
                           R"({"dimension": 8, "runtime": "sift-vlad", "precision": "bf16"})"}) {
    auto rejected = ModelCard::FromJson(json);
    ASSERT_FALSE(rejected.ok()) << json;
    EXPECT_NE(rejected.status().message().find("precision"), std::string::npos) << rejected.status().message();
  }
}

}  // namespace
}  // namespace pixseek
