// SIFT-VLAD (RootSIFT, codebook, VLAD), PCA(-whitening) learned per
// collection, their files, a database that learns both at creation and
// applies them at query time, and the CLI's offline fallback to sift-vlad.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "pixseek/database.h"
#include "pixseek/feature_fit.h"
#include "pixseek/model_registry.h"
#include "pixseek/services.h"
#include "pixseek/train.h"
#include "subprocess.h"
#include "test_util.h"

namespace pixseek {
namespace {

using testing::WriteBytes;

// The registry's sift-vlad card with a smaller codebook (k = 16), which small
// synthetic images can train.
ModelCard SmallCard() {
  for (const KnownModel& k : KnownModels()) {
    if (k.name == "sift-vlad") {
      ModelCard card = k.card;
      card.dimension = 16 * kSiftDimension;
      return card;
    }
  }
  ADD_FAILURE() << "no sift-vlad in KnownModels()";
  return {};
}

Image Decode(const std::vector<uint8_t>& bytes) {
  auto decoded = DecodeImage(bytes, DecodeOptions{});
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  return decoded.ok() ? decoded->image : Image{};
}

// A picture full of corners and edges (many random shapes), distinct per
// seed, with plenty of SIFT keypoints, encoded as `ext`.
std::vector<uint8_t> TexturedBytes(uint32_t seed, int width, int height, const std::string& ext) {
  cv::RNG rng(seed);
  cv::Mat bgr(height, width, CV_8UC3, cv::Scalar(rng.uniform(0, 255), rng.uniform(0, 255),
                                                 rng.uniform(0, 255)));
  for (int i = 0; i < 40; ++i) {
    const cv::Scalar colour(rng.uniform(0, 255), rng.uniform(0, 255), rng.uniform(0, 255));
    const cv::Point a(rng.uniform(0, width), rng.uniform(0, height));
    const cv::Point b(rng.uniform(0, width), rng.uniform(0, height));
    switch (i % 3) {
      case 0: cv::rectangle(bgr, a, b, colour, cv::FILLED); break;
      case 1: cv::circle(bgr, a, rng.uniform(4, std::max(5, width / 6)), colour, cv::FILLED); break;
      default: cv::line(bgr, a, b, colour, rng.uniform(1, 5)); break;
    }
  }
  std::vector<uint8_t> bytes;
  cv::imencode(ext, bgr, bytes);
  return bytes;
}

Image Textured(uint32_t seed, int width = 320, int height = 240) {
  return Decode(TexturedBytes(seed, width, height, ".png"));
}

// `image` scaled by 0.8, cropped by 4% on each side, re-encoded as JPEG at
// quality 70: a near duplicate.
Image NearDuplicate(const Image& image) {
  cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
  cv::Mat small;
  cv::resize(rgb, small, cv::Size(), 0.8, 0.8, cv::INTER_AREA);
  const int dx = small.cols / 25, dy = small.rows / 25;
  cv::Mat crop = small(cv::Rect(dx, dy, small.cols - 2 * dx, small.rows - 2 * dy)).clone();
  cv::Mat bgr;
  cv::cvtColor(crop, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> jpeg;
  cv::imencode(".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, 70});
  return Decode(jpeg);
}

double Norm(const float* v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
  return std::sqrt(s);
}

double Dot(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::vector<float> Descriptors(const ModelCard& card, const std::vector<Image>& images) {
  std::vector<float> all;
  for (const Image& image : images) {
    auto d = RootSiftDescriptors(card, image);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    if (d.ok()) all.insert(all.end(), d->begin(), d->end());
  }
  return all;
}

std::unique_ptr<Embedder> Trained(const ModelCard& card, const std::vector<Image>& images,
                                  std::string* codebook_out = nullptr) {
  auto learned = TrainSiftVladCodebook(card, Descriptors(card, images));
  EXPECT_TRUE(learned.ok()) << learned.status().ToString();
  if (!learned.ok()) return nullptr;
  const std::string codebook = learned->Serialize();
  if (codebook_out != nullptr) *codebook_out = codebook;
  auto embedder = OpenSiftVlad(card, codebook, "test codebook");
  EXPECT_TRUE(embedder.ok()) << embedder.status().ToString();
  return embedder.ok() ? std::move(*embedder) : nullptr;
}

std::vector<Image> Collection(int n) {
  std::vector<Image> images;
  for (int i = 0; i < n; ++i) images.push_back(Textured(100 + i));
  return images;
}

TEST(RootSiftTest, RowsOf128WithUnitL2Norm) {
  const ModelCard card = SmallCard();
  auto d = RootSiftDescriptors(card, Textured(7));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_FALSE(d->empty());
  ASSERT_EQ(d->size() % kSiftDimension, 0u);
  const size_t rows = d->size() / kSiftDimension;
  EXPECT_LE(rows, static_cast<size_t>(card.sift_vlad.max_keypoints));
  for (size_t r = 0; r < rows; ++r) {
    const float* row = d->data() + r * kSiftDimension;
    // sqrt of an L1-normalised non-negative vector has unit L2 norm.
    EXPECT_NEAR(Norm(row, kSiftDimension), 1.0, 1e-3);
    EXPECT_GE(*std::min_element(row, row + kSiftDimension), 0.0f);
  }
}

TEST(RootSiftTest, KeypointCapAndFlatImage) {
  ModelCard card = SmallCard();
  card.sift_vlad.max_keypoints = 5;
  auto d = RootSiftDescriptors(card, Textured(8, 640, 480));
  ASSERT_TRUE(d.ok());
  EXPECT_LE(d->size() / kSiftDimension, 5u);

  Image flat;
  flat.width = 200;
  flat.height = 100;
  flat.rgb.assign(200 * 100 * 3, 128);
  auto none = RootSiftDescriptors(card, flat);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  EXPECT_EQ(RootSiftDescriptors(card, Image{}).status().code(), StatusCode::kInvalidArgument);
}

TEST(SiftVladTest, ShapesNormsAndDeterminism) {
  const ModelCard card = SmallCard();
  std::vector<Image> images = Collection(6);
  auto embedder = Trained(card, images);
  ASSERT_NE(embedder, nullptr);
  ASSERT_EQ(embedder->dimension(), 16 * 128);

  const size_t d = static_cast<size_t>(embedder->dimension());
  std::vector<const Image*> batch;
  for (const Image& image : images) batch.push_back(&image);
  batch.push_back(&images[2]);  // the same image twice in one batch
  std::vector<float> out(batch.size() * d);
  ASSERT_TRUE(embedder->Embed(batch, out.data()).ok());
  for (size_t i = 0; i < batch.size(); ++i) EXPECT_NEAR(Norm(&out[i * d], d), 1.0, 1e-4);
  for (size_t j = 0; j < d; ++j) ASSERT_EQ(out[2 * d + j], out[6 * d + j]);

  // One at a time gives the same vectors as the batch.
  std::vector<float> one(d);
  const Image* single[] = {&images[4]};
  ASSERT_TRUE(embedder->Embed(single, one.data()).ok());
  for (size_t j = 0; j < d; ++j) ASSERT_NEAR(one[j], out[4 * d + j], 1e-6);

  // A flat image has no keypoints: the uniform unit vector, not an error.
  Image flat;
  flat.width = flat.height = 64;
  flat.rgb.assign(64 * 64 * 3, 90);
  const Image* flat_batch[] = {&flat};
  ASSERT_TRUE(embedder->Embed(flat_batch, one.data()).ok());
  EXPECT_NEAR(Norm(one.data(), d), 1.0, 1e-5);
  EXPECT_FLOAT_EQ(one[0], one[d - 1]);

  Image empty;
  const Image* bad[] = {&empty};
  EXPECT_EQ(embedder->Embed(bad, one.data()).code(), StatusCode::kInvalidArgument);
}

TEST(SiftVladTest, NearDuplicateRanksFirst) {
  const ModelCard card = SmallCard();
  std::vector<Image> images = Collection(12);
  auto embedder = Trained(card, images);
  ASSERT_NE(embedder, nullptr);
  const size_t d = static_cast<size_t>(embedder->dimension());
  std::vector<const Image*> batch;
  for (const Image& image : images) batch.push_back(&image);
  std::vector<float> base(images.size() * d);
  ASSERT_TRUE(embedder->Embed(batch, base.data()).ok());

  for (size_t target : {size_t{3}, size_t{9}}) {
    Image dup = NearDuplicate(images[target]);
    std::vector<float> q(d);
    const Image* qb[] = {&dup};
    ASSERT_TRUE(embedder->Embed(qb, q.data()).ok());
    size_t best = 0;
    double best_score = -2, second = -2;
    for (size_t i = 0; i < images.size(); ++i) {
      const double s = Dot(q.data(), &base[i * d], d);
      if (s > best_score) {
        second = best_score;
        best_score = s;
        best = i;
      } else {
        second = std::max(second, s);
      }
    }
    EXPECT_EQ(best, target) << "score " << best_score << ", runner-up " << second;
    EXPECT_GT(best_score, second + 0.05);
  }
}

TEST(SiftVladTest, CodebookFileDamageIsDataLoss) {
  const ModelCard card = SmallCard();
  std::string codebook;
  ASSERT_NE(Trained(card, Collection(4), &codebook), nullptr);
  testing::TempDir tmp;
  const auto file = tmp.path() / card.file;
  std::ofstream(file, std::ios::binary) << codebook;
  ASSERT_TRUE(OpenEmbedder(card, file).ok());

  std::string flipped = codebook;
  flipped[flipped.size() / 2] ^= 0x40;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << flipped;
  auto damaged = OpenEmbedder(card, file);
  ASSERT_EQ(damaged.status().code(), StatusCode::kDataLoss) << damaged.status().ToString();
  EXPECT_NE(damaged.status().message().find("checksum"), std::string::npos);

  std::ofstream(file, std::ios::binary | std::ios::trunc) << codebook.substr(0, 100);
  EXPECT_EQ(OpenEmbedder(card, file).status().code(), StatusCode::kDataLoss);
  std::ofstream(file, std::ios::binary | std::ios::trunc) << "not a codebook";
  EXPECT_EQ(OpenEmbedder(card, file).status().code(), StatusCode::kDataLoss);
  std::filesystem::remove(file);
  EXPECT_EQ(OpenEmbedder(card, file).status().code(), StatusCode::kNotFound);

  // A codebook of another size does not fit the card.
  ModelCard other = card;
  other.dimension = 8 * kSiftDimension;
  EXPECT_EQ(OpenSiftVlad(other, codebook, "x").status().code(), StatusCode::kInvalidArgument);
  // Too few descriptors for the codebook.
  std::vector<float> few(10 * kSiftDimension, 0.1f);
  EXPECT_EQ(TrainSiftVladCodebook(card, few).status().code(), StatusCode::kInvalidArgument);
}

// Gaussian rows whose variance falls off steeply with the coordinate.
std::vector<float> Anisotropic(size_t n, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(n * d);
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) x[i * d + j] = g(rng) * 10.0f / (1.0f + j) + 0.5f;
  }
  return x;
}

// Variance of each output component over the rows of `y`.
std::vector<double> ComponentVariance(const std::vector<float>& y, size_t n, int d) {
  std::vector<double> mean(d), var(d);
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) mean[j] += y[i * d + j] / n;
  }
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) var[j] += (y[i * d + j] - mean[j]) * (y[i * d + j] - mean[j]) / n;
  }
  return var;
}

