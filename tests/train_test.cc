// Tests for pixseek/train.h: each function returns the artefact it learns
// (PCA, SIFT-VLAD codebook, PQ codebooks), deterministically, and says
// InvalidArgument or FailedPrecondition when there is too little to learn.
#include "pixseek/train.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "index/pq.h"
#include "pixseek/feature_fit.h"
#include "pixseek/model_registry.h"

namespace pixseek {
namespace {

// n rows of d Gaussian values whose variance falls off with the coordinate.
std::vector<float> Anisotropic(size_t n, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(n * static_cast<size_t>(d));
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) x[i * d + j] = g(rng) * 10.0f / (1.0f + j) + 0.5f;
  }
  return x;
}

// A picture of random coloured 8x8 blocks: corners everywhere, so SIFT finds
// plenty of keypoints.
Image Blocks(uint32_t seed, int width = 160, int height = 120) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  Image image;
  image.width = width;
  image.height = height;
  image.rgb.resize(static_cast<size_t>(width) * height * 3);
  for (int by = 0; by < height; by += 8) {
    for (int bx = 0; bx < width; bx += 8) {
      const uint8_t colour[3] = {static_cast<uint8_t>(byte(rng)), static_cast<uint8_t>(byte(rng)),
                                 static_cast<uint8_t>(byte(rng))};
      for (int y = by; y < std::min(height, by + 8); ++y) {
        for (int x = bx; x < std::min(width, bx + 8); ++x) {
          for (int c = 0; c < 3; ++c) image.rgb[(static_cast<size_t>(y) * width + x) * 3 + c] = colour[c];
        }
      }
    }
  }
  return image;
}

Image Flat(int width = 64, int height = 64) {
  Image image;
  image.width = width;
  image.height = height;
  image.rgb.assign(static_cast<size_t>(width) * height * 3, 90);
  return image;
}

// The registry's sift-vlad card with a codebook of `clusters` words.
ModelCard SiftVladCard(int clusters) {
  for (const KnownModel& k : KnownModels()) {
    if (LearnsPerCollection(k.card)) {
      ModelCard card = k.card;
      card.dimension = clusters * kSiftDimension;
      return card;
    }
  }
  ADD_FAILURE() << "no sift-vlad in KnownModels()";
  return {};
}

// An embedder whose vector is the first kDim bytes of the image, as floats:
// enough for PCA to learn from, without a network.
class PixelEmbedder final : public Embedder {
 public:
  static constexpr int kDim = 8;
  PixelEmbedder() {
    card_.name = "pixels";
    card_.dimension = kDim;
    card_.max_batch = 3;
  }
  const ModelCard& card() const override { return card_; }
  Status Embed(std::span<const Image* const> images, float* out) override {
    for (size_t i = 0; i < images.size(); ++i) {
      for (int j = 0; j < kDim; ++j) out[i * kDim + j] = images[i]->rgb[static_cast<size_t>(j)];
    }
    calls_ += 1;
    return Status::Ok();
  }
  int calls() const { return calls_; }

 private:
  ModelCard card_;
  int calls_ = 0;
};

// A sample of n random 4x4 images; every fifth one is unusable (skipped).
ImageSample RandomSample(size_t n) {
  ImageSample sample;
  sample.size = n;
  sample.decode = [](size_t i) -> std::optional<Image> {
    if (i % 5 == 4) return std::nullopt;
    std::mt19937 rng(static_cast<uint32_t>(i) + 1);
    std::uniform_int_distribution<int> byte(0, 255);
    Image image;
    image.width = image.height = 4;
    image.rgb.resize(4 * 4 * 3);
    for (uint8_t& b : image.rgb) b = static_cast<uint8_t>(byte(rng));
    return image;
  };
  return sample;
}

TEST(TrainPcaTest, LearnsTheLeadingComponentsDeterministically) {
  const int d = 16;
  const size_t n = 300;
  const std::vector<float> x = Anisotropic(n, d, 1);
  PcaOptions options;
  options.dimension = 4;
  auto pca = TrainPca(x, d, options);
  ASSERT_TRUE(pca.ok()) << pca.status().ToString();
  EXPECT_EQ(pca->input_dimension(), d);
  EXPECT_EQ(pca->output_dimension(), 4);
  ASSERT_EQ(pca->eigenvalues().size(), 4u);
  for (int i = 1; i < 4; ++i) EXPECT_GE(pca->eigenvalues()[i - 1], pca->eigenvalues()[i]);
  auto again = TrainPca(x, d, options);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(pca->Serialize(), again->Serialize());
  // What it learned survives its file.
  auto parsed = PcaTransform::Parse(pca->Serialize(), "test PCA");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  std::vector<float> a(n * 4), b(n * 4);
  pca->Apply(x.data(), n, a.data());
  parsed->Apply(x.data(), n, b.data());
  EXPECT_EQ(a, b);
}

