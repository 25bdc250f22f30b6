// End to end through the real binary: build a database from a folder of
// generated images plus broken files, query it through the CLI and over HTTP,
// add and remove over HTTP, restart the server and check nothing was lost.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "pixseek/vector_index.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using nlohmann::json;
using testing::ChildProcess;
using testing::CommandResult;
using testing::RunCommand;
using testing::SyntheticImage;
using testing::WriteBytes;

class CliIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    images_ = tmp_.path() / "photos";
    db_ = tmp_.path() / "db";
    std::filesystem::create_directories(images_ / "red");
    std::filesystem::create_directories(images_ / "blue");
    // The tiny real ONNX network stands in for a downloaded model.
    WriteBytes(tmp_.path() / "tiny.onnx", testing::MakeTinyOnnxModel(16, 7));
    std::ofstream(tmp_.path() / "tiny.json") << testing::TinyModelCardJson(16, "tiny.onnx");
    auto r = Pixseek({"model", "import", (tmp_.path() / "tiny.onnx").string(), "--card",
                      (tmp_.path() / "tiny.json").string(), "--name", "tiny"});
    ASSERT_EQ(r.exit_code, 0) << r.err;

    for (int i = 0; i < 6; ++i) {
      WriteBytes(images_ / "red" / ("r" + std::to_string(i) + ".jpg"),
                 SyntheticImage(".jpg", 320, 240, 220, 30, 30, 100 + i));
      WriteBytes(images_ / "blue" / ("b" + std::to_string(i) + ".png"),
                 SyntheticImage(".png", 200, 300, 30, 40, 220, 200 + i));
    }
    // Broken inputs: each must be listed, none may stop the build.
    WriteBytes(images_ / "red" / "empty.jpg", {});
    WriteBytes(images_ / "red" / "garbage.jpg", std::vector<uint8_t>(5000, 0x5a));
    auto jpeg = SyntheticImage(".jpg", 320, 240, 200, 50, 50, 999);
    WriteBytes(images_ / "blue" / "truncated.jpg",
               std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + jpeg.size() / 2));
    std::ofstream(images_ / "blue" / "notes.png") << "this is text, not a picture\n";
  }

  CommandResult Pixseek(std::vector<std::string> args) {
    args.insert(args.begin(), {PIXSEEK_BINARY, "--home", home_.string()});
    return RunCommand(args);
  }

  json BuildJson() {
    auto r = Pixseek({"build", images_.string(), "--db", db_.string(), "--model", "tiny", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  }

  // Starts `pixseek serve` (with `extra` arguments) on a free port and
  // returns the port.
  int StartServer(std::unique_ptr<ChildProcess>& server,
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {PIXSEEK_BINARY, "--home",     home_.string(), "serve",
                                     "--db",         db_.string(), "--port",       "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server = std::make_unique<ChildProcess>(argv);
    std::string line = server->WaitForLine("serving", 30000);
    EXPECT_FALSE(line.empty()) << server->stderr_text();
    auto colon = line.rfind(':');
    return colon == std::string::npos ? 0 : std::stoi(line.substr(colon + 1));
  }

  testing::TempDir tmp_;
  std::filesystem::path home_, images_, db_;
};

TEST_F(CliIntegrationTest, BuildQueryServeRestart) {
  // Build: 12 images stored, 4 broken files listed with reasons.
  json report = BuildJson();
  EXPECT_EQ(report["indexed"], 12);
  EXPECT_EQ(report["skipped"], 0);
  ASSERT_EQ(report["failed"].size(), 4u) << report.dump(2);
  for (const auto& f : report["failed"]) {
    EXPECT_FALSE(f["reason"].get<std::string>().empty());
  }

  // Re-running processes nothing again.
  report = BuildJson();
  EXPECT_EQ(report["indexed"], 0);
  EXPECT_EQ(report["skipped"], 12);

  // CLI query: the image finds itself first, scores are cosine, best first.
  auto query_file = images_ / "red" / "r3.jpg";
  auto r = Pixseek({"query", query_file.string(), "--db", db_.string(), "-k", "5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json answer = json::parse(r.out);
  ASSERT_EQ(answer["results"].size(), 5u);
  EXPECT_EQ(answer["results"][0]["path"], std::filesystem::canonical(query_file).string());
  EXPECT_NEAR(answer["results"][0]["score"].get<double>(), 1.0, 1e-4);
  for (size_t i = 1; i < 5; ++i) {
    EXPECT_LE(answer["results"][i]["score"].get<double>(),
              answer["results"][i - 1]["score"].get<double>());
  }
  EXPECT_TRUE(answer.contains("took_ms"));
  // Neighbours of a red picture are red pictures.
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NE(answer["results"][i]["path"].get<std::string>().find("/red/"), std::string::npos)
        << answer.dump(2);
  }

  // A broken query image is a clear error, not a crash.
  r = Pixseek({"query", (images_ / "red" / "garbage.jpg").string(), "--db", db_.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;

  // HTTP: search, upload, delete.
  std::unique_ptr<ChildProcess> server;
  int port = StartServer(server);
  ASSERT_GT(port, 0);
  httplib::Client http("127.0.0.1", port);
  // One-shot readers work beside the running server.
  r = Pixseek({"query", query_file.string(), "--db", db_.string(), "-k", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["results"][0]["path"],
            std::filesystem::canonical(query_file).string());
  // A second writer is refused with a clear message, not corrupted data.
  r = Pixseek({"add", (images_ / "red" / "r1.jpg").string(), "--db", db_.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("locked"), std::string::npos) << r.err;
  auto query_bytes = testing::ReadBytes(query_file);
  httplib::MultipartFormDataItems form = {
      {"image", std::string(query_bytes.begin(), query_bytes.end()), "r3.jpg", "image/jpeg"}};
  auto res = http.Post("/api/v1/search?top_k=3", form);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200) << res->body;
  json found = json::parse(res->body);
  ASSERT_EQ(found["results"].size(), 3u);
  EXPECT_EQ(found["results"][0]["path"], std::filesystem::canonical(query_file).string());

  auto upload = SyntheticImage(".png", 256, 256, 30, 200, 40, 4242);  // a green one
  form = {{"image", std::string(upload.begin(), upload.end()), "green.png", "image/png"}};
  res = http.Post("/api/v1/images", form);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 201) << res->body;
  const int64_t uploaded = json::parse(res->body)["ids"][0].get<int64_t>();
  res = http.Post("/api/v1/search?top_k=1", form);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["results"][0]["id"], uploaded);

  const int64_t removed = found["results"][1]["id"].get<int64_t>();
  res = http.Delete("/api/v1/images/" + std::to_string(removed));
  ASSERT_TRUE(res);
  EXPECT_TRUE(res->status == 200 || res->status == 204) << res->status;
  res = http.Get("/api/v1/images/" + std::to_string(removed));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);

  // Restart: the upload and the delete both survived.
  EXPECT_EQ(server->Stop(SIGTERM), 0) << server->stderr_text();
  port = StartServer(server);
  ASSERT_GT(port, 0);
  httplib::Client again("127.0.0.1", port);
  res = again.Get("/api/v1/images/" + std::to_string(uploaded));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  res = again.Get("/api/v1/images/" + std::to_string(uploaded) + "/file");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body, std::string(upload.begin(), upload.end()));
  res = again.Get("/api/v1/images/" + std::to_string(removed));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  res = again.Get("/api/v1/stats");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["count"], 12);  // 12 built + 1 uploaded - 1 removed
  server->Stop(SIGTERM);
}

// `serve --hide-paths`, or API keys without `--show-paths`, keep absolute
// server paths out of the answers.
TEST_F(CliIntegrationTest, ServeHidesPathsOnRequestOrWithKeys) {
  BuildJson();
  const auto config = tmp_.path() / "keys.toml";
  std::ofstream(config) << "[server]\napi_keys = [\"k\"]\n";
  // The paths of the stored images as a server started with `extra` lists them.
  auto listed = [&](const std::vector<std::string>& extra) {
    std::set<std::string> paths;
    std::unique_ptr<ChildProcess> server;
    const int port = StartServer(server, extra);
    EXPECT_GT(port, 0);
    if (port <= 0) return paths;
    httplib::Client http("127.0.0.1", port);
    auto res = http.Get("/api/v1/images?limit=500");
    EXPECT_TRUE(res && res->status == 200);
    if (res) {
      const json body = json::parse(res->body);  // kept: the loop reads a part of it
      for (const json& image : body["images"]) paths.insert(image["path"]);
    }
    EXPECT_EQ(server->Stop(SIGTERM), 0) << server->stderr_text();
    return paths;
  };
  const std::string absolute = std::filesystem::canonical(images_ / "red" / "r0.jpg").string();
  for (const auto& extra :
       std::vector<std::vector<std::string>>{{"--hide-paths"}, {"--config", config.string()}}) {
    SCOPED_TRACE(extra.back());
    const std::set<std::string> hidden = listed(extra);
    EXPECT_EQ(hidden.size(), 12u);
    EXPECT_TRUE(hidden.count("red/r0.jpg"));
    for (const std::string& path : hidden) EXPECT_NE(path.front(), '/') << path;
  }
  EXPECT_TRUE(listed({"--config", config.string(), "--show-paths"}).count(absolute));
  EXPECT_TRUE(listed({}).count(absolute));
}

TEST_F(CliIntegrationTest, AddAndRemoveInPlace) {
  BuildJson();
  auto extra = tmp_.path() / "extra.jpg";
  WriteBytes(extra, SyntheticImage(".jpg", 300, 300, 250, 250, 20, 77));  // yellow
  auto r = Pixseek({"add", extra.string(), "--db", db_.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int64_t id = json::parse(r.out)["ids"][0].get<int64_t>();

  r = Pixseek({"query", extra.string(), "--db", db_.string(), "-k", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["results"][0]["id"], id);

  r = Pixseek({"remove", std::to_string(id), "--db", db_.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"query", extra.string(), "--db", db_.string(), "-k", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(json::parse(r.out)["results"][0]["id"], id);

  // Removing an unknown id is an error with a message.
  r = Pixseek({"remove", "999999", "--db", db_.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
}

// `pixseek dups` on a database made by the CLI: a photo and its downsized,
// re-saved copy form one group, the photo first (the copy to keep, though
// the copy was added first), and no unrelated picture joins them; the
// threshold decides what counts as a copy; a bad threshold and a missing
// database are clear errors.
TEST_F(CliIntegrationTest, DupsGroupsAnEditedCopyWithItsOriginal) {
  // Unrelated pictures, each of its own colour (the tiny model mostly sees
  // colour), built from a folder; then the copy and the photo, added.
  const auto others = tmp_.path() / "others";
  std::filesystem::create_directories(others);
  WriteBytes(others / "red.jpg", SyntheticImage(".jpg", 320, 240, 220, 30, 30, 31));
  WriteBytes(others / "blue.png", SyntheticImage(".png", 200, 300, 30, 40, 220, 32));
  WriteBytes(others / "yellow.jpg", SyntheticImage(".jpg", 300, 300, 230, 220, 40, 33));
  auto r = Pixseek({"build", others.string(), "--db", db_.string(), "--model", "tiny", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(json::parse(r.out)["indexed"], 3);
  const auto photo = SyntheticImage(".png", 320, 240, 30, 180, 180, 34);  // teal
  WriteBytes(tmp_.path() / "photo.png", photo);
  WriteBytes(tmp_.path() / "photo-copy.jpg", testing::EditedCopy(photo, 0.5, ".jpg", 60));
  r = Pixseek({"add", (tmp_.path() / "photo-copy.jpg").string(),
               (tmp_.path() / "photo.png").string(), "--db", db_.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json added = json::parse(r.out)["ids"];
  ASSERT_EQ(added.size(), 2u) << r.out;
  const int64_t copy = added[0].get<int64_t>(), original = added[1].get<int64_t>();

  auto dups = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"dups", "--db", db_.string()});
    return Pixseek(args);
  };
  r = dups({"--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json report = json::parse(r.out);
  EXPECT_EQ(report["images"], 5);
  EXPECT_EQ(report["groups"], json::array({json::array({original, copy})})) << r.out;
  // Text: one line per group, "id path" for each, the one to keep first.
  r = dups({});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto path_of = [&](const char* name) {
    return std::filesystem::canonical(tmp_.path() / name).string();
  };
  EXPECT_EQ(r.out, std::to_string(original) + " " + path_of("photo.png") + "  " +
                       std::to_string(copy) + " " + path_of("photo-copy.jpg") + "\n");

  // The threshold decides: at 1 the copy (resized, recompressed) is not the
  // same vector; low enough, every picture counts as a copy of the others.
  r = dups({"--threshold", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["groups"], json::array()) << r.out;
  r = dups({"--threshold", "0.1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  report = json::parse(r.out);
  ASSERT_EQ(report["groups"].size(), 1u) << r.out;
  EXPECT_EQ(report["groups"][0].size(), 5u) << r.out;

  // Bad thresholds and a missing database: one clear line, exit code 1.
  for (const char* bad : {"0", "1.5", "-0.3"}) {
    r = dups({"--threshold", bad, "--json"});
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("threshold must be in (0, 1]"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << bad;
  }
  r = dups({"--threshold", "high"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--threshold"), std::string::npos) << r.err;
  r = Pixseek({"dups", "--db", (tmp_.path() / "nothing").string(), "--json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no pixseek database"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "nothing")) << "dups only reads";
}

TEST_F(CliIntegrationTest, IndexKindsAndCompact) {
  // New databases use the disk index; small ones keep every vector in its
  // in-memory graph, so compact has nothing to fold in yet.
  BuildJson();
  auto r = Pixseek({"stats", "--db", db_.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json stats = json::parse(r.out);
  EXPECT_EQ(stats["index_kind"], "disk");
  EXPECT_EQ(stats["count"], 12);
  EXPECT_EQ(stats["index"]["delta_vectors"], 12);
  EXPECT_EQ(stats["index"]["base_vectors"], 0);
  r = Pixseek({"compact", "--db", db_.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 12);

  // --index flat makes the exact in-RAM index; queries behave the same.
  const auto flat_db = tmp_.path() / "flat.db";
  r = Pixseek({"build", images_.string(), "--db", flat_db.string(), "--model", "tiny", "--index",
               "flat", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"stats", "--db", flat_db.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["index_kind"], "flat");
  const auto query = images_ / "blue" / "b2.png";
  json a = json::parse(Pixseek({"query", query.string(), "--db", db_.string(), "-k", "3", "--json"}).out);
  json b = json::parse(Pixseek({"query", query.string(), "--db", flat_db.string(), "-k", "3", "--json"}).out);
  ASSERT_EQ(a["results"].size(), 3u);
  ASSERT_EQ(b["results"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a["results"][i]["path"], b["results"][i]["path"]);
    EXPECT_NEAR(a["results"][i]["score"].get<double>(), b["results"][i]["score"].get<double>(), 1e-5);
  }
  // A bad parameter is refused with a message.
  r = Pixseek({"compact", "--db", db_.string(), "--storage", "fp8"});
  EXPECT_NE(r.exit_code, 0);
}

// The preprocessing a database was built with shows in `pixseek stats` and
// GET /api/v1/stats, as its manifest records it ("preprocess").
TEST_F(CliIntegrationTest, StatsShowThePreprocessing) {
  const auto plain_db = tmp_.path() / "plain.db";
  auto r =
      Pixseek({"build", images_.string(), "--db", plain_db.string(), "--model", "tiny", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"stats", "--db", plain_db.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(
      json::parse(r.out)["preprocess"],
      json({{"grey", false}, {"denoise", false}, {"stored_max_side", 0}, {"stored_quality", 90}}))
      << r.out;

  r = Pixseek({"build", images_.string(), "--db", db_.string(), "--model", "tiny", "--grey",
               "--store-max-side", "512", "--store-quality", "80", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"stats", "--db", db_.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json grey = {
      {"grey", true}, {"denoise", false}, {"stored_max_side", 512}, {"stored_quality", 80}};
  EXPECT_EQ(json::parse(r.out)["preprocess"], grey) << r.out;

  std::unique_ptr<ChildProcess> server;
  const int port = StartServer(server);
  ASSERT_GT(port, 0);
  auto res = httplib::Client("127.0.0.1", port).Get("/api/v1/stats");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["preprocess"], grey) << res->body;
  EXPECT_EQ(server->Stop(SIGTERM), 0) << server->stderr_text();
}

// One configuration for every command: the file, then the environment, then
// flags; the disk index's parameters chosen at creation are recorded in the
// manifest and used by later commands.
TEST_F(CliIntegrationTest, ConfigFileEnvironmentAndFlags) {
  const auto config = tmp_.path() / "pixseek.toml";
  std::ofstream(config) << "[database]\ndir = \"" << db_.string() << "\"\nmodel = \"tiny\"\n"
                        << "[index]\nmax_degree = 24\nstorage = \"int8\"\n";
  auto r = Pixseek({"build", images_.string(), "--config", config.string(), "--storage", "fp32",
                    "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream manifest_file(db_ / "pixseek.json");
  json manifest = json::parse(manifest_file);
  EXPECT_EQ(manifest["index_params"]["max_degree"], 24);        // the file
  EXPECT_EQ(manifest["index_params"]["storage"], "fp32");       // the flag beat the file
  EXPECT_EQ(manifest["index_params"]["build_list"], 100);       // the default, recorded
  EXPECT_EQ(manifest["metadata_store"], "sqlite");

  // The environment names the database; PIXSEEK_CONFIG the file.
  r = RunCommand({"/usr/bin/env", "PIXSEEK_DB=" + db_.string(), PIXSEEK_BINARY, "--home",
                  home_.string(), "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 12);
  r = RunCommand({"/usr/bin/env", "PIXSEEK_CONFIG=" + config.string(), PIXSEEK_BINARY, "--home",
                  home_.string(), "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 12);
  // The environment beats the file: a database that does not exist.
  r = RunCommand({"/usr/bin/env", "PIXSEEK_DB=" + (tmp_.path() / "nothing").string(),
                  PIXSEEK_BINARY, "--home", home_.string(), "stats", "--config", config.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no pixseek database"), std::string::npos) << r.err;

  // A database on SQLite is not opened with another metadata store by
  // mistake, and the message never shows the password.
  r = Pixseek({"stats", "--db", db_.string(), "--metadata-url",
               "mysql://pixseek:hunter2@127.0.0.1:1/pixseek"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("keeps its metadata in"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2"), std::string::npos) << r.err;

  // A bad file is one clear line.
  std::ofstream(config, std::ios::app) << "colour = \"red\"\n";
  r = Pixseek({"stats", "--config", config.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("colour is not a known key of [index]"), std::string::npos) << r.err;
}

TEST_F(CliIntegrationTest, ClearErrors) {
  // No database yet.
  auto r = Pixseek({"query", (images_ / "red" / "r0.jpg").string(), "--db", db_.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no pixseek database"), std::string::npos) << r.err;

  // An empty folder to build is named as such, and creates nothing.
  r = Pixseek({"build", "", "--db", db_.string(), "--model", "tiny"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(db_));

  // A model that is not installed, with nowhere to download it from.
  r = Pixseek({"build", images_.string(), "--db", db_.string(), "--model", "nonexistent"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pixseek model"), std::string::npos) << r.err;

  // A database built with one model refuses another.
  BuildJson();
  WriteBytes(tmp_.path() / "tiny2.onnx", testing::MakeTinyOnnxModel(16, 8));
  std::ofstream(tmp_.path() / "tiny2.json") << testing::TinyModelCardJson(16, "tiny2.onnx");
  r = Pixseek({"model", "import", (tmp_.path() / "tiny2.onnx").string(), "--card",
               (tmp_.path() / "tiny2.json").string(), "--name", "tiny2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"build", images_.string(), "--db", db_.string(), "--model", "tiny2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos) << r.err;

  // Eval on the labelled folder works (red vs blue is easy for any features).
  r = Pixseek({"eval", images_.string(), "--db", db_.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json eval = json::parse(r.out);
  EXPECT_EQ(eval["images"], 12);
  EXPECT_GT(eval["overall"]["map"].get<double>(), 0.8) << eval.dump(2);
  EXPECT_EQ(eval["per_label"].size(), 2u);
  EXPECT_EQ(eval["split"], "none");
  EXPECT_EQ(eval["rerank"], "none") << "eval --json names the re-ranking its queries went through";

  // Held out: every third image of each class (r2, r5, b2, b5), measured
  // among themselves only: one relevant image per query, in the top 10.
  r = Pixseek({"eval", images_.string(), "--db", db_.string(), "--split", "images", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  eval = json::parse(r.out);
  EXPECT_EQ(eval["split"], "images");
  EXPECT_EQ(eval["images"], 4);
  EXPECT_EQ(eval["overall"]["queries"], 4);
  EXPECT_DOUBLE_EQ(eval["overall"]["p_at_10"].get<double>(), 0.1) << eval.dump(2);
  EXPECT_DOUBLE_EQ(eval["overall"]["r_at_10"].get<double>(), 1.0) << eval.dump(2);
  r = Pixseek({"eval", images_.string(), "--db", db_.string(), "--split", "halves"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown split 'halves'"), std::string::npos) << r.err;
}

// Index parameters come from one table: a flag is offered only where it acts,
// the others name themselves and where they act; a creation-time parameter
// cannot change an existing database; a config value out of range fails at
// once with the file, line and key.
TEST_F(CliIntegrationTest, IndexParameterFlagsActOnlyWhereTheyHaveAnEffect) {
  BuildJson();
  const auto image = (images_ / "red" / "r0.jpg").string();
  auto r = Pixseek({"query", image, "--db", db_.string(), "--storage", "int8"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--storage"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pixseek build"), std::string::npos) << r.err;
  r = Pixseek({"add", image, "--db", db_.string(), "--search-list", "80"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--search-list has no effect on `pixseek add`"), std::string::npos)
      << r.err;
  r = Pixseek({"stats", "--db", db_.string(), "--index", "flat"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--index"), std::string::npos) << r.err;
  // A run-time parameter is taken, and checked against its range.
  r = Pixseek({"query", image, "--db", db_.string(), "--search-list", "80", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"query", image, "--db", db_.string(), "--beam-width", "65"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("beam_width must be an integer in [1, 64]"), std::string::npos) << r.err;

  // Building again with the recorded value resumes; another value is refused.
  r = Pixseek({"build", images_.string(), "--db", db_.string(), "--model", "tiny", "--storage",
               "fp16", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Pixseek({"build", images_.string(), "--db", db_.string(), "--model", "tiny", "--storage",
               "int8"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("storage = int8 (--storage) cannot change an existing database"),
            std::string::npos)
      << r.err;

  // compact_ratio = 0 in the file: refused before anything runs.
  const auto config = tmp_.path() / "bad.toml";
  std::ofstream(config) << "[index]\nstorage = \"fp16\"\ncompact_ratio = 0\n";
  r = Pixseek({"build", images_.string(), "--db", (tmp_.path() / "new.db").string(), "--model",
               "tiny", "--config", config.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(config.string() + ":3: [index] compact_ratio must be a number in (0, 100]"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "new.db"));

  // The table the docs print is the one the code uses.
  r = Pixseek({"index-params"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const IndexParamSpec& spec : AllIndexParams()) {
    EXPECT_NE(r.out.find(std::string("| `") + spec.name + "` | `" + ParamFlag(spec) + "` |"),
              std::string::npos)
        << spec.name;
  }
  std::ifstream docs(std::filesystem::path(PIXSEEK_SOURCE_DIR) / "docs" / "configuration.md");
  const std::string text((std::istreambuf_iterator<char>(docs)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(r.out), std::string::npos)
      << "docs/configuration.md must hold the output of `pixseek index-params` verbatim";
}

// Queries from another folder (the cross-domain protocol: sketches against
// photos): labels come from the query folder's own first level.
TEST_F(CliIntegrationTest, EvalWithQueriesFromAnotherFolder) {
  BuildJson();
  const auto queries = tmp_.path() / "queries";
  std::filesystem::create_directories(queries / "red");
  std::filesystem::create_directories(queries / "blue");
  std::filesystem::create_directories(queries / "green");
  for (int i = 0; i < 3; ++i) {
    WriteBytes(queries / "red" / ("q" + std::to_string(i) + ".jpg"),
               SyntheticImage(".jpg", 260, 260, 200, 40, 40, 500 + i));
    WriteBytes(queries / "blue" / ("q" + std::to_string(i) + ".jpg"),
               SyntheticImage(".jpg", 240, 300, 40, 50, 200, 600 + i));
  }
  WriteBytes(queries / "green" / "g.jpg", SyntheticImage(".jpg", 200, 200, 30, 200, 30, 700));
  WriteBytes(queries / "blue" / "garbage.jpg", std::vector<uint8_t>(3000, 0x11));
  WriteBytes(queries / "unlabelled.jpg", SyntheticImage(".jpg", 200, 200, 200, 40, 40, 800));

  auto r = Pixseek({"eval", images_.string(), "--db", db_.string(), "--queries",
                    queries.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json eval = json::parse(r.out);
  EXPECT_EQ(eval["protocol"], "queries");
  EXPECT_EQ(eval["images"], 12);  // the gallery: the stored, labelled images
  EXPECT_EQ(eval["failed_queries"], 1);
  EXPECT_NE(r.err.find("1 query images could not be read"), std::string::npos) << r.err;
  EXPECT_EQ(eval["overall"]["queries"], 7);  // 3 red, 3 blue, 1 green; not the unlabelled one
  EXPECT_EQ(eval["per_label"]["red"]["queries"], 3);
  EXPECT_GT(eval["per_label"]["red"]["map"].get<double>(), 0.8) << eval.dump(2);
  EXPECT_GT(eval["per_label"]["blue"]["map"].get<double>(), 0.8) << eval.dump(2);
  // No stored image is green: nothing relevant to find.
  EXPECT_EQ(eval["per_label"]["green"]["map"].get<double>(), 0.0);
  EXPECT_NEAR(eval["macro"]["map"].get<double>(),
              (eval["per_label"]["red"]["map"].get<double>() +
               eval["per_label"]["blue"]["map"].get<double>()) / 3.0, 1e-9);

  // Held-out classes: blue trains, red is held out. The gallery is the red
  // photos only, and blue queries (a training class) are left out.
  r = Pixseek({"eval", images_.string(), "--db", db_.string(), "--queries", queries.string(),
               "--split", "classes", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  eval = json::parse(r.out);
  EXPECT_EQ(eval["split"], "classes");
  EXPECT_EQ(eval["images"], 6);
  EXPECT_EQ(eval["overall"]["queries"], 4);  // 3 red, 1 green
  EXPECT_FALSE(eval["per_label"].contains("blue")) << eval.dump(2);
  EXPECT_DOUBLE_EQ(eval["per_label"]["red"]["map"].get<double>(), 1.0) << eval.dump(2);

  r = Pixseek({"eval", images_.string(), "--db", db_.string(), "--queries",
               (tmp_.path() / "nowhere").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a directory"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pixseek

namespace pixseek {
namespace {

// A build stopped by Ctrl-C, and one killed outright, both continue where they
// stopped when run again, and every image ends up stored exactly once.
TEST(CliResumeTest, InterruptedBuildsResume) {
  testing::TempDir tmp;
  const auto home = tmp.path() / "home", images = tmp.path() / "many", db = tmp.path() / "db";
  testing::WriteBytes(tmp.path() / "tiny.onnx", testing::MakeTinyOnnxModel(16, 7));
  std::ofstream(tmp.path() / "tiny.json") << testing::TinyModelCardJson(16, "tiny.onnx");
  auto r = RunCommand({PIXSEEK_BINARY, "--home", home.string(), "model", "import",
                       (tmp.path() / "tiny.onnx").string(), "--card",
                       (tmp.path() / "tiny.json").string(), "--name", "tiny"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  constexpr int kImages = 400;
  for (int i = 0; i < kImages; ++i) {
    auto dir = images / ("c" + std::to_string(i % 4));
    std::filesystem::create_directories(dir);
    testing::WriteBytes(dir / ("i" + std::to_string(i) + ".jpg"),
                        SyntheticImage(".jpg", 96, 96, 40 * (i % 6), 255 - i % 200, 90, 5000 + i));
  }
  const std::vector<std::string> build = {PIXSEEK_BINARY, "--home", home.string(), "build",
                                          images.string(), "--db", db.string(), "--model", "tiny",
                                          "--json"};
  // Images stored so far, or -1 while there is no database yet. `stats`
  // opens read-only, so it works beside a running build.
  auto try_count = [&] {
    auto s = RunCommand({PIXSEEK_BINARY, "--home", home.string(), "stats", "--db", db.string()});
    return s.exit_code == 0 ? json::parse(s.out)["count"].get<int>() : -1;
  };
  auto stored_count = [&] {
    int count = try_count();
    EXPECT_GE(count, 0) << "stats failed";
    return count;
  };
  auto wait_for_progress = [&](int more_than) {
    // Signal only once images are being stored: the build is past start-up
    // (its Ctrl-C handler is installed) and the signal lands mid-build.
    testing::WaitFor([&] { return try_count() > more_than; }, std::chrono::seconds(20),
                     std::chrono::milliseconds(10));
  };

  // Ctrl-C: the build stops early, says so, and exits 130.
  {
    ChildProcess child(build);
    wait_for_progress(0);
    int code = child.Stop(SIGINT);
    if (code == 130) {
      EXPECT_NE(child.stderr_text().find("build"), std::string::npos);
    } else {
      EXPECT_EQ(code, 0) << "finished before the signal arrived";
    }
  }
  const int after_interrupt = stored_count();
  EXPECT_GT(after_interrupt, 0);

  // Killed outright: nothing acknowledged is lost and the database opens.
  {
    ChildProcess child(build);
    wait_for_progress(after_interrupt);
    child.Stop(SIGKILL);
  }
  const int after_kill = stored_count();
  EXPECT_GE(after_kill, after_interrupt);

  r = RunCommand(build);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json report = json::parse(r.out);
  EXPECT_EQ(report["total"], kImages);
  EXPECT_EQ(report["skipped"].get<int>(), after_kill);
  EXPECT_EQ(report["indexed"].get<int>() + report["skipped"].get<int>(), kImages);
  EXPECT_TRUE(report["failed"].empty()) << report.dump(2);
  EXPECT_EQ(stored_count(), kImages);
  // The build stores its images in groups (one metadata commit and one index
  // sync each); whatever group the kill cut off, the resumed database is
  // whole: every record has its vector and its thumbnail.
  r = RunCommand({PIXSEEK_BINARY, "--home", home.string(), "check", "--db", db.string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace pixseek
