// Re-ranking between the index and the answer (src/service/rerank.h,
// src/service/dba.h): the QE/DBA arithmetic on hand-made vectors, QE and DBA
// changing a ranking as they should on a small synthetic database, DBA kept
// through inserts, a reindex's catch-up and reopening (the manifest),
// spatial verification finding a rotated and cropped copy among
// distractors, and the `rerank` parameter checked over HTTP and on the CLI.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

#include "pixseek/config.h"
#include "pixseek/database.h"
#include "pixseek/feature_fit.h"
#include "pixseek/model_registry.h"
#include "pixseek/server.h"
#include "pixseek/services.h"
#include "service/dba.h"
#include "subprocess.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr int kDim = 16;
constexpr float kTol = 1e-5f;

std::vector<float> Normalised(std::vector<float> v) {
  double norm = 0;
  for (float x : v) norm += static_cast<double>(x) * x;
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], kTol) << "at " << i;
}

// ---- The arithmetic ---------------------------------------------------------

TEST(WeightedMeanTest, SimilarityToTheAlphaThenNormalised) {
  const float a[] = {1, 0}, b[] = {0, 1};
  const float* rows[] = {a, b};
  std::vector<float> out(2);
  const float sims[] = {1.0f, 0.5f};
  WeightedMean(rows, sims, 1.0f, 2, out.data());
  ExpectNear(out, Normalised({1.0f, 0.5f}));
  WeightedMean(rows, sims, 3.0f, 2, out.data());
  ExpectNear(out, Normalised({1.0f, 0.125f}));
  WeightedMean(rows, sims, 0.0f, 2, out.data());  // alpha 0: the plain mean
  ExpectNear(out, Normalised({1.0f, 1.0f}));
  // A dissimilar row weighs nothing.
  const float negative[] = {1.0f, -0.4f};
  WeightedMean(rows, negative, 3.0f, 2, out.data());
  ExpectNear(out, {1.0f, 0.0f});
}

TEST(AugmentRowsTest, EachRowTheWeightedMeanOfItsNearest) {
  // Four 2-d unit vectors; n = 2: each row with its nearest other row.
  const std::vector<float> x = {1, 0,  0.8f, 0.6f,  0, 1,  -1, 0};
  std::vector<float> out(x.size());
  AugmentRows(x.data(), 4, 2, DbaOptions{2, 1.0f}, 2, out.data());
  // (1,0): itself and (0.8,0.6) at 0.8.
  ExpectNear({out[0], out[1]}, Normalised({1 + 0.8f * 0.8f, 0.8f * 0.6f}));
  // (0.8,0.6): itself and (1,0) at 0.8 (beats (0,1) at 0.6).
  ExpectNear({out[2], out[3]}, Normalised({0.8f + 0.8f, 0.6f}));
  // (0,1): itself and (0.8,0.6) at 0.6.
  ExpectNear({out[4], out[5]}, Normalised({0.6f * 0.8f, 1 + 0.6f * 0.6f}));
  // (-1,0): its nearest other, (0,1), is at 0: weight 0, itself alone.
  ExpectNear({out[6], out[7]}, {-1.0f, 0.0f});
  // Off: a copy.
  AugmentRows(x.data(), 4, 2, DbaOptions{}, 1, out.data());
  EXPECT_EQ(out, x);
}

TEST(RerankMethodTest, ParseAndValidate) {
  for (const char* name : {"none", "qe", "dba", "dba+qe", "spatial"}) {
    auto m = ParseRerankMethod(name);
    ASSERT_TRUE(m.ok()) << name;
    EXPECT_EQ(ToString(*m), name);
  }
  auto bad = ParseRerankMethod("Qe");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("none, qe, dba, dba+qe, spatial"), std::string::npos);
  RerankOptions o;
  EXPECT_TRUE(ValidateRerank(o).ok());
  o.qe_n = 0;
  EXPECT_EQ(ValidateRerank(o).code(), StatusCode::kInvalidArgument);
  o = {};
  o.qe_alpha = -1;
  EXPECT_EQ(ValidateRerank(o).code(), StatusCode::kInvalidArgument);
  o = {};
  o.spatial_top = kMaxSpatialTop + 1;
  EXPECT_EQ(ValidateRerank(o).code(), StatusCode::kInvalidArgument);
}

