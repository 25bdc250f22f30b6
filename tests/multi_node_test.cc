// Several pixseek processes on one metadata store acting as one service.
//
// First, build jobs shared through the store, in one process: two BuildJobs
// on one database are two nodes (each has its own lease owner), on SQLite and
// on a real MariaDB. They show that each job runs once and one at a time,
// that a job whose node died is resumed by another once the dead node's
// lease has expired (repairing the batch the dead node left half-stored),
// and that a node that stops hands its job over at once.
//
// Then real `pixseek serve` processes: two nodes on two ports sharing one
// MariaDB, one Redis, one Milvus (the Milvus REST API test server, run as a
// process of its own) and one database directory. An upload through one node
// is found through the other at once (the shared cache is invalidated for
// both), a delete likewise, thumbnails are served by either; a build started
// on one node runs once and both report it; a node killed during a build
// leaves it to the other, which finishes it with every image indexed exactly
// once; and Milvus stopped means 503 with Retry-After (while /healthz stays
// 200) until it is back, when service resumes by itself with nothing
// acknowledged lost.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mariadb_server.h"
#include "pixseek/database.h"
#include "pixseek/services.h"
#include "redis_server.h"
#include "subprocess.h"
#include "api_requests.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

constexpr int kDim = 8;

// Writes `count` distinct pictures into `folder`; returns its canonical path.
std::filesystem::path MakeFolder(const std::filesystem::path& folder, int count, uint32_t seed) {
  std::filesystem::create_directories(folder);
  for (int i = 0; i < count; ++i) {
    const uint32_t s = seed + static_cast<uint32_t>(i);
    testing::WriteBytes(folder / ("img" + std::to_string(i) + ".png"),
                        testing::SyntheticImage(".png", 64, 64, 30 + s % 200, 90, 160, s));
  }
  return std::filesystem::canonical(folder);
}

// Short leases and quick polls, so that takeovers take about a second.
BuildJobsOptions FastJobs(const std::filesystem::path& root) {
  BuildJobsOptions options;
  options.import_roots = {root};
  options.lease_ttl = milliseconds(1500);
  options.poll_interval = milliseconds(100);
  return options;
}

bool Finished(const Result<BuildJobStatus>& job) {
  return job.ok() && (job->state == "done" || job->state == "failed");
}

// Every stored image has exactly one vector and every vector one image.
void ExpectStoreAndIndexAgree(Database& db, size_t expected) {
  auto ids = db.store().AllIds();
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(ids->size(), expected);
  EXPECT_EQ(db.index().size(), expected);
  std::vector<int64_t> indexed = db.index().Ids();
  EXPECT_EQ(indexed, *ids);
  std::set<std::string> paths;
  for (int64_t id : *ids) paths.insert(db.store().Get(id)->path);
  EXPECT_EQ(paths.size(), ids->size()) << "a file is stored twice";
}

// The parameter names the metadata store: "sqlite" or "mariadb".
class SharedBuildJobsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "mariadb") {
      std::string why;
      testing::MariadbServer* server = testing::MariadbServer::Shared(&why);
      if (server == nullptr) GTEST_SKIP() << why;
      const std::string name = server->CreateDatabase(&why);
      ASSERT_FALSE(name.empty()) << why;
      metadata_url_ = server->Url(name);
    }
    home_ = tmp_.path() / "home";
    ASSERT_TRUE(testing::InstallTinyModel(home_, tmp_.path(), kDim, 7).ok());
    root_ = tmp_.path() / "import";
    std::filesystem::create_directories(root_);
    DatabaseOptions options;
    options.dir = tmp_.path() / "db";
    options.model = "tiny";
    options.home = home_;
    options.metadata_url = metadata_url_;
    auto db = Database::Open(options, true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(db).value();
  }

  TempDir tmp_;
  std::filesystem::path home_, root_;
  std::string metadata_url_;  // empty: the database's own SQLite file
  std::unique_ptr<Database> db_;
};