TEST(TrainPcaTest, BadRequestsAreInvalidArgument) {
  const int d = 16;
  const std::vector<float> x = Anisotropic(100, d, 2);
  PcaOptions options;
  options.dimension = d + 1;
  EXPECT_EQ(TrainPca(x, d, options).status().code(), StatusCode::kInvalidArgument);
  options.dimension = 0;
  EXPECT_EQ(TrainPca(x, d, options).status().code(), StatusCode::kInvalidArgument);
  options.dimension = 4;
  EXPECT_EQ(TrainPca(std::span<const float>(x).first(x.size() - 1), d, options).status().code(),
            StatusCode::kInvalidArgument);  // not whole rows
  EXPECT_EQ(TrainPca(std::span<const float>(x).first(4 * d), d, options).status().code(),
            StatusCode::kInvalidArgument);  // 4 rows cannot give 4 components
  options.whiten = true;
  options.shrinkage = 1.5f;
  EXPECT_EQ(TrainPca(x, d, options).status().code(), StatusCode::kInvalidArgument);
}

TEST(LearnPcaTest, EmbedsTheUsableImagesAndSkipsWhiteningOnASmallSample) {
  PixelEmbedder embedder;
  PcaOptions options;
  options.dimension = 4;
  options.whiten = true;
  // 30 images, fewer than kWhitenImagesPerDimension per dimension: plain PCA.
  auto plain = LearnPca(embedder, RandomSample(30), options, /*threads=*/2);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->options().whiten);
  EXPECT_EQ(plain->input_dimension(), PixelEmbedder::kDim);
  EXPECT_EQ(plain->output_dimension(), 4);
  EXPECT_GT(embedder.calls(), 1);  // batches of max_batch x threads images

  auto whitened = LearnPca(embedder, RandomSample(4 * kWhitenImagesPerDimension), options, 2);
  ASSERT_TRUE(whitened.ok()) << whitened.status().ToString();
  EXPECT_TRUE(whitened->options().whiten);

  // Four images (one unusable) are too few for 4 components.
  auto few = LearnPca(embedder, RandomSample(4), options, 1);
  EXPECT_EQ(few.status().code(), StatusCode::kFailedPrecondition) << few.status().ToString();
}

TEST(TrainSiftVladCodebookTest, LearnsAnOpenableCodebookDeterministically) {
  const ModelCard card = SiftVladCard(8);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> descriptors(500 * kSiftDimension);
  for (float& v : descriptors) v = u(rng);
  auto codebook = TrainSiftVladCodebook(card, descriptors);
  ASSERT_TRUE(codebook.ok()) << codebook.status().ToString();
  EXPECT_EQ(codebook->clusters(), 8);
  auto again = TrainSiftVladCodebook(card, descriptors);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(codebook->Serialize(), again->Serialize());
  auto embedder = OpenSiftVlad(card, codebook->Serialize(), "test codebook");
  ASSERT_TRUE(embedder.ok()) << embedder.status().ToString();
  EXPECT_EQ((*embedder)->dimension(), 8 * kSiftDimension);

  // Fewer descriptors than words; a card that learns no codebook.
  EXPECT_EQ(TrainSiftVladCodebook(card, std::span<const float>(descriptors).first(
                                            7 * kSiftDimension))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  ModelCard onnx = card;
  onnx.runtime = Runtime::kOnnx;
  EXPECT_EQ(TrainSiftVladCodebook(onnx, descriptors).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(LearnSiftVladCodebookTest, LearnsFromImagesAndFailsOnFlatOnes) {
  const ModelCard card = SiftVladCard(4);
  ImageSample sample;
  sample.size = 6;
  sample.decode = [](size_t i) -> std::optional<Image> {
    if (i == 2) return std::nullopt;
    return Blocks(static_cast<uint32_t>(i) + 10);
  };
  auto codebook = LearnSiftVladCodebook(card, sample, /*threads=*/2);
  ASSERT_TRUE(codebook.ok()) << codebook.status().ToString();
  EXPECT_EQ(codebook->clusters(), 4);

  ImageSample flat;
  flat.size = 3;
  flat.decode = [](size_t) -> std::optional<Image> { return Flat(); };
  EXPECT_EQ(LearnSiftVladCodebook(card, flat, 1).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(TrainPqTest, LearnsCodebooksTheIndexLoads) {
  const int d = 16;
  const size_t n = 400;
  const std::vector<float> x = Anisotropic(n, d, 4);
  PqTrainOptions options;
  options.m = 4;
  auto codebooks = TrainPq(x, d, options);
  ASSERT_TRUE(codebooks.ok()) << codebooks.status().ToString();
  EXPECT_EQ(codebooks->dim, d);
  EXPECT_EQ(codebooks->m, 4);
  auto pq = ProductQuantizer::Load(codebooks->bytes);
  ASSERT_TRUE(pq.ok()) << pq.status().ToString();
  EXPECT_EQ(pq->dim(), d);
  EXPECT_EQ(pq->m(), 4);
  std::vector<uint8_t> codes(n * pq->code_size());
  ASSERT_TRUE(pq->Encode(x.data(), n, codes.data()).ok());
  // Same vectors and seed, same codebooks.
  auto again = TrainPq(x, d, options);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(codebooks->bytes, again->bytes);

  EXPECT_EQ(TrainPq(std::span<const float>(x).first(x.size() - 1), d, options).status().code(),
            StatusCode::kInvalidArgument);  // not whole rows
  options.m = 5;  // does not divide 16
  EXPECT_EQ(TrainPq(x, d, options).status().code(), StatusCode::kInvalidArgument);
  options.m = 4;
  EXPECT_EQ(TrainPq(std::span<const float>(x).first(100 * d), d, options).status().code(),
            StatusCode::kInvalidArgument);  // fewer rows than centroids
}

}  // namespace
}  // namespace pixseek
