// Tests for ModelCard and the ONNX embedder: a tiny network generated at test
// time always, the real MobileNetV2 from ../shared when present.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "embed/embed_batcher.h"
#include "embed/preprocess.h"
#include "pixseek/embedder.h"
#include "pixseek/model_registry.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using testing::SharedDir;
using testing::SharedMobilenet;
using testing::TempDir;
using testing::WriteBytes;

// ---------------------------------------------------------------- cards

// One set of pooling rules for the runtimes that pool on the CPU (OpenCV
// DNN, KServe): every pooling the card allows, against values worked out by
// hand on a tiny output.
TEST(PoolFeaturesTest, EveryPoolingOnCellsAndTokens) {
  ModelCard card;
  card.dimension = 2;
  card.output.l2_normalize = false;
  // [1,2,2,2]: channel 0 cells {1,2,3,4}, channel 1 cells {4,4,0,0}.
  const float cells[] = {1, 2, 3, 4, 4, 4, 0, 0};
  const int64_t cells_shape[] = {1, 2, 2, 2};
  // [1,3,2]: tokens (cls) {9,9}, {1,4}, {3,0}.
  const float tokens[] = {9, 9, 1, 4, 3, 0};
  const int64_t tokens_shape[] = {1, 3, 2};
  float out[2];
  auto pool = [&](Pooling p, const float* data, std::span<const int64_t> shape) {
    card.output.pooling = p;
    return PoolFeatures(card, data, shape, 1, out);
  };
  ASSERT_TRUE(pool(Pooling::kGap, cells, cells_shape).ok());
  EXPECT_FLOAT_EQ(out[0], 2.5f);
  EXPECT_FLOAT_EQ(out[1], 2.0f);
  ASSERT_TRUE(pool(Pooling::kGmp, cells, cells_shape).ok());
  EXPECT_FLOAT_EQ(out[0], 4.0f);
  EXPECT_FLOAT_EQ(out[1], 4.0f);
  card.output.gem_p = 3.0f;
  ASSERT_TRUE(pool(Pooling::kGem, cells, cells_shape).ok());
  EXPECT_NEAR(out[0], std::cbrt((1.0 + 8 + 27 + 64) / 4), 1e-5);
  EXPECT_NEAR(out[1], std::cbrt((64.0 + 64) / 4), 1e-5);
  ASSERT_TRUE(pool(Pooling::kCls, tokens, tokens_shape).ok());
  EXPECT_FLOAT_EQ(out[0], 9.0f);
  EXPECT_FLOAT_EQ(out[1], 9.0f);
  ASSERT_TRUE(pool(Pooling::kMeanTokens, tokens, tokens_shape).ok());  // the class token left out
  EXPECT_FLOAT_EQ(out[0], 2.0f);
  EXPECT_FLOAT_EQ(out[1], 2.0f);
  ASSERT_TRUE(pool(Pooling::kGem, tokens, tokens_shape).ok());
  EXPECT_NEAR(out[0], std::cbrt((1.0 + 27) / 2), 1e-5);
  EXPECT_NEAR(out[1], std::cbrt(64.0 / 2), 1e-4);  // 0 is clamped to 1e-6
  const int64_t flat_shape[] = {1, 2};
  ASSERT_TRUE(pool(Pooling::kNone, cells, flat_shape).ok());
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  EXPECT_FLOAT_EQ(out[1], 2.0f);

  // A shape the pooling does not take is named, with what it takes.
  Status s = pool(Pooling::kCls, cells, cells_shape);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("[N,T,D]"), std::string::npos) << s.message();
  s = pool(Pooling::kGap, tokens, tokens_shape);
  EXPECT_NE(s.message().find("[N,C,H,W]"), std::string::npos) << s.message();
  s = pool(Pooling::kNone, cells, cells_shape);
  EXPECT_FALSE(s.ok());
  const int64_t one_token[] = {1, 1, 2};
  EXPECT_FALSE(pool(Pooling::kMeanTokens, tokens, one_token).ok());
  EXPECT_TRUE(pool(Pooling::kCls, tokens, one_token).ok());
  card.output.l2_normalize = true;
  ASSERT_TRUE(pool(Pooling::kCls, tokens, tokens_shape).ok());
  EXPECT_NEAR(out[0] * out[0] + out[1] * out[1], 1.0, 1e-6);
}