INSTANTIATE_TEST_SUITE_P(Stores, SharedBuildJobsTest, ::testing::Values("sqlite", "mariadb"),
                         [](const auto& info) { return info.param; });

// Jobs started through either node run once each, never two at a time, and
// both nodes report the same status.
TEST_P(SharedBuildJobsTest, EachJobRunsOnceAndOneAtATime) {
  BuildJobs a(*db_, FastJobs(root_));
  BuildJobs b(*db_, FastJobs(root_));
  constexpr int kJobs = 4, kPerJob = 6;
  std::vector<int64_t> ids;
  for (int j = 0; j < kJobs; ++j) {
    const auto folder = MakeFolder(root_ / ("set" + std::to_string(j)), kPerJob, 100 * j);
    auto id = (j % 2 == 0 ? a : b).Start(folder);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  size_t most_running = 0;
  const bool all_done = testing::WaitFor(
      [&] {
        auto jobs = a.List();
        if (!jobs.ok()) return false;
        const auto running = static_cast<size_t>(std::count_if(
            jobs->begin(), jobs->end(), [](const auto& j) { return j.state == "running"; }));
        most_running = std::max(most_running, running);
        return std::all_of(ids.begin(), ids.end(), [&](int64_t id) { return Finished(a.Get(id)); });
      },
      std::chrono::seconds(60), milliseconds(2));
  ASSERT_TRUE(all_done);
  EXPECT_LE(most_running, 1u);
  for (int64_t id : ids) {
    auto on_a = a.Get(id);
    auto on_b = b.Get(id);
    ASSERT_TRUE(on_a.ok() && on_b.ok());
    EXPECT_EQ(on_a->state, "done") << on_a->error;
    EXPECT_EQ(on_a->indexed, static_cast<uint64_t>(kPerJob)) << "job " << id;
    EXPECT_EQ(on_a->skipped, 0u) << "job " << id << " ran twice";
    EXPECT_EQ(on_b->state, on_a->state);
    EXPECT_EQ(on_b->indexed, on_a->indexed);
  }
  ExpectStoreAndIndexAgree(*db_, kJobs * kPerJob);
}

// A node died during a job: it holds the lease until it expires and left its
// job "running", with the last batch's metadata stored but not its vectors.
// Another node waits for the lease to expire, then resumes the job: it
// stores what the dead node had not, repairs the half-stored batch, and
// every file ends up indexed exactly once.
TEST_P(SharedBuildJobsTest, DeadNodesJobIsResumedOnceItsLeaseExpires) {
  constexpr int kFiles = 10;
  const auto folder = MakeFolder(root_ / "set", kFiles, 7);
  MetadataStore& store = db_->store();
  // What the dead node had done: every file stored...
  BuildOptions quiet;
  quiet.show_progress = false;
  auto built = BuildService(*db_).Build(folder, quiet);
  ASSERT_TRUE(built.ok()) << built.status().ToString();
  ASSERT_EQ(built->indexed, static_cast<uint64_t>(kFiles));
  std::vector<int64_t> stored = *store.AllIds();
  // ... except two files it never reached and a batch of three whose
  // vectors it never wrote.
  ASSERT_TRUE(db_->Remove(stored[0]).ok());
  ASSERT_TRUE(db_->Remove(stored[1]).ok());
  ASSERT_TRUE(db_->index().Remove(std::vector<int64_t>{stored[2], stored[3], stored[4]}).ok());
  // Its job, running under its lease.
  JobRecord record;
  record.kind = "build";
  record.state = "queued";
  record.payload = json{{"path", folder.string()}}.dump();
  auto id = store.CreateJob(record);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const milliseconds dead_ttl(2000);
  const auto taken_at = Clock::now();
  ASSERT_TRUE(*store.AcquireLease("build", "dead-node", dead_ttl));
  record.id = *id;
  record.state = "running";
  ASSERT_TRUE(store.UpdateJob(record, "build", "dead-node").ok());

  BuildJobs survivor(*db_, FastJobs(root_));
  Result<BuildJobStatus> job = Status::NotFound("");
  ASSERT_TRUE(testing::WaitFor([&] { return Finished(job = survivor.Get(*id)); },
                               std::chrono::seconds(60), milliseconds(10)));
  const auto waited = Clock::now() - taken_at;
  // Not before the dead node's lease ran out (the build itself takes well
  // under a second).
  EXPECT_GE(waited, dead_ttl) << "the job was taken while the dead node held the lease";
  ASSERT_EQ(job->state, "done") << job->error;
  EXPECT_EQ(job->total, static_cast<uint64_t>(kFiles));
  EXPECT_EQ(job->indexed, 5u);  // the 2 never reached and the 3 without vectors
  EXPECT_EQ(job->skipped, 5u);
  ExpectStoreAndIndexAgree(*db_, kFiles);
}

// A node that stops (its server shuts down) leaves its job queued and gives
// the lease up; another node takes the job at once and finishes it.
TEST_P(SharedBuildJobsTest, StoppingNodeHandsItsJobOver) {
  constexpr int kFiles = 120;
  const auto folder = MakeFolder(root_ / "set", kFiles, 500);
  auto leaving = std::make_unique<BuildJobs>(*db_, FastJobs(root_));
  auto id = leaving->Start(folder);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto job = leaving->Get(*id);
        return job.ok() && (job->state != "queued");
      },
      std::chrono::seconds(30), milliseconds(1)));
  BuildJobs staying(*db_, FastJobs(root_));
  leaving.reset();
  const auto stopped_at = Clock::now();
  Result<BuildJobStatus> job = staying.Get(*id);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  ASSERT_EQ(job->state, "queued") << "stopped in the middle, the job waits for a node";
  ASSERT_TRUE(
      testing::WaitFor([&] { return (job = staying.Get(*id)).ok() && job->state != "queued"; },
                       std::chrono::seconds(30), milliseconds(5)));
  // Taken over at once: the lease was given up, not left to expire (the last
  // renewal left it at least 1 s to run).
  EXPECT_LT(Clock::now() - stopped_at, milliseconds(1000));
  ASSERT_TRUE(testing::WaitFor([&] { return Finished(job = staying.Get(*id)); },
                               std::chrono::seconds(60), milliseconds(10)));
  ASSERT_EQ(job->state, "done") << job->error;
  EXPECT_EQ(job->total, static_cast<uint64_t>(kFiles));
  ExpectStoreAndIndexAgree(*db_, kFiles);
}

