// A database whose vectors live in Milvus (DatabaseOptions::vector_url):
// built, added to, removed from and searched through Database and the
// services and through the real `pixseek` binary, against the Milvus test
// server (tests/milvus_server.h: the REST API v2 subset pixseek speaks, on
// 127.0.0.1; CI checks the protocol, not a live Milvus), with its metadata
// in SQLite or in a real MariaDB. Also every refusal of a mismatched vector
// URL, and that no password or token ever reaches the manifest, the stats
// or an error.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "mariadb_server.h"
#include "milvus_server.h"
#include "pixseek/database.h"
#include "pixseek/database_check.h"
#include "pixseek/server.h"
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
constexpr char kUser[] = "root";
constexpr char kPassword[] = "s3cret-Milvus-pw";

std::string ReadAll(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<uint8_t> Picture(int i) {
  // Two colour families, so that eval has classes to tell apart.
  return i % 2 == 0 ? testing::SyntheticImage(".png", 96, 96, 220, 30 + i, 30, 100 + i)
                    : testing::SyntheticImage(".png", 96, 96, 30, 40 + i, 220, 200 + i);
}

// "milvus://root:PASSWORD@127.0.0.1:PORT/collection" from the server's URL.
std::string WithPassword(const std::string& url) {
  const std::string scheme = "milvus://";
  return scheme + kUser + ":" + kPassword + "@" + url.substr(scheme.size());
}

class MilvusDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    std::filesystem::create_directories(tmp_.path() / "scratch");
    const Status installed = testing::InstallTinyModel(home_, tmp_.path() / "scratch", kDim, 7);
    ASSERT_TRUE(installed.ok()) << installed.ToString();
    images_ = tmp_.path() / "photos";
    for (int i = 0; i < 12; ++i) {
      const auto label = images_ / (i % 2 == 0 ? "red" : "blue");
      std::filesystem::create_directories(label);
      testing::WriteBytes(label / ("p" + std::to_string(i) + ".png"), Picture(i));
    }
    MilvusTestServerOptions options;
    options.dir = tmp_.path() / "milvus";
    options.token = std::string(kUser) + ":" + kPassword;
    milvus_ = std::make_unique<MilvusTestServer>(options);
    ASSERT_EQ(milvus_->Start(), "");
  }

  // The collection's URL with the credentials the server wants.
  std::string Url(const std::string& collection) const {
    return WithPassword(milvus_->url(collection));
  }

  DatabaseOptions Options(const std::string& vector_url, const std::string& dir = "db") {
    DatabaseOptions o;
    o.dir = tmp_.path() / dir;
    o.home = home_;
    o.model = "tiny";
    o.vector_url = vector_url;
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

// Build, search, upload, remove and reopen: the whole life of a database on
// Milvus, with `metadata_url` for its rows ("" = SQLite).
void DatabaseLife(DatabaseOptions options, const std::filesystem::path& images) {
  auto db = Database::Open(options, /*create=*/true);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->index().kind(), "milvus");
  auto built = BuildService(**db).Build(images, BuildOptions{});
  ASSERT_TRUE(built.ok()) << built.status().ToString();
  EXPECT_EQ(built->indexed, 12u);
  EXPECT_EQ((*db)->index().size(), 12u);

  QueryService query(**db);
  QueryParams params;
  params.top_k = 3;
  auto found = query.SearchImage(Picture(4), params);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_FALSE(found->hits.empty());
  EXPECT_EQ(std::filesystem::path(found->hits[0].record.path).filename(), "p4.png");
  EXPECT_NEAR(found->hits[0].score, 1.0, 1e-3);

  // An upload is found by the next search (strong consistency).
  UploadService upload(**db);
  const auto extra = testing::SyntheticImage(".png", 80, 80, 30, 200, 40, 77);
  auto id = upload.AddBytes(extra, "extra.png");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  found = query.SearchImage(extra, params);
  ASSERT_TRUE(found.ok());
  ASSERT_FALSE(found->hits.empty());
  EXPECT_EQ(found->hits[0].id, *id);

  // Removed: gone from the searches and from Milvus.
  ASSERT_TRUE((*db)->Remove(*id).ok());
  found = query.SearchImage(extra, params);
  ASSERT_TRUE(found.ok());
  for (const QueryHit& h : found->hits) EXPECT_NE(h.id, *id);
  EXPECT_EQ((*db)->index().Get(*id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE((*db)->Compact().ok());

  auto stats = (*db)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->count, 12);
  EXPECT_EQ(stats->index_kind, "milvus");
  EXPECT_NE(stats->vector_store.find("milvus://"), std::string::npos);
  db->reset();

  // Reopened (read-only too), everything is still there.
  options.read_only = true;
  auto again = Database::Open(options, false);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->index().size(), 12u);
  auto hit = QueryService(**again).SearchImage(Picture(7), params);
  ASSERT_TRUE(hit.ok());
  ASSERT_FALSE(hit->hits.empty());
  EXPECT_EQ(std::filesystem::path(hit->hits[0].record.path).filename(), "p7.png");
}

