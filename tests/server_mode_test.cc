// Server mode end to end: pixseek over a real MariaDB and a real Redis, each
// started by the test on 127.0.0.1 and stopped and restarted under a running
// HttpServer (or a real `pixseek serve` process), to show the failure
// behaviour the service promises:
// - Redis down: searches go on without the cache and use it again once it
//   is back;
// - MariaDB down: requests that need it answer 503 with Retry-After, nothing
//   acknowledged is lost, and service resumes by itself;
// - pixseek killed during uploads: every upload answered 201 is there after
//   a restart.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "mariadb_server.h"
#include "pixseek/database.h"
#include "pixseek/server.h"
#include "redis_server.h"
#include "subprocess.h"
#include "api_requests.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using nlohmann::json;
using testing::TempDir;

constexpr int kDim = 8;


class ServerModeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    ASSERT_TRUE(testing::InstallTinyModel(home_, tmp_.path(), kDim, 7).ok());
  }

  Result<std::unique_ptr<Database>> OpenDb(const std::string& metadata_url,
                                           const std::string& cache_url) {
    DatabaseOptions options;
    options.dir = tmp_.path() / "db";
    options.model = "tiny";
    options.home = home_;
    options.metadata_url = metadata_url;
    options.cache_url = cache_url;
    return Database::Open(options, /*create=*/true);
  }

  TempDir tmp_;
  std::filesystem::path home_;
};

TEST_F(ServerModeTest, RedisDownSearchGoesOnWithoutTheCache) {
  if (!testing::RedisServer::FindBinary()) GTEST_SKIP() << "redis-server is not installed";
  testing::RedisServer redis;
  ASSERT_EQ(redis.Start(), "");
  auto db = OpenDb("", redis.url());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  HttpServer server(**db, options);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());
  for (uint32_t i = 0; i < 5; ++i) ASSERT_EQ(testing::UploadPicture(client, testing::SeededPicture(i))->status, 201);

  const std::string query = testing::SeededPicture(2);
  auto first = testing::SearchPicture(client, query);
  ASSERT_EQ(first->status, 200) << first->body;
  const uint64_t hits_before = (*db)->cache().stats().hits;
  auto second = testing::SearchPicture(client, query);
  ASSERT_EQ(second->status, 200);
  EXPECT_EQ((*db)->cache().stats().hits, hits_before + 1) << "the repeated search is a hit";
  EXPECT_EQ(json::parse(first->body)["results"], json::parse(second->body)["results"]);
  EXPECT_NE(redis.Cli({"DBSIZE"}), "0") << "results are kept in Redis";

  redis.Stop();
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto res = testing::SearchPicture(client, testing::SeededPicture(10 + i));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
  // Uploads (which clear the cache) work too.
  EXPECT_EQ(testing::UploadPicture(client, testing::SeededPicture(50))->status, 201);

  ASSERT_EQ(redis.Start(), "");
  // Within a couple of retry intervals the cache is used again.
  const bool hit = testing::WaitFor(
      [&] {
        const uint64_t before = (*db)->cache().stats().hits;
        testing::SearchPicture(client, query);
        return (*db)->cache().stats().hits > before;
      },
      std::chrono::seconds(10), std::chrono::milliseconds(20));
  EXPECT_TRUE(hit) << "the cache is used again once Redis is back";
}

TEST_F(ServerModeTest, MariadbDownAnswers503AndResumes) {
  std::string why;
  testing::MariadbServer* maria = testing::MariadbServer::Shared(&why);
  if (maria == nullptr) GTEST_SKIP() << why;
  const std::string name = maria->CreateDatabase(&why);
  ASSERT_FALSE(name.empty()) << why;
  auto db = OpenDb(maria->Url(name), "");
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  options.retry_after_s = 3;
  HttpServer server(**db, options);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(60, 0);
  std::vector<int64_t> ids;
  for (uint32_t i = 0; i < 4; ++i) {
    auto res = testing::UploadPicture(client, testing::SeededPicture(i));
    ASSERT_EQ(res->status, 201) << res->body;
    ids.push_back(json::parse(res->body)["ids"][0].get<int64_t>());
  }

  maria->Stop(SIGKILL);  // a crash, not a clean shutdown
  auto res = testing::SearchPicture(client, testing::SeededPicture(100));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  EXPECT_EQ(res->get_header_value("Retry-After"), "3");
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "UNAVAILABLE");
  res = testing::UploadPicture(client, testing::SeededPicture(101));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  EXPECT_EQ(res->get_header_value("Retry-After"), "3");
  res = client.Get("/api/v1/images");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(client.Get("/healthz")->status, 200) << "the process itself is fine";

  ASSERT_EQ(maria->Start(), "");
  // Service resumes by itself: no restart of pixseek.
  res = testing::SearchPicture(client, testing::SeededPicture(2));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["results"][0]["id"], ids[2]);
  for (int64_t id : ids) {
    EXPECT_EQ(client.Get("/api/v1/images/" + std::to_string(id))->status, 200) << id;
  }
  res = testing::UploadPicture(client, testing::SeededPicture(101));
  EXPECT_EQ(res->status, 201) << res->body;
  // The refused upload left nothing behind: 4 + 1 images.
  EXPECT_EQ(json::parse(client.Get("/api/v1/stats")->body)["count"], 5);
}