// ---------------------------------------------------------------------------
// Two `pixseek serve` processes

// The port in a line that ends with ":PORT" or ":PORT/" (0 when none).
int PortIn(const std::string& line) {
  std::string text = line;
  while (!text.empty() && (text.back() == '/' || text.back() == '\n')) text.pop_back();
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return 0;
  try {
    return std::stoi(text.substr(colon + 1));
  } catch (...) {
    return 0;
  }
}


// The ids of a search answer, best first.
std::vector<int64_t> Hits(const httplib::Result& res) {
  std::vector<int64_t> ids;
  if (!res || res->status != 200) return ids;
  const json body = json::parse(res->body);
  for (const auto& hit : body["results"]) ids.push_back(hit["id"].get<int64_t>());
  return ids;
}

class TwoNodesTest : public ::testing::Test {
 protected:
  struct Node {
    std::unique_ptr<testing::ChildProcess> process;
    int port = 0;
    std::unique_ptr<httplib::Client> client;
  };

  void SetUp() override {
    std::string why;
    maria_ = testing::MariadbServer::Shared(&why);
    if (maria_ == nullptr) GTEST_SKIP() << why;
    if (!testing::RedisServer::FindBinary()) GTEST_SKIP() << "no redis-server";
    if (!std::filesystem::exists(PIXSEEK_MILVUS_TEST_SERVER_BIN)) {
      GTEST_SKIP() << "no " << PIXSEEK_MILVUS_TEST_SERVER_BIN;
    }
    database_ = maria_->CreateDatabase(&why);
    ASSERT_FALSE(database_.empty()) << why;
    ASSERT_EQ(redis_.Start(), "");
    ASSERT_NO_FATAL_FAILURE(StartMilvus());
    home_ = tmp_.path() / "home";
    ASSERT_TRUE(testing::InstallTinyModel(home_, tmp_.path(), kDim, 7).ok());
    root_ = tmp_.path() / "import";
    std::filesystem::create_directories(root_ / "empty");
    auto created =
        testing::RunCommand(Command({"build", (root_ / "empty").string(), "--model", "tiny"}));
    ASSERT_EQ(created.exit_code, 0) << created.err;
    for (Node* node : {&a_, &b_}) ASSERT_NO_FATAL_FAILURE(StartNode(node));
  }

