// Trained models and switching a database to one: a head installed in the
// registry (its file damaged, from another network, or on a base that
// changed is refused with a clear error), Database::Reindex from the stored
// base features and by embedding again, writes during a reindex, and the
// `pixseek reindex` process killed at random moments, after which the
// database is the old one or the new one and finds each image first.
// TrainModel end to end through the libtorch plugin (skipped without it).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/model_registry.h"
#include "pixseek/services.h"
#include "pixseek/train_service.h"
#include "pixseek/trained_head.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr int kDim = 16;

// A random projection (and a two-class classifier) as a trained head.
TrainedHead RandomHead(int in, int out, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  HeadParameters p;
  p.input_dimension = in;
  p.output_dimension = out;
  for (int i = 0; i < out * in; ++i) p.a.push_back(normal(rng));
  p.b.assign(static_cast<size_t>(out), 0.0f);
  p.labels = {"blue", "red"};
  for (int i = 0; i < 2 * in; ++i) p.classifier_w.push_back(normal(rng));
  p.classifier_b = {0.0f, 0.0f};
  auto head = TrainedHead::FromParameters(std::move(p));
  EXPECT_TRUE(head.ok()) << head.status().ToString();
  return *head;
}

// Installs `head` as model `name` on the base "tiny", as `pixseek train` does.
Result<InstalledModel> InstallHead(const fs::path& home, const std::string& name,
                                   const std::string& head_bytes) {
  ModelRegistry registry(home);
  PIXSEEK_ASSIGN_OR_RETURN(InstalledModel base, registry.Find("tiny"));
  PIXSEEK_ASSIGN_OR_RETURN(fs::path staged, registry.Stage(name));
  std::ofstream(staged / "head.bin", std::ios::binary) << head_bytes;
  ModelCard card = base.card;
  card.name = name;
  card.file.clear();
  card.trained.base = "tiny";
  card.trained.base_sha256 = base.card.sha256;
  card.trained.head = "head.bin";
  return registry.InstallStaged(card, staged);
}

class ReindexTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    ASSERT_TRUE(testing::InstallTinyModel(home_, tmp_.path(), kDim, 5).ok());
    images_ = tmp_.path() / "images";
    for (int i = 0; i < kImages; ++i) {
      const bool red = i % 2 == 0;
      const auto dir = images_ / (red ? "red" : "blue");
      fs::create_directories(dir);
      testing::WriteBytes(dir / ("img" + std::to_string(i) + ".png"),
                          testing::SyntheticImage(".png", 48, 40, red ? 200 + i % 50 : 20,
                                                  (i * 37) % 255, red ? 20 : 200 + i % 50,
                                                  static_cast<uint32_t>(i)));
    }
  }

  DatabaseOptions Options() const {
    DatabaseOptions o;
    o.dir = tmp_.path() / "db";
    o.home = home_;
    o.index_kind = GetParam();
    o.threads = 2;
    return o;
  }

  void Build() {
    DatabaseOptions o = Options();
    o.model = "tiny";
    auto db = Database::Open(o, true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    BuildOptions quiet;
    quiet.show_progress = false;
    auto report = BuildService(**db).Build(images_, quiet);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_EQ(report->indexed, static_cast<uint64_t>(kImages));
  }

  // Every stored image, searched with its own file, comes back first.
  void ExpectEachImageFindsItself(Database& db) {
    QueryService query(db);
    for (const auto& entry : fs::recursive_directory_iterator(images_)) {
      if (!entry.is_regular_file()) continue;
      auto response = query.SearchImage(testing::ReadBytes(entry.path()), QueryParams{});
      ASSERT_TRUE(response.ok()) << response.status().ToString();
      ASSERT_FALSE(response->hits.empty());
      EXPECT_EQ(response->hits[0].record.path, entry.path().string())
          << "model " << db.model_name();
    }
  }

  static constexpr int kImages = 40;
  TempDir tmp_;
  fs::path home_;
  fs::path images_;
};