TEST_F(MilvusDatabaseTest, DatabaseOnMilvusWithSqliteMetadata) {
  DatabaseLife(Options(Url("sqlite_rows")), images_);
  const json manifest = json::parse(ReadAll(tmp_.path() / "db" / "pixseek.json"));
  EXPECT_EQ(manifest["index_kind"], "milvus");
  EXPECT_EQ(manifest["metadata_store"], "sqlite");
  EXPECT_EQ(manifest["vector_store"],
            "milvus://root:***@127.0.0.1:" + std::to_string(milvus_->port()) + "/sqlite_rows");
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "db" / "index")) << "no local index";
  // A second database is not made on a collection that holds vectors.
  auto second = Database::Open(Options(Url("sqlite_rows"), "second"), true);
  ASSERT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("already holds 12 vectors"), std::string::npos)
      << second.status().message();
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "second" / "pixseek.json"));
}

TEST_F(MilvusDatabaseTest, DatabaseOnMilvusWithMariadbMetadata) {
  std::string why;
  testing::MariadbServer* maria = testing::MariadbServer::Shared(&why);
  if (maria == nullptr) GTEST_SKIP() << why;
  const std::string name = maria->CreateDatabase(&why);
  ASSERT_FALSE(name.empty()) << why;
  DatabaseOptions options = Options(Url("maria_rows"));
  options.metadata_url = maria->Url(name);
  DatabaseLife(options, images_);
  const std::string manifest = ReadAll(tmp_.path() / "db" / "pixseek.json");
  EXPECT_EQ(manifest.find(testing::MariadbServer::kPassword), std::string::npos) << manifest;
  EXPECT_EQ(manifest.find(kPassword), std::string::npos) << manifest;
}

TEST_F(MilvusDatabaseTest, RefusesMismatchedVectorUrls) {
  const std::string url = Url("images");
  {
    auto db = Database::Open(Options(url), true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
  }
  const std::string recorded =
      "milvus://root:***@127.0.0.1:" + std::to_string(milvus_->port()) + "/images";

  // No URL: says where the vectors are and the three ways to say so.
  auto none = Database::Open(Options(""), false);
  ASSERT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("keeps its vectors in Milvus at " + recorded +
                                         ": set PIXSEEK_VECTOR_URL, vector_url in the config "
                                         "or --vector-url"),
            std::string::npos)
      << none.status().message();

  // Another collection, another port, another host.
  for (const std::string& other :
       {Url("other"), WithPassword("milvus://127.0.0.1:1/images"),
        WithPassword("milvus://milvus.example:" + std::to_string(milvus_->port()) + "/images")}) {
    auto wrong = Database::Open(Options(other), false);
    ASSERT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition) << other;
    EXPECT_NE(wrong.status().message().find(recorded), std::string::npos)
        << wrong.status().message();
    EXPECT_EQ(wrong.status().message().find(kPassword), std::string::npos)
        << wrong.status().message();
  }
  // The right URL still opens it.
  auto same = Database::Open(Options(url), false);
  EXPECT_TRUE(same.ok()) << same.status().ToString();
  same->reset();

  // A database with its own index given a vector URL.
  for (const char* kind : {"disk", "flat"}) {
    DatabaseOptions local = Options("", std::string("local-") + kind);
    local.index_kind = kind;
    ASSERT_TRUE(Database::Open(local, true).ok());
    local.index_kind.clear();
    local.vector_url = url;
    auto refused = Database::Open(local, false);
    ASSERT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(refused.status().message().find(std::string("keeps its vectors in its ") + kind +
                                              " index; leave vector_url unset, or move them "
                                              "with `pixseek migrate`"),
              std::string::npos)
        << refused.status().message();
  }

  // A new database: --index disk with a vector URL, or milvus without one.
  DatabaseOptions both = Options(Url("fresh"), "fresh");
  both.index_kind = "disk";
  auto conflict = Database::Open(both, true);
  ASSERT_EQ(conflict.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(conflict.status().message().find("--index disk"), std::string::npos)
      << conflict.status().message();
  EXPECT_EQ(conflict.status().message().find(kPassword), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "fresh" / "pixseek.json"));
  DatabaseOptions bare = Options("", "bare");
  bare.index_kind = "milvus";
  auto no_url = Database::Open(bare, true);
  ASSERT_EQ(no_url.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(no_url.status().message().find("PIXSEEK_VECTOR_URL"), std::string::npos);

  // An unknown scheme: only the scheme is echoed.
  for (const bool exists : {false, true}) {
    auto unknown = Database::Open(
        Options("qdrant://admin:hunter2@db.example:6333/images?token=tok3n", exists ? "db" : "new"),
        !exists);
    ASSERT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
    const std::string m = unknown.status().message();
    EXPECT_NE(m.find("qdrant://"), std::string::npos) << m;
    for (const char* secret : {"hunter2", "admin", "db.example", "tok3n"}) {
      EXPECT_EQ(m.find(secret), std::string::npos) << m;
    }
  }
}

