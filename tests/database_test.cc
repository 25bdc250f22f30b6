// The Database and the service layer in one process: creation and reopening
// through the manifest (model, index kind and parameters, store), the upload,
// query and build services over both index kinds, and the checks that keep a
// database from being opened with parts it was not made with.
#include "pixseek/database.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "pixseek/model_registry.h"
#include "pixseek/services.h"
#include "pixseek/vector_index.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using testing::TempDir;

constexpr int kDim = 16;

class DatabaseTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    const Status installed = testing::InstallTinyModel(home_, tmp_.path(), kDim, 5);
    ASSERT_TRUE(installed.ok()) << installed.ToString();
    images_ = tmp_.path() / "images";
    // Two labelled folders of clearly different colours.
    for (int i = 0; i < 6; ++i) {
      const bool red = i % 2 == 0;
      const auto dir = images_ / (red ? "red" : "blue");
      std::filesystem::create_directories(dir);
      testing::WriteBytes(dir / ("img" + std::to_string(i) + ".png"),
                          testing::SyntheticImage(".png", 64, 48, red ? 220 : 20, 30,
                                                  red ? 20 : 220, static_cast<uint32_t>(i)));
    }
  }

  DatabaseOptions Options() const {
    DatabaseOptions o;
    o.dir = tmp_.path() / "db";
    o.model = "tiny";
    o.home = home_;
    o.index_kind = GetParam();
    o.threads = 2;
    return o;
  }

  Result<std::unique_ptr<Database>> Create() const { return Database::Open(Options(), true); }

  nlohmann::json Manifest() const {
    std::ifstream in(tmp_.path() / "db" / "pixseek.json");
    return nlohmann::json::parse(in);
  }

  TempDir tmp_;
  std::filesystem::path home_;
  std::filesystem::path images_;
};

TEST_P(DatabaseTest, BuildQueryUploadRemoveAndReopen) {
  auto db = Create();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->index().kind(), GetParam());
  auto report = BuildService(**db).Build(images_, {});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->indexed, 6u);

  // The query service finds an image itself first, and its own colour next.
  const auto query_file = images_ / "red" / "img0.png";
  const std::vector<uint8_t> bytes = testing::ReadBytes(query_file);
  QueryParams params;
  params.top_k = 3;
  auto response = QueryService(**db).SearchImage(bytes, params);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  ASSERT_EQ(response->hits.size(), 3u);
  EXPECT_EQ(response->hits[0].record.path, query_file.string());
  EXPECT_NEAR(response->hits[0].score, 1.0f, 1e-4);
  EXPECT_EQ(response->hits[1].record.label, "red");
  EXPECT_EQ(response->hits[2].record.label, "red");
  // A repeated query comes from the cache, and an upload clears it.
  auto again = QueryService(**db).SearchImage(bytes, params);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->cached);

  const auto extra = testing::SyntheticImage(".png", 40, 40, 230, 30, 10, 99);
  auto id = UploadService(**db).AddBytes(extra, "extra.png");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto after = QueryService(**db).SearchImage(bytes, params);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->cached);
  auto stats = (*db)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->count, 7);
  EXPECT_EQ(stats->index_kind, GetParam());
  if (GetParam() == "disk") {
    bool has_delta = false;
    for (const IndexStat& s : stats->index) has_delta = has_delta || s.name == "delta_vectors";
    EXPECT_TRUE(has_delta) << "the disk index reports its figures through VectorIndex::Stats";
  }
  ASSERT_TRUE((*db)->Remove(*id).ok());
  EXPECT_EQ((*db)->Remove(*id).code(), StatusCode::kNotFound);
  ASSERT_TRUE((*db)->Compact().ok());
  db->reset();

  // Reopened read-only beside nothing: the same answers.
  DatabaseOptions ro = Options();
  ro.read_only = true;
  ro.index_kind.clear();
  auto reader = Database::Open(ro, false);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ((*reader)->index().size(), 6u);
  auto read = QueryService(**reader).SearchImage(bytes, params);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->hits[0].record.path, query_file.string());
  EXPECT_EQ((*reader)->Remove(1).code(), StatusCode::kFailedPrecondition);
}