TEST(PcaTest, SaveLoadRoundTripAndNormalised) {
  const int d = 32;
  const size_t n = 400;
  std::vector<float> x = Anisotropic(n, d, 1);
  PcaOptions options;
  options.dimension = 8;
  auto pca = TrainPca(x, d, options);
  ASSERT_TRUE(pca.ok()) << pca.status().ToString();
  EXPECT_EQ(pca->input_dimension(), d);
  EXPECT_EQ(pca->output_dimension(), 8);
  ASSERT_EQ(pca->eigenvalues().size(), 8u);
  EXPECT_GT(pca->eigenvalues()[0], pca->eigenvalues()[7]);

  testing::TempDir tmp;
  const auto file = tmp.path() / "pca.bin";
  std::ofstream(file, std::ios::binary) << pca->Serialize();
  auto loaded = PcaTransform::Load(file);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  std::vector<float> a(n * 8), b(n * 8);
  pca->Apply(x.data(), n, a.data());
  loaded->Apply(x.data(), n, b.data());
  EXPECT_EQ(a, b);
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(Norm(&a[i * 8], 8), 1.0, 1e-5);

  std::string bytes = pca->Serialize();
  bytes[40] ^= 1;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
  EXPECT_EQ(PcaTransform::Load(file).status().code(), StatusCode::kDataLoss);

  options.dimension = d + 1;
  EXPECT_EQ(TrainPca(x, d, options).status().code(), StatusCode::kInvalidArgument);
  options.dimension = 8;
  std::vector<float> few(8 * d, 1.0f);
  EXPECT_EQ(TrainPca(few, d, options).status().code(), StatusCode::kInvalidArgument);
}