TEST(RerankConfigTest, SearchSectionSetsTheDefault) {
  TempDir tmp;
  const fs::path file = tmp.path() / "pixseek.toml";
  std::ofstream(file) << "[search]\nrerank = \"dba+qe\"\nqe_n = 5\nqe_alpha = 2.5\n"
                         "spatial_top = 8\n";
  Config config;
  ASSERT_TRUE(LoadConfigFile(file, config).ok());
  EXPECT_EQ(config.server.rerank.method, RerankMethod::kDbaQe);
  EXPECT_EQ(config.server.rerank.qe_n, 5);
  EXPECT_FLOAT_EQ(config.server.rerank.qe_alpha, 2.5f);
  EXPECT_EQ(config.server.rerank.spatial_top, 8);
  for (const char* bad : {"rerank = \"fancy\"", "qe_n = 0", "spatial_top = 1000", "depth = 3"}) {
    std::ofstream(file) << "[search]\n" << bad << "\n";
    Config untouched;
    const Status s = LoadConfigFile(file, untouched);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("[search]"), std::string::npos) << s.message();
  }
}

// ---- A synthetic database ---------------------------------------------------

// 16-d vectors: cluster "a" along e0, cluster "b" along e1, and between them
// a query q = (0.8, 0.6) whose single nearest neighbour is b's outlier
// b* = (0.6, 0.8) while most of its near neighbours are a's. QE (and DBA)
// pull q towards a.
std::vector<float> Mix(std::initializer_list<std::pair<int, float>> parts) {
  std::vector<float> v(kDim, 0.0f);
  for (auto [i, w] : parts) v[static_cast<size_t>(i)] += w;
  return Normalised(v);
}

class RerankDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    ASSERT_TRUE(testing::InstallTinyModel(home_, tmp_.path(), kDim, 5).ok());
  }

  DatabaseOptions Options() const {
    DatabaseOptions o;
    o.dir = tmp_.path() / "db";
    o.home = home_;
    o.model = "tiny";
    o.index_kind = index_kind_;
    o.threads = 2;
    return o;
  }

  // Stores `vector` as a base feature (the tiny model has no projection).
  int64_t Insert(Database& db, const std::string& name, const std::string& label,
                 const std::vector<float>& vector) {
    ImageRecord r;
    r.path = (tmp_.path() / (name + ".png")).string();
    r.name = name;
    r.sha256 = std::string(64, '0');
    r.sha256.replace(0, name.size(), name);
    r.label = label;
    const std::vector<uint8_t> thumb = {0xff, 0xd8, 0xff, 0xd9};
    auto id = db.Insert(r, vector, thumb);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    ids_[name] = id.ok() ? *id : -1;
    vectors_[name] = vector;
    return ids_[name];
  }

  std::unique_ptr<Database> MakeClusters() {
    auto db = Database::Open(Options(), true);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    for (int i = 0; i < 10; ++i) {
      Insert(**db, "a" + std::to_string(i), "a", Mix({{0, 1.0f}, {2 + i % 14, 0.1f}}));
      Insert(**db, "b" + std::to_string(i), "b", Mix({{1, 1.0f}, {2 + (i + 5) % 14, 0.1f}}));
    }
    Insert(**db, "bstar", "b", Mix({{0, 0.6f}, {1, 0.8f}}));
    Insert(**db, "q", "q", Mix({{0, 0.8f}, {1, 0.6f}}));
    return std::move(*db);
  }

  std::vector<std::string> Labels(const QueryResponse& r) const {
    std::vector<std::string> labels;
    for (const QueryHit& h : r.hits) labels.push_back(h.record.label);
    return labels;
  }

  Result<QueryResponse> SearchQ(Database& db, RerankMethod method, int qe_n = 5) {
    QueryParams params;
    params.top_k = 3;
    params.rerank.method = method;
    params.rerank.qe_n = qe_n;
    return QueryService(db).SearchById(ids_.at("q"), params);
  }

  void DbaLifecycle();

  std::string index_kind_ = "flat";
  TempDir tmp_;
  fs::path home_;
  std::map<std::string, int64_t> ids_;
  std::map<std::string, std::vector<float>> vectors_;
};