TEST(ModelCardTest, ParsesAFullCard) {
  auto card = ModelCard::FromJson(R"({
    "name": "m", "runtime": "onnx", "file": "m.onnx",
    "sha256": "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f",
    "input_width": 160, "input_height": 128, "resize_shorter": 180,
    "crop": "center", "interpolation": "bicubic", "scale": 1.0,
    "mean": [1, 2, 3], "std": [4, 5, 6], "channel_order": "BGR",
    "output_layer": "feat", "pooling": "gmp", "dimension": 64,
    "l2_normalize": false, "max_batch": 4})");
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  EXPECT_EQ(card->name, "m");
  EXPECT_EQ(card->file, "m.onnx");
  EXPECT_EQ(card->preprocess.input_width, 160);
  EXPECT_EQ(card->preprocess.input_height, 128);
  EXPECT_EQ(card->preprocess.resize_shorter, 180);
  EXPECT_EQ(card->preprocess.interpolation, Interpolation::kBicubic);
  EXPECT_FLOAT_EQ(card->preprocess.scale, 1.0f);
  EXPECT_FLOAT_EQ(card->preprocess.mean[2], 3.0f);
  EXPECT_FLOAT_EQ(card->preprocess.std[0], 4.0f);
  EXPECT_EQ(card->preprocess.channel_order, ChannelOrder::kBgr);
  EXPECT_EQ(card->onnx.output_layer, "feat");
  EXPECT_EQ(card->output.pooling, Pooling::kGmp);
  EXPECT_EQ(card->dimension, 64);
  EXPECT_FALSE(card->output.l2_normalize);
  EXPECT_EQ(card->max_batch, 4);
}

TEST(ModelCardTest, MissingFieldsTakeDefaults) {
  auto card = ModelCard::FromJson(R"({"dimension": 10})");
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  ModelCard defaults;
  EXPECT_EQ(card->runtime, Runtime::kOnnx);
  EXPECT_EQ(card->preprocess.input_width, defaults.preprocess.input_width);
  EXPECT_EQ(card->preprocess.resize_shorter, 256);
  EXPECT_EQ(card->preprocess.crop, Crop::kCenter);
  EXPECT_EQ(card->preprocess.interpolation, Interpolation::kBilinear);
  EXPECT_FLOAT_EQ(card->preprocess.scale, 1.0f / 255.0f);
  EXPECT_FLOAT_EQ(card->preprocess.mean[0], 0.485f);
  EXPECT_FLOAT_EQ(card->preprocess.std[2], 0.225f);
  EXPECT_EQ(card->output.pooling, Pooling::kGap);
  EXPECT_TRUE(card->output.l2_normalize);
  EXPECT_EQ(card->max_batch, 16);
}

TEST(ModelCardTest, RoundTripsThroughJson) {
  ModelCard card = KnownModels().front().card;
  auto again = ModelCard::FromJson(card.ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->ToJson(), card.ToJson());
  EXPECT_EQ(again->onnx.output_layer, card.onnx.output_layer);
  EXPECT_EQ(again->preprocess.scale, card.preprocess.scale);
  EXPECT_EQ(again->preprocess.mean, card.preprocess.mean);
  EXPECT_EQ(again->sha256, card.sha256);
}

struct BadCard {
  const char* json;
  const char* expected_in_message;
};

class BadCardTest : public ::testing::TestWithParam<BadCard> {};

