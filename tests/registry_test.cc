// Tests for ModelRegistry: import, find, list, and pull from a real HTTP
// server on 127.0.0.1.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include "pixseek/embedder.h"
#include "pixseek/model_registry.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using testing::ReadBytes;
using testing::SharedMobilenet;
using testing::TempDir;
using testing::WriteBytes;

class RegistryTest : public ::testing::Test {
 protected:
  RegistryTest() : registry_(dir_.path() / "home") {}

  // Writes the tiny model and its card; returns {model, card} paths.
  std::pair<fs::path, fs::path> WriteTiny(int channels, uint32_t seed, const std::string& stem) {
    fs::path model = dir_.path() / (stem + ".onnx");
    fs::path card = dir_.path() / (stem + ".json");
    WriteBytes(model, testing::MakeTinyOnnxModel(channels, seed));
    std::ofstream(card) << testing::TinyModelCardJson(channels, "ignored-name.onnx");
    return {model, card};
  }

  TempDir dir_;
  ModelRegistry registry_;
};

TEST(KnownModelsTest, DefaultIsMobilenet) {
  ASSERT_FALSE(KnownModels().empty());
  const KnownModel& m = KnownModels().front();
  EXPECT_EQ(DefaultModelName(), "mobilenetv2");
  EXPECT_EQ(m.name, "mobilenetv2");
  EXPECT_EQ(m.sha256, "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f");
  EXPECT_EQ(m.card.sha256, m.sha256);
  EXPECT_EQ(m.card.file, "mobilenetv2-12-int8.onnx");
  EXPECT_EQ(m.card.dimension, 1280);
  EXPECT_EQ(m.card.onnx.output_layer, "onnx_node!627_DequantizeLinear");
  EXPECT_EQ(m.card.max_batch, 4);
  EXPECT_TRUE(m.card.Validate().ok());
  EXPECT_NE(m.url.find("mobilenetv2-12-int8.onnx"), std::string::npos);
}

// Every entry: a valid card named like the entry; a downloadable one has an
// https URL ending in its file and a sha256 the card repeats.
TEST(KnownModelsTest, EveryEntryIsConsistent) {
  std::set<std::string> names;
  for (const KnownModel& k : KnownModels()) {
    SCOPED_TRACE(k.name);
    EXPECT_TRUE(names.insert(k.name).second) << "duplicate name";
    EXPECT_EQ(k.card.name, k.name);
    Status valid = k.card.Validate();
    EXPECT_TRUE(valid.ok()) << valid.ToString();
    if (k.url.empty()) continue;
    EXPECT_EQ(k.url.rfind("https://", 0), 0u) << k.url;
    EXPECT_EQ(k.url.substr(k.url.size() - k.card.file.size()), k.card.file);
    EXPECT_EQ(k.sha256.size(), 64u);
    EXPECT_EQ(k.card.sha256, k.sha256);
  }
  EXPECT_EQ(names.count("resnet50-int8"), 1u);
}