TEST_P(ReindexTest, HeadFromStoredBaseFeaturesThenBackByEmbedding) {
  Build();
  const TrainedHead head = RandomHead(kDim, 8, 1);
  ASSERT_TRUE(InstallHead(home_, "tiny-head", head.Serialize()).ok());
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto stats = (*db)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->base_features, kImages) << "every build stores the base features";

  ReindexOptions to_head;
  to_head.model = "tiny-head";
  to_head.show_progress = false;
  auto report = (*db)->Reindex(to_head);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->from_base_features);
  EXPECT_EQ(report->images, static_cast<uint64_t>(kImages));
  EXPECT_EQ((*db)->model_name(), "tiny-head");
  EXPECT_EQ((*db)->dimension(), 8);
  EXPECT_EQ((*db)->base_dimension(), kDim);
  ASSERT_NE((*db)->head(), nullptr);
  ExpectEachImageFindsItself(**db);

  // An upload after the switch goes through the head too.
  const auto extra = testing::SyntheticImage(".png", 30, 30, 90, 200, 90, 77);
  auto id = UploadService(**db).AddBytes(extra, "extra.png");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto found = QueryService(**db).SearchImage(extra, QueryParams{});
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->hits[0].id, *id);
  ASSERT_TRUE((*db)->Remove(*id).ok());
  db->reset();

  // Reopened: the manifest names the new model and index folder; the old
  // index files are gone.
  auto reopened = Database::Open(Options(), false);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->model_name(), "tiny-head");
  EXPECT_FALSE(fs::exists(tmp_.path() / "db" / "index"));
  EXPECT_FALSE(fs::exists(tmp_.path() / "db" / "vectors.flat"));
  EXPECT_TRUE(fs::exists(tmp_.path() / "db" / "gen-1"));
  ExpectEachImageFindsItself(**reopened);

  // Back to the plain network: the same network, so again no image is read.
  ReindexOptions back;
  back.model = "tiny";
  back.show_progress = false;
  auto again = (*reopened)->Reindex(back);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->from_base_features);
  EXPECT_EQ((*reopened)->dimension(), kDim);
  EXPECT_EQ((*reopened)->head(), nullptr);
  ExpectEachImageFindsItself(**reopened);
}

// Another network: every image is read and embedded again, and its new base
// feature replaces the old one at the switch.
TEST_P(ReindexTest, AnotherNetworkEmbedsEveryImageAgain) {
  Build();
  ASSERT_TRUE(testing::InstallTinyModel(home_, tmp_.path(), 12, 9, "other").ok());
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok());
  ReindexOptions options;
  options.model = "other";
  options.show_progress = false;
  auto report = (*db)->Reindex(options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->from_base_features);
  EXPECT_EQ(report->images, static_cast<uint64_t>(kImages));
  EXPECT_EQ((*db)->base_dimension(), 12);
  ExpectEachImageFindsItself(**db);
  // The stored base features are the new network's now.
  auto feature = (*db)->store().GetFeature(1);
  ASSERT_TRUE(feature.ok()) << feature.status().ToString();
  EXPECT_EQ(feature->size(), 12u);
  auto stats = (*db)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->base_features, kImages);
}

TEST_P(ReindexTest, WritesDuringAReindexReachTheNewIndex) {
  Build();
  ASSERT_TRUE(InstallHead(home_, "tiny-head", RandomHead(kDim, 8, 2).Serialize()).ok());
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok());
  std::atomic<bool> done{false};
  std::vector<int64_t> added;
  std::thread writer([&] {
    for (int i = 0; !done && i < 30; ++i) {
      auto bytes = testing::SyntheticImage(".png", 32, 32, 10 + 7 * i, 100, 50, 500 + i);
      auto id = UploadService(**db).AddBytes(bytes, "w" + std::to_string(i) + ".png");
      ASSERT_TRUE(id.ok()) << id.status().ToString();
      added.push_back(*id);
    }
  });
  ReindexOptions options;
  options.model = "tiny-head";
  options.show_progress = false;
  auto report = (*db)->Reindex(options);
  done = true;
  writer.join();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ((*db)->index().size(), static_cast<size_t>(kImages) + added.size());
  for (int64_t id : added) {
    auto hits = QueryService(**db).SearchById(id, QueryParams{});
    ASSERT_TRUE(hits.ok()) << hits.status().ToString();
    EXPECT_EQ(hits->hits[0].id, id);
  }
}

