// `pixseek migrate`: an embedded database (disk or flat index, SQLite rows)
// moved to the Milvus test server (tests/milvus_server.h) and a real
// MariaDB. The same queries answer the same before and after; the command
// killed midway (SIGKILL at a batch boundary through its test hook, and at
// an arbitrary moment) and run again loses nothing and copies nothing
// twice; and every refusal: a database already on servers, targets holding
// another database's data, a running server holding the writer lock.
#include "pixseek/migrate.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "mariadb_server.h"
#include "milvus_server.h"
#include "pixseek/database.h"
#include "pixseek/services.h"
#include "pixseek/vector_index.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using nlohmann::json;
using testing::MilvusTestServer;
using testing::MilvusTestServerOptions;
using testing::TempDir;

constexpr int kDim = 8;
constexpr int kImages = 40;

std::string ReadAll(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<uint8_t> Picture(int i) {
  return testing::SyntheticImage(".png", 80, 80, 20 + (i * 37) % 200, 60 + (i * 11) % 150,
                                 200 - (i * 23) % 180, 300 + i);
}

// What a search answers: ids and scores of the best hits.
using Answer = std::vector<std::pair<int64_t, float>>;

class MigrateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    std::filesystem::create_directories(tmp_.path() / "scratch");
    const Status installed = testing::InstallTinyModel(home_, tmp_.path() / "scratch", kDim, 7);
    ASSERT_TRUE(installed.ok()) << installed.ToString();
    images_ = tmp_.path() / "photos";
    std::filesystem::create_directories(images_);
    for (int i = 0; i < kImages; ++i) {
      testing::WriteBytes(images_ / ("p" + std::to_string(i) + ".png"), Picture(i));
    }
    MilvusTestServerOptions options;
    options.dir = tmp_.path() / "milvus";
    milvus_ = std::make_unique<MilvusTestServer>(options);
    ASSERT_EQ(milvus_->Start(), "");
  }

  std::filesystem::path Db(const std::string& name = "db") const { return tmp_.path() / name; }

  // An embedded database of every picture.
  void BuildEmbedded(const std::string& kind, const std::string& name = "db") {
    DatabaseOptions o;
    o.dir = Db(name);
    o.home = home_;
    o.model = "tiny";
    o.index_kind = kind;
    auto db = Database::Open(o, /*create=*/true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto built = BuildService(**db).Build(images_, BuildOptions{});
    ASSERT_TRUE(built.ok()) << built.status().ToString();
    ASSERT_EQ(built->indexed, static_cast<uint64_t>(kImages));
  }

  Result<std::unique_ptr<Database>> OpenDb(const std::string& vector_url,
                                           const std::string& metadata_url,
                                           const std::string& name = "db") {
    DatabaseOptions o;
    o.dir = Db(name);
    o.home = home_;
    o.vector_url = vector_url;
    o.metadata_url = metadata_url;
    o.read_only = true;
    return Database::Open(o, false);
  }

  // The answers to a few queries, through the database as opened.
  std::map<int, Answer> Answers(const std::string& vector_url, const std::string& metadata_url) {
    std::map<int, Answer> out;
    auto db = OpenDb(vector_url, metadata_url);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    if (!db.ok()) return out;
    QueryService query(**db);
    QueryParams params;
    params.top_k = 5;
    for (int i : {0, 7, 19, 33}) {
      auto found = query.SearchImage(Picture(i), params);
      EXPECT_TRUE(found.ok()) << found.status().ToString();
      if (!found.ok()) continue;
      for (const QueryHit& h : found->hits) out[i].emplace_back(h.id, h.score);
    }
    return out;
  }

  MigrateOptions Options(const std::string& vector_url, const std::string& metadata_url) {
    MigrateOptions o;
    o.dir = Db();
    o.home = home_;
    o.vector_url = vector_url;
    o.metadata_url = metadata_url;
    o.batch_rows = 7;
    o.progress_out = nullptr;
    return o;
  }

  testing::CommandResult Pixseek(std::vector<std::string> args) {
    args.insert(args.begin(), {PIXSEEK_BINARY, "--home", home_.string()});
    return testing::RunCommand(args);
  }

  TempDir tmp_;
  std::filesystem::path home_, images_;
  std::unique_ptr<MilvusTestServer> milvus_;
};