TEST_P(BadCardTest, IsInvalidArgumentNamingTheField) {
  auto card = ModelCard::FromJson(GetParam().json);
  ASSERT_FALSE(card.ok()) << GetParam().json;
  EXPECT_EQ(card.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(card.status().message().find(GetParam().expected_in_message), std::string::npos)
      << card.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BadCardTest,
    ::testing::Values(
        BadCard{R"({"dimension": 8, "runtime": "tensorflow"})", "runtime"},
        BadCard{R"({"dimension": 8, "crop": "left"})", "crop"},
        BadCard{R"({"dimension": 8, "pooling": "avg"})", "pooling"},
        BadCard{R"({"dimension": 8, "channel_order": "rgb"})", "channel_order"},
        BadCard{R"({"dimension": 8, "interpolation": "nearest"})", "interpolation"},
        BadCard{R"({"dimension": 0})", "dimension"},
        BadCard{R"({"dimension": -3})", "dimension"},
        BadCard{R"({})", "dimension"},
        BadCard{R"({"dimension": 8, "input_width": 0, "crop": "none"})", "input_width"},
        BadCard{R"({"dimension": 8, "input_height": 5000, "crop": "none"})", "input_height"},
        BadCard{R"({"dimension": 8, "resize_shorter": 0})", "resize_shorter"},
        BadCard{R"({"dimension": 8, "resize_shorter": 100})", "resize_shorter"},
        BadCard{R"({"dimension": 8, "std": [0.2, 0, 0.2]})", "std"},
        BadCard{R"({"dimension": 8, "std": [0.2, -1, 0.2]})", "std"},
        BadCard{R"({"dimension": 8, "std": [0.2, 0.2]})", "std"},
        BadCard{R"({"dimension": 8, "mean": "imagenet"})", "mean"},
        BadCard{R"({"dimension": "8"})", "dimension"},
        BadCard{R"({"dimension": 8.5})", "dimension"},
        BadCard{R"({"dimension": 99999999999})", "dimension"},
        BadCard{R"({"dimension": 8, "l2_normalize": 1})", "l2_normalize"},
        BadCard{R"({"dimension": 8, "name": 7})", "name"},
        BadCard{R"({"dimension": 8, "max_batch": 0})", "max_batch"},
        BadCard{R"({"dimension": 8, "scale": -1})", "scale"},
        BadCard{R"({"dimension": 8, "sha256": "xyz"})", "sha256"},
        BadCard{R"({"dimension": 8, "file": "../evil.onnx"})", "file"},
        BadCard{R"([1, 2, 3])", "object"},
        BadCard{R"({"dimension": 8,)", "JSON"},
        BadCard{R"()", "JSON"}));

// ---------------------------------------------------------------- helpers

Image SolidImage(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  Image img;
  img.width = width;
  img.height = height;
  img.rgb.resize(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < img.rgb.size(); i += 3) {
    img.rgb[i] = r;
    img.rgb[i + 1] = g;
    img.rgb[i + 2] = b;
  }
  return img;
}

// A deterministic image with structure: gradients plus a colour block.
Image PatternImage(int width, int height, int variant) {
  Image img = SolidImage(width, height, 0, 0, 0);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &img.rgb[(static_cast<size_t>(y) * width + x) * 3];
      p[0] = static_cast<uint8_t>((x * 255 / width + variant * 70) % 256);
      p[1] = static_cast<uint8_t>((y * 255 / height + variant * 30) % 256);
      p[2] = static_cast<uint8_t>(((x / 16 + y / 16 + variant) % 2) * 200);
    }
  }
  return img;
}

float Dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

float MaxAbsDiff(const float* a, const float* b, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<float> EmbedAll(Embedder& e, const std::vector<const Image*>& images) {
  std::vector<float> out(images.size() * e.dimension(), -7.0f);
  Status s = e.Embed(images, out.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::vector<float> EmbedOne(Embedder& e, const Image& image) {
  return EmbedAll(e, {&image});
}

// ---------------------------------------------------------------- tiny model

class TinyModelTest : public ::testing::Test {
 protected:
  static constexpr int kDim = 16;

  void SetUp() override {
    model_ = dir_.path() / "tiny.onnx";
    WriteBytes(model_, testing::MakeTinyOnnxModel(kDim, 7));
    auto card = ModelCard::FromJson(testing::TinyModelCardJson(kDim, "tiny.onnx"));
    ASSERT_TRUE(card.ok()) << card.status().ToString();
    card_ = *card;
  }

  std::unique_ptr<Embedder> Open(const ModelCard& card) {
    auto e = OpenEmbedder(card, model_);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(e).value() : nullptr;
  }

  TempDir dir_;
  std::filesystem::path model_;
  ModelCard card_;
};

TEST_F(TinyModelTest, GeneratorIsDeterministic) {
  EXPECT_EQ(testing::MakeTinyOnnxModel(8, 3), testing::MakeTinyOnnxModel(8, 3));
  EXPECT_NE(testing::MakeTinyOnnxModel(8, 3), testing::MakeTinyOnnxModel(8, 4));
}

TEST_F(TinyModelTest, GivesUnitVectorsOfTheCardDimension) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dimension(), kDim);
  EXPECT_EQ(e->card().file, "tiny.onnx");
  Image img = PatternImage(300, 200, 0);
  auto v = EmbedOne(*e, img);
  EXPECT_NEAR(Dot(v.data(), v.data(), kDim), 1.0f, 1e-5);
}

TEST_F(TinyModelTest, FeaturesDependOnTheImageAndAreDeterministic) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  Image red = SolidImage(240, 320, 230, 20, 20);
  Image blue = SolidImage(240, 320, 20, 20, 230);
  auto r1 = EmbedOne(*e, red);
  auto r2 = EmbedOne(*e, red);
  auto b = EmbedOne(*e, blue);
  EXPECT_EQ(r1, r2);
  EXPECT_LT(Dot(r1.data(), b.data(), kDim), 0.95f);
  // A slightly different red is closer to red than blue is.
  Image red2 = SolidImage(240, 320, 210, 40, 30);
  auto r3 = EmbedOne(*e, red2);
  EXPECT_GT(Dot(r1.data(), r3.data(), kDim), Dot(r1.data(), b.data(), kDim));
}