TEST(PcaTest, WhiteningEqualisesVarianceAndShrinkageOneIsPlainPca) {
  const int d = 32, k = 8;
  const size_t n = 2000;
  std::vector<float> x = Anisotropic(n, d, 2);
  PcaOptions plain;
  plain.dimension = k;
  PcaOptions white = plain;
  white.whiten = true;
  white.shrinkage = 0.0f;
  PcaOptions none = white;
  none.shrinkage = 1.0f;
  auto p = TrainPca(x, d, plain);
  auto w = TrainPca(x, d, white);
  auto s1 = TrainPca(x, d, none);
  ASSERT_TRUE(p.ok() && w.ok() && s1.ok());
  std::vector<float> yp(n * k), yw(n * k), ys(n * k);
  p->Apply(x.data(), n, yp.data());
  w->Apply(x.data(), n, yw.data());
  s1->Apply(x.data(), n, ys.data());
  for (size_t i = 0; i < yp.size(); ++i) ASSERT_NEAR(yp[i], ys[i], 1e-5);
  auto vp = ComponentVariance(yp, n, k);
  auto vw = ComponentVariance(yw, n, k);
  const double spread_plain = *std::max_element(vp.begin(), vp.end()) /
                              *std::min_element(vp.begin(), vp.end());
  const double spread_white = *std::max_element(vw.begin(), vw.end()) /
                              *std::min_element(vw.begin(), vw.end());
  EXPECT_GT(spread_plain, 20.0);
  EXPECT_LT(spread_white, 3.0);
  EXPECT_TRUE(w->options().whiten);
}