void ExpectSameAnswers(const std::map<int, Answer>& before, const std::map<int, Answer>& after) {
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [query, hits] : before) {
    const Answer& other = after.at(query);
    ASSERT_EQ(hits.size(), other.size()) << "query " << query;
    for (size_t i = 0; i < hits.size(); ++i) {
      EXPECT_EQ(hits[i].first, other[i].first) << "query " << query << " rank " << i;
      EXPECT_NEAR(hits[i].second, other[i].second, 1e-4) << "query " << query << " rank " << i;
    }
  }
}

// Every id of the embedded database (its old files, left in place) is in
// Milvus once, with the same vector, and, when the rows moved, in MariaDB
// with the same record and base feature.
void ExpectCopiedExactly(const std::filesystem::path& dir, const std::string& old_kind,
                         const std::string& vector_url, const std::string& metadata_url) {
  VectorIndexSpec old_spec;
  old_spec.kind = old_kind;
  old_spec.dir = dir;
  old_spec.dimension = kDim;
  old_spec.read_only = true;
  auto old_index = OpenVectorIndex(old_spec);
  ASSERT_TRUE(old_index.ok()) << old_index.status().ToString();
  auto old_store = OpenMetadataStore("sqlite://" + (dir / "metadata.db").string());
  ASSERT_TRUE(old_store.ok()) << old_store.status().ToString();
  auto old_ids = (*old_store)->AllIds();
  ASSERT_TRUE(old_ids.ok());
  EXPECT_EQ((*old_index)->Ids(), *old_ids);

  VectorIndexSpec spec;
  spec.kind = "milvus";
  spec.dir = dir;
  spec.url = vector_url;
  spec.dimension = kDim;
  spec.read_only = true;
  auto params = FindVectorIndexKind("milvus");
  ASSERT_TRUE(params.ok());
  auto merged = MergeParams("milvus", (*params)->params, IndexParams{}, IndexParams{}, false);
  ASSERT_TRUE(merged.ok());
  spec.params = *merged;
  auto milvus = OpenVectorIndex(spec);
  ASSERT_TRUE(milvus.ok()) << milvus.status().ToString();
  EXPECT_EQ((*milvus)->Ids(), *old_ids) << "every id, and no other";
  EXPECT_EQ((*milvus)->size(), old_ids->size()) << "no row twice (count(*) counts duplicates)";
  for (int64_t id : *old_ids) {
    auto a = (*old_index)->Get(id);
    auto b = (*milvus)->Get(id);
    ASSERT_TRUE(a.ok() && b.ok()) << id;
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) EXPECT_NEAR((*a)[i], (*b)[i], 1e-5) << id;
  }
  if (metadata_url.empty()) return;
  auto rows = OpenMetadataStore(metadata_url);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  auto row_ids = (*rows)->AllIds();
  ASSERT_TRUE(row_ids.ok());
  EXPECT_EQ(*row_ids, *old_ids);
  auto a = (*old_store)->GetMany(*old_ids);
  auto b = (*rows)->GetMany(*old_ids);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].id, (*b)[i].id);
    EXPECT_EQ((*a)[i].path, (*b)[i].path);
    EXPECT_EQ((*a)[i].sha256, (*b)[i].sha256);
    EXPECT_EQ((*a)[i].added_at, (*b)[i].added_at);
    auto fa = (*old_store)->GetFeature((*a)[i].id);
    auto fb = (*rows)->GetFeature((*a)[i].id);
    ASSERT_TRUE(fa.ok() && fb.ok()) << (*a)[i].id;
    EXPECT_EQ(*fa, *fb);
  }
  for (const char* key : {"database_id", "model", "dimension", "library_roots"}) {
    auto x = (*old_store)->GetSetting(key);
    auto y = (*rows)->GetSetting(key);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(*x, *y) << key;
  }
}