// Held-out evaluation: with a split, queries and gallery are only the
// held-out images, so a query's relevant images are only the held-out ones
// of its class, whatever else the database stores.
TEST_P(DatabaseTest, EvaluateOnlyAmongHeldOutImages) {
  const auto collection = tmp_.path() / "collection";
  const struct { const char* label; uint8_t r, g, b; } kClasses[] = {
      {"red", 220, 30, 20}, {"green", 30, 200, 40}, {"blue", 20, 30, 220}};
  uint32_t seed = 10;
  for (const auto& c : kClasses) {
    std::filesystem::create_directories(collection / c.label);
    for (int i = 0; i < 6; ++i) {
      testing::WriteBytes(collection / c.label / ("img" + std::to_string(i) + ".png"),
                          testing::SyntheticImage(".png", 64, 48, c.r, c.g, c.b, seed++));
    }
  }
  auto db = Create();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE(BuildService(**db).Build(collection, {}).ok());

  auto all = Evaluate(**db, collection);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->split, DataSplit::kNone);
  EXPECT_EQ(all->images, 18u);
  EXPECT_EQ(all->overall.queries, 18u);

  // Every third image of each class: 2 of 6, so each query has one relevant
  // image among 5 others, always within the top 10.
  auto images = Evaluate(**db, collection, DataSplit::kImages);
  ASSERT_TRUE(images.ok()) << images.status().ToString();
  EXPECT_EQ(images->split, DataSplit::kImages);
  EXPECT_EQ(images->images, 6u);
  EXPECT_EQ(images->overall.queries, 6u);
  ASSERT_EQ(images->per_label.size(), 3u);
  for (const auto& [label, m] : images->per_label) {
    EXPECT_EQ(m.queries, 2u) << label;
    EXPECT_DOUBLE_EQ(m.p_at_10, 0.1) << label;
    EXPECT_DOUBLE_EQ(m.r_at_10, 1.0) << label;
  }

  // Half the classes (blue and green train; red, the rest, is held out):
  // the gallery is red only, so every ranking is perfect.
  auto classes = Evaluate(**db, collection, DataSplit::kClasses);
  ASSERT_TRUE(classes.ok()) << classes.status().ToString();
  EXPECT_EQ(classes->images, 6u);
  ASSERT_EQ(classes->per_label.size(), 1u);
  EXPECT_EQ(classes->per_label.begin()->first, "red");
  EXPECT_EQ(classes->overall.queries, 6u);
  EXPECT_DOUBLE_EQ(classes->overall.map, 1.0);
  EXPECT_DOUBLE_EQ(classes->overall.p_at_10, 0.5);

  // A root with no labelled folders holds nothing to hold out: a clear error.
  auto few = Evaluate(**db, collection / "red", DataSplit::kImages);
  EXPECT_EQ(few.status().code(), StatusCode::kFailedPrecondition);
}

// Five classes of eight images of a colour each, with some spread.
std::filesystem::path WriteColourClasses(const std::filesystem::path& root) {
  const struct { const char* label; uint8_t r, g, b; } kClasses[] = {
      {"red", 220, 30, 20}, {"green", 30, 200, 40}, {"blue", 20, 30, 220},
      {"orange", 230, 140, 30}, {"purple", 140, 40, 160}};
  uint32_t seed = 40;
  for (const auto& c : kClasses) {
    std::filesystem::create_directories(root / c.label);
    for (int i = 0; i < 8; ++i) {
      testing::WriteBytes(root / c.label / ("img" + std::to_string(i) + ".png"),
                          testing::SyntheticImage(".png", 64, 48, c.r, c.g, c.b, seed++));
    }
  }
  return root;
}