TEST_F(MilvusDatabaseTest, SecretsNeverShow) {
  // The password in the user info, and an API token in the query.
  const std::string token_url = milvus_->url("tokens") + "?token=" + kUser + "%3A" + kPassword;
  for (const std::string& url : {Url("secrets"), token_url}) {
    SCOPED_TRACE(url);
    const std::string dir = url == token_url ? "with-token" : "with-password";
    auto db = Database::Open(Options(url, dir), true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    const std::string manifest = ReadAll(tmp_.path() / dir / "pixseek.json");
    EXPECT_EQ(manifest.find(kPassword), std::string::npos) << manifest;
    auto stats = (*db)->Stats();
    ASSERT_TRUE(stats.ok());
    const std::string stats_json = StatsToJson(*stats);
    EXPECT_EQ(stats_json.find(kPassword), std::string::npos) << stats_json;
    EXPECT_NE(json::parse(stats_json)["vector_store"].get<std::string>().find("***"),
              std::string::npos)
        << stats_json;
    db->reset();
    auto wrong = Database::Open(Options(url + "x", dir), false);
    EXPECT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.status().message().find(kPassword), std::string::npos)
        << wrong.status().message();
  }
  // A wrong password: refused by the server, and not shown.
  auto denied =
      Database::Open(Options("milvus://root:not-the-" + std::string(kPassword) +
                                 "@127.0.0.1:" + std::to_string(milvus_->port()) + "/secrets",
                             "with-password"),
                     false);
  EXPECT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().message().find(kPassword), std::string::npos)
      << denied.status().message();
}

// With the vectors on a shared server, the open-time Reconcile would take
// another node's insert in flight for an interrupted write; it does not run.
TEST_F(MilvusDatabaseTest, OpeningDoesNotReconcileASharedServer) {
  const std::string url = Url("shared");
  auto db = Database::Open(Options(url), true);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE(BuildService(**db).Build(images_, BuildOptions{}).ok());
  // Node B's insert, half done: its row committed, its vector not yet
  // added; and a vector whose row is not visible yet.
  ImageRecord row;
  row.path = "/elsewhere/in-flight.png";
  row.sha256 = std::string(64, 'a');
  auto row_id = (*db)->store().Insert(row);
  ASSERT_TRUE(row_id.ok()) << row_id.status().ToString();
  std::vector<float> v(kDim, 0.0f);
  v[0] = 1.0f;
  const int64_t vector_id = 9000;
  ASSERT_TRUE((*db)->index().Add(1, &vector_id, v.data()).ok());
  db->reset();

  auto reopened = Database::Open(Options(url), false);  // writable, like a node starting
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_TRUE((*reopened)->store().Get(*row_id).ok()) << "the row in flight was removed";
  EXPECT_TRUE((*reopened)->index().Get(vector_id).ok()) << "the vector in flight was removed";
  // A search never returns the vector without its row.
  QueryService query(**reopened);
  auto hits = query.SearchById(1, QueryParams{});
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  for (const QueryHit& h : hits->hits) EXPECT_NE(h.id, vector_id);
  reopened->reset();

  // `pixseek check` sees both; --repair (no node writing) removes the
  // vector without a row.
  CheckOptions check;
  check.dir = tmp_.path() / "db";
  check.home = home_;
  check.vector_url = url;
  auto report = CheckDatabase(check);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->damaged()) << CheckReportText(*report);
  auto repaired = RepairDatabase(check);
  ASSERT_TRUE(repaired.ok()) << repaired.status().ToString();
  auto after = Database::Open(Options(url), false);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)->index().Get(vector_id).status().code(), StatusCode::kNotFound);
  // The check without the URL says what to give.
  check.vector_url.clear();
  auto blind = CheckDatabase(check);
  ASSERT_TRUE(blind.ok());
  EXPECT_NE(CheckReportText(*blind).find("PIXSEEK_VECTOR_URL"), std::string::npos)
      << CheckReportText(*blind);
}