TEST_F(MigrateTest, EmbeddedDiskDatabaseToMilvusAndMariadb) {
  std::string why;
  testing::MariadbServer* maria = testing::MariadbServer::Shared(&why);
  if (maria == nullptr) GTEST_SKIP() << why;
  const std::string schema = maria->CreateDatabase(&why);
  ASSERT_FALSE(schema.empty()) << why;
  const std::string rows_url = maria->Url(schema);
  const std::string vector_url = milvus_->url("moved");
  BuildEmbedded("disk");
  const auto before = Answers("", "");

  auto report = MigrateDatabase(Options(vector_url, rows_url));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->images, static_cast<uint64_t>(kImages));
  EXPECT_EQ(report->vectors_copied, static_cast<uint64_t>(kImages));
  EXPECT_EQ(report->rows_copied, static_cast<uint64_t>(kImages));
  EXPECT_EQ(report->vectors_present + report->rows_present + report->stale_removed, 0u);
  EXPECT_EQ(report->old_files.front(), Db() / "index");
  EXPECT_NE(std::find(report->old_files.begin(), report->old_files.end(), Db() / "metadata.db"),
            report->old_files.end());
  EXPECT_TRUE(std::filesystem::exists(Db() / "index")) << "the old index is left in place";
  EXPECT_FALSE(std::filesystem::exists(Db() / "migrate.json"));

  const std::string manifest = ReadAll(Db() / "pixseek.json");
  const json m = json::parse(manifest);
  EXPECT_EQ(m["index_kind"], "milvus");
  EXPECT_EQ(m["vector_store"], vector_url);
  EXPECT_EQ(m["metadata_store"].get<std::string>().find("mysql://pixseek_test:***@"), 0u)
      << manifest;
  EXPECT_EQ(manifest.find(testing::MariadbServer::kPassword), std::string::npos);

  ExpectSameAnswers(before, Answers(vector_url, rows_url));
  ExpectCopiedExactly(Db(), "disk", vector_url, rows_url);

  // Now refused as an embedded database, and as a migration source.
  auto plain = OpenDb("", "");
  ASSERT_EQ(plain.status().code(), StatusCode::kFailedPrecondition);
  auto again = MigrateDatabase(Options(vector_url, rows_url));
  ASSERT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("already keeps its vectors in"), std::string::npos)
      << again.status().message();

  // A writable open (a node starting) works, and so do uploads.
  DatabaseOptions o;
  o.dir = Db();
  o.home = home_;
  o.vector_url = vector_url;
  o.metadata_url = rows_url;
  auto db = Database::Open(o, false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto id = UploadService(**db).AddBytes(Picture(1000), "new.png");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_GT(*id, kImages) << "new ids come after the copied ones";
  EXPECT_EQ((*db)->index().size(), static_cast<size_t>(kImages + 1));
}

TEST_F(MigrateTest, FlatDatabaseVectorsOnlyKeepsSqlite) {
  const std::string vector_url = milvus_->url("flat_moved");
  BuildEmbedded("flat");
  const auto before = Answers("", "");
  auto report = MigrateDatabase(Options(vector_url, ""));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->rows_copied, 0u);
  EXPECT_EQ(report->metadata_store, "sqlite");
  ASSERT_EQ(report->old_files.size(), 1u);
  EXPECT_EQ(report->old_files[0], Db() / "vectors.flat");
  EXPECT_EQ(json::parse(ReadAll(Db() / "pixseek.json"))["metadata_store"], "sqlite");
  ExpectSameAnswers(before, Answers(vector_url, ""));
  ExpectCopiedExactly(Db(), "flat", vector_url, "");
}