  void TearDown() override {
    for (Node* node : {&a_, &b_}) {
      if (node->process) node->process->Stop(SIGTERM);
    }
    if (milvus_) milvus_->Stop(SIGTERM);
  }

  // The Milvus test server, on milvus_port_ once it has one.
  void StartMilvus() {
    milvus_ = std::make_unique<testing::ChildProcess>(std::vector<std::string>{
        PIXSEEK_MILVUS_TEST_SERVER_BIN, "--dir", (tmp_.path() / "milvus").string(), "--port",
        std::to_string(milvus_port_)});
    const std::string line = milvus_->WaitForLine("listening on", 30000);
    ASSERT_FALSE(line.empty()) << milvus_->stderr_text();
    milvus_port_ = PortIn(line);
    ASSERT_GT(milvus_port_, 0) << line;
  }

  std::string VectorUrl() const {
    return "milvus://127.0.0.1:" + std::to_string(milvus_port_) + "/images";
  }

  // A pixseek command on the shared database and servers (without the
  // shared cache when `shared_cache` is false).
  std::vector<std::string> Command(std::vector<std::string> args, bool shared_cache = true) const {
    std::vector<std::string> argv = {PIXSEEK_BINARY, "--home", home_.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--db", (tmp_.path() / "db").string(), "--vector-url", VectorUrl(),
                             "--metadata-url", maria_->Url(database_)});
    if (shared_cache) argv.insert(argv.end(), {"--cache-url", redis_.url()});
    return argv;
  }

  void StartNode(Node* node) {
    node->process = std::make_unique<testing::ChildProcess>(
        Command({"serve", "--port", "0", "--quiet", "--import-root", root_.string()}));
    const std::string line = node->process->WaitForLine("serving", 60000);
    ASSERT_FALSE(line.empty()) << node->process->stderr_text();
    node->port = PortIn(line);
    ASSERT_GT(node->port, 0) << line;
    node->client = std::make_unique<httplib::Client>("127.0.0.1", node->port);
    node->client->set_read_timeout(60, 0);
  }

  // The first value of `query` on the shared MariaDB database, in which
  // "{db}" stands for the database's quoted name.
  std::string Sql(std::string query) {
    for (size_t at; (at = query.find("{db}")) != std::string::npos;) {
      query.replace(at, 4, "`" + database_ + "`");
    }
    std::string value;
    std::string error = maria_->Admin(query, &value);
    EXPECT_EQ(error, "") << query;
    return value;
  }

  // Rows in the Milvus collection, duplicates included (count(*) counts a
  // primary key inserted twice twice, as Milvus does).
  int64_t MilvusRows() {
    httplib::Client client("127.0.0.1", milvus_port_);
    auto res = client.Post(
        "/v2/vectordb/entities/query",
        json{{"collectionName", "images"}, {"filter", ""}, {"outputFields", {"count(*)"}}}.dump(),
        "application/json");
    if (!res || res->status != 200) return -1;
    const json body = json::parse(res->body);
    if (body.value("code", -1) != 0) return -1;
    return body["data"][0]["count(*)"].get<int64_t>();
  }

  int64_t Count(Node& node) {
    auto res = node.client->Get("/api/v1/stats");
    if (!res || res->status != 200) return -1;
    return json::parse(res->body)["count"].get<int64_t>();
  }

  TempDir tmp_;
  testing::MariadbServer* maria_ = nullptr;
  std::string database_;
  testing::RedisServer redis_;
  std::unique_ptr<testing::ChildProcess> milvus_;
  int milvus_port_ = 0;  // 0 until the first start, then kept across restarts
  std::filesystem::path home_, root_;
  Node a_, b_;
};