TEST_P(ReindexTest, KilledAtRandomMomentsLeavesTheOldOrTheNewDatabase) {
  Build();
  ASSERT_TRUE(InstallHead(home_, "tiny-head", RandomHead(kDim, 8, 3).Serialize()).ok());
  const std::vector<std::string> argv = {PIXSEEK_BINARY, "--home", home_.string(), "reindex",
                                         "--db", (tmp_.path() / "db").string(), "--model"};
  // How long one whole run takes, to spread the kills over it.
  std::string target = "tiny-head";
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> run = argv;
  run.push_back(target);
  auto whole = testing::RunCommand(run);
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const auto took = std::chrono::steady_clock::now() - start;
  std::mt19937 rng(7);
  std::set<std::string> seen;
  for (int round = 0; round < 8; ++round) {
    target = target == "tiny" ? "tiny-head" : "tiny";
    run = argv;
    run.push_back(target);
    testing::ChildProcess child(run);
    // Up to a quarter past the whole run, so that some kills come after the
    // switch (or after the end, which must also leave the new database).
    std::uniform_int_distribution<int64_t> when(
        0, std::chrono::duration_cast<std::chrono::microseconds>(took).count() * 5 / 4);
    std::this_thread::sleep_for(std::chrono::microseconds(when(rng)));
    child.Stop(SIGKILL);
    auto db = Database::Open(Options(), false);
    ASSERT_TRUE(db.ok()) << "round " << round << ": " << db.status().ToString();
    const std::string model = (*db)->model_name();
    ASSERT_TRUE(model == "tiny" || model == "tiny-head") << model;
    seen.insert(model == target ? "new" : "old");
    EXPECT_EQ((*db)->index().size(), static_cast<size_t>(kImages));
    ExpectEachImageFindsItself(**db);
    target = model;  // the next round switches away from what is there
  }
  // Only one folder of index files is left beside the manifest.
  int index_folders = 0;
  for (const auto& e : fs::directory_iterator(tmp_.path() / "db")) {
    const std::string name = e.path().filename().string();
    index_folders += name.starts_with("gen-") || name == "index" || name == "vectors.flat";
  }
  EXPECT_EQ(index_folders, 1);
  std::printf("kill rounds ended with: %s%s\n", seen.count("old") ? "old " : "",
              seen.count("new") ? "new" : "");
}

TEST_P(ReindexTest, DamagedOrMismatchedHeadsAreRefused) {
  Build();
  std::string bytes = RandomHead(kDim, 8, 4).Serialize();
  ASSERT_TRUE(InstallHead(home_, "tiny-head", bytes).ok());
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok());
  ReindexOptions options;
  options.model = "tiny-head";
  options.show_progress = false;
  ASSERT_TRUE((*db)->Reindex(options).ok());
  db->reset();

  // One flipped byte in the head file.
  const fs::path head_file = home_ / "models" / "tiny-head" / "head.bin";
  std::string damaged = bytes;
  damaged[damaged.size() / 2] ^= 0x20;
  std::ofstream(head_file, std::ios::binary | std::ios::trunc) << damaged;
  auto opened = Database::Open(Options(), false);
  EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss) << opened.status().ToString();
  EXPECT_NE(opened.status().message().find("head.bin"), std::string::npos)
      << opened.status().message();

  // A head for another network's dimension.
  ASSERT_TRUE(InstallHead(home_, "wrong-width", RandomHead(kDim * 2, 8, 5).Serialize()).ok());
  auto other = Database::Open(Options(), false);
  std::ofstream(head_file, std::ios::binary | std::ios::trunc) << bytes;  // repaired
  other = Database::Open(Options(), false);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  options.model = "wrong-width";
  auto refused = (*other)->Reindex(options);
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("trained on another network"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ((*other)->model_name(), "tiny-head") << "a refused reindex changes nothing";
  other->reset();

  // The base changed under the head (reinstalled with another file).
  const fs::path card = home_ / "models" / "tiny-head" / "card.json";
  auto json = nlohmann::json::parse(std::ifstream(card));
  json["base_sha256"] = std::string(64, 'a');
  std::ofstream(card, std::ios::trunc) << json.dump();
  auto stale = Database::Open(Options(), false);
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.status().message().find("was trained on 'tiny'"), std::string::npos)
      << stale.status().message();
}