// The real binary: every command with --vector-url (or PIXSEEK_VECTOR_URL).
TEST_F(MilvusDatabaseTest, CliCommandsOnMilvus) {
  const std::string url = Url("cli");
  const std::string db = (tmp_.path() / "db").string();
  auto r = Pixseek(
      {"build", images_.string(), "--db", db, "--model", "tiny", "--vector-url", url, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["indexed"], 12);
  EXPECT_EQ(r.err.find(kPassword), std::string::npos) << r.err;

  const std::string query_image = (images_ / "red" / "p2.png").string();
  r = Pixseek({"query", query_image, "--db", db, "--vector-url", url, "--json", "-k", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json hits = json::parse(r.out)["results"];
  ASSERT_FALSE(hits.empty()) << r.out;
  EXPECT_NE(hits[0]["path"].get<std::string>().find("p2.png"), std::string::npos) << r.out;

  // add, then remove what was added.
  const auto extra = tmp_.path() / "extra.png";
  testing::WriteBytes(extra, testing::SyntheticImage(".png", 90, 90, 10, 220, 10, 5));
  r = Pixseek({"add", extra.string(), "--db", db, "--vector-url", url, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int64_t added = json::parse(r.out)["ids"][0].get<int64_t>();
  r = Pixseek({"query", extra.string(), "--db", db, "--vector-url", url, "--json", "-k", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["results"][0]["id"], added);
  r = Pixseek({"remove", std::to_string(added), "--db", db, "--vector-url", url});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // The environment variable instead of the flag.
  ASSERT_EQ(setenv("PIXSEEK_VECTOR_URL", url.c_str(), 1), 0);
  r = Pixseek({"stats", "--db", db});
  unsetenv("PIXSEEK_VECTOR_URL");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json stats = json::parse(r.out);
  EXPECT_EQ(stats["count"], 12);
  EXPECT_EQ(stats["index_kind"], "milvus");
  EXPECT_EQ(stats["vector_store"],
            "milvus://root:***@127.0.0.1:" + std::to_string(milvus_->port()) + "/cli");
  EXPECT_EQ(r.out.find(kPassword), std::string::npos) << r.out;

  r = Pixseek({"eval", images_.string(), "--db", db, "--vector-url", url, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["images"], 12);
  EXPECT_GT(json::parse(r.out)["overall"]["map"].get<double>(), 0.5) << r.out;

  r = Pixseek({"compact", "--db", db, "--vector-url", url});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 12);

  // The refusals, through the binary.
  r = Pixseek({"query", query_image, "--db", db});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("set PIXSEEK_VECTOR_URL, vector_url in the config or --vector-url"),
            std::string::npos)
      << r.err;
  r = Pixseek({"stats", "--db", db, "--vector-url", Url("elsewhere")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(kPassword), std::string::npos) << r.err;
  r = Pixseek({"build", images_.string(), "--db", (tmp_.path() / "new").string(), "--model", "tiny",
               "--index", "disk", "--vector-url", url});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(kPassword), std::string::npos) << r.err;
  r = Pixseek({"reindex", "--db", db, "--vector-url", url, "--model", "tiny"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not supported"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pixseek
