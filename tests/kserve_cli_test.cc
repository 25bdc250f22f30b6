// End to end through a remote model: `pixseek model import` with a KServe
// card, `pixseek build` and `pixseek query` with the network served by the
// KServe v2 test server (kserve_server.h), and a clear error once the server
// is gone. A separate binary from kserve_test because each pixseek process
// takes seconds to start.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kserve_server.h"
#include "pixseek/embedder.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using Json = nlohmann::json;

TEST(KServeCliTest, BuildsAndQueriesThroughTheRemoteModel) {
  testing::TempDir tmp;
  const auto model = tmp.path() / "tiny.onnx";
  const auto home = tmp.path() / "home";
  const auto photos = tmp.path() / "photos";
  const auto db = tmp.path() / "db";
  testing::WriteBytes(model, testing::MakeTinyOnnxModel(16, 7));

  testing::KServeModelSpec spec;
  spec.onnx_file = model;
  spec.output_shape = {-1, 16, 1, 1};
  testing::KServeTestServer server(spec);
  ASSERT_EQ(server.Start(), "");

  std::filesystem::create_directories(photos / "red");
  std::filesystem::create_directories(photos / "blue");
  for (int i = 0; i < 4; ++i) {
    testing::WriteBytes(photos / "red" / ("r" + std::to_string(i) + ".jpg"),
                        testing::SyntheticImage(".jpg", 320, 240, 220, 30, 30, 100 + i));
    testing::WriteBytes(photos / "blue" / ("b" + std::to_string(i) + ".png"),
                        testing::SyntheticImage(".png", 200, 300, 30, 40, 220, 200 + i));
  }

  auto card = ModelCard::FromJson(testing::TinyModelCardJson(16, "tiny.onnx"));
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  card->runtime = Runtime::kKServe;
  card->kserve.server_url = server.url();
  card->kserve.remote_model = "tiny";
  card->kserve.input_tensor = "input";
  card->kserve.output_tensor = "features";
  std::ofstream(tmp.path() / "remote.json") << card->ToJson();

  auto pixseek = [&home](std::vector<std::string> args) {
    args.insert(args.begin(), {PIXSEEK_BINARY, "--home", home.string()});
    return testing::RunCommand(args);
  };
  // The registry keeps a file per model: here the served network itself,
  // whose sha256 then records which model the database was built with.
  auto r = pixseek({"model", "import", model.string(), "--card",
                    (tmp.path() / "remote.json").string(), "--name", "remote"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = pixseek({"build", photos.string(), "--db", db.string(), "--model", "remote", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["indexed"], 8);
  EXPECT_GT(server.infer_count(), 1);  // the self-check and the build
  EXPECT_TRUE(server.last_request_binary());

  const auto query = photos / "red" / "r2.jpg";
  r = pixseek({"query", query.string(), "--db", db.string(), "-k", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json answer = Json::parse(r.out);
  ASSERT_EQ(answer["results"].size(), 3u);
  EXPECT_EQ(answer["results"][0]["path"], std::filesystem::canonical(query).string());
  EXPECT_NEAR(answer["results"][0]["score"].get<double>(), 1.0, 1e-4);

  // With the server gone the query fails with a clear message, not a crash.
  server.Stop();
  r = pixseek({"query", query.string(), "--db", db.string(), "-k", "3"});
  EXPECT_GT(r.exit_code, 0) << "exit " << r.exit_code << ": " << r.err;
  EXPECT_NE(r.err.find("KServe server " + server.url()), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pixseek