TEST(DefaultHomeTest, FollowsEnvironment) {
  const char* old_home = std::getenv("PIXSEEK_HOME");
  const char* old_xdg = std::getenv("XDG_DATA_HOME");
  std::string saved_home = old_home ? old_home : "";
  std::string saved_xdg = old_xdg ? old_xdg : "";

  setenv("PIXSEEK_HOME", "/tmp/ph", 1);
  setenv("XDG_DATA_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(DefaultPixseekHome(), fs::path("/tmp/ph"));
  unsetenv("PIXSEEK_HOME");
  EXPECT_EQ(DefaultPixseekHome(), fs::path("/tmp/xdg/pixseek"));
  unsetenv("XDG_DATA_HOME");
  if (const char* home = std::getenv("HOME")) {
    EXPECT_EQ(DefaultPixseekHome(), fs::path(home) / ".local/share/pixseek");
  }

  if (old_home) setenv("PIXSEEK_HOME", saved_home.c_str(), 1);
  if (old_xdg) setenv("XDG_DATA_HOME", saved_xdg.c_str(), 1);
}

TEST_F(RegistryTest, FindMissingSaysHowToGetIt) {
  auto m = registry_.Find("mobilenetv2");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(m.status().message(),
            "model 'mobilenetv2' is not installed; run `pixseek model pull mobilenetv2` (needs "
            "network) or `pixseek model import FILE`");
  EXPECT_TRUE(registry_.List().empty());
  EXPECT_EQ(registry_.Find("../etc").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, ImportTinyWithCard) {
  auto [model, card] = WriteTiny(16, 7, "tiny");
  auto m = registry_.Import(model, card, std::nullopt);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->card.name, "tiny");  // from the card
  EXPECT_EQ(m->card.file, "tiny.onnx");  // the copied file's name
  EXPECT_EQ(m->card.sha256.size(), 64u);
  EXPECT_EQ(m->dir, registry_.models_dir() / "tiny");
  EXPECT_EQ(ReadBytes(m->model_file), ReadBytes(model));
  EXPECT_TRUE(fs::exists(m->dir / "card.json"));

  auto found = registry_.Find("tiny");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->card.sha256, m->card.sha256);
  EXPECT_EQ(found->model_file, m->model_file);

  // The installed model opens.
  auto e = OpenEmbedder(found->card, found->model_file);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->dimension(), 16);

  // Importing the same file again is fine and returns the same entry.
  auto again = registry_.Import(model, card, std::nullopt);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->model_file, m->model_file);

  // A different model under the same name is refused, and nothing changes.
  auto [other, other_card] = WriteTiny(16, 8, "other");
  auto clash = registry_.Import(other, other_card, std::string("tiny"));
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadBytes(registry_.Find("tiny")->model_file), ReadBytes(model));

  // Under its own name it goes in; List is sorted by name.
  auto renamed = registry_.Import(other, other_card, std::string("another"));
  ASSERT_TRUE(renamed.ok()) << renamed.status().ToString();
  EXPECT_EQ(renamed->card.name, "another");
  auto list = registry_.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].card.name, "another");
  EXPECT_EQ(list[1].card.name, "tiny");
}

TEST_F(RegistryTest, ListSkipsBrokenEntries) {
  auto [model, card] = WriteTiny(8, 1, "tiny");
  ASSERT_TRUE(registry_.Import(model, card, std::nullopt).ok());
  fs::create_directories(registry_.models_dir() / "broken");
  std::ofstream(registry_.models_dir() / "broken" / "card.json") << "{not json";
  fs::create_directories(registry_.models_dir() / "empty");
  auto list = registry_.List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].card.name, "tiny");
  EXPECT_EQ(registry_.Find("broken").status().code(), StatusCode::kDataLoss);
  // A broken entry may be replaced by an import.
  auto fixed = registry_.Import(model, card, std::string("broken"));
  EXPECT_TRUE(fixed.ok()) << fixed.status().ToString();
}

TEST_F(RegistryTest, UnknownFileWithoutCardNeedsACard) {
  auto [model, card] = WriteTiny(8, 1, "tiny");
  auto m = registry_.Import(model, std::nullopt, std::nullopt);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("card is needed"), std::string::npos)
      << m.status().message();
  EXPECT_TRUE(registry_.List().empty());
}