TEST_P(ReindexTest, TrainsAHeadInstallsItAndSwitchesToIt) {
  Build();
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok());
  TrainRequest request;
  request.root = images_;
  request.name = "tiny-trained";
  request.validation_fraction = 0.25;
  request.metric.dimension = 8;
  request.metric.epochs = 4;
  request.metric.batch_classes = 2;
  request.metric.per_class = 4;
  request.show_progress = false;
  auto report = TrainModel(**db, request);
  if (report.status().code() == StatusCode::kUnsupported) {
    GTEST_SKIP() << report.status().message();
  }
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->base_model, "tiny");
  EXPECT_EQ(report->classes, 2);
  EXPECT_EQ(report->train_images + report->validation_images, static_cast<uint64_t>(kImages));
  EXPECT_EQ(report->data_sha256.size(), 64u);
  auto installed = ModelRegistry(home_).Find("tiny-trained");
  ASSERT_TRUE(installed.ok()) << installed.status().ToString();
  EXPECT_EQ(installed->card.trained.base, "tiny");
  const auto training = nlohmann::json::parse(installed->card.trained.training);
  EXPECT_EQ(training["data_sha256"], report->data_sha256);
  EXPECT_EQ(training["loss"], "contrastive");

  // The same data and seed give the same head; the name cannot be reused.
  request.name = "tiny-trained-again";
  auto again = TrainModel(**db, request);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(ModelRegistry(home_).Find("tiny-trained-again")->card.trained.head_sha256,
            installed->card.trained.head_sha256);
  EXPECT_EQ(TrainModel(**db, request).status().code(), StatusCode::kAlreadyExists);

  ReindexOptions options;
  options.model = "tiny-trained";
  options.show_progress = false;
  ASSERT_TRUE((*db)->Reindex(options).ok());
  ExpectEachImageFindsItself(**db);
}

// The commands as a user runs them: `pixseek train --json`, `model list`,
// `reindex`, and clear refusals.
TEST_P(ReindexTest, TrainAndReindexCommands) {
  Build();
  const std::string db = (tmp_.path() / "db").string();
  const std::vector<std::string> common = {PIXSEEK_BINARY, "--home", home_.string()};
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = common;
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  };
  auto trained = run({"train", images_.string(), "--db", db, "--name", "cli-head", "--epochs",
                      "2", "--dim", "8", "--batch-classes", "2", "--json"});
  if (trained.exit_code != 0 && trained.err.find("UNSUPPORTED") != std::string::npos) {
    GTEST_SKIP() << trained.err;
  }
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const auto summary = nlohmann::json::parse(trained.out);
  for (const char* key : {"model", "epochs", "seconds", "validation_map_before",
                          "validation_map_after", "base", "data_sha256", "history"}) {
    EXPECT_TRUE(summary.contains(key)) << key << " missing from " << trained.out;
  }
  EXPECT_EQ(summary["model"], "cli-head");
  EXPECT_NE(trained.err.find("validation mAP"), std::string::npos) << "progress: " << trained.err;
  auto list = run({"model", "list"});
  EXPECT_NE(list.out.find("trained on 'tiny'"), std::string::npos) << list.out;
  auto switched = run({"reindex", "--db", db, "--model", "cli-head", "--json"});
  ASSERT_EQ(switched.exit_code, 0) << switched.err;
  EXPECT_EQ(nlohmann::json::parse(switched.out)["from_base_features"], true);

  auto taken = run({"train", images_.string(), "--db", db, "--name", "cli-head"});
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_NE(taken.err.find("already installed"), std::string::npos) << taken.err;
  auto bad_loss = run({"train", images_.string(), "--db", db, "--name", "x", "--loss", "hinge"});
  EXPECT_EQ(bad_loss.exit_code, 1);
  EXPECT_NE(bad_loss.err.find("hinge"), std::string::npos) << bad_loss.err;
  auto unknown = run({"reindex", "--db", db, "--model", "nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("not installed"), std::string::npos) << unknown.err;
  auto unlabelled = run({"train", (tmp_.path() / "images" / "red").string(), "--db", db,
                         "--name", "y"});
  EXPECT_EQ(unlabelled.exit_code, 1);
  EXPECT_NE(unlabelled.err.find("too little labelled data"), std::string::npos) << unlabelled.err;
}

INSTANTIATE_TEST_SUITE_P(Kinds, ReindexTest, ::testing::Values("flat", "disk"));

}  // namespace
}  // namespace pixseek