TEST_F(RerankDbTest, QueryExpansionFixesAWrongNearestNeighbour) {
  auto db = MakeClusters();
  auto none = SearchQ(*db, RerankMethod::kNone);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  ASSERT_EQ(none->hits.size(), 3u);
  EXPECT_EQ(none->hits[0].id, ids_["q"]);
  EXPECT_EQ(none->hits[1].id, ids_["bstar"]) << "the plain nearest neighbour is b's outlier";

  auto qe = SearchQ(*db, RerankMethod::kQe);
  ASSERT_TRUE(qe.ok()) << qe.status().ToString();
  EXPECT_EQ(Labels(*qe), (std::vector<std::string>{"q", "a", "a"}));
  // The expanded query's scores: q and its top 5 others (b* and four a's)
  // weighted by similarity^3.
  std::vector<const float*> rows = {vectors_["q"].data(), vectors_["bstar"].data()};
  for (int i = 0; i < 4; ++i) rows.push_back(vectors_["a" + std::to_string(i)].data());
  std::vector<float> sims;
  for (const float* r : rows) {
    float s = 0;
    for (int d = 0; d < kDim; ++d) s += r[d] * vectors_["q"][static_cast<size_t>(d)];
    sims.push_back(s);
  }
  std::vector<float> expanded(kDim);
  WeightedMean(rows, sims, 3.0f, kDim, expanded.data());
  float want = 0;
  for (size_t d = 0; d < kDim; ++d) want += expanded[d] * vectors_["q"][d];
  EXPECT_NEAR(qe->hits[0].score, want, kTol);

  // qe_n = 1 averages b* alone in: no fix.
  auto qe1 = SearchQ(*db, RerankMethod::kQe, 1);
  ASSERT_TRUE(qe1.ok());
  EXPECT_EQ(qe1->hits[1].id, ids_["bstar"]);

  // dba on a database without DBA is refused, with the way to get it.
  auto dba = SearchQ(*db, RerankMethod::kDba);
  ASSERT_FALSE(dba.ok());
  EXPECT_EQ(dba.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(dba.status().message().find("--dba"), std::string::npos);
}

// DBA made by a reindex, kept through an insert, a reopen and a plain
// reindex, turned off by --dba 0.
void RerankDbTest::DbaLifecycle() {
  {
    auto db = MakeClusters();
    ReindexOptions options;
    options.model = "tiny";
    options.show_progress = false;
    options.dba = DbaOptions{5, 3.0f};
    auto report = db->Reindex(options);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->from_base_features);
    EXPECT_EQ(report->dba.n, 5);
    EXPECT_EQ(db->dba().n, 5);

    // Every index vector is the exact DBA of the stored ones.
    std::vector<std::string> names;
    std::vector<float> matrix;
    for (const auto& [name, id] : ids_) {
      names.push_back(name);
      matrix.insert(matrix.end(), vectors_[name].begin(), vectors_[name].end());
    }
    std::vector<float> augmented(matrix.size());
    AugmentRows(matrix.data(), names.size(), kDim, DbaOptions{5, 3.0f}, 1, augmented.data());
    for (size_t i = 0; i < names.size(); ++i) {
      auto v = db->index().Get(ids_[names[i]]);
      ASSERT_TRUE(v.ok());
      ExpectNear(*v, std::vector<float>(augmented.begin() + static_cast<long>(i * kDim),
                                        augmented.begin() + static_cast<long>((i + 1) * kDim)));
    }
    // b* now leans to b, q to a: the nearest other than q itself is an a.
    auto dba = SearchQ(*db, RerankMethod::kDba);
    ASSERT_TRUE(dba.ok()) << dba.status().ToString();
    EXPECT_EQ(Labels(*dba), (std::vector<std::string>{"q", "a", "a"}));
    auto none = SearchQ(*db, RerankMethod::kNone);  // the same vectors
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(Labels(*none), Labels(*dba));
    auto dba_qe = SearchQ(*db, RerankMethod::kDbaQe);
    ASSERT_TRUE(dba_qe.ok()) << dba_qe.status().ToString();
    for (const std::string& label : Labels(*dba_qe)) EXPECT_NE(label, "b");

    // An insert is augmented from its neighbours' original vectors.
    // (Its four nearest, a3 a2 a1 a0, have distinct similarities.)
    const std::vector<float> fresh =
        Mix({{0, 1.0f}, {1, 0.3f}, {2, 0.05f}, {3, 0.1f}, {4, 0.15f}, {5, 0.2f}});
    const int64_t id = Insert(*db, "fresh", "a", fresh);
    auto stored = db->index().Get(id);
    ASSERT_TRUE(stored.ok());
    std::vector<std::pair<float, std::string>> by_sim;
    for (const auto& [name, v] : vectors_) {
      if (name == "fresh") continue;
      float s = 0;
      for (int d = 0; d < kDim; ++d) s += v[static_cast<size_t>(d)] * fresh[static_cast<size_t>(d)];
      by_sim.push_back({s, name});
    }
    std::sort(by_sim.rbegin(), by_sim.rend());
    std::vector<const float*> rows = {fresh.data()};
    std::vector<float> sims = {1.0f};
    for (int i = 0; i < 4; ++i) {
      rows.push_back(vectors_[by_sim[static_cast<size_t>(i)].second].data());
      sims.push_back(by_sim[static_cast<size_t>(i)].first);
    }
    std::vector<float> want(kDim);
    WeightedMean(rows, sims, 3.0f, kDim, want.data());
    ExpectNear(*stored, want);
  }
  // Reopened: the manifest keeps DBA, and the vectors stay augmented.
  auto manifest = nlohmann::json::parse(std::ifstream(tmp_.path() / "db" / "pixseek.json"));
  ASSERT_TRUE(manifest.contains("dba")) << manifest.dump();
  EXPECT_EQ(manifest["dba"]["n"], 5);
  EXPECT_EQ(manifest["dba"]["alpha"], 3.0);
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->dba().n, 5);
  auto dba = SearchQ(**db, RerankMethod::kDba);
  ASSERT_TRUE(dba.ok()) << dba.status().ToString();
  EXPECT_EQ(Labels(*dba), (std::vector<std::string>{"q", "a", "a"}));
  // A plain reindex keeps DBA; --dba 0 turns it off and the originals return.
  ReindexOptions keep;
  keep.model = "tiny";
  keep.show_progress = false;
  ASSERT_TRUE((*db)->Reindex(keep).ok());
  EXPECT_EQ((*db)->dba().n, 5);
  ReindexOptions off = keep;
  off.dba = DbaOptions{0, 3.0f};
  ASSERT_TRUE((*db)->Reindex(off).ok());
  EXPECT_FALSE((*db)->dba().enabled());
  auto v = (*db)->index().Get(ids_["bstar"]);
  ASSERT_TRUE(v.ok());
  ExpectNear(*v, vectors_["bstar"]);
  off.dba = DbaOptions{kMaxDbaN + 1, 3.0f};
  EXPECT_EQ((*db)->Reindex(off).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RerankDbTest, DbaAtReindexThroughInsertsAndReopen) { DbaLifecycle(); }