TEST_F(TinyModelTest, BatchEqualsSingleImages) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::vector<Image> images;
  for (int i = 0; i < 5; ++i) images.push_back(PatternImage(200 + 40 * i, 260 - 20 * i, i));
  std::vector<const Image*> ptrs;
  for (const Image& img : images) ptrs.push_back(&img);
  auto batch = EmbedAll(*e, ptrs);
  for (size_t i = 0; i < images.size(); ++i) {
    auto single = EmbedOne(*e, images[i]);
    EXPECT_LT(MaxAbsDiff(batch.data() + i * kDim, single.data(), kDim), 1e-5) << "image " << i;
  }
  // Different images give different vectors.
  EXPECT_GT(MaxAbsDiff(batch.data(), batch.data() + kDim, kDim), 1e-3);
}

TEST_F(TinyModelTest, MaxBatchSmallerThanInput) {
  ModelCard small = card_;
  small.max_batch = 2;
  auto e_small = Open(small);
  auto e_big = Open(card_);
  ASSERT_NE(e_small, nullptr);
  ASSERT_NE(e_big, nullptr);
  std::vector<Image> images;
  for (int i = 0; i < 7; ++i) images.push_back(PatternImage(224, 224, i));
  std::vector<const Image*> ptrs;
  for (const Image& img : images) ptrs.push_back(&img);
  auto a = EmbedAll(*e_small, ptrs);
  auto b = EmbedAll(*e_big, ptrs);
  ASSERT_EQ(a.size(), 7u * kDim);
  EXPECT_LT(MaxAbsDiff(a.data(), b.data(), static_cast<int>(a.size())), 1e-5);
  EXPECT_EQ(std::count(a.begin(), a.end(), -7.0f), 0);  // every row written
}

// ------------------------------------------------------- dynamic batching

// Embeds images[i] on thread i through `batcher`, all at once.
std::vector<Status> EmbedConcurrently(EmbedBatcher& batcher, const std::vector<Image>& images,
                                      std::vector<float>* out, int dim) {
  out->assign(images.size() * dim, -7.0f);
  std::vector<Status> statuses(images.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < images.size(); ++i) {
    threads.emplace_back([&, i] { statuses[i] = batcher.Embed(images[i], out->data() + i * dim); });
  }
  for (auto& t : threads) t.join();
  return statuses;
}

TEST_F(TinyModelTest, BatcherGroupsConcurrentCallersAndMatchesSingleImages) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::vector<Image> images;
  for (int i = 0; i < 12; ++i) images.push_back(PatternImage(200 + 10 * i, 240, i));
  std::vector<std::vector<float>> expected;
  for (const Image& img : images) expected.push_back(EmbedOne(*e, img));

  std::mutex embedder_mu;
  EmbedBatchingOptions options;
  options.max_batch = 16;
  options.max_wait = std::chrono::milliseconds(5);
  EmbedBatcher batcher(*e, embedder_mu, options);
  std::vector<float> out(images.size() * kDim, -7.0f);
  std::vector<Status> statuses(images.size());
  std::vector<std::thread> threads;
  {
    // Hold the network, as a long forward pass would, until every caller has
    // queued: the batcher then runs at most the one batch it had taken, and
    // one more with everyone else.
    std::lock_guard<std::mutex> busy(embedder_mu);
    for (size_t i = 0; i < images.size(); ++i) {
      threads.emplace_back(
          [&, i] { statuses[i] = batcher.Embed(images[i], out.data() + i * kDim); });
    }
    EXPECT_TRUE(testing::WaitFor(
        [&] { return batcher.waiting() == static_cast<int>(images.size()); },
        std::chrono::seconds(30), std::chrono::milliseconds(1)));
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].ToString();
    EXPECT_LT(MaxAbsDiff(out.data() + i * kDim, expected[i].data(), kDim), 1e-5) << "image " << i;
  }
  const EmbedBatcherStats stats = batcher.stats();
  EXPECT_EQ(stats.images, 12u);
  EXPECT_LE(stats.batches, 2u);
  EXPECT_GE(stats.max_seen, 6u);
  EXPECT_EQ(batcher.waiting(), 0);
}