// The figures do not depend on how many queries are ranked at once, and on
// the flat index the index's ranking is the exact one.
TEST_P(DatabaseTest, EvaluationIsExactWhateverTheChunk) {
  const auto collection = WriteColourClasses(tmp_.path() / "collection");
  auto db = Create();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE(BuildService(**db).Build(collection, {}).ok());
  EvalOptions one_chunk;
  one_chunk.chunk = 1000;
  EvalOptions small_chunks;
  small_chunks.chunk = 3;
  small_chunks.threads = 2;
  auto a = Evaluate(**db, collection, one_chunk);
  auto b = Evaluate(**db, collection, small_chunks);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(EvalReportJson(*a).substr(0, 2000), EvalReportJson(*b).substr(0, 2000));
  for (const auto& [label, m] : a->per_label) {
    const EvalMetrics& o = b->per_label.at(label);
    EXPECT_EQ(m.map, o.map) << label;
    EXPECT_EQ(m.ndcg_at_10, o.ndcg_at_10) << label;
    EXPECT_EQ(m.pr_curve, o.pr_curve) << label;
  }
  EXPECT_EQ(a->overall.queries, 40u);
  EXPECT_EQ(a->index_queries, 40u);
  EXPECT_EQ(a->examples.size(), 3u);
  if (GetParam() == "flat") {
    EXPECT_DOUBLE_EQ(a->index_recall_at_k, 1.0);
    EXPECT_DOUBLE_EQ(a->index_map_at_k, a->index_exact_map_at_k);
  }
  EXPECT_NEAR(a->index_exact_map_at_k, a->overall.map_at_100, 1e-12);  // every query sampled
}

// report.html stands alone: the plot, a row per class, thumbnails inline and
// nothing fetched from anywhere.
TEST_P(DatabaseTest, EvaluationReportIsSelfContained) {
  const auto collection = WriteColourClasses(tmp_.path() / "collection");
  auto db = Create();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE(BuildService(**db).Build(collection, {}).ok());
  auto report = Evaluate(**db, collection);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const auto dir = tmp_.path() / "report";
  ASSERT_TRUE(WriteEvalReportHtml(**db, *report, dir).ok());
  std::ifstream in(dir / "report.html");
  const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = html.find(what); at != std::string::npos; at = html.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_EQ(count("<svg"), 1u);
  EXPECT_EQ(count("<polyline"), 2u);  // over queries and over classes
  EXPECT_EQ(count("<tr class=\"cls\">"), 5u);
  EXPECT_EQ(count("<div class=\"strip\">"), 3u);
  EXPECT_EQ(count("src=\"data:image/jpeg;base64,"), 3u * 9);  // query + 8 results
  EXPECT_EQ(count("src="), count("src=\"data:"));
  EXPECT_EQ(count("http://"), 0u);
  EXPECT_EQ(count("https://"), 0u);
  EXPECT_EQ(count("href="), 0u);
  EXPECT_EQ(count("<script>"), 1u);
  EXPECT_EQ(count("<script src"), 0u);
}

TEST_P(DatabaseTest, ManifestRecordsKindAndParameters) {
  DatabaseOptions o = Options();
  if (GetParam() == "disk") o.index_params.Set("max_degree", int64_t{24}, "--max-degree");
  auto db = Database::Open(o, true);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  db->reset();
  const nlohmann::json m = Manifest();
  EXPECT_EQ(m["model"], "tiny");
  EXPECT_EQ(m["dimension"], kDim);
  EXPECT_EQ(m["index_kind"], GetParam());
  if (GetParam() == "disk") {
    EXPECT_EQ(m["index_params"]["max_degree"], 24);
    EXPECT_EQ(m["index_params"]["storage"], "fp16");  // a default, recorded
  } else {
    EXPECT_FALSE(m.contains("index_params"));  // the flat index has none
  }
}