TEST_F(RerankDbTest, DbaOnTheDiskIndex) {
  index_kind_ = "disk";
  DbaLifecycle();
}

// ---- Spatial verification ---------------------------------------------------

// A picture with many corners: random rectangles, circles and lines.
cv::Mat Textured(uint32_t seed, int width = 480, int height = 360) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> x(0, width), y(0, height), c(0, 255), r(5, 40);
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(c(rng), c(rng), c(rng)));
  for (int i = 0; i < 80; ++i) {
    const cv::Scalar colour(c(rng), c(rng), c(rng));
    switch (i % 3) {
      case 0: cv::rectangle(img, {x(rng), y(rng)}, {x(rng), y(rng)}, colour, cv::FILLED); break;
      case 1: cv::circle(img, {x(rng), y(rng)}, r(rng), colour, cv::FILLED); break;
      default: cv::line(img, {x(rng), y(rng)}, {x(rng), y(rng)}, colour, 3); break;
    }
  }
  return img;
}

// `img` rotated by 20 degrees, scaled by 0.9 and cropped at the edges.
cv::Mat RotatedCrop(const cv::Mat& img) {
  cv::Mat rotated;
  const cv::Mat m =
      cv::getRotationMatrix2D(cv::Point2f(img.cols / 2.0f, img.rows / 2.0f), 20.0, 0.9);
  cv::warpAffine(img, rotated, m, img.size());
  return rotated(cv::Rect(40, 30, img.cols - 80, img.rows - 60)).clone();
}

Image ToImage(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  Image image;
  image.width = rgb.cols;
  image.height = rgb.rows;
  image.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
  return image;
}

std::vector<uint8_t> Png(const cv::Mat& img) {
  std::vector<uint8_t> bytes;
  cv::imencode(".png", img, bytes);
  return bytes;
}