// A folder of textured pictures in two labelled sub-folders.
void WriteCollection(const std::filesystem::path& root, int per_label) {
  std::filesystem::create_directories(root / "a");
  std::filesystem::create_directories(root / "b");
  for (int i = 0; i < per_label; ++i) {
    WriteBytes(root / "a" / ("a" + std::to_string(i) + ".png"),
               TexturedBytes(300 + i, 320, 240, ".png"));
    WriteBytes(root / "b" / ("b" + std::to_string(i) + ".jpg"),
               TexturedBytes(400 + i, 240, 320, ".jpg"));
  }
}

TEST(FittedDatabaseTest, SiftVladWithPcaLearnedAtBuildAppliedAtQuery) {
  testing::TempDir tmp;
  const auto images = tmp.path() / "images";
  WriteCollection(images, 8);
  DatabaseOptions options;
  options.dir = tmp.path() / "db";
  options.home = tmp.path() / "home";  // empty: sift-vlad needs no install
  options.model = "sift-vlad";
  options.index_kind = "flat";
  options.fit_root = images;
  options.pca.dimension = 12;
  options.pca.whiten = true;
  const auto probe = images / "a" / "a3.png";
  std::vector<float> stored;
  int64_t id = 0;
  {
    auto db = Database::Open(options, true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ((*db)->dimension(), 12);
    BuildOptions build;
    build.show_progress = false;
    auto report = BuildService(**db).Build(images, build);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->indexed, 16u);
    auto record = (*db)->store().FindByPath(std::filesystem::canonical(probe).string());
    ASSERT_TRUE(record.ok() && record->has_value());
    id = (*record)->id;
    auto v = (*db)->index().Get(id);
    ASSERT_TRUE(v.ok());
    stored = *v;
  }
  EXPECT_TRUE(std::filesystem::exists(options.dir / "sift-vlad-codebook.bin"));
  EXPECT_TRUE(std::filesystem::exists(options.dir / "pca.bin"));

  // Reopened read-only (as query does), with no PCA flags: the stored PCA is
  // applied, and the probe embeds to the stored vector.
  DatabaseOptions reopen;
  reopen.dir = options.dir;
  reopen.home = options.home;
  reopen.read_only = true;
  auto db = Database::Open(reopen, false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->model_name(), "sift-vlad");
  ASSERT_EQ((*db)->dimension(), 12);
  auto bytes = testing::ReadBytes(probe);
  Image image = Decode(bytes);
  const Image* one[] = {&image};
  // Embed gives the network's base feature; the PCA maps it to the stored vector.
  std::vector<float> base(static_cast<size_t>((*db)->base_dimension()));
  ASSERT_TRUE((*db)->Embed(one, base.data()).ok());
  std::vector<float> q(12);
  (*db)->Project(base.data(), 1, q.data());
  for (int j = 0; j < 12; ++j) EXPECT_NEAR(q[j], stored[j], 1e-5);
  auto hits = QueryService(**db).SearchImage(bytes, QueryParams{});
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_FALSE(hits->hits.empty());
  EXPECT_EQ(hits->hits[0].id, id);
  db->reset();

  // Another PCA on an existing database is refused.
  DatabaseOptions other = reopen;
  other.read_only = false;
  other.pca.dimension = 8;
  EXPECT_EQ(Database::Open(other, false).status().code(), StatusCode::kFailedPrecondition);

  // A damaged PCA file is reported, not used.
  std::string pca_bytes;
  {
    std::ifstream in(options.dir / "pca.bin", std::ios::binary);
    pca_bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  pca_bytes[pca_bytes.size() / 3] ^= 0x10;
  std::ofstream(options.dir / "pca.bin", std::ios::binary | std::ios::trunc) << pca_bytes;
  EXPECT_EQ(Database::Open(reopen, false).status().code(), StatusCode::kDataLoss);
}

TEST(FittedDatabaseTest, NewSiftVladDatabaseNeedsImages) {
  testing::TempDir tmp;
  DatabaseOptions options;
  options.dir = tmp.path() / "db";
  options.home = tmp.path() / "home";
  options.model = "sift-vlad";
  auto db = Database::Open(options, true);
  EXPECT_EQ(db.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(options.dir / "pixseek.json"));
}

// `pixseek build` with no --model, nothing installed and no network falls back
// to sift-vlad with one warning and builds a searchable database; an explicit
// --model that cannot be had stays an error.
TEST(OfflineFallbackTest, CliBuildsWithSiftVlad) {
  testing::TempDir tmp;
  const auto images = tmp.path() / "photos";
  WriteCollection(images, 6);
  const auto home = tmp.path() / "home";  // empty model home
  const auto db = tmp.path() / "db";
  // No network: the registry does not try (the same path as a failed download).
  ::setenv("PIXSEEK_OFFLINE", "1", 1);
  auto pixseek = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {PIXSEEK_BINARY, "--home", home.string()});
    return testing::RunCommand(args);
  };
  auto missing = pixseek({"build", images.string(), "--db", (tmp.path() / "db2").string(),
                          "--model", "mobilenetv2"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_EQ(missing.err.find("warning"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("mobilenetv2"), std::string::npos) << missing.err;

  auto r = pixseek({"build", images.string(), "--db", db.string(), "--json"});
  ::unsetenv("PIXSEEK_OFFLINE");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t warnings = 0;
  for (size_t at = r.err.find("warning"); at != std::string::npos;
       at = r.err.find("warning", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << r.err;
  EXPECT_NE(r.err.find("sift-vlad"), std::string::npos) << r.err;
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["indexed"], 12) << r.out;

  auto stats = pixseek({"stats", "--db", db.string()});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_EQ(nlohmann::json::parse(stats.out)["model"], "sift-vlad");

  const auto probe = images / "b" / "b2.jpg";
  auto q = pixseek({"query", probe.string(), "--db", db.string(), "-k", "3", "--json"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  auto answer = nlohmann::json::parse(q.out);
  ASSERT_FALSE(answer["results"].empty());
  EXPECT_EQ(answer["results"][0]["path"], std::filesystem::canonical(probe).string());
  EXPECT_NEAR(answer["results"][0]["score"].get<double>(), 1.0, 1e-3);

  auto list = pixseek({"model", "list"});
  EXPECT_NE(list.out.find("sift-vlad"), std::string::npos) << list.out;
  auto info = pixseek({"model", "info", "sift-vlad"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(nlohmann::json::parse(info.out)["runtime"], "sift-vlad");
}

}  // namespace
}  // namespace pixseek