TEST_P(DatabaseTest, RefusesWhatTheManifestFixed) {
  ASSERT_TRUE(Create().ok());
  DatabaseOptions o = Options();

  o.model = "other";
  auto s = Database::Open(o, false).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();

  o = Options();
  o.index_kind = GetParam() == "disk" ? "flat" : "disk";
  s = Database::Open(o, false).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("index"), std::string::npos) << s.ToString();

  o = Options();
  o.metadata_url = "sqlite://" + (tmp_.path() / "elsewhere.db").string();
  s = Database::Open(o, false).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();

  o = Options();
  o.index_params.Set("storage", std::string("int8"), "--storage");
  s = Database::Open(o, false).status();
  if (GetParam() == "disk") {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
    EXPECT_NE(s.message().find("--storage"), std::string::npos) << s.ToString();
    // From a configuration file the recorded value stays, with a warning.
    o.index_params.Set("storage", std::string("int8"), "pixseek.toml:3");
    EXPECT_TRUE(Database::Open(o, false).ok());
    // A run-time parameter applies to this run.
    o = Options();
    o.index_params.Set("search_list", int64_t{30}, "--search-list");
    EXPECT_TRUE(Database::Open(o, false).ok());
  } else {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("flat"), std::string::npos) << s.ToString();
  }

  // A damaged manifest is DataLoss, and nothing is rewritten.
  const auto manifest = tmp_.path() / "db" / "pixseek.json";
  std::ofstream(manifest) << "{ not json";
  s = Database::Open(Options(), false).status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  std::ifstream in(manifest);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "{ not json");
}

// Two databases pointed at one metadata store would mix their rows: the
// second is refused, the first keeps working.
TEST_P(DatabaseTest, AStoreBelongsToOneDatabase) {
  DatabaseOptions first = Options();
  first.metadata_url = "sqlite://" + (tmp_.path() / "shared.db").string();
  ASSERT_TRUE(Database::Open(first, true).ok());
  DatabaseOptions second = first;
  second.dir = tmp_.path() / "db2";
  auto s = Database::Open(second, true).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("belongs to another database"), std::string::npos) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "db2" / "pixseek.json"));
  EXPECT_TRUE(Database::Open(first, false).ok());
}

// InsertBatch stores a batch as Insert stores one image (row, feature,
// thumbnail, vector), all or nothing; and rows whose vectors a crash cut off
// between its two syncs are removed when the database next opens.
TEST_P(DatabaseTest, InsertBatchIsAllOrNothingAndReconciledAfterACrash) {
  auto db = Create();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const size_t dim = static_cast<size_t>((*db)->base_dimension());
  // Unit base features, one axis each.
  std::vector<float> features(4 * dim, 0.0f);
  for (size_t i = 0; i < 4; ++i) features[i * dim + i] = 1.0f;
  const std::vector<uint8_t> thumb = {0xff, 0xd8, 0xff, 0xd9};
  auto image = [&](int i) {
    NewImage n;
    n.record.path = (images_ / ("batch" + std::to_string(i) + ".png")).string();
    n.record.name = "batch" + std::to_string(i) + ".png";
    n.record.sha256 = std::string(64, static_cast<char>('a' + i));
    n.base_feature = std::span<const float>(features).subspan(static_cast<size_t>(i) * dim, dim);
    n.thumbnail_jpeg = thumb;
    return n;
  };
  std::vector<NewImage> batch = {image(0), image(1), image(2)};
  auto ids = (*db)->InsertBatch(batch);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_EQ((*db)->index().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    auto record = (*db)->store().Get((*ids)[i]);
    ASSERT_TRUE(record.ok());
    EXPECT_EQ(record->path, batch[i].record.path);
    EXPECT_EQ(testing::ReadBytes((*db)->ThumbnailPath((*ids)[i])), thumb);
    auto vector = (*db)->index().Get((*ids)[i]);
    ASSERT_TRUE(vector.ok());
    EXPECT_FLOAT_EQ((*vector)[i], 1.0f);
  }

  // One image refused (its path is stored, or its feature is short):
  // nothing of the batch remains.
  std::vector<NewImage> clash = {image(3), image(1)};
  EXPECT_EQ((*db)->InsertBatch(clash).status().code(), StatusCode::kAlreadyExists);
  std::vector<NewImage> short_feature = {image(3)};
  short_feature[0].base_feature = short_feature[0].base_feature.first(dim - 1);
  EXPECT_EQ((*db)->InsertBatch(short_feature).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*db)->index().size(), 3u);
  EXPECT_EQ((*db)->store().AllIds()->size(), 3u);
  EXPECT_FALSE((*db)->store().FindByPath(image(3).record.path)->has_value());

  // A crash after the metadata commit and before the index's sync: rows
  // without vectors, removed at the next writable open.
  std::vector<ImageRecord> cut = {image(3).record};
  ASSERT_TRUE((*db)->store().InsertMany(cut, static_cast<int>(dim), image(3).base_feature).ok());
  db->reset();
  auto reopened = Database::Open(Options(), false);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->store().AllIds()->size(), 3u);
  EXPECT_EQ((*reopened)->index().size(), 3u);
  EXPECT_FALSE((*reopened)->store().FindByPath(image(3).record.path)->has_value());
}