TEST_F(TwoNodesTest, WritesThroughOneNodeAreSeenThroughTheOther) {
  const std::string picture = testing::SeededPicture(11);
  // B answers (and caches) the query before the upload...
  auto before = testing::SearchPicture(*b_.client, picture);
  ASSERT_TRUE(before);
  ASSERT_EQ(before->status, 200) << before->body;
  EXPECT_TRUE(Hits(before).empty());
  // ... A stores it ...
  auto uploaded = testing::UploadPicture(*a_.client, picture);
  ASSERT_TRUE(uploaded);
  ASSERT_EQ(uploaded->status, 201) << uploaded->body;
  const int64_t id = json::parse(uploaded->body)["ids"][0].get<int64_t>();
  // ... and B finds it at once: its cached answer was cleared by A's upload.
  auto after = testing::SearchPicture(*b_.client, picture);
  ASSERT_EQ(Hits(after), std::vector<int64_t>{id}) << (after ? after->body : "no answer");
  // The record, the thumbnail and the uploaded file through B.
  EXPECT_EQ(b_.client->Get("/api/v1/images/" + std::to_string(id))->status, 200);
  EXPECT_EQ(b_.client->Get("/api/v1/images/" + std::to_string(id) + "/thumbnail")->status, 200);
  EXPECT_EQ(b_.client->Get("/api/v1/images/" + std::to_string(id) + "/file")->status, 200);
  // Ids come from MariaDB, not from each node: uploads through both nodes
  // get distinct ids.
  std::set<int64_t> ids = {id};
  for (uint32_t i = 0; i < 6; ++i) {
    auto res = testing::UploadPicture(i % 2 == 0 ? *a_.client : *b_.client, testing::SeededPicture(100 + i));
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 201) << res->body;
    ids.insert(json::parse(res->body)["ids"][0].get<int64_t>());
  }
  EXPECT_EQ(ids.size(), 7u);
  EXPECT_EQ(Count(a_), 7);
  EXPECT_EQ(Count(b_), 7);

  // A caches an answer that holds the image; B deletes it; A no longer
  // answers it.
  ASSERT_EQ(Hits(testing::SearchPicture(*a_.client, picture)).front(), id);
  auto deleted = b_.client->Delete("/api/v1/images/" + std::to_string(id));
  ASSERT_TRUE(deleted);
  ASSERT_EQ(deleted->status, 204) << deleted->body;
  EXPECT_EQ(a_.client->Get("/api/v1/images/" + std::to_string(id))->status, 404);
  EXPECT_EQ(a_.client->Get("/api/v1/images/" + std::to_string(id) + "/thumbnail")->status, 404);
  auto hits = Hits(testing::SearchPicture(*a_.client, picture));
  EXPECT_EQ(std::count(hits.begin(), hits.end(), id), 0) << "a deleted image is still found";
  EXPECT_EQ(hits.size(), 6u);
  EXPECT_EQ(Count(a_), 6);
  EXPECT_EQ(MilvusRows(), 6);
}