TEST_F(RegistryTest, BadImportsGiveClearErrors) {
  auto [model, card] = WriteTiny(8, 1, "tiny");
  EXPECT_EQ(registry_.Import(dir_.path() / "missing.onnx", card, std::nullopt).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(registry_.Import(model, dir_.path() / "missing.json", std::nullopt).status().code(),
            StatusCode::kNotFound);
  std::ofstream(dir_.path() / "bad.json") << R"({"dimension": 8, "pooling": "avg"})";
  auto bad = registry_.Import(model, dir_.path() / "bad.json", std::nullopt);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("pooling"), std::string::npos);
  EXPECT_EQ(registry_.Import(model, card, std::string("a/b")).status().code(),
            StatusCode::kInvalidArgument);
  std::ofstream(dir_.path() / "noname.json") << R"({"dimension": 8, "resize_shorter": 224})";
  EXPECT_EQ(registry_.Import(model, dir_.path() / "noname.json", std::nullopt).status().code(),
            StatusCode::kInvalidArgument);
  // A card whose sha256 does not match the file.
  std::ofstream(dir_.path() / "sha.json")
      << R"({"name": "x", "dimension": 8, "resize_shorter": 224, "sha256": ")"
      << std::string(64, 'a') << R"("})";
  EXPECT_EQ(registry_.Import(model, dir_.path() / "sha.json", std::nullopt).status().code(),
            StatusCode::kDataLoss);
  EXPECT_TRUE(registry_.List().empty());
}

TEST_F(RegistryTest, ImportSharedMobilenetWithoutCard) {
  auto file = SharedMobilenet();
  if (!file) GTEST_SKIP() << "../shared/models not found";
  auto m = registry_.Import(*file, std::nullopt, std::nullopt);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->card.name, "mobilenetv2");
  EXPECT_EQ(m->card.dimension, 1280);
  EXPECT_EQ(m->card.sha256, KnownModels().front().sha256);
  EXPECT_EQ(m->model_file, registry_.models_dir() / "mobilenetv2" / "mobilenetv2-12-int8.onnx");
  auto found = registry_.Find(DefaultModelName());
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->card.onnx.output_layer, "onnx_node!627_DequantizeLinear");
}

// A card written by an earlier pixseek (no engine field, max_batch 16) for
// the registry's own file reads as today's registry card.
TEST_F(RegistryTest, AKnownModelUsesTodaysCard) {
  auto file = SharedMobilenet();
  if (!file) GTEST_SKIP() << "../shared/models not found";
  ASSERT_TRUE(registry_.Import(*file, std::nullopt, std::nullopt).ok());
  const auto card_file = registry_.models_dir() / "mobilenetv2" / "card.json";
  ModelCard old = KnownModels().front().card;
  old.onnx.engine = Engine::kOpenCv;
  old.max_batch = 16;
  // As written before cards had an engine: no such line.
  auto without_engine = [](std::string json) {
    const size_t at = json.find("  \"engine\"");
    json.erase(at, json.find('\n', at) - at + 1);
    return json;
  };
  WriteBytes(card_file, [&] {
    std::string json = without_engine(old.ToJson());
    return std::vector<uint8_t>(json.begin(), json.end());
  }());
  auto found = registry_.Find("mobilenetv2");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->card.onnx.engine, KnownModels().front().card.onnx.engine);
  EXPECT_EQ(found->card.max_batch, KnownModels().front().card.max_batch);
  // Choices written in card.json stay: engine, precision.
  WriteBytes(card_file, [&] {
    ModelCard chosen = KnownModels().front().card;
    chosen.onnx.engine = Engine::kOpenCv;
    chosen.max_batch = 16;
    std::string json = chosen.ToJson();
    json.insert(json.rfind('}'), ", \"precision\": \"bf16\"");
    json.replace(json.find("\"engine\": \"opencv\""), 18, "\"engine\": \"libtorch\"");
    return std::vector<uint8_t>(json.begin(), json.end());
  }());
  found = registry_.Find("mobilenetv2");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->card.onnx.engine, Engine::kLibtorch);
  EXPECT_EQ(found->card.precision, Precision::kBf16);
  EXPECT_EQ(found->card.max_batch, KnownModels().front().card.max_batch);
  // Not for another file under the same name.
  old.sha256 = std::string(64, '0');
  WriteBytes(card_file, [&] {
    std::string json = without_engine(old.ToJson());
    return std::vector<uint8_t>(json.begin(), json.end());
  }());
  found = registry_.Find("mobilenetv2");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->card.onnx.engine, Engine::kOpenCv);  // the default for a card without one
  EXPECT_EQ(found->card.max_batch, 16);
}