// The same bytes uploaded from several threads at once are one image whose
// file stays on disk (the uploads that lose the race must not remove it).
TEST_P(DatabaseTest, ConcurrentUploadsOfTheSameBytesKeepTheFile) {
  auto db = Create();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const auto bytes = testing::SyntheticImage(".png", 48, 48, 10, 200, 30, 7);
  constexpr int kThreads = 6;
  std::vector<Result<int64_t>> ids(kThreads, Status::Internal("not run"));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { ids[t] = UploadService(**db).AddBytes(bytes, "same.png"); });
  }
  for (auto& t : threads) t.join();
  for (const auto& id : ids) {
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    EXPECT_EQ(*id, *ids[0]);
  }
  auto record = (*db)->store().Get(*ids[0]);
  ASSERT_TRUE(record.ok());
  EXPECT_TRUE(std::filesystem::exists((*db)->FilePath(*record))) << record->path;
  EXPECT_EQ((*db)->index().size(), 1u);
}

// A manifest written before the parameter table ("disk_params") still opens
// with its recorded values.
TEST_P(DatabaseTest, ReadsTheEarlierManifestKey) {
  if (GetParam() != "disk") GTEST_SKIP() << "disk_params belongs to the disk index";
  ASSERT_TRUE(Create().ok());
  nlohmann::json m = Manifest();
  m["disk_params"] = m["index_params"];
  m["disk_params"]["storage"] = "fp32";
  m.erase("index_params");
  std::ofstream(tmp_.path() / "db" / "pixseek.json") << m.dump(2);
  DatabaseOptions o = Options();
  o.index_params.Set("storage", std::string("fp16"), "--storage");
  auto s = Database::Open(o, false).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("fp32"), std::string::npos) << s.ToString();
}

TEST(DatabaseOpenTest, ClearErrorsBeforeAnythingIsCreated) {
  TempDir tmp;
  DatabaseOptions o;
  EXPECT_EQ(Database::Open(o, true).status().code(), StatusCode::kInvalidArgument);
  o.dir = tmp.path() / "missing";
  EXPECT_EQ(Database::Open(o, false).status().code(), StatusCode::kNotFound);
  // A non-empty directory that is not a database is never taken over.
  std::filesystem::create_directories(tmp.path() / "full");
  std::ofstream(tmp.path() / "full" / "keep.txt") << "mine";
  o.dir = tmp.path() / "full";
  EXPECT_EQ(Database::Open(o, true).status().code(), StatusCode::kInvalidArgument);
  // An unknown index kind is named.
  o.dir = tmp.path() / "new";
  o.index_kind = "hnsw";
  o.home = tmp.path() / "home";
  o.model = "not-installed";
  auto s = Database::Open(o, true).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("'hnsw'"), std::string::npos) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(tmp.path() / "new" / "pixseek.json"));
}

INSTANTIATE_TEST_SUITE_P(Kinds, DatabaseTest, ::testing::Values("disk", "flat"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace pixseek