// A node whose cache is its own would answer stale results after another
// node's writes: it says so when it starts. The shared nodes do not.
TEST_F(TwoNodesTest, NodeWithAnInProcessCacheWarns) {
  testing::ChildProcess lone(Command({"serve", "--port", "0", "--quiet"}, false));
  const std::string warning = lone.WaitForLine("warning", 60000);
  EXPECT_NE(warning.find("the cache is in-process"), std::string::npos) << lone.stderr_text();
  lone.Stop(SIGTERM);
  for (Node* node : {&a_, &b_}) {
    EXPECT_EQ(node->process->stderr_text().find("warning"), std::string::npos)
        << node->process->stderr_text();
  }
}

TEST_F(TwoNodesTest, BuildStartedOnOneNodeRunsOnceAndShowsOnBoth) {
  constexpr int kFiles = 12;
  const auto folder = MakeFolder(root_ / "set", kFiles, 900);
  auto started =
      a_.client->Post("/api/v1/builds", json{{"path", folder.string()}}.dump(), "application/json");
  ASSERT_TRUE(started);
  ASSERT_EQ(started->status, 202) << started->body;
  const std::string job_url = "/api/v1/builds/" + json::parse(started->body)["id"].dump();
  json job;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto res = b_.client->Get(job_url);  // asked of the node that did not take it
        if (!res || res->status != 200) return false;
        job = json::parse(res->body);
        return job["state"] == "done" || job["state"] == "failed";
      },
      std::chrono::seconds(60), milliseconds(50)));
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["indexed"], kFiles);
  EXPECT_EQ(job["skipped"], 0);
  auto listed = a_.client->Get("/api/v1/builds");
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->status, 200);
  ASSERT_EQ(json::parse(listed->body)["builds"].size(), 1u);
  EXPECT_EQ(json::parse(listed->body)["builds"][0]["state"], "done");
  EXPECT_EQ(Count(a_), kFiles);
  EXPECT_EQ(Count(b_), kFiles);
  EXPECT_EQ(MilvusRows(), kFiles);
  // The job stays done: neither node runs it again.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(json::parse(b_.client->Get(job_url)->body)["indexed"], kFiles);
  EXPECT_EQ(MilvusRows(), kFiles);
}

TEST_F(TwoNodesTest, KilledNodesBuildIsFinishedByTheOther) {
  constexpr int kFiles = 400;
  const auto folder = MakeFolder(root_ / "set", kFiles, 3000);
  auto started =
      a_.client->Post("/api/v1/builds", json{{"path", folder.string()}}.dump(), "application/json");
  ASSERT_TRUE(started);
  ASSERT_EQ(started->status, 202) << started->body;
  const std::string job_url = "/api/v1/builds/" + json::parse(started->body)["id"].dump();
  // The node running it holds the lease "build"; its owner names its pid.
  std::string owner;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        owner = Sql("SELECT owner FROM {db}.leases WHERE name = 'build'");
        return !owner.empty();
      },
      std::chrono::seconds(30), milliseconds(5)));
  Node* runner = nullptr;
  for (Node* node : {&a_, &b_}) {
    if (owner.find(":" + std::to_string(node->process->pid()) + ":") != std::string::npos) {
      runner = node;
    }
  }
  ASSERT_NE(runner, nullptr) << owner;
  Node* other = runner == &a_ ? &b_ : &a_;
  // Killed in the middle of the build.
  ASSERT_TRUE(testing::WaitFor(
      [&] { return std::stoll("0" + Sql("SELECT COUNT(*) FROM {db}.images")) >= 40; },
      std::chrono::seconds(60), milliseconds(5)));
  runner->process->Stop(SIGKILL);
  runner->process.reset();
  const int64_t stored_at_kill = std::stoll(Sql("SELECT COUNT(*) FROM {db}.images"));
  EXPECT_LT(stored_at_kill, kFiles) << "the build ended before the kill; use more files";
  RecordProperty("stored_at_kill", std::to_string(stored_at_kill));

  json job;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto res = other->client->Get(job_url);
        if (!res || res->status != 200) return false;
        job = json::parse(res->body);
        return job["state"] == "done" || job["state"] == "failed";
      },
      std::chrono::seconds(120), milliseconds(50)));
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["total"], kFiles);
  EXPECT_EQ(job["failed"], 0);
  // Every file exactly once: in MariaDB (one row per path), in Milvus (one
  // row per id, and as many as MariaDB has) and in the node's own count.
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM {db}.images"), std::to_string(kFiles));
  EXPECT_EQ(Sql("SELECT COUNT(DISTINCT path) FROM {db}.images"), std::to_string(kFiles));
  EXPECT_EQ(MilvusRows(), kFiles);
  EXPECT_EQ(Count(*other), kFiles);
  // The survivor holds no lease once the job is done.
  EXPECT_TRUE(testing::WaitFor(
      [&] { return Sql("SELECT COUNT(*) FROM {db}.leases WHERE name = 'build'") == "0"; },
      std::chrono::seconds(10)));
  // And a search through it finds the files the killed node stored.
  std::ifstream first(folder / "img0.png", std::ios::binary);
  auto hits = Hits(testing::SearchPicture(*other->client, std::string(std::istreambuf_iterator<char>(first), {})));
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(Sql("SELECT path FROM {db}.images WHERE id = " + std::to_string(hits.front())),
            (folder / "img0.png").string());
}