TEST_F(MigrateTest, Refusals) {
  BuildEmbedded("disk");
  // No vector URL, an unknown scheme, rows to something not a server.
  auto none = MigrateDatabase(Options("", ""));
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("--vector-url"), std::string::npos);
  auto scheme = MigrateDatabase(Options("weaviate://u:pw@h:1/c", ""));
  EXPECT_EQ(scheme.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(scheme.status().message().find("pw@"), std::string::npos);
  auto sqlite = MigrateDatabase(
      Options(milvus_->url("x"), "sqlite://" + (tmp_.path() / "other.db").string()));
  EXPECT_EQ(sqlite.status().code(), StatusCode::kInvalidArgument);

  // A running server holds the writer lock.
  {
    testing::ChildProcess serve({PIXSEEK_BINARY, "--home", home_.string(), "serve", "--db",
                                 Db().string(), "--port", "0", "--quiet"});
    ASSERT_FALSE(serve.WaitForLine("serving", 30000).empty()) << serve.stderr_text();
    auto locked = MigrateDatabase(Options(milvus_->url("locked"), ""));
    ASSERT_EQ(locked.status().code(), StatusCode::kUnavailable) << locked.status().ToString();
    EXPECT_NE(locked.status().message().find("stop it before migrating"), std::string::npos)
        << locked.status().message();
    serve.Stop(SIGTERM);
  }
  EXPECT_EQ(json::parse(ReadAll(Db() / "pixseek.json"))["index_kind"], "disk");

  // A collection that holds another database's vectors.
  BuildEmbedded("flat", "other");
  MigrateOptions other = Options(milvus_->url("taken"), "");
  other.dir = Db("other");
  ASSERT_TRUE(MigrateDatabase(other).ok());
  auto taken = MigrateDatabase(Options(milvus_->url("taken"), ""));
  ASSERT_EQ(taken.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(taken.status().message().find("already holds " + std::to_string(kImages)),
            std::string::npos)
      << taken.status().message();
  EXPECT_EQ(json::parse(ReadAll(Db() / "pixseek.json"))["index_kind"], "disk");

  // A metadata store that holds another database's rows.
  std::string why;
  testing::MariadbServer* maria = testing::MariadbServer::Shared(&why);
  if (maria == nullptr) GTEST_SKIP() << why;
  const std::string schema = maria->CreateDatabase(&why);
  ASSERT_FALSE(schema.empty()) << why;
  DatabaseOptions third;
  third.dir = Db("third");
  third.home = home_;
  third.model = "tiny";
  third.metadata_url = maria->Url(schema);
  ASSERT_TRUE(Database::Open(third, true).ok());
  auto owned = MigrateDatabase(Options(milvus_->url("fresh"), maria->Url(schema)));
  ASSERT_EQ(owned.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(owned.status().message().find("belongs to another database"), std::string::npos)
      << owned.status().message();
  EXPECT_EQ(owned.status().message().find(testing::MariadbServer::kPassword), std::string::npos);
  // Its rows already in MariaDB, the third database moves only its vectors,
  // and needs its store's URL to do it.
  MigrateOptions rows_there = Options(milvus_->url("third"), "");
  rows_there.dir = Db("third");
  auto no_url = MigrateDatabase(rows_there);
  ASSERT_EQ(no_url.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(no_url.status().message().find("--metadata-url"), std::string::npos);
  rows_there.metadata_url = maria->Url(schema);
  auto moved = MigrateDatabase(rows_there);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(moved->rows_copied, 0u);
}

// Counts what the servers hold: Milvus rows (count(*), duplicates included)
// and ids, MariaDB rows.
struct Held {
  size_t milvus_rows = 0;
  size_t milvus_ids = 0;
  size_t maria_rows = 0;
};

// The CLI's migrate, killed at batch boundaries (its test hook) and at an
// arbitrary moment, with the embedded database changed between two runs.
TEST_F(MigrateTest, CliMigrateKilledAndResumedLosesNothingCopiesNothingTwice) {
  std::string why;
  testing::MariadbServer* maria = testing::MariadbServer::Shared(&why);
  if (maria == nullptr) GTEST_SKIP() << why;
  const std::string schema = maria->CreateDatabase(&why);
  ASSERT_FALSE(schema.empty()) << why;
  const std::string rows_url = maria->Url(schema);
  const std::string vector_url = milvus_->url("killed");
  auto r = Pixseek({"build", images_.string(), "--db", Db().string(), "--model", "tiny"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const std::vector<std::string> migrate = {"migrate",      "--db",         Db().string(),
                                            "--vector-url", vector_url,     "--metadata-url",
                                            rows_url,       "--batch-rows", "4"};
  auto held = [&] {
    Held h;
    VectorIndexSpec spec;
    spec.kind = "milvus";
    spec.url = vector_url;
    spec.dimension = kDim;
    spec.read_only = true;
    auto kind = FindVectorIndexKind("milvus");
    spec.params = *MergeParams("milvus", (*kind)->params, IndexParams{}, IndexParams{}, false);
    auto index = OpenVectorIndex(spec);
    if (index.ok()) {
      h.milvus_rows = (*index)->size();
      h.milvus_ids = (*index)->Ids().size();
    }
    std::string count;
    EXPECT_EQ(maria->Admin("SELECT COUNT(*) FROM `" + schema + "`.images", &count), "");
    h.maria_rows = count.empty() ? 0 : std::stoul(count);
    return h;
  };
  auto killed_after = [&](int batches) {
    ::setenv("PIXSEEK_MIGRATE_KILL_AFTER_BATCHES", std::to_string(batches).c_str(), 1);
    auto run = Pixseek(migrate);
    ::unsetenv("PIXSEEK_MIGRATE_KILL_AFTER_BATCHES");
    return run;
  };

  // Killed in the rows: 3 batches of 4 rows in MariaDB, nothing in Milvus.
  r = killed_after(3);
  ASSERT_EQ(r.exit_code, -SIGKILL) << r.err;
  Held h = held();
  EXPECT_EQ(h.maria_rows, 12u);
  EXPECT_EQ(h.milvus_rows, 0u);
  EXPECT_EQ(json::parse(ReadAll(Db() / "pixseek.json"))["index_kind"], "disk");
  EXPECT_TRUE(std::filesystem::exists(Db() / "migrate.json"));

  // The embedded database is whole and usable meanwhile: one image added,
  // one removed (ids 3, among those already copied, and a new one).
  const auto extra = tmp_.path() / "extra.png";
  testing::WriteBytes(extra, Picture(500));
  r = Pixseek({"add", extra.string(), "--db", Db().string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int64_t added = json::parse(r.out)["ids"][0].get<int64_t>();
  r = Pixseek({"remove", "3", "--db", Db().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto before = Answers("", "");

  // Killed in the vectors: id 3 removed from MariaDB, 29 rows left (8
  // batches of 4), then 3 batches of vectors.
  r = killed_after(11);
  ASSERT_EQ(r.exit_code, -SIGKILL) << r.err;
  h = held();
  EXPECT_EQ(h.maria_rows, static_cast<size_t>(kImages)) << "40 - 1 removed + 1 added";
  EXPECT_EQ(h.milvus_rows, 12u);
  EXPECT_EQ(h.milvus_ids, 12u);
  EXPECT_NE(r.err.find("copying"), std::string::npos) << r.err;

  // Killed at an arbitrary moment of the vectors' copy, one per batch.
  std::vector<std::string> argv = {PIXSEEK_BINARY, "--home", home_.string()};
  argv.insert(argv.end(), migrate.begin(), migrate.end());
  argv.back() = "1";
  {
    testing::ChildProcess child(argv);
    ASSERT_FALSE(child.WaitForLine("vectors to", 30000).empty()) << child.stderr_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    child.Stop(SIGKILL);
  }
  // The kill came too late when the manifest was switched already (the
  // process may have been killed after that, while printing or exiting).
  const bool finished =
      json::parse(ReadAll(Db() / "pixseek.json"))["index_kind"] == "milvus";
  h = held();
  EXPECT_EQ(h.milvus_rows, h.milvus_ids) << "a kill never leaves a vector twice";
  RecordProperty("vectors_before_arbitrary_kill", static_cast<int>(h.milvus_ids));

  // Run to the end.
  if (!finished) {
    r = Pixseek(migrate);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("rm -r"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find((Db() / "index").string()), std::string::npos) << r.out;
  }
  h = held();
  EXPECT_EQ(h.milvus_rows, static_cast<size_t>(kImages));
  EXPECT_EQ(h.milvus_ids, static_cast<size_t>(kImages));
  EXPECT_EQ(h.maria_rows, static_cast<size_t>(kImages));
  ExpectCopiedExactly(Db(), "disk", vector_url, rows_url);
  ExpectSameAnswers(before, Answers(vector_url, rows_url));

  // The image added between two runs is found through the CLI now.
  r = Pixseek({"query", extra.string(), "--db", Db().string(), "--vector-url", vector_url,
               "--metadata-url", rows_url, "--json", "-k", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["results"][0]["id"], added);
  // And a further run refuses: there is nothing left to migrate.
  r = Pixseek(migrate);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already keeps its vectors"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pixseek