TEST_F(TinyModelTest, BatcherNeverExceedsMaxBatch) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::vector<Image> images;
  for (int i = 0; i < 9; ++i) images.push_back(PatternImage(224, 224, i));
  std::mutex embedder_mu;
  EmbedBatcher batcher(*e, embedder_mu, {.max_batch = 3, .max_wait = std::chrono::milliseconds(50)});
  EXPECT_EQ(batcher.max_batch(), 3);
  std::vector<float> out;
  for (const Status& s : EmbedConcurrently(batcher, images, &out, kDim)) EXPECT_TRUE(s.ok());
  EXPECT_EQ(batcher.stats().images, 9u);
  EXPECT_GE(batcher.stats().batches, 3u);
  EXPECT_LE(batcher.stats().max_seen, 3u);
  EXPECT_EQ(std::count(out.begin(), out.end(), -7.0f), 0);  // every row written
}

TEST_F(TinyModelTest, BatcherFailsOnlyTheCallerWithABadImage) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::vector<Image> images;
  for (int i = 0; i < 4; ++i) images.push_back(PatternImage(224, 224, i));
  images[2] = Image{};  // empty: preprocessing refuses it
  std::mutex embedder_mu;
  EmbedBatcher batcher(*e, embedder_mu, {.max_batch = 0, .max_wait = std::chrono::milliseconds(20)});
  EXPECT_EQ(batcher.max_batch(), card_.max_batch);  // 0 = the card's
  std::vector<float> out;
  auto statuses = EmbedConcurrently(batcher, images, &out, kDim);
  for (size_t i = 0; i < images.size(); ++i) {
    if (i == 2) {
      EXPECT_EQ(statuses[i].code(), StatusCode::kInvalidArgument) << statuses[i].ToString();
    } else {
      EXPECT_TRUE(statuses[i].ok()) << statuses[i].ToString();
      EXPECT_LT(MaxAbsDiff(out.data() + i * kDim, EmbedOne(*e, images[i]).data(), kDim), 1e-5);
    }
  }
}

TEST_F(TinyModelTest, BatcherWithoutWaitServesALoneCallerAtOnce) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::mutex embedder_mu;
  EmbedBatcher batcher(*e, embedder_mu, {.max_batch = 8, .max_wait = std::chrono::microseconds(0)});
  Image img = PatternImage(300, 200, 1);
  std::vector<float> v(kDim);
  ASSERT_TRUE(batcher.Embed(img, v.data()).ok());
  EXPECT_LT(MaxAbsDiff(v.data(), EmbedOne(*e, img).data(), kDim), 1e-5);
  EXPECT_EQ(batcher.stats().batches, 1u);
  EXPECT_EQ(batcher.Embed(img, nullptr).code(), StatusCode::kInvalidArgument);
}

TEST_F(TinyModelTest, BatcherDoesNotHoldALoneCallerForMaxWait) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::mutex embedder_mu;
  // A batch waits only for callers still preprocessing; with none, at once.
  EmbedBatcher batcher(*e, embedder_mu, {.max_batch = 8, .max_wait = std::chrono::seconds(20)});
  Image img = PatternImage(300, 200, 1);
  std::vector<float> v(kDim);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher.Embed(img, v.data()).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(batcher.stats().batches, 3u);
}

TEST_F(TinyModelTest, PreprocessingFollowsTheCard) {
  // Crop "none" squeezes the whole image; centre crop drops the sides. A wide
  // image whose sides differ from its centre tells them apart.
  Image wide = SolidImage(672, 224, 20, 20, 230);
  for (int y = 0; y < 224; ++y) {
    for (int x = 224; x < 448; ++x) {
      uint8_t* p = &wide.rgb[(static_cast<size_t>(y) * 672 + x) * 3];
      p[0] = 230;
      p[2] = 20;
    }
  }
  Image red = SolidImage(224, 224, 230, 20, 20);
  auto center = Open(card_);
  ModelCard squeeze_card = card_;
  squeeze_card.preprocess.crop = Crop::kNone;
  auto squeeze = Open(squeeze_card);
  ASSERT_NE(center, nullptr);
  ASSERT_NE(squeeze, nullptr);
  auto c = EmbedOne(*center, wide);
  auto r = EmbedOne(*center, red);
  auto s = EmbedOne(*squeeze, wide);
  EXPECT_LT(MaxAbsDiff(c.data(), r.data(), kDim), 1e-4);  // the crop is all red
  EXPECT_GT(MaxAbsDiff(s.data(), r.data(), kDim), 1e-2);  // blue sides kept

  // BGR order swaps the channels the net sees: red looks blue.
  ModelCard bgr_card = card_;
  bgr_card.preprocess.channel_order = ChannelOrder::kBgr;
  bgr_card.preprocess.mean = {0.5f, 0.5f, 0.5f};
  bgr_card.preprocess.std = {0.25f, 0.25f, 0.25f};
  ModelCard rgb_card = bgr_card;
  rgb_card.preprocess.channel_order = ChannelOrder::kRgb;
  auto bgr = Open(bgr_card);
  auto rgb = Open(rgb_card);
  ASSERT_NE(bgr, nullptr);
  ASSERT_NE(rgb, nullptr);
  Image blue = SolidImage(224, 224, 20, 20, 230);
  auto red_as_bgr = EmbedOne(*bgr, red);
  auto blue_as_rgb = EmbedOne(*rgb, blue);
  EXPECT_LT(MaxAbsDiff(red_as_bgr.data(), blue_as_rgb.data(), kDim), 1e-5);
}