// A real `pixseek serve` is killed (SIGKILL) while a client uploads; after a
// restart every upload it acknowledged with 201 is there and searchable.
void KillDuringUploads(const std::filesystem::path& root, const std::filesystem::path& home,
                       const std::string& metadata_url) {
  const auto db = root / "killdb";
  const auto empty = root / "empty";
  std::filesystem::create_directories(empty);
  std::vector<std::string> common = {PIXSEEK_BINARY, "--home", home.string()};
  auto with = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = common;
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--db", db.string()});
    if (!metadata_url.empty()) argv.insert(argv.end(), {"--metadata-url", metadata_url});
    return argv;
  };
  auto built = testing::RunCommand(with({"build", empty.string(), "--model", "tiny"}));
  ASSERT_EQ(built.exit_code, 0) << built.err;

  auto serve = [&] {
    auto child = std::make_unique<testing::ChildProcess>(
        with({"serve", "--port", "0", "--quiet"}));
    std::string line = child->WaitForLine("serving", 30000);
    EXPECT_FALSE(line.empty()) << child->stderr_text();
    auto colon = line.rfind(':');
    int port = colon == std::string::npos ? 0 : std::stoi(line.substr(colon + 1));
    return std::make_pair(std::move(child), port);
  };
  auto [server, port] = serve();
  ASSERT_GT(port, 0);

  std::vector<int64_t> acknowledged;  // read once the uploader has ended
  std::atomic<size_t> acknowledged_count{0};
  std::atomic<bool> stop{false};
  std::thread uploader([&, port = port] {
    httplib::Client client("127.0.0.1", port);
    for (uint32_t i = 0; !stop; ++i) {
      auto res = testing::UploadPicture(client, testing::SeededPicture(1000 + i));
      if (!res) break;  // the server is gone
      if (res->status == 201) {
        acknowledged.push_back(json::parse(res->body)["ids"][0].get<int64_t>());
        ++acknowledged_count;
      }
    }
  });
  // Let some uploads land, then kill mid-stream.
  testing::WaitFor([&] { return acknowledged_count >= 15; }, std::chrono::seconds(10));
  server->Stop(SIGKILL);
  stop = true;
  uploader.join();
  ASSERT_GE(acknowledged.size(), 5u) << "too few uploads before the kill";

  auto [again, port2] = serve();
  ASSERT_GT(port2, 0);
  httplib::Client client("127.0.0.1", port2);
  for (size_t i = 0; i < acknowledged.size(); ++i) {
    auto res = client.Get("/api/v1/images/" + std::to_string(acknowledged[i]));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << "acknowledged upload " << acknowledged[i] << " is lost";
  }
  // And each is found by its own picture.
  auto res = testing::SearchPicture(client, testing::SeededPicture(1000 + static_cast<uint32_t>(acknowledged.size() - 1)));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["results"][0]["id"], acknowledged.back());
}

TEST_F(ServerModeTest, KilledDuringUploadsLosesNothingAcknowledgedSqlite) {
  KillDuringUploads(tmp_.path(), home_, "");
}

TEST_F(ServerModeTest, KilledDuringUploadsLosesNothingAcknowledgedMariadb) {
  std::string why;
  testing::MariadbServer* maria = testing::MariadbServer::Shared(&why);
  if (maria == nullptr) GTEST_SKIP() << why;
  const std::string name = maria->CreateDatabase(&why);
  ASSERT_FALSE(name.empty()) << why;
  KillDuringUploads(tmp_.path(), home_, maria->Url(name));
}

}  // namespace
}  // namespace pixseek