// A real HTTP server on 127.0.0.1, on a port the OS picks.
class LocalServer {
 public:
  explicit LocalServer(std::string body) : body_(std::move(body)) {
    server_.Get("/model.onnx", [this](const httplib::Request&, httplib::Response& res) {
      ++requests_;
      res.set_content(body_, "application/octet-stream");
    });
    server_.Get("/moved", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/model.onnx");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    EXPECT_TRUE(testing::WaitFor([this] { return server_.is_running(); },
                                 std::chrono::seconds(5)))
        << "the local HTTP server did not start";
  }
  ~LocalServer() {
    server_.stop();
    thread_.join();
  }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int port() const { return port_; }
  int requests() const { return requests_; }

 private:
  std::string body_;
  httplib::Server server_;
  int port_ = -1;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

TEST_F(RegistryTest, PullChecksTheChecksum) {
  LocalServer server("definitely not a model");
  ASSERT_GT(server.port(), 0);
  auto m = registry_.Pull("mobilenetv2", server.Url("/model.onnx"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find("checksum mismatch: expected " +
                                      KnownModels().front().sha256 + ", got "),
            std::string::npos)
      << m.status().message();
  EXPECT_EQ(server.requests(), 1);
  // Nothing installed, no temporary file left behind.
  EXPECT_TRUE(registry_.List().empty());
  EXPECT_FALSE(fs::exists(registry_.models_dir() / "mobilenetv2"));
  EXPECT_TRUE(fs::is_empty(registry_.models_dir()));
}

TEST_F(RegistryTest, PullHttpErrorIsUnavailable) {
  LocalServer server("x");
  auto m = registry_.Pull("mobilenetv2", server.Url("/no-such-file"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(m.status().message().find("404"), std::string::npos) << m.status().message();
  EXPECT_TRUE(registry_.List().empty());
}

TEST_F(RegistryTest, PullFromClosedPortIsUnavailable) {
  int port;
  {
    LocalServer server("x");
    port = server.port();
  }  // stopped: nothing listens there now
  std::string url = "http://127.0.0.1:" + std::to_string(port) + "/model.onnx";
  auto m = registry_.Pull("mobilenetv2", url);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(m.status().message().find("cannot download " + url + ": "), std::string::npos)
      << m.status().message();
  EXPECT_TRUE(registry_.List().empty());
}

TEST_F(RegistryTest, PullUnknownModelIsNotFound) {
  auto m = registry_.Pull("resnet9000", std::nullopt);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("mobilenetv2"), std::string::npos);  // lists known ones
}

TEST_F(RegistryTest, PullBadUrlIsInvalidArgument) {
  auto m = registry_.Pull("mobilenetv2", std::string("ftp://example.com/x.onnx"));
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, PullInstallsTheRealModel) {
  auto file = SharedMobilenet();
  if (!file) GTEST_SKIP() << "../shared/models not found";
  std::vector<uint8_t> bytes = ReadBytes(*file);
  LocalServer server(std::string(bytes.begin(), bytes.end()));
  uint64_t last_done = 0, last_total = 0;
  int calls = 0;
  // Through a redirect, as GitHub serves it.
  auto m = registry_.Pull("mobilenetv2", server.Url("/moved"), [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
    ++calls;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->card.name, "mobilenetv2");
  EXPECT_EQ(ReadBytes(m->model_file), bytes);
  EXPECT_GT(calls, 0);
  EXPECT_EQ(last_done, bytes.size());
  EXPECT_EQ(last_total, bytes.size());
  EXPECT_EQ(server.requests(), 1);

  // Installed already: a second pull does not download again.
  auto again = registry_.Pull("mobilenetv2", server.Url("/model.onnx"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(server.requests(), 1);

  auto e = OpenEmbedder(m->card, m->model_file);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->dimension(), 1280);
}

}  // namespace
}  // namespace pixseek