TEST_F(TinyModelTest, NoNormalisationAndMaxPooling) {
  ModelCard raw = card_;
  raw.output.l2_normalize = false;
  auto e = Open(raw);
  ASSERT_NE(e, nullptr);
  auto v = EmbedOne(*e, PatternImage(224, 224, 1));
  EXPECT_GT(std::fabs(Dot(v.data(), v.data(), kDim) - 1.0f), 1e-3);
  for (float x : v) EXPECT_GE(x, 0.0f);  // after ReLU
}

TEST_F(TinyModelTest, EmptyOrMalformedImageIsInvalidArgument) {
  auto e = Open(card_);
  ASSERT_NE(e, nullptr);
  std::vector<float> out(3 * kDim);
  Image empty;
  const Image* one[] = {&empty};
  EXPECT_EQ(e->Embed(one, out.data()).code(), StatusCode::kInvalidArgument);
  Image short_buffer = SolidImage(10, 10, 1, 2, 3);
  short_buffer.rgb.resize(20);
  const Image* two[] = {&short_buffer};
  EXPECT_EQ(e->Embed(two, out.data()).code(), StatusCode::kInvalidArgument);
  const Image* null_image[] = {nullptr};
  EXPECT_EQ(e->Embed(null_image, out.data()).code(), StatusCode::kInvalidArgument);
  // No images: nothing to do.
  EXPECT_TRUE(e->Embed({}, out.data()).ok());
  // Tiny images still work (upscaled).
  Image dot = SolidImage(1, 1, 255, 0, 0);
  const Image* three[] = {&dot};
  EXPECT_TRUE(e->Embed(three, out.data()).ok());
  // A very long, thin image neither crashes nor takes gigabytes.
  Image thin = SolidImage(2, 200000, 0, 255, 0);
  const Image* four[] = {&thin};
  EXPECT_TRUE(e->Embed(four, out.data()).ok());
  EXPECT_NEAR(Dot(out.data(), out.data(), kDim), 1.0f, 1e-5);
}

TEST_F(TinyModelTest, WrongDimensionFailsAtOpen) {
  ModelCard wrong = card_;
  wrong.dimension = 32;
  auto e = OpenEmbedder(wrong, model_);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("16"), std::string::npos) << e.status().message();
  EXPECT_NE(e.status().message().find("32"), std::string::npos) << e.status().message();

  ModelCard none = card_;
  none.output.pooling = Pooling::kNone;  // [N,16,1,1] is accepted as [N,16]
  EXPECT_TRUE(OpenEmbedder(none, model_).ok());
}

TEST_F(TinyModelTest, UnknownOutputLayerIsInvalidArgument) {
  ModelCard card = card_;
  card.onnx.output_layer = "no_such_layer";
  auto e = OpenEmbedder(card, model_);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("no_such_layer"), std::string::npos);
}

TEST_F(TinyModelTest, MissingFileIsNotFound) {
  auto e = OpenEmbedder(card_, dir_.path() / "nope.onnx");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kNotFound);
}

TEST_F(TinyModelTest, GarbageModelIsInternal) {
  auto garbage = dir_.path() / "garbage.onnx";
  std::vector<uint8_t> bytes(5000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + 7);
  WriteBytes(garbage, bytes);
  auto e = OpenEmbedder(card_, garbage);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInternal) << e.status().ToString();

  // A truncated real model, too.
  auto model = testing::MakeTinyOnnxModel(kDim, 7);
  model.resize(model.size() / 2);
  WriteBytes(garbage, model);
  e = OpenEmbedder(card_, garbage);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInternal) << e.status().ToString();
}

TEST_F(TinyModelTest, UnsupportedOperatorIsInternalNamingIt) {
  auto bytes = testing::MakeTinyOnnxModel(kDim, 7);
  std::string text(bytes.begin(), bytes.end());
  size_t pos = text.find("Relu");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, 4, "Relx");  // same length: the protobuf stays valid
  auto file = dir_.path() / "bad_op.onnx";
  WriteBytes(file, std::vector<uint8_t>(text.begin(), text.end()));
  auto e = OpenEmbedder(card_, file);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInternal);
  EXPECT_NE(e.status().message().find("Relx"), std::string::npos) << e.status().message();
}