TEST(SpatialTest, InliersSeparateACopyFromADistractor) {
  const cv::Mat original = Textured(1);
  auto a = ExtractLocalFeatures(ToImage(original), {});
  auto b = ExtractLocalFeatures(ToImage(RotatedCrop(original)), {});
  auto c = ExtractLocalFeatures(ToImage(Textured(2)), {});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_GT(a->size(), 50u);
  const int same = CountInliers(*b, *a, {});
  const int other = CountInliers(*b, *c, {});
  EXPECT_GE(same, 40) << "a rotated, cropped copy";
  EXPECT_LT(other, 12) << "an unrelated picture";
  EXPECT_EQ(CountInliers(*a, LocalFeatures{}, {}), 0);
  EXPECT_EQ(ExtractLocalFeatures(Image{}, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RerankDbTest, SpatialVerificationPutsTheSameSceneFirst) {
  const fs::path images = tmp_.path() / "images" / "scenes";
  fs::create_directories(images);
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    testing::WriteBytes(images / ("scene" + std::to_string(seed) + ".png"), Png(Textured(seed)));
  }
  auto db = Database::Open(Options(), true);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  BuildOptions quiet;
  quiet.show_progress = false;
  ASSERT_TRUE(BuildService(**db).Build(tmp_.path() / "images", quiet).ok());

  const std::vector<uint8_t> query = Png(RotatedCrop(Textured(7)));
  QueryParams params;
  params.top_k = 12;
  params.rerank.method = RerankMethod::kSpatial;
  auto spatial = QueryService(**db).SearchImage(query, params);
  ASSERT_TRUE(spatial.ok()) << spatial.status().ToString();
  ASSERT_EQ(spatial->hits.size(), 12u);
  EXPECT_EQ(fs::path(spatial->hits[0].record.path).filename(), "scene7.png");
  // Only the top spatial_top are re-ordered: with 1 verified, the rest keep
  // the index's order.
  params.rerank.spatial_top = 1;
  QueryParams plain = params;
  plain.rerank.method = RerankMethod::kNone;
  auto none = QueryService(**db).SearchImage(query, plain);
  auto one = QueryService(**db).SearchImage(query, params);
  ASSERT_TRUE(none.ok() && one.ok());
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(one->hits[i].id, none->hits[i].id);
}

// ---- The parameter over HTTP and on the CLI ---------------------------------

TEST_F(RerankDbTest, HttpAndCliRejectBadValues) {
  auto db = MakeClusters();
  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  HttpServer server(*db, options);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());
  const std::string body = "{\"image_id\": " + std::to_string(ids_["q"]) + "}";
  auto bad = client.Post("/api/v1/search?rerank=fancy", body, "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("rerank must be one of"), std::string::npos) << bad->body;
  auto no_dba = client.Post("/api/v1/search?rerank=dba", body, "application/json");
  ASSERT_TRUE(no_dba);
  EXPECT_EQ(no_dba->status, 409) << no_dba->body;
  auto qe = client.Post("/api/v1/search?rerank=qe&top_k=3", body, "application/json");
  ASSERT_TRUE(qe);
  ASSERT_EQ(qe->status, 200) << qe->body;
  auto j = nlohmann::json::parse(qe->body);
  ASSERT_EQ(j["results"].size(), 3u);
  for (const auto& hit : j["results"]) EXPECT_EQ(hit["metadata"]["label"], "a") << qe->body;
  server.Stop();

  const fs::path picture = tmp_.path() / "query.png";
  testing::WriteBytes(picture, Png(Textured(3)));
  const std::string dir = (tmp_.path() / "db").string();
  db.reset();
  auto cli = testing::RunCommand({PIXSEEK_BINARY, "--home", home_.string(), "query",
                                  picture.string(), "--db", dir, "--rerank", "fancy"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_NE(cli.err.find("rerank must be one of"), std::string::npos) << cli.err;
  cli = testing::RunCommand({PIXSEEK_BINARY, "--home", home_.string(), "query",
                             picture.string(), "--db", dir, "--rerank", "qe", "--qe-n", "0"});
  EXPECT_NE(cli.exit_code, 0);
  cli = testing::RunCommand({PIXSEEK_BINARY, "--home", home_.string(), "query",
                             picture.string(), "--db", dir, "--rerank", "dba"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_NE(cli.err.find("reindex"), std::string::npos) << cli.err;
  cli = testing::RunCommand({PIXSEEK_BINARY, "--home", home_.string(), "query",
                             picture.string(), "--db", dir, "--rerank", "qe", "--json"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  cli = testing::RunCommand({PIXSEEK_BINARY, "--home", home_.string(), "reindex", "--db", dir,
                             "--model", "tiny", "--dba", "101"});
  EXPECT_NE(cli.exit_code, 0);
}

}  // namespace
}  // namespace pixseek