TEST_F(TwoNodesTest, MilvusStoppedAndRestarted) {
  std::vector<std::pair<int64_t, uint32_t>> acknowledged;  // id, picture seed
  for (uint32_t i = 0; i < 4; ++i) {
    auto res = testing::UploadPicture(i % 2 == 0 ? *a_.client : *b_.client, testing::SeededPicture(200 + i));
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 201) << res->body;
    acknowledged.emplace_back(json::parse(res->body)["ids"][0].get<int64_t>(), 200 + i);
  }
  milvus_->Stop(SIGTERM);
  milvus_.reset();
  for (Node* node : {&a_, &b_}) {
    auto search = testing::SearchPicture(*node->client, testing::SeededPicture(999));
    ASSERT_TRUE(search);
    EXPECT_EQ(search->status, 503) << search->body;
    EXPECT_TRUE(search->has_header("Retry-After"));
    auto upload = testing::UploadPicture(*node->client, testing::SeededPicture(998));
    ASSERT_TRUE(upload);
    EXPECT_EQ(upload->status, 503) << upload->body;
    EXPECT_TRUE(upload->has_header("Retry-After"));
    auto health = node->client->Get("/healthz");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
  }
  ASSERT_NO_FATAL_FAILURE(StartMilvus());  // the same directory and port
  // Service resumes by itself on both nodes.
  for (Node* node : {&a_, &b_}) {
    EXPECT_TRUE(testing::WaitFor(
        [&] {
          auto res = testing::SearchPicture(*node->client, testing::SeededPicture(200));
          return res && res->status == 200;
        },
        std::chrono::seconds(30), milliseconds(100)))
        << "node on port " << node->port << " did not recover";
  }
  auto res = testing::UploadPicture(*b_.client, testing::SeededPicture(300));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 201) << res->body;
  acknowledged.emplace_back(json::parse(res->body)["ids"][0].get<int64_t>(), 300);
  // Nothing acknowledged was lost, and nothing refused was stored.
  for (const auto& [id, seed] : acknowledged) {
    EXPECT_EQ(Hits(testing::SearchPicture(*a_.client, testing::SeededPicture(seed))).front(), id) << "upload " << id;
  }
  EXPECT_EQ(Count(a_), static_cast<int64_t>(acknowledged.size()));
  EXPECT_EQ(MilvusRows(), static_cast<int64_t>(acknowledged.size()));
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM {db}.images"), std::to_string(acknowledged.size()));
}

}  // namespace
}  // namespace pixseek