// An ONNX file under a torchscript card: libtorch rejects it (Internal), or
// a build without libtorch says so (Unsupported); never a crash.
TEST_F(TinyModelTest, TorchscriptCardOnAnOnnxFileFailsCleanly) {
  ModelCard card = card_;
  card.runtime = Runtime::kTorchScript;
  auto e = OpenEmbedder(card, model_);
  ASSERT_FALSE(e.ok());
  if (e.status().code() == StatusCode::kUnsupported) {
    EXPECT_NE(e.status().message().find("libtorch"), std::string::npos) << e.status().ToString();
  } else {
    EXPECT_EQ(e.status().code(), StatusCode::kInternal) << e.status().ToString();
    EXPECT_NE(e.status().message().find("libtorch cannot load model"), std::string::npos);
  }
}

TEST_F(TinyModelTest, InvalidCardIsInvalidArgument) {
  ModelCard card = card_;
  card.output.gem_p = 0.0f;  // must be in 0.1..100
  EXPECT_EQ(OpenEmbedder(card, model_).status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------- MobileNetV2

// The registry's MobileNetV2 card on one engine ("opencv" or "libtorch";
// "libtorch" skips in a build without the plugin).
Result<std::unique_ptr<Embedder>> OpenMobilenet(const std::string& engine,
                                                const std::filesystem::path& file) {
  ModelCard card = KnownModels().front().card;
  card.onnx.engine = *ParseCardEnum<Engine>(engine);
  return OpenEmbedder(card, file);
}

class MobilenetTest : public ::testing::TestWithParam<std::string> {
 public:
  void SetUp() override {
    auto file = SharedMobilenet();
    if (!file) GTEST_SKIP() << "../shared/models not found";
    auto e = OpenMobilenet(GetParam(), *file);
    if (GetParam() == "libtorch" && e.status().code() == StatusCode::kUnsupported) {
      GTEST_SKIP() << "built without libtorch: " << e.status().message();
    }
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    embedder_ = std::move(e).value();
    EXPECT_EQ(ToString(embedder_->card().onnx.engine), GetParam());
  }

  static Image Load(const std::filesystem::path& path) {
    cv::Mat bgr = cv::imread(path.string(), cv::IMREAD_COLOR);
    Image img;
    if (bgr.empty()) return img;
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    img.width = rgb.cols;
    img.height = rgb.rows;
    img.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
    return img;
  }

  std::unique_ptr<Embedder> embedder_;
};

TEST_P(MobilenetTest, UnitVectorsOf1280) {
  EXPECT_EQ(embedder_->dimension(), 1280);
  auto v = EmbedOne(*embedder_, PatternImage(320, 240, 2));
  EXPECT_NEAR(Dot(v.data(), v.data(), 1280), 1.0f, 1e-4);
}

TEST_P(MobilenetTest, BatchOfThreeEqualsSingles) {
  std::vector<Image> images = {PatternImage(320, 240, 0), PatternImage(240, 320, 1),
                               SolidImage(500, 400, 200, 120, 40)};
  std::vector<const Image*> ptrs;
  for (const Image& img : images) ptrs.push_back(&img);
  auto batch = EmbedAll(*embedder_, ptrs);
  for (size_t i = 0; i < images.size(); ++i) {
    auto single = EmbedOne(*embedder_, images[i]);
    EXPECT_LT(MaxAbsDiff(batch.data() + i * 1280, single.data(), 1280), 1e-5) << "image " << i;
  }
}

TEST_P(MobilenetTest, SameClassPhotosAreCloser) {
  auto shared = SharedDir();
  const std::filesystem::path pacs = *shared / "data" / "pacs" / "photo";
  const std::vector<std::string> classes = {"dog", "guitar", "house"};
  std::vector<std::vector<std::vector<float>>> features;  // [class][image]
  for (const std::string& cls : classes) {
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(pacs / cls, ec)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    if (files.size() < 3) GTEST_SKIP() << "PACS photos not found under " << pacs;
    std::sort(files.begin(), files.end());
    files.resize(3);
    std::vector<Image> images;
    for (const auto& f : files) {
      images.push_back(Load(f));
      ASSERT_FALSE(images.back().empty()) << f;
    }
    std::vector<const Image*> ptrs;
    for (const Image& img : images) ptrs.push_back(&img);
    auto all = EmbedAll(*embedder_, ptrs);
    std::vector<std::vector<float>> rows;
    for (size_t i = 0; i < images.size(); ++i) {
      rows.emplace_back(all.begin() + i * 1280, all.begin() + (i + 1) * 1280);
    }
    features.push_back(std::move(rows));
  }
  double within = 0, between = 0;
  int n_within = 0, n_between = 0;
  for (size_t c1 = 0; c1 < classes.size(); ++c1) {
    for (size_t c2 = 0; c2 < classes.size(); ++c2) {
      for (size_t i = 0; i < 3; ++i) {
        for (size_t j = 0; j < 3; ++j) {
          if (c1 == c2 && i >= j) continue;
          if (c1 > c2) continue;
          float s = Dot(features[c1][i].data(), features[c2][j].data(), 1280);
          if (c1 == c2) {
            within += s;
            ++n_within;
          } else {
            between += s;
            ++n_between;
          }
        }
      }
    }
  }
  within /= n_within;
  between /= n_between;
  EXPECT_GT(within, between + 0.05) << "within " << within << " between " << between;
  // And the nearest neighbour of the first dog photo is another dog.
  const auto& q = features[0][0];
  float best_dog = std::max(Dot(q.data(), features[0][1].data(), 1280),
                            Dot(q.data(), features[0][2].data(), 1280));
  for (size_t c = 1; c < classes.size(); ++c) {
    for (const auto& other : features[c]) EXPECT_GT(best_dog, Dot(q.data(), other.data(), 1280));
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, MobilenetTest, ::testing::Values("opencv", "libtorch"),
                         [](const auto& info) { return info.param; });

// The libtorch engine runs the int8 graph in float (no rounding between
// layers), so its vectors are close to OpenCV's int8 execution but not
// equal: mean cosine 0.984 over PACS photo, 0.968 over these images (the
// synthetic ones are far from ImageNet). "auto" picks libtorch.
TEST(MobilenetEnginesTest, LibtorchAgreesWithOpencvAndAutoPicksIt) {
  auto file = SharedMobilenet();
  if (!file) GTEST_SKIP() << "../shared/models not found";
  auto on_torch = OpenMobilenet("libtorch", *file);
  if (on_torch.status().code() == StatusCode::kUnsupported) {
    GTEST_SKIP() << "built without libtorch: " << on_torch.status().message();
  }
  ASSERT_TRUE(on_torch.ok()) << on_torch.status().ToString();
  auto on_opencv = OpenMobilenet("opencv", *file);
  ASSERT_TRUE(on_opencv.ok()) << on_opencv.status().ToString();
  auto automatic = OpenMobilenet("auto", *file);
  ASSERT_TRUE(automatic.ok()) << automatic.status().ToString();
  EXPECT_EQ((*automatic)->card().onnx.engine, Engine::kLibtorch);

  std::vector<Image> images = {PatternImage(320, 240, 0), PatternImage(240, 320, 1),
                               SolidImage(500, 400, 200, 120, 40)};
  if (auto shared = SharedDir()) {
    for (const char* cls : {"dog", "guitar", "house"}) {
      std::error_code ec;
      for (const auto& entry :
           std::filesystem::directory_iterator(*shared / "data" / "pacs" / "photo" / cls, ec)) {
        images.push_back(MobilenetTest::Load(entry.path()));
        break;
      }
    }
  }
  std::vector<const Image*> ptrs;
  for (const Image& img : images) ptrs.push_back(&img);
  auto a = EmbedAll(**on_torch, ptrs);
  auto b = EmbedAll(**on_opencv, ptrs);
  double sum = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const float cos = Dot(a.data() + i * 1280, b.data() + i * 1280, 1280);
    EXPECT_GT(cos, 0.9f) << "image " << i;
    sum += cos;
  }
  EXPECT_GT(sum / images.size(), 0.95);  // a wrong translation gives 0.2-0.5

  // bf16 (where the CPU has it): within cosine 0.99 of fp32 on photos (a
  // flat one-colour image, whose features are all small differences, gave
  // 0.90).
  if (images.size() <= 3) GTEST_SKIP() << "PACS photos not found for the bf16 check";
  ModelCard bf16_card = KnownModels().front().card;
  bf16_card.onnx.engine = Engine::kLibtorch;
  bf16_card.precision = Precision::kBf16;
  auto on_bf16 = OpenEmbedder(bf16_card, *file);
  ASSERT_TRUE(on_bf16.ok()) << on_bf16.status().ToString();
  auto c = EmbedAll(**on_bf16, ptrs);
  for (size_t i = 3; i < images.size(); ++i) {
    EXPECT_GT(Dot(a.data() + i * 1280, c.data() + i * 1280, 1280), 0.99f)
        << "image " << i << " (" << ToString((*on_bf16)->card().precision) << ")";
  }
}

}  // namespace
}  // namespace pixseek
