// The HTTP server end to end: a real HttpServer on 127.0.0.1 over a real
// Database (tiny ONNX model), driven by httplib::Client.
#include "pixseek/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>

#include "core/hash.h"
#include "pixseek/database.h"
#include "pixseek/model_registry.h"
#include "pixseek/services.h"
#include "server/api_json.h"
#include "server/request_guard.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

// Stored images (the store has no count of its own: nothing else needs one).
Result<int64_t> CountImages(const MetadataStore& store) {
  auto ids = store.AllIds();
  if (!ids.ok()) return ids.status();
  return static_cast<int64_t>(ids->size());
}

using nlohmann::json;
using testing::TempDir;
using namespace std::chrono_literals;

constexpr size_t kMaxRequestBytes = 256 * 1024;
constexpr int kDim = 8;

// A 64x64 image of one kind (distinct colours and structure per kind), PNG
// or JPEG encoded.
std::string MakeImage(int kind, const std::string& ext = ".png") {
  cv::Mat img(64, 64, CV_8UC3);
  switch (kind % 4) {
    case 0:  // red horizontal gradient
      for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x) img.at<cv::Vec3b>(y, x) = {0, 0, uchar(128 + x * 2)};
      break;
    case 1:  // blue/yellow checkerboard
      for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x)
          img.at<cv::Vec3b>(y, x) = ((x / 8 + y / 8) % 2) ? cv::Vec3b{255, 0, 0}
                                                          : cv::Vec3b{0, 255, 255};
      break;
    case 2:  // green noise
      cv::randu(img, cv::Scalar(0, 100, 0), cv::Scalar(60, 255, 60));
      break;
    default:  // white with a black disc
      img.setTo(cv::Scalar(255, 255, 255));
      cv::circle(img, {32, 32}, 20, cv::Scalar(0, 0, 0), cv::FILLED);
      break;
  }
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, img, buf));
  return std::string(buf.begin(), buf.end());
}

// Installs the tiny test model under root/home and opens a new database at
// root/db with it.
Result<std::unique_ptr<Database>> OpenTinyDatabase(const std::filesystem::path& root, int dim,
                                                   uint32_t seed) {
  const auto home = root / "home";
  const auto model_file = root / "tiny.onnx";
  const auto card_file = root / "tiny.card.json";
  auto model = testing::MakeTinyOnnxModel(dim, seed);
  testing::WriteBytes(model_file, std::vector<uint8_t>(model.begin(), model.end()));
  const std::string card = testing::TinyModelCardJson(dim, "tiny.onnx");
  testing::WriteBytes(card_file, std::vector<uint8_t>(card.begin(), card.end()));
  auto installed = ModelRegistry(home).Import(model_file, card_file, std::string("tiny"));
  if (!installed.ok()) return installed.status();
  DatabaseOptions options;
  options.dir = root / "db";
  options.model = "tiny";
  options.home = home;
  return Database::Open(options, true);
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    auto db = OpenTinyDatabase(tmp_->path(), kDim, 7);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(db).value().release();
    ServerOptions options;
    options.port = 0;
    options.threads = 4;
    options.max_request_bytes = kMaxRequestBytes;
    server_ = new HttpServer(*db_, options);
    Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started.ToString();
    ASSERT_GT(server_->port(), 0);
  }

  static void TearDownTestSuite() {
    delete server_;
    delete db_;
    delete tmp_;
    server_ = nullptr;
    db_ = nullptr;
    tmp_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "suite set-up failed";
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(30, 0);
  }

  // Uploads images (name -> bytes) in one request; expects 201.
  std::vector<int64_t> Upload(const std::vector<std::pair<std::string, std::string>>& files) {
    httplib::MultipartFormDataItems items;
    for (const auto& [name, bytes] : files) items.push_back({"image", bytes, name, "image/png"});
    auto res = client_->Post("/api/v1/images", items);
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 201) << res->body;
    json body = json::parse(res->body);
    return body.at("ids").get<std::vector<int64_t>>();
  }

  json SearchImage(const std::string& bytes, const std::string& query = "") {
    auto res = client_->Post("/api/v1/search" + query,
                             httplib::MultipartFormDataItems{{"image", bytes, "q.png", "image/png"}});
    EXPECT_TRUE(res);
    if (!res) return json();
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body);
  }

  static TempDir* tmp_;
  static Database* db_;
  static HttpServer* server_;
  std::unique_ptr<httplib::Client> client_;
};

TempDir* ServerTest::tmp_ = nullptr;
Database* ServerTest::db_ = nullptr;
HttpServer* ServerTest::server_ = nullptr;

// Checks an error answer: the status, JSON content type, and the error code.
void ExpectError(const httplib::Result& res, int status, const std::string& code) {
  ASSERT_TRUE(res) << "no response";
  EXPECT_EQ(res->status, status) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  json body = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << res->body;
  ASSERT_TRUE(body.contains("error")) << res->body;
  EXPECT_EQ(body["error"].value("code", ""), code) << res->body;
  EXPECT_FALSE(body["error"].value("message", "").empty()) << res->body;
}

TEST(HttpStatusForTest, MapsEveryCode) {
  EXPECT_EQ(HttpStatusFor(StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kFailedPrecondition), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kResourceExhausted), 413);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnsupported), 415);
  EXPECT_EQ(HttpStatusFor(StatusCode::kDataLoss), 500);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInternal), 500);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnavailable), 503);
}

TEST_F(ServerTest, Healthz) {
  auto res = client_->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body), json({{"status", "ok"}}));
}

TEST_F(ServerTest, IndexPageHasSearchForm) {
  auto res = client_->Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(res->body.find("<form"), std::string::npos);
  EXPECT_NE(res->body.find("type=\"file\""), std::string::npos);
  EXPECT_NE(res->body.find("/api/v1/search"), std::string::npos);
  EXPECT_NE(res->body.find("name=\"viewport\""), std::string::npos);
}

TEST_F(ServerTest, OpenApiDescribesExactlyTheServedRoutes) {
  auto res = client_->Get("/api/v1/openapi.json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  json doc = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << "openapi.json does not parse";
  EXPECT_EQ(doc.value("openapi", "").substr(0, 4), "3.0.");
  const std::map<std::string, std::set<std::string>> served = {
      {"/api/v1/search", {"post"}},
      {"/api/v1/images", {"get", "post"}},
      {"/api/v1/images/{id}", {"get", "delete"}},
      {"/api/v1/images/{id}/thumbnail", {"get"}},
      {"/api/v1/images/{id}/file", {"get"}},
      {"/api/v1/stats", {"get"}},
      {"/api/v1/duplicates", {"get"}},
      {"/api/v1/builds", {"get", "post"}},
      {"/api/v1/builds/{id}", {"get"}},
      {"/api/v1/train", {"post"}},
      {"/api/v1/train/{id}", {"get"}},
      {"/api/v1/reindex", {"post"}},
      {"/api/v1/reindex/{id}", {"get"}},
      {"/api/v1/evaluations", {"post"}},
      {"/api/v1/evaluations/{id}", {"get"}},
      {"/api/v1/openapi.json", {"get"}},
      {"/healthz", {"get"}},
      {"/", {"get"}},
  };
  std::map<std::string, std::set<std::string>> documented;
  for (const auto& [path, item] : doc.at("paths").items()) {
    for (const auto& [key, op] : item.items()) {
      if (key == "parameters" || key == "summary" || key == "description") continue;
      documented[path].insert(key);
      EXPECT_TRUE(op.contains("responses")) << path << " " << key;
    }
  }
  EXPECT_EQ(documented, served);
  // Every documented $ref points at a schema or response that exists.
  const json& components = doc.at("components");
  EXPECT_TRUE(components.at("schemas").contains("Error"));
  std::vector<const json*> stack = {&doc};
  while (!stack.empty()) {
    const json* node = stack.back();
    stack.pop_back();
    if (node->is_object()) {
      if (auto it = node->find("$ref"); it != node->end()) {
        const std::string ref = it->get<std::string>();
        ASSERT_EQ(ref.rfind("#/components/", 0), 0u) << ref;
        const json* target = &doc;
        std::string rest = ref.substr(2);
        size_t pos = 0;
        while (pos != std::string::npos) {
          const size_t next = rest.find('/', pos);
          const std::string key = rest.substr(pos, next == std::string::npos ? next : next - pos);
          ASSERT_TRUE(target->contains(key)) << "dangling " << ref;
          target = &(*target)[key];
          pos = next == std::string::npos ? next : next + 1;
        }
      }
      for (const auto& [k, v] : node->items()) stack.push_back(&v);
    } else if (node->is_array()) {
      for (const auto& v : *node) stack.push_back(&v);
    }
  }
}

TEST_F(ServerTest, UploadSearchFetchDelete) {
  const std::string red = MakeImage(0), checker = MakeImage(1), disc = MakeImage(3);
  std::vector<int64_t> ids =
      Upload({{"red.png", red}, {"checker.png", checker}, {"disc.png", disc}});
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_NE(ids[0], ids[1]);

  // Search by image: the uploaded image finds itself first.
  json found = SearchImage(red);
  ASSERT_FALSE(found["results"].empty()) << found.dump();
  const json& top = found["results"][0];
  EXPECT_EQ(top["id"], ids[0]);
  EXPECT_NEAR(top["score"].get<double>(), 1.0, 1e-3);
  EXPECT_EQ(top["name"], "red.png");
  EXPECT_EQ(top["thumbnail_url"], "/api/v1/images/" + std::to_string(ids[0]) + "/thumbnail");
  EXPECT_EQ(top["metadata"]["width"], 64);
  EXPECT_EQ(top["metadata"]["height"], 64);
  EXPECT_EQ(top["metadata"]["format"], "png");
  EXPECT_EQ(top["metadata"]["size_bytes"], static_cast<int64_t>(red.size()));
  EXPECT_EQ(top["metadata"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_TRUE(top["metadata"].contains("exif_datetime"));
  EXPECT_TRUE(top["metadata"].contains("label"));
  EXPECT_GT(top["metadata"]["added_at"].get<int64_t>(), 0);
  EXPECT_TRUE(found["took_ms"].is_number());
  EXPECT_EQ(found["cached"], false);
  EXPECT_FALSE(found.contains("category")) << "uploads carry no label: nothing to predict";
  EXPECT_EQ(SearchImage(red)["cached"], true);

  // Search by stored id.
  auto by_id = client_->Post("/api/v1/search",
                             json({{"image_id", ids[1]}}).dump(), "application/json");
  ASSERT_TRUE(by_id);
  ASSERT_EQ(by_id->status, 200) << by_id->body;
  json by_id_body = json::parse(by_id->body);
  ASSERT_FALSE(by_id_body["results"].empty());
  EXPECT_EQ(by_id_body["results"][0]["id"], ids[1]);
  EXPECT_NEAR(by_id_body["results"][0]["score"].get<double>(), 1.0, 1e-3);

  // top_k and min_score.
  EXPECT_EQ(SearchImage(red, "?top_k=1")["results"].size(), 1u);
  EXPECT_GE(SearchImage(red, "?top_k=2")["results"].size(), 2u);
  json strict = SearchImage(red, "?top_k=10&min_score=0.9999");
  ASSERT_GE(strict["results"].size(), 1u);
  for (const json& hit : strict["results"]) EXPECT_GE(hit["score"].get<double>(), 0.9999);
  json all = SearchImage(red, "?top_k=10&min_score=-1");
  EXPECT_GE(all["results"].size(), 3u);
  EXPECT_LT(strict["results"].size(), all["results"].size());
  // A per-query search list reaches the index and finds the same best hit.
  json with_list = SearchImage(red, "?top_k=3&search_list=200");
  ASSERT_GE(with_list["results"].size(), 1u);
  EXPECT_EQ(with_list["results"][0]["id"], all["results"][0]["id"]);

  // The record.
  auto record = client_->Get("/api/v1/images/" + std::to_string(ids[1]));
  ASSERT_TRUE(record);
  ASSERT_EQ(record->status, 200);
  json rec = json::parse(record->body);
  EXPECT_EQ(rec["id"], ids[1]);
  EXPECT_EQ(rec["name"], "checker.png");
  EXPECT_EQ(rec["metadata"]["format"], "png");

  // The thumbnail is a JPEG.
  auto thumb = client_->Get("/api/v1/images/" + std::to_string(ids[1]) + "/thumbnail");
  ASSERT_TRUE(thumb);
  ASSERT_EQ(thumb->status, 200);
  EXPECT_EQ(thumb->get_header_value("Content-Type"), "image/jpeg");
  ASSERT_GE(thumb->body.size(), 3u);
  EXPECT_EQ(static_cast<uint8_t>(thumb->body[0]), 0xFF);
  EXPECT_EQ(static_cast<uint8_t>(thumb->body[1]), 0xD8);
  EXPECT_EQ(static_cast<uint8_t>(thumb->body[2]), 0xFF);

  // The file is the exact bytes uploaded.
  auto file = client_->Get("/api/v1/images/" + std::to_string(ids[1]) + "/file");
  ASSERT_TRUE(file);
  ASSERT_EQ(file->status, 200);
  EXPECT_EQ(file->get_header_value("Content-Type"), "image/png");
  EXPECT_EQ(file->body, checker);

  // Listing with keyset paging.
  auto page1 = client_->Get("/api/v1/images?limit=1");
  ASSERT_TRUE(page1);
  ASSERT_EQ(page1->status, 200) << page1->body;
  json p1 = json::parse(page1->body);
  ASSERT_EQ(p1["images"].size(), 1u);
  ASSERT_TRUE(p1["next_after_id"].is_number_integer());
  EXPECT_EQ(p1["next_after_id"], p1["images"][0]["id"]);
  auto rest = client_->Get("/api/v1/images?limit=500&after_id=" +
                           std::to_string(p1["next_after_id"].get<int64_t>()));
  ASSERT_TRUE(rest);
  json r = json::parse(rest->body);
  EXPECT_TRUE(r["next_after_id"].is_null());
  std::set<int64_t> listed = {p1["images"][0]["id"].get<int64_t>()};
  for (const json& image : r["images"]) {
    EXPECT_GT(image["id"].get<int64_t>(), p1["next_after_id"].get<int64_t>());
    listed.insert(image["id"].get<int64_t>());
  }
  for (int64_t id : ids) EXPECT_TRUE(listed.count(id)) << id;

  // Delete, then it is gone everywhere.
  const std::string disc_url = "/api/v1/images/" + std::to_string(ids[2]);
  auto del = client_->Delete(disc_url);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  ExpectError(client_->Get(disc_url), 404, "NOT_FOUND");
  ExpectError(client_->Get(disc_url + "/thumbnail"), 404, "NOT_FOUND");
  ExpectError(client_->Get(disc_url + "/file"), 404, "NOT_FOUND");
  ExpectError(client_->Delete(disc_url), 404, "NOT_FOUND");
  ExpectError(client_->Post("/api/v1/search", json({{"image_id", ids[2]}}).dump(),
                            "application/json"),
              404, "NOT_FOUND");
  // Kept in a variable: a range-for over a part of the temporary would read
  // it after it is destroyed (ASan found this).
  const json remaining = SearchImage(disc, "?top_k=1000");
  for (const json& hit : remaining["results"]) {
    EXPECT_NE(hit["id"], ids[2]);
  }
}

TEST_F(ServerTest, SameBytesUploadedTwiceKeepOneId) {
  const std::string disc = MakeImage(3, ".jpg");
  std::vector<int64_t> first = Upload({{"a.jpg", disc}});
  std::vector<int64_t> second = Upload({{"b.jpg", disc}});
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0], second[0]);
}

TEST_F(ServerTest, ConcurrentSearches) {
  const std::string checker = MakeImage(1);
  const std::vector<int64_t> ids = Upload({{"checker.png", checker}});
  ASSERT_EQ(ids.size(), 1u);
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      httplib::Client client("127.0.0.1", server_->port());
      for (int i = 0; i < 5; ++i) {
        // Alternate by-image and by-id so both paths run at once.
        auto res = (i % 2)
            ? client.Post("/api/v1/search?top_k=3",
                          json({{"image_id", ids[0]}}).dump(), "application/json")
            : client.Post("/api/v1/search?top_k=3&min_score=" + std::to_string(-0.5 + t * 0.01),
                          httplib::MultipartFormDataItems{{"image", checker, "c.png", "image/png"}});
        if (res && res->status == 200 &&
            json::parse(res->body)["results"][0]["id"] == ids[0]) {
          ++ok[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(ok[t], 5) << "thread " << t;
}

TEST_F(ServerTest, Stats) {
  Upload({{"noise.png", MakeImage(2)}});
  auto res = client_->Get("/api/v1/stats");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  json stats = json::parse(res->body);
  EXPECT_GE(stats["count"].get<int64_t>(), 1);
  EXPECT_EQ(stats["dimension"], kDim);
  EXPECT_EQ(stats["model"], "tiny");
  EXPECT_FALSE(stats["index_kind"].get<std::string>().empty());
  // Built without preprocessing: every filter off, uploads kept as sent.
  EXPECT_EQ(stats["preprocess"], json({{"grey", false},
                                       {"denoise", false},
                                       {"stored_max_side", 0},
                                       {"stored_quality", 90}}))
      << res->body;
}

TEST_F(ServerTest, CorruptImageIs400) {
  std::string corrupt = MakeImage(0).substr(0, 100);  // PNG magic, truncated
  ExpectError(client_->Post("/api/v1/images",
                            httplib::MultipartFormDataItems{{"image", corrupt, "bad.png", "image/png"}}),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search",
                            httplib::MultipartFormDataItems{{"image", corrupt, "bad.png", "image/png"}}),
              400, "INVALID_ARGUMENT");
}

TEST_F(ServerTest, TextFileIs415) {
  const std::string text = "hello, this is not an image\n";
  ExpectError(client_->Post("/api/v1/images",
                            httplib::MultipartFormDataItems{{"image", text, "a.txt", "text/plain"}}),
              415, "UNSUPPORTED_MEDIA_TYPE");
  ExpectError(client_->Post("/api/v1/search",
                            httplib::MultipartFormDataItems{{"image", text, "a.txt", "text/plain"}}),
              415, "UNSUPPORTED_MEDIA_TYPE");
}

TEST_F(ServerTest, PartialUploadReportsStoredIds) {
  httplib::MultipartFormDataItems items = {
      {"image", MakeImage(2, ".jpg"), "first.jpg", "image/jpeg"},  // noise: unique bytes
      {"image", "not an image", "second.txt", "text/plain"},
      {"image", MakeImage(1, ".jpg"), "third.jpg", "image/jpeg"},
  };
  auto res = client_->Post("/api/v1/images", items);
  ExpectError(res, 415, "UNSUPPORTED_MEDIA_TYPE");
  json body = json::parse(res->body);
  ASSERT_EQ(body["ids"].size(), 1u) << res->body;
  EXPECT_EQ(body["failed_index"], 1);
  EXPECT_NE(body["error"]["message"].get<std::string>().find("second.txt"), std::string::npos);
  auto stored = client_->Get("/api/v1/images/" + std::to_string(body["ids"][0].get<int64_t>()));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->status, 200);
  EXPECT_EQ(json::parse(stored->body)["name"], "first.jpg");
  EXPECT_EQ(json::parse(stored->body)["metadata"]["format"], "jpeg");
}

TEST_F(ServerTest, BodyOverLimitIs413) {
  const std::string big(kMaxRequestBytes + 1024, 'x');
  ExpectError(client_->Post("/api/v1/images",
                            httplib::MultipartFormDataItems{{"image", big, "big.png", "image/png"}}),
              413, "RESOURCE_EXHAUSTED");
  ExpectError(client_->Post("/api/v1/search", big, "application/json"), 413,
              "RESOURCE_EXHAUSTED");
  // The server is still healthy afterwards.
  auto res = client_->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// A small file whose header claims 50000 x 50000 pixels (a decompression
// bomb) is refused with 413 from the header, before any pixel is decoded.
TEST_F(ServerTest, DecompressionBombIs413) {
  std::string png = MakeImage(0, ".png");
  // IHDR data starts at byte 16: width, height (big-endian), then its CRC
  // over "IHDR" + 13 data bytes at byte 29.
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) png[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
  };
  put32(16, 50000);
  put32(20, 50000);
  put32(29, static_cast<uint32_t>(
                crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17)));
  httplib::MultipartFormDataItems form = {{"image", png, "bomb.png", "image/png"}};
  ExpectError(client_->Post("/api/v1/search", form), 413, "RESOURCE_EXHAUSTED");
  ExpectError(client_->Post("/api/v1/images", form), 413, "RESOURCE_EXHAUSTED");
  auto res = client_->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(ServerTest, UnknownIdIs404AndBadIdIs400) {
  ExpectError(client_->Get("/api/v1/images/987654321"), 404, "NOT_FOUND");
  ExpectError(client_->Get("/api/v1/images/987654321/thumbnail"), 404, "NOT_FOUND");
  ExpectError(client_->Get("/api/v1/images/987654321/file"), 404, "NOT_FOUND");
  ExpectError(client_->Delete("/api/v1/images/987654321"), 404, "NOT_FOUND");
  ExpectError(client_->Get("/api/v1/images/abc"), 400, "INVALID_ARGUMENT");
  ExpectError(client_->Get("/api/v1/images/-3/file"), 400, "INVALID_ARGUMENT");
  ExpectError(client_->Get("/api/v1/images/99999999999999999999999"), 400, "INVALID_ARGUMENT");
  ExpectError(client_->Delete("/api/v1/images/0"), 400, "INVALID_ARGUMENT");
}

TEST_F(ServerTest, MalformedRequestsAre400) {
  ExpectError(client_->Post("/api/v1/search", "{\"image_id\": ", "application/json"), 400,
              "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search", "[1,2]", "application/json"), 400,
              "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search", "{\"image_id\": \"x\"}", "application/json"), 400,
              "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search", "", "application/json"), 400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search?top_k=0", "{\"image_id\": 1}", "application/json"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search?top_k=1001", "{\"image_id\": 1}", "application/json"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search?top_k=ten", "{\"image_id\": 1}", "application/json"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search?search_list=100001", "{\"image_id\": 1}",
                            "application/json"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search?search_list=-1", "{\"image_id\": 1}",
                            "application/json"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/search?min_score=nan", "{\"image_id\": 1}",
                            "application/json"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Get("/api/v1/images?limit=501"), 400, "INVALID_ARGUMENT");
  ExpectError(client_->Get("/api/v1/images?after_id=-1"), 400, "INVALID_ARGUMENT");
  // Multipart without an "image" field, and a broken multipart body.
  ExpectError(client_->Post("/api/v1/images",
                            httplib::MultipartFormDataItems{{"picture", "x", "x.png", "image/png"}}),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/images", "--nope\r\ngarbage",
                            "multipart/form-data; boundary=zzz"),
              400, "INVALID_ARGUMENT");
  ExpectError(client_->Post("/api/v1/images", "{}", "application/json"), 400,
              "INVALID_ARGUMENT");
}

TEST_F(ServerTest, UnknownRouteIs404Json) {
  ExpectError(client_->Get("/no/such/route"), 404, "NOT_FOUND");
  ExpectError(client_->Get("/api/v1/images/1/nothing"), 404, "NOT_FOUND");
  ExpectError(client_->Put("/api/v1/images", "{}", "application/json"), 404, "NOT_FOUND");
}

TEST(HttpServerLifecycleTest, StartStopWaitAndBindFailure) {
  TempDir tmp;
  // A database is only borrowed; no request is made, so any open one works.
  auto db = OpenTinyDatabase(tmp.path(), 4, 3);
  ASSERT_TRUE(db.ok()) << db.status().ToString();

  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  HttpServer first(**db, options);
  ASSERT_TRUE(first.Start().ok());
  EXPECT_FALSE(first.Start().ok());  // already started

  // The same port cannot be bound twice.
  options.port = first.port();
  HttpServer second(**db, options);
  Status bound = second.Start();
  EXPECT_EQ(bound.code(), StatusCode::kUnavailable) << bound.ToString();

  std::atomic<bool> waited{false};
  std::thread waiter([&] {
    first.Wait();
    waited = true;
  });
  // Likely (not certain) to catch a Wait that returns at once.
  EXPECT_FALSE(waited) << "Wait returned while the server runs";
  first.Stop();
  waiter.join();  // Wait returns once Stop ran
  httplib::Client client("127.0.0.1", options.port);
  client.set_connection_timeout(1, 0);
  EXPECT_FALSE(client.Get("/healthz"));  // nothing listens any more
  first.Stop();  // idempotent
}

TEST_F(ServerTest, BuildsAreRefusedWithoutImportRoot) {
  auto res = client_->Post("/api/v1/builds", R"({"path": "/tmp"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403) << res->body;
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "PERMISSION_DENIED");
}

// A build started over HTTP runs in the background and reports progress,
// and only folders under an import root may be built.
TEST(ServerBuildTest, BuildJobUnderImportRootCompletes) {
  TempDir tmp;
  auto db = OpenTinyDatabase(tmp.path(), kDim, 7);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const auto root = tmp.path() / "import";
  std::filesystem::create_directories(root / "set" / "a");
  for (int i = 0; i < 8; ++i) {
    const std::string bytes = MakeImage(i, i % 2 ? ".png" : ".jpg");
    testing::WriteBytes(root / "set" / "a" / ("img" + std::to_string(i) + (i % 2 ? ".png" : ".jpg")),
                        std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
  testing::WriteBytes(root / "set" / "a" / "broken.jpg", std::vector<uint8_t>(100, 7));
  std::filesystem::create_directories(tmp.path() / "outside");

  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  options.import_roots = {root.string()};
  HttpServer server(**db, options);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());

  auto res = client.Post("/api/v1/builds",
                         json{{"path", (tmp.path() / "outside").string()}}.dump(),
                         "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403) << res->body;
  res = client.Post("/api/v1/builds", json{{"path", (root / "missing").string()}}.dump(),
                    "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404) << res->body;
  res = client.Post("/api/v1/builds", "{not json", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;

  res = client.Post("/api/v1/builds", json{{"path", (root / "set").string()}}.dump(),
                    "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 202) << res->body;
  const int64_t id = json::parse(res->body)["id"].get<int64_t>();
  json job;
  testing::WaitFor(
      [&] {
        res = client.Get("/api/v1/builds/" + std::to_string(id));
        if (!res || res->status != 200) return true;  // reported below
        job = json::parse(res->body);
        return job["state"] == "done" || job["state"] == "failed";
      },
      60s, 20ms);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  ASSERT_EQ(job["state"], "done") << job.dump(2);
  EXPECT_EQ(job["total"], 9);
  EXPECT_EQ(job["processed"], 9);
  EXPECT_EQ(job["indexed"], 8);
  EXPECT_EQ(job["failed"], 1);
  ASSERT_EQ(job["failures"].size(), 1u);
  EXPECT_NE(job["failures"][0]["path"].get<std::string>().find("broken.jpg"), std::string::npos);

  res = client.Get("/api/v1/stats");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["count"], 8);
  res = client.Get("/api/v1/builds");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["builds"].size(), 1u);
  res = client.Get("/api/v1/builds/999");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
}


// A server over a tiny database built from `photos` (one folder per label),
// for the search tests.
struct BuiltServer {
  std::unique_ptr<Database> db;
  std::unique_ptr<HttpServer> server;
  std::unique_ptr<httplib::Client> client;

  // `indexed`: how many images the build must store.
  void Start(const std::filesystem::path& root, const std::filesystem::path& photos,
             size_t indexed) {
    auto opened = OpenTinyDatabase(root, kDim, 7);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    db = std::move(*opened);
    auto built = BuildService(*db).Build(photos, {});
    ASSERT_TRUE(built.ok()) << built.status().ToString();
    ASSERT_EQ(built->indexed, indexed);
    ServerOptions options;
    options.port = 0;
    options.log_requests = false;
    server = std::make_unique<HttpServer>(*db, options);
    ASSERT_TRUE(server->Start().ok());
    client = std::make_unique<httplib::Client>("127.0.0.1", server->port());
  }

  // POST /api/v1/search`params` with `image` as the query file: the status
  // and the parsed body.
  std::pair<int, json> Search(const std::vector<uint8_t>& image, const std::string& params) {
    auto res = client->Post("/api/v1/search" + params,
                            httplib::MultipartFormDataItems{
                                {"image", std::string(image.begin(), image.end()), "q.png", "image/png"}});
    EXPECT_TRUE(res);
    if (!res) return {0, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }
};

// Only files under the folders the database was built from (or added
// from) are served: a record that points elsewhere, as a tampered store
// might hold, is 404 even when the file there has the recorded bytes.
TEST(ServerFileTest, ServesOnlyFilesUnderTheLibraryFolders) {
  TempDir tmp;
  const auto library = tmp.path() / "library";
  std::filesystem::create_directories(library / "red");
  const auto bytes = testing::SyntheticImage(".png", 96, 64, 220, 30, 30, 5);
  testing::WriteBytes(library / "red" / "0.png", bytes);
  std::filesystem::create_directories(tmp.path() / "elsewhere");
  testing::WriteBytes(tmp.path() / "elsewhere" / "0.png", bytes);
  BuiltServer s;
  ASSERT_NO_FATAL_FAILURE(s.Start(tmp.path(), library, 1));
  auto listed = s.db->store().List({});
  ASSERT_TRUE(listed.ok() && listed->size() == 1u);
  ImageRecord outside = listed->front();
  outside.path = std::filesystem::canonical(tmp.path() / "elsewhere" / "0.png").string();
  auto id = s.db->store().Insert(outside);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto res = s.client->Get("/api/v1/images/" + std::to_string(listed->front().id) + "/file");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = s.client->Get("/api/v1/images/" + std::to_string(*id) + "/file");
  ExpectError(res, 404, "NOT_FOUND");
  EXPECT_NE(res->body.find("outside the library"), std::string::npos) << res->body;
  EXPECT_EQ(res->body.find(tmp.path().string()), std::string::npos) << res->body;
  // A file added in place makes its folder part of the library.
  auto added = UploadService(*s.db).AddFile(tmp.path() / "elsewhere" / "0.png", "");
  ASSERT_TRUE(added.ok()) << added.status().ToString();
  res = s.client->Get("/api/v1/images/" + std::to_string(*id) + "/file");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// Over a database built from labelled folders, every search carries the
// query's predicted category, and `category` (auto or a label) keeps the
// results to one category, still up to top_k of them.
TEST(ServerCategoryTest, SearchCarriesTheCategoryAndFiltersByIt) {
  TempDir tmp;
  const auto photos = tmp.path() / "photos";
  const struct { const char* label; int count, r, g, b; } kClasses[] = {
      {"red", 6, 220, 30, 30}, {"blue", 6, 30, 40, 220}, {"yellow", 4, 230, 220, 40}};
  uint32_t seed = 1;
  for (const auto& c : kClasses) {
    std::filesystem::create_directories(photos / c.label);
    for (int i = 0; i < c.count; ++i) {
      testing::WriteBytes(photos / c.label / (std::to_string(i) + ".png"),
                          testing::SyntheticImage(".png", 96, 64, c.r, c.g, c.b, seed++));
    }
  }
  BuiltServer s;
  ASSERT_NO_FATAL_FAILURE(s.Start(tmp.path(), photos, 16));
  httplib::Client& client = *s.client;
  const auto query = testing::ReadBytes(photos / "red" / "0.png");
  auto search = [&](const std::string& params) { return s.Search(query, params); };
  auto labels = [](const json& body) {
    std::vector<std::string> out;
    for (const json& r : body["results"]) out.push_back(r["metadata"]["label"].get<std::string>());
    return out;
  };

  auto [status, body] = search("?top_k=3");
  ASSERT_EQ(status, 200) << body.dump();
  ASSERT_TRUE(body.contains("category")) << body.dump();
  EXPECT_EQ(body["category"]["label"], "red");
  const double confidence = body["category"]["confidence"].get<double>();
  EXPECT_GT(confidence, 0.0);
  EXPECT_LE(confidence, 1.0);

  // Another category: still top_k results, all of it.
  std::tie(status, body) = search("?top_k=4&category=yellow");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(labels(body), std::vector<std::string>(4, "yellow")) << body.dump();
  EXPECT_EQ(body["category"]["label"], "red") << "the prediction is the query's, not the filter's";
  // auto: the predicted category, every one of it there is.
  std::tie(status, body) = search("?top_k=10&category=auto");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(labels(body), std::vector<std::string>(6, "red")) << body.dump();
  // A repeated query is answered from the cache with the same category.
  std::tie(status, body) = search("?top_k=10&category=auto");
  EXPECT_EQ(body["cached"], true);
  EXPECT_EQ(body["category"]["label"], "red");
  EXPECT_EQ(labels(body).size(), 6u);
  // A label nothing carries: no results, not an error.
  std::tie(status, body) = search("?category=green");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_TRUE(body["results"].empty());
  // By stored id too.
  auto by_id = client.Post("/api/v1/search?top_k=2&category=blue", json{{"image_id", 1}}.dump(),
                           "application/json");
  ASSERT_TRUE(by_id);
  ASSERT_EQ(by_id->status, 200) << by_id->body;
  json id_body = json::parse(by_id->body);
  EXPECT_TRUE(id_body.contains("category")) << id_body.dump();
  EXPECT_EQ(labels(id_body), std::vector<std::string>(2, "blue"));
  // A category no label can be: 400.
  std::tie(status, body) = search("?category=a%0Ab");
  EXPECT_EQ(status, 400) << body.dump();
}

// The search filters (label, format, min_width/min_height, added_after/
// added_before) keep top_k results of the images that pass, never a
// post-filtered few; bad values are 400 with the reason.
TEST(ServerFilterTest, FiltersKeepTopKOfTheImagesThatPass) {
  TempDir tmp;
  const auto photos = tmp.path() / "photos";
  // red: 8 small PNGs; blue: 5 large JPEGs and 3 small PNGs.
  uint32_t seed = 1;
  std::filesystem::create_directories(photos / "red");
  std::filesystem::create_directories(photos / "blue");
  for (int i = 0; i < 8; ++i) {
    testing::WriteBytes(photos / "red" / (std::to_string(i) + ".png"),
                        testing::SyntheticImage(".png", 96, 64, 220, 30, 30, seed++));
  }
  for (int i = 0; i < 5; ++i) {
    testing::WriteBytes(photos / "blue" / (std::to_string(i) + ".jpg"),
                        testing::SyntheticImage(".jpg", 200, 150, 30, 40, 220, seed++));
  }
  for (int i = 5; i < 8; ++i) {
    testing::WriteBytes(photos / "blue" / (std::to_string(i) + ".png"),
                        testing::SyntheticImage(".png", 96, 64, 30, 40, 220, seed++));
  }
  const int64_t before_build = static_cast<int64_t>(std::time(nullptr));
  BuiltServer s;
  ASSERT_NO_FATAL_FAILURE(s.Start(tmp.path(), photos, 16));
  httplib::Client& client = *s.client;
  const auto query = testing::ReadBytes(photos / "red" / "0.png");
  auto search = [&](const std::string& params) { return s.Search(query, params); };
  // The values of one metadata field over the results.
  auto field = [](const json& body, const char* name) {
    std::vector<std::string> out;
    for (const json& r : body["results"]) {
      const json& v = r["metadata"][name];
      out.push_back(v.is_string() ? v.get<std::string>() : v.dump());
    }
    return out;
  };

  // The red query's nearest 5 are red: a post-filter of them would find no blue.
  auto [status, body] = search("?top_k=5");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(field(body, "label"), std::vector<std::string>(5, "red")) << body.dump();
  std::tie(status, body) = search("?top_k=5&label=blue");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(field(body, "label"), std::vector<std::string>(5, "blue")) << body.dump();
  // Re-ranked searches stay inside the filter too.
  std::tie(status, body) = search("?top_k=5&label=blue&rerank=qe");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(field(body, "label"), std::vector<std::string>(5, "blue")) << body.dump();
  // Format ("jpg" is jpeg) and size: the five large JPEGs, all there are.
  std::tie(status, body) = search("?top_k=10&format=JPG");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(field(body, "format"), std::vector<std::string>(5, "jpeg")) << body.dump();
  std::tie(status, body) = search("?top_k=10&min_width=150&min_height=150");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(field(body, "width"), std::vector<std::string>(5, "200")) << body.dump();
  // Conditions combine: the small blue PNGs.
  std::tie(status, body) = search("?top_k=10&label=blue&format=png");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(field(body, "label"), std::vector<std::string>(3, "blue")) << body.dump();
  // A category and another label: nothing can pass both.
  std::tie(status, body) = search("?top_k=10&label=blue&category=red");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_TRUE(body["results"].empty()) << body.dump();
  // Dates: every image was added at or after before_build, none before it.
  std::tie(status, body) =
      search("?top_k=20&added_after=" + std::to_string(before_build));
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(body["results"].size(), 16u);
  std::tie(status, body) = search("?top_k=20&added_before=" + std::to_string(before_build));
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_TRUE(body["results"].empty()) << body.dump();
  std::tie(status, body) = search("?top_k=20&added_after=2000-01-01&added_before=2999-12-31T23:59:59Z");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(body["results"].size(), 16u);
  // By stored id as well.
  auto by_id = client.Post("/api/v1/search?top_k=3&label=blue", json{{"image_id", 1}}.dump(),
                           "application/json");
  ASSERT_TRUE(by_id);
  ASSERT_EQ(by_id->status, 200) << by_id->body;
  EXPECT_EQ(field(json::parse(by_id->body), "label"), std::vector<std::string>(3, "blue"));

  // Bad values name what is wrong.
  for (const char* bad : {"?format=heic", "?added_after=yesterday", "?added_before=2026-02-30",
                          "?min_width=-1", "?min_height=x",
                          "?added_after=2026-12-02&added_before=2026-12-01", "?label=a%0Ab"}) {
    std::tie(status, body) = search(bad);
    EXPECT_EQ(status, 400) << bad << ": " << body.dump();
  }
  std::tie(status, body) = search("?format=heic");
  EXPECT_NE(body.dump().find("jpeg, png"), std::string::npos) << body.dump();
}

// A server with API key "k" over a tiny database built from three labelled
// folders (red, blue, green) of `per_class` images each: the learning jobs'
// tests start from it.
struct LabelledServer {
  void Start(const std::filesystem::path& root, int per_class) {
    auto opened = OpenTinyDatabase(root, kDim, 7);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    db = std::move(*opened);
    photos = root / "photos";
    const struct { const char* label; int r, g, b; } kClasses[] = {
        {"red", 220, 30, 30}, {"blue", 30, 40, 220}, {"green", 30, 210, 40}};
    uint32_t seed = 1;
    for (const auto& c : kClasses) {
      std::filesystem::create_directories(photos / c.label);
      for (int i = 0; i < per_class; ++i) {
        testing::WriteBytes(photos / c.label / (std::to_string(i) + ".png"),
                            testing::SyntheticImage(".png", 64, 48, c.r, c.g, c.b, seed++));
      }
    }
    ASSERT_TRUE(BuildService(*db).Build(photos, {}).ok());
    ServerOptions options;
    options.port = 0;
    options.log_requests = false;
    options.api_keys = {"k"};
    server = std::make_unique<HttpServer>(*db, options);
    ASSERT_TRUE(server->Start().ok());
    client = std::make_unique<httplib::Client>("127.0.0.1", server->port());
  }

  std::unique_ptr<Database> db;
  std::filesystem::path photos;
  std::unique_ptr<HttpServer> server;  // declared after db: stops before it goes
  std::unique_ptr<httplib::Client> client;
};

// An evaluation as a background job: 202, then progress in queries and,
// when done, the figures of `pixseek eval --json` (PR curve included).
TEST(ServerLearningTest, EvaluationJobBehindTheApiKey) {
  TempDir tmp;
  LabelledServer labelled;
  ASSERT_NO_FATAL_FAILURE(labelled.Start(tmp.path(), 4));
  const auto& photos = labelled.photos;
  httplib::Client& client = *labelled.client;
  const httplib::Headers key = {{"Authorization", "Bearer k"}};
  const json request = {{"path", photos.string()}, {"split", "none"}};
  auto refused = client.Post("/api/v1/evaluations", request.dump(), "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  auto bad = client.Post("/api/v1/evaluations", key, json{{"path", "x"}, {"split", "some"}}.dump(),
                         "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;

  auto started = client.Post("/api/v1/evaluations", key, request.dump(), "application/json");
  ASSERT_TRUE(started);
  ASSERT_EQ(started->status, 202) << started->body;
  const json queued = json::parse(started->body);
  EXPECT_EQ(queued["kind"], "evaluate");
  const std::string url = "/api/v1/evaluations/" + std::to_string(queued["id"].get<int64_t>());
  json job;
  testing::WaitFor(
      [&] {
        auto res = client.Get(url, key);
        if (!res || res->status != 200) return false;
        job = json::parse(res->body);
        return job["state"] != "queued" && job["state"] != "running";
      },
      std::chrono::seconds(60));
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["done"], 12);
  EXPECT_EQ(job["total"], 12);
  const json& result = job["result"];
  EXPECT_EQ(result["images"], 12);
  EXPECT_EQ(result["overall"]["queries"], 12);
  EXPECT_EQ(result["per_label"].size(), 3u);
  EXPECT_EQ(result["overall"]["pr_curve"].size(), 101u);
  EXPECT_EQ(result["overall"]["pr_curve_11"].size(), 11u);
  for (const char* k : {"map", "map_at_100", "ndcg_at_10", "ndcg_at_100", "p_at_100", "r_at_1"}) {
    EXPECT_TRUE(result["overall"][k].is_number()) << k;
  }
  // Twelve images: the index's top 10 is the exact one.
  EXPECT_DOUBLE_EQ(result["index_recall_at_k"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(result["index_map_at_k"].get<double>(),
                   result["index_exact_map_at_k"].get<double>());
  auto wrong_kind = client.Get("/api/v1/train/" + std::to_string(queued["id"].get<int64_t>()), key);
  ASSERT_TRUE(wrong_kind);
  EXPECT_EQ(wrong_kind->status, 404);
}

// Training and reindexing as background jobs over HTTP, behind the API key:
// a head is trained on the stored base features, the server switches to it
// and answers with its classifier's category.
TEST(ServerLearningTest, TrainAndReindexJobsBehindTheApiKey) {
  TempDir tmp;
  LabelledServer labelled;
  ASSERT_NO_FATAL_FAILURE(labelled.Start(tmp.path(), 8));
  const auto& photos = labelled.photos;
  httplib::Client& client = *labelled.client;
  const httplib::Headers key = {{"Authorization", "Bearer k"}};
  const json train = {{"path", photos.string()}, {"name", "tiny-http"}, {"epochs", 3},
                      {"dim", 8},                {"batch_classes", 3},  {"per_class", 3}};
  auto refused = client.Post("/api/v1/train", train.dump(), "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  auto bad = client.Post("/api/v1/train", key, json{{"path", "x"}}.dump(), "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;

  // Polls a job until it ends; returns its last state.
  auto finish = [&](const std::string& kind, int64_t id) {
    json job;
    testing::WaitFor(
        [&] {
          auto res = client.Get("/api/v1/" + kind + "/" + std::to_string(id), key);
          if (!res || res->status != 200) return false;
          job = json::parse(res->body);
          return job["state"] != "queued" && job["state"] != "running";
        },
        std::chrono::seconds(120));
    return job;
  };
  auto started = client.Post("/api/v1/train", key, train.dump(), "application/json");
  ASSERT_TRUE(started);
  ASSERT_EQ(started->status, 202) << started->body;
  const int64_t train_id = json::parse(started->body)["id"];
  json job = finish("train", train_id);
  if (job["state"] == "failed" &&
      job["error"].get<std::string>().find("UNSUPPORTED") != std::string::npos) {
    GTEST_SKIP() << "training needs the libtorch plugin: " << job["error"];
  }
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["result"]["model"], "tiny-http");
  EXPECT_EQ(job["done"], job["result"]["epochs"]);
  auto wrong_kind = client.Get("/api/v1/reindex/" + std::to_string(train_id), key);
  ASSERT_TRUE(wrong_kind);
  EXPECT_EQ(wrong_kind->status, 404);

  auto switched = client.Post("/api/v1/reindex", key, json{{"model", "tiny-http"}}.dump(),
                              "application/json");
  ASSERT_TRUE(switched);
  ASSERT_EQ(switched->status, 202) << switched->body;
  job = finish("reindex", json::parse(switched->body)["id"].get<int64_t>());
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["result"]["from_base_features"], true);
  auto stats = client.Get("/api/v1/stats", key);
  ASSERT_TRUE(stats);
  const json s = json::parse(stats->body);
  EXPECT_EQ(s["model"], "tiny-http");
  EXPECT_EQ(s["dimension"], 8);
  EXPECT_EQ(s["trained_head"], true);
  const auto query = testing::ReadBytes(photos / "blue" / "3.png");
  auto found = client.Post("/api/v1/search", key,
                           httplib::MultipartFormDataItems{{"image",
                                                            std::string(query.begin(), query.end()),
                                                            "q.png", "image/png"}});
  ASSERT_TRUE(found);
  ASSERT_EQ(found->status, 200) << found->body;
  const json answer = json::parse(found->body);
  EXPECT_EQ(answer["results"][0]["metadata"]["label"], "blue");
  EXPECT_EQ(answer["category"]["label"], "blue") << answer.dump();
}

// ---- Server policy: API keys, rate limits, overload, metrics ---------------

// A server over a fresh tiny database with `options` (port 0, quiet).
struct PolicyServer {
  TempDir tmp;
  std::unique_ptr<Database> db;
  std::unique_ptr<HttpServer> server;

  explicit PolicyServer(ServerOptions options) {
    auto opened = OpenTinyDatabase(tmp.path(), kDim, 7);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    if (!opened.ok()) return;
    db = std::move(opened).value();
    options.port = 0;
    options.log_requests = false;
    server = std::make_unique<HttpServer>(*db, options);
    Status started = server->Start();
    EXPECT_TRUE(started.ok()) << started.ToString();
  }
  httplib::Client Client() const { return httplib::Client("127.0.0.1", server->port()); }
};

// A socket connected to 127.0.0.1:port, or -1.
int ConnectLoopback(int port) {
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (sock >= 0 && ::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    return sock;
  }
  if (sock >= 0) ::close(sock);
  return -1;
}

int LocalPort(int sock) {
  sockaddr_in addr{};
  socklen_t size = sizeof(addr);
  if (::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &size) != 0) return -1;
  return ntohs(addr.sin_port);
}

// One IPv4 TCP socket of this machine, as /proc/net/tcp shows it.
struct TcpSocket {
  int local_port = 0;
  int remote_port = 0;
  int state = 0;            // 0x01 connected, 0x0A listening
  long unacknowledged = 0;  // bytes sent that the peer has not acknowledged
  long unread = 0;          // bytes received that the process has not read
};

// What the kernel knows of every IPv4 TCP socket. It lets a test wait for
// what the server in this process did with a connection, which no answer
// shows (has it read the bytes sent, does it still listen), instead of
// sleeping a guessed time.
std::vector<TcpSocket> TcpSockets() {
  std::vector<TcpSocket> sockets;
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the column names
  while (std::getline(in, line)) {
    // "   0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 ..."
    unsigned local_port = 0, remote_port = 0, state = 0;
    unsigned long tx = 0, rx = 0;
    if (std::sscanf(line.c_str(), " %*d: %*x:%x %*x:%x %x %lx:%lx", &local_port, &remote_port,
                    &state, &tx, &rx) == 5) {
      sockets.push_back({static_cast<int>(local_port), static_cast<int>(remote_port),
                         static_cast<int>(state), static_cast<long>(tx), static_cast<long>(rx)});
    }
  }
  return sockets;
}

bool Listening(int port) {
  const auto sockets = TcpSockets();
  return std::any_of(sockets.begin(), sockets.end(), [port](const TcpSocket& t) {
    return t.local_port == port && t.state == 0x0A;
  });
}

// True once the server on `server_port` has read everything sent so far on
// the connection `client` (nothing unacknowledged on the client's side,
// nothing unread on the server's).
bool ServerReadAll(int server_port, int client) {
  const int client_port = LocalPort(client);
  bool delivered = false, read = false;
  for (const TcpSocket& t : TcpSockets()) {
    if (t.local_port == client_port && t.remote_port == server_port) {
      delivered = t.unacknowledged == 0;
    }
    if (t.local_port == server_port && t.remote_port == client_port) read = t.unread == 0;
  }
  return delivered && read;
}

httplib::Result UploadWith(httplib::Client& client, const std::string& key, int kind) {
  httplib::Headers headers;
  if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
  return client.Post("/api/v1/images", headers,
                     httplib::MultipartFormDataItems{{"image", MakeImage(kind), "a.png", "image/png"}});
}

// The Authorization header is compared exactly as sent: no percent-decoding
// ("k%31secret" is not "k1secret"), so a key with "%41" in it works as
// written; a header smuggled through the front's own names is ignored.
TEST(ServerPolicyTest, KeysAreComparedExactlyAsSent) {
  ServerOptions options;
  options.api_keys = {"k1secret", "a%41b"};
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  auto client = s.Client();
  ExpectError(UploadWith(client, "k%31secret", 0), 403, "PERMISSION_DENIED");
  ExpectError(UploadWith(client, "aAb", 0), 403, "PERMISSION_DENIED");
  auto res = UploadWith(client, "a%41b", 0);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 201) << res->body;
  res = UploadWith(client, "k1secret", 1);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 201) << res->body;
  // Headers named like the front's own are dropped before relaying.
  res = client.Post("/api/v1/images",
                    httplib::Headers{{"X-Pixseek-Authorization", "4265617265722061253431"},
                                     {"X-Pixseek-Client", "10.0.0.1"}},
                    httplib::MultipartFormDataItems{{"image", MakeImage(2), "a.png", "image/png"}});
  ExpectError(res, 401, "UNAUTHENTICATED");
}

TEST(ServerPolicyTest, WritesNeedAKeyOnceKeysAreConfigured) {
  ServerOptions options;
  options.api_keys = {"first-key", "second-key"};
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  auto client = s.Client();

  auto res = UploadWith(client, "", 0);
  ExpectError(res, 401, "UNAUTHENTICATED");
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  ExpectError(UploadWith(client, "wrong-key", 0), 403, "PERMISSION_DENIED");
  {
    // On a kept-alive connection the refused upload's body is consumed, not
    // read as a next request.
    httplib::Client keep("127.0.0.1", s.server->port());
    keep.set_keep_alive(true);
    ExpectError(UploadWith(keep, "", 1), 401, "UNAUTHENTICATED");
    auto next = keep.Get("/api/v1/stats");
    ASSERT_TRUE(next);
    EXPECT_EQ(next->status, 200) << next->body;
  }
  // A prefix or extension of a valid key is just as wrong.
  ExpectError(UploadWith(client, "second-ke", 0), 403, "PERMISSION_DENIED");
  ExpectError(UploadWith(client, "second-key2", 0), 403, "PERMISSION_DENIED");
  res = client.Post("/api/v1/images",
                    httplib::Headers{{"Authorization", "Basic Zm9vOmJhcg=="}},
                    httplib::MultipartFormDataItems{{"image", MakeImage(0), "a.png", "image/png"}});
  ExpectError(res, 401, "UNAUTHENTICATED");
  res = UploadWith(client, "second-key", 0);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 201) << res->body;
  const int64_t id = json::parse(res->body)["ids"][0].get<int64_t>();

  // Deletes and builds are writes too; nothing was deleted by the refusal.
  ExpectError(client.Delete("/api/v1/images/" + std::to_string(id)), 401, "UNAUTHENTICATED");
  ExpectError(client.Post("/api/v1/builds", R"({"path": "/tmp"})", "application/json"), 401,
              "UNAUTHENTICATED");
  EXPECT_EQ(CountImages(s.db->store()).value(), 1);

  // Reads stay open: search, list, stats, the page.
  res = client.Post("/api/v1/search",
                    httplib::MultipartFormDataItems{{"image", MakeImage(0), "q.png", "image/png"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(client.Get("/api/v1/stats")->status, 200);
  EXPECT_EQ(client.Get("/")->status, 200);

  res = client.Delete("/api/v1/images/" + std::to_string(id),
                      httplib::Headers{{"Authorization", "Bearer first-key"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 204) << res->body;
  EXPECT_EQ(CountImages(s.db->store()).value(), 0);
}

TEST(ServerPolicyTest, KeyedReadsProtectTheApiButNotThePage) {
  ServerOptions options;
  options.api_keys = {"k"};
  options.keyed_reads = true;
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  auto client = s.Client();
  ExpectError(client.Get("/api/v1/stats"), 401, "UNAUTHENTICATED");
  ExpectError(client.Get("/api/v1/images"), 401, "UNAUTHENTICATED");
  ExpectError(client.Get("/metrics"), 401, "UNAUTHENTICATED");
  ExpectError(client.Post("/api/v1/search", R"({"image_id": 1})", "application/json"), 401,
              "UNAUTHENTICATED");
  EXPECT_EQ(client.Get("/api/v1/stats", httplib::Headers{{"Authorization", "Bearer k"}})->status,
            200);
  EXPECT_EQ(client.Get("/")->status, 200);
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  EXPECT_EQ(client.Get("/api/v1/openapi.json")->status, 200);
}

// The token bucket on a clock of the test's own: the burst, the refill at
// the rate, the wait it reports, and one bucket per client.
TEST(RequestGuardTest, TokenBucketRefillsAtTheRate) {
  ServerOptions options;
  options.rate_limit_per_s = 0.5;  // one token every 2 s
  options.rate_burst = 3;
  server::RequestGuard guard(options);
  const auto t0 = server::RequestGuard::Clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(guard.TakeToken("a", t0), 0) << i;
  EXPECT_DOUBLE_EQ(guard.TakeToken("a", t0), 2.0);
  EXPECT_EQ(guard.TakeToken("b", t0), 0) << "another client has a bucket of its own";
  EXPECT_DOUBLE_EQ(guard.TakeToken("a", t0 + 1s), 1.0) << "half a token is back";
  EXPECT_EQ(guard.TakeToken("a", t0 + 2s), 0) << "a refused request used nothing up";
  EXPECT_DOUBLE_EQ(guard.TakeToken("a", t0 + 2s), 2.0);
  // A long pause refills the bucket to the burst, not beyond.
  const auto later = t0 + 1h;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(guard.TakeToken("a", later), 0) << i;
  EXPECT_GT(guard.TakeToken("a", later), 0);
}

TEST(ServerPolicyTest, RateLimitAnswers429WithRetryAfter) {
  ServerOptions options;
  // One token every 500 ms: the four requests below take far less, and the
  // wait for the next token stays short.
  options.rate_limit_per_s = 2;
  options.rate_burst = 3;
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  auto client = s.Client();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(client.Get("/api/v1/stats")->status, 200) << i;
  EXPECT_EQ(client.Get("/healthz")->status, 200) << "health checks are never limited";
  auto res = client.Get("/api/v1/stats");
  const auto refused = std::chrono::steady_clock::now();
  ExpectError(res, 429, "RESOURCE_EXHAUSTED");
  const int retry = std::stoi(res->get_header_value("Retry-After"));
  EXPECT_EQ(retry, 1);  // half a second, rounded up
  // The client is served again once a token is back, within Retry-After
  // (with room for a slow machine).
  const bool served = testing::WaitFor(
      [&] {
        auto again = client.Get("/api/v1/stats");
        return again && again->status == 200;
      },
      10s, 20ms);
  ASSERT_TRUE(served);
  EXPECT_LT(std::chrono::steady_clock::now() - refused, std::chrono::seconds(retry) + 2s);
}

// Asks `s` for GET `path` while an upload holds the one place the server
// admits (max_concurrent_requests = 1): 24 photos of 800 x 800 pixels in
// one request, whose decoding, embedding and thumbnails keep a worker busy
// for a while; `path` is asked again and again meanwhile until it gets the
// overloaded server's quick 503. (A connection that has sent only part of a
// request holds no place: the front reads requests without a worker.)
httplib::Result GetWhileOverloaded(const PolicyServer& s, const std::string& path) {
  httplib::MultipartFormDataItems photos;
  for (int i = 0; i < 24; ++i) {
    const auto bytes = testing::SyntheticImage(".png", 800, 800, 40 + 8 * i, 90, 200 - 6 * i,
                                               static_cast<uint32_t>(100 + i));
    photos.push_back({"image", std::string(bytes.begin(), bytes.end()),
                      "p" + std::to_string(i) + ".png", "image/png"});
  }
  std::atomic<bool> done{false};
  // The upload itself may find a GET in the place: it tries again.
  std::thread upload([&] {
    auto uploader = s.Client();
    uploader.set_read_timeout(60, 0);
    for (int attempt = 0; attempt < 100; ++attempt) {
      auto stored = uploader.Post("/api/v1/images", photos);
      if (stored && stored->status == 201) break;
      EXPECT_TRUE(stored && stored->status == 503) << (stored ? stored->body : "no answer");
      std::this_thread::sleep_for(10ms);
    }
    done = true;
  });
  std::this_thread::sleep_for(20ms);
  auto client = s.Client();
  httplib::Result res = client.Get(path);
  while (!done && !(res && res->status == 503)) {
    std::this_thread::sleep_for(2ms);
    res = client.Get(path);
  }
  upload.join();
  return res;
}

// With room for one request, a second request that arrives while the first
// is being handled is answered 503 at once (not queued).
TEST(ServerPolicyTest, OverloadAnswers503WithRetryAfter) {
  ServerOptions options;
  options.threads = 2;  // one held by the blocker, one to answer 503
  options.max_concurrent_requests = 1;
  options.retry_after_s = 7;
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  auto res = GetWhileOverloaded(s, "/api/v1/stats");
  ExpectError(res, 503, "UNAVAILABLE");
  EXPECT_EQ(res->get_header_value("Retry-After"), "7");
  // Once the backlog is gone, requests are served again.
  auto again = s.Client();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        auto next = again.Get("/api/v1/stats");
        return next && next->status == 200;
      },
      10s));
}

// Two servers in one process: each 503 carries its own server's
// retry_after_s, not the last one started.
TEST(ServerPolicyTest, EachServerAnswersItsOwnRetryAfter) {
  ServerOptions options;
  options.threads = 2;
  options.max_concurrent_requests = 1;
  options.retry_after_s = 7;
  PolicyServer first(options);
  options.retry_after_s = 11;
  PolicyServer second(options);
  ASSERT_TRUE(first.server);
  ASSERT_TRUE(second.server);
  auto res = GetWhileOverloaded(first, "/api/v1/stats");
  ExpectError(res, 503, "UNAVAILABLE");
  EXPECT_EQ(res->get_header_value("Retry-After"), "7");
  res = GetWhileOverloaded(second, "/api/v1/stats");
  ExpectError(res, 503, "UNAVAILABLE");
  EXPECT_EQ(res->get_header_value("Retry-After"), "11");
  res = GetWhileOverloaded(first, "/api/v1/images");
  ExpectError(res, 503, "UNAVAILABLE");
  EXPECT_EQ(res->get_header_value("Retry-After"), "7");
}

TEST_F(ServerTest, MetricsInPrometheusFormat) {
  const std::string image = MakeImage(3);
  Upload({{"m.png", image}});
  SearchImage(image);
  SearchImage(image);  // the same query again: a cache hit
  client_->Get("/no/such/route/12345");
  auto res = client_->Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string& text = res->body;
  auto has = [&](const std::string& line) {
    return text.find(line) != std::string::npos;
  };
  EXPECT_TRUE(has("# TYPE pixseek_http_requests_total counter")) << text;
  EXPECT_TRUE(has("pixseek_http_requests_total{method=\"POST\",route=\"/api/v1/search\",status=\"200\"} "))
      << text;
  EXPECT_TRUE(has("pixseek_http_requests_total{method=\"GET\",route=\"other\",status=\"404\"} 1"))
      << text;
  EXPECT_TRUE(has("pixseek_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/search\",le=\"+Inf\"}"))
      << text;
  EXPECT_FALSE(has("12345")) << "paths must not become labels";
  EXPECT_TRUE(has("# TYPE pixseek_images gauge")) << text;
  EXPECT_TRUE(has("pixseek_queue_depth ")) << text;
  // Every sample line is "name{labels} value" with a numeric value.
  std::istringstream lines(text);
  std::string line;
  double hits = -1, passes = -1, embedded = -1;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    ASSERT_NE(space, std::string::npos) << line;
    size_t used = 0;
    double value = std::stod(line.substr(space + 1), &used);
    EXPECT_EQ(used, line.size() - space - 1) << line;
    if (line.starts_with("pixseek_cache_hits_total ")) hits = value;
    if (line.starts_with("pixseek_embed_batches_total ")) passes = value;
    if (line.starts_with("pixseek_embed_batched_images_total ")) embedded = value;
  }
  EXPECT_GE(hits, 1);
  // The upload and the first search each needed a forward pass (through the
  // dynamic batcher); the repeated search did not.
  EXPECT_GE(embedded, 1);
  EXPECT_LE(embedded, 2);
  EXPECT_GE(passes, 1);
  EXPECT_LE(passes, embedded);
}

// Jobs survive a restart: finished ones are still listed, and one that was
// running when the server stopped runs again when it starts.
TEST(ServerBuildTest, BuildJobsSurviveARestart) {
  TempDir tmp;
  auto db = OpenTinyDatabase(tmp.path(), kDim, 7);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const auto root = tmp.path() / "import";
  std::filesystem::create_directories(root / "set");
  for (int i = 0; i < 4; ++i) {
    const std::string bytes = MakeImage(i);
    testing::WriteBytes(root / "set" / ("img" + std::to_string(i) + ".png"),
                        std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
  const std::string set = std::filesystem::canonical(root / "set").string();
  // As a server killed in the middle of job 7 leaves it.
  const json saved = {{"next_id", 8},
                      {"jobs",
                       {{{"id", 6}, {"path", set}, {"state", "done"}, {"indexed", 0}},
                        {{"id", 7}, {"path", set}, {"state", "running"}, {"processed", 2}}}}};
  const std::string text = saved.dump();
  testing::WriteBytes((*db)->dir() / "build_jobs.json",
                      std::vector<uint8_t>(text.begin(), text.end()));
  {
    BuildJobs jobs(**db, {root});
    BuildJobStatus job;
    testing::WaitFor(
        [&] {
          job = jobs.Get(7).value();
          return job.state == "done";
        },
        30s, 20ms);
    EXPECT_EQ(job.state, "done");
    EXPECT_EQ(job.indexed, 4u);
    EXPECT_EQ(jobs.Get(6).value().state, "done");
    EXPECT_EQ(jobs.Start(root / "set").value(), 8);  // ids go on from the saved ones
  }
  // A fresh BuildJobs (a restarted server) sees what the last one saved.
  BuildJobs again(**db, {root});
  EXPECT_EQ(again.Get(7).value().state, "done");
  EXPECT_EQ(again.Get(7).value().indexed, 4u);
  ASSERT_TRUE(again.Get(8).ok());
  EXPECT_EQ(CountImages((*db)->store()).value(), 4);
  // Job 8 may still run (again, after the restart).
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        const std::string state = again.Get(8).value().state;
        return state == "done" || state == "failed";
      },
      30s, 20ms));
  // The file was imported into the metadata store once, and set aside.
  EXPECT_FALSE(std::filesystem::exists((*db)->dir() / "build_jobs.json"));
  EXPECT_TRUE(std::filesystem::exists((*db)->dir() / "build_jobs.json.imported"));

  // A damaged file is reported, set aside and ignored, never fatal: the jobs
  // in the store are still listed.
  testing::WriteBytes((*db)->dir() / "build_jobs.json", std::vector<uint8_t>{'{', 'x'});
  BuildJobs damaged(**db, {root});
  auto listed = damaged.List();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].id, 6);
  EXPECT_EQ((*listed)[2].id, 8);
  EXPECT_TRUE(std::filesystem::exists((*db)->dir() / "build_jobs.json.damaged"));
}

// Graceful shutdown: a request already being received when Stop() is called
// is finished and answered (and its upload stored) before Stop returns.
TEST(ServerPolicyTest, StopFinishesTheRequestInFlight) {
  PolicyServer s(ServerOptions{});
  ASSERT_TRUE(s.server);
  const std::string boundary = "b0undary";
  const std::string body = "--" + boundary +
                           "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.png\"\r\n"
                           "Content-Type: image/png\r\n\r\n" +
                           MakeImage(1) + "\r\n--" + boundary + "--\r\n";
  const std::string head = "POST /api/v1/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           "Content-Type: multipart/form-data; boundary=" + boundary +
                           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  const int port = s.server->port();
  const int sock = ConnectLoopback(port);
  ASSERT_GE(sock, 0);
  const std::string first = head + body.substr(0, body.size() / 2);
  ASSERT_EQ(::send(sock, first.data(), first.size(), 0), static_cast<ssize_t>(first.size()));
  // A worker is inside the request once it has read all that was sent.
  ASSERT_TRUE(testing::WaitFor([&] { return ServerReadAll(port, sock); }, 10s));
  std::atomic<bool> stopped{false};
  int64_t stored_when_stopped = -1;
  std::thread stopper([&] {
    s.server->Stop();
    stored_when_stopped = CountImages(s.db->store()).value();
    stopped = true;
  });
  // Stop has begun once the server no longer listens; it must not return
  // before the request's answer, which needs the rest of the body.
  EXPECT_TRUE(testing::WaitFor([&] { return !Listening(port); }, 10s));
  EXPECT_FALSE(stopped) << "Stop must wait for the request in flight";
  const std::string rest = body.substr(body.size() / 2);
  ASSERT_EQ(::send(sock, rest.data(), rest.size(), 0), static_cast<ssize_t>(rest.size()));
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::recv(sock, buf, sizeof(buf), 0)) > 0;) answer.append(buf, n);
  ::close(sock);
  stopper.join();
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 201")) << answer;
  EXPECT_EQ(stored_when_stopped, 1) << "Stop returned before the request in flight was done";
}

// An upload clears the cached results but not the query's feature: the
// repeated query then costs a search, not a forward pass, and its results
// include the new image.
TEST_F(ServerTest, FeatureCacheSurvivesUploads) {
  const std::string query = MakeImage(1, ".jpg");
  SearchImage(query);
  const CacheStats before = db_->feature_cache().stats();
  const std::vector<int64_t> ids = Upload({{"twin.jpg", query}});  // the same picture
  ASSERT_EQ(ids.size(), 1u);
  json again = SearchImage(query);
  const CacheStats after = db_->feature_cache().stats();
  EXPECT_EQ(after.hits, before.hits + 1) << "the feature came from the cache";
  ASSERT_FALSE(again["results"].empty());
  EXPECT_EQ(again["results"][0]["id"], ids[0]) << again.dump();
}

// ---- Stored files: serving, links, moved databases, hidden paths -----------

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

// The error body's message, or "" when there is none.
std::string ErrorMessage(const httplib::Result& res) {
  if (!res) return "";
  json body = json::parse(res->body, nullptr, false);
  if (!body.is_object() || !body.contains("error")) return "";
  return body["error"].value("message", "");
}

// GET /api/v1/images/{id}/file serves a file only while it is the regular
// file that was indexed, reached without a link: a file swapped for a link
// (even to the same bytes) or under a folder swapped for one is 404, a file
// changed since indexing is 409, a deleted one or a FIFO is 404; no answer
// names a server path.
TEST(ServerFileTest, ServesOnlyTheUnchangedRegularFileThatWasIndexed) {
  TempDir tmp;
  auto db = OpenTinyDatabase(tmp.path(), kDim, 7);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const auto library = std::filesystem::canonical(tmp.path()) / "library";
  const auto outside = std::filesystem::canonical(tmp.path()) / "outside";
  std::filesystem::create_directories(library / "set");
  std::filesystem::create_directories(library / "sub");
  std::filesystem::create_directories(outside);
  const std::vector<std::string> names = {"keep.png",   "linked.png", "same_size.png",
                                          "longer.png", "gone.png",   "fifo.png"};
  std::map<std::string, std::string> bytes;
  for (size_t i = 0; i < names.size(); ++i) {
    bytes[names[i]] = MakeImage(static_cast<int>(i));
    testing::WriteBytes(library / "set" / names[i], Bytes(bytes[names[i]]));
  }
  bytes["under_link.png"] = MakeImage(2, ".jpg");
  testing::WriteBytes(library / "sub" / "under_link.png", Bytes(bytes["under_link.png"]));
  auto report = BuildService(**db).Build(library, {});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->indexed, names.size() + 1);
  auto id_of = [&](const std::filesystem::path& path) -> int64_t {
    auto found = (*db)->store().FindByPath(path.string());
    return found.ok() && *found ? (*found)->id : -1;
  };
  std::map<std::string, std::string> url;
  for (const auto& name : names) {
    url[name] = "/api/v1/images/" + std::to_string(id_of(library / "set" / name)) + "/file";
  }
  url["under_link.png"] =
      "/api/v1/images/" + std::to_string(id_of(library / "sub" / "under_link.png")) + "/file";

  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  HttpServer server(**db, options);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(10, 0);  // a server stuck opening the FIFO fails here
  const std::string tmp_path = std::filesystem::canonical(tmp.path()).string();
  auto expect_refused = [&](const std::string& name, int status, const std::string& code,
                            const std::string& why) {
    SCOPED_TRACE(name);
    auto res = client.Get(url[name]);
    ExpectError(res, status, code);
    if (!res) return;
    const std::string message = ErrorMessage(res);
    EXPECT_NE(message.find(why), std::string::npos) << message;
    EXPECT_EQ(res->body.find(tmp_path), std::string::npos) << "leaks a path: " << res->body;
    EXPECT_EQ(res->body.find(name), std::string::npos) << "names the file: " << res->body;
  };

  // Unchanged: the bytes indexed.
  auto res = client.Get(url["keep.png"]);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->body, bytes["keep.png"]);
  EXPECT_EQ(res->get_header_value("Content-Type"), "image/png");

  // Swapped for a link to a copy of the very same bytes outside: only the
  // link can be what refuses it (size and hash still match).
  testing::WriteBytes(outside / "copy.png", Bytes(bytes["linked.png"]));
  std::filesystem::remove(library / "set" / "linked.png");
  std::filesystem::create_symlink(outside / "copy.png", library / "set" / "linked.png");
  expect_refused("linked.png", 404, "NOT_FOUND", "symbolic link");
  // The same for a folder above the file swapped for a link to a copy.
  std::filesystem::rename(library / "sub", outside / "sub");
  std::filesystem::create_directory_symlink(outside / "sub", library / "sub");
  expect_refused("under_link.png", 404, "NOT_FOUND", "symbolic link");

  // Changed since indexing: one byte flipped (same size), or grown.
  std::string flipped = bytes["same_size.png"];
  flipped[flipped.size() / 2] ^= 0x01;
  testing::WriteBytes(library / "set" / "same_size.png", Bytes(flipped));
  expect_refused("same_size.png", 409, "FAILED_PRECONDITION", "changed since it was indexed");
  testing::WriteBytes(library / "set" / "longer.png", Bytes(bytes["longer.png"] + "tail"));
  expect_refused("longer.png", 409, "FAILED_PRECONDITION", "changed since it was indexed");

  // Gone, or replaced by something that is not a regular file.
  std::filesystem::remove(library / "set" / "gone.png");
  expect_refused("gone.png", 404, "NOT_FOUND", "no such file");
  std::filesystem::remove(library / "set" / "fifo.png");
  ASSERT_EQ(::mkfifo((library / "set" / "fifo.png").c_str(), 0600), 0);
  expect_refused("fifo.png", 404, "NOT_FOUND", "not a regular file");

  // The unchanged file and every thumbnail are still served.
  res = client.Get(url["keep.png"]);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  const std::string thumb = url["linked.png"].substr(0, url["linked.png"].size() - 4) + "thumbnail";
  res = client.Get(thumb);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
}

// Builds follow no link that leaves the folder they build: a link to a file
// outside is listed among the failures and never read, a linked folder is
// not entered, and a link to a file inside is stored once, as that file.
// The same through BuildService and POST /api/v1/builds.
TEST(ServerBuildTest, BuildsFollowNoLinkThatLeavesTheRoot) {
  TempDir tmp;
  auto db = OpenTinyDatabase(tmp.path(), kDim, 7);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const auto base = std::filesystem::canonical(tmp.path());
  const auto root = base / "import";
  const auto set = root / "set";
  const auto outside = base / "outside";
  std::filesystem::create_directories(set / "real");
  std::filesystem::create_directories(outside / "folder");
  testing::WriteBytes(set / "a.png", Bytes(MakeImage(0)));
  testing::WriteBytes(set / "real" / "b.png", Bytes(MakeImage(1)));
  std::filesystem::create_symlink(set / "real" / "b.png", set / "alias.png");
  testing::WriteBytes(outside / "secret.png", Bytes(MakeImage(2)));
  testing::WriteBytes(outside / "folder" / "deep.png", Bytes(MakeImage(3)));
  std::filesystem::create_symlink(outside / "secret.png", set / "escape.png");
  std::filesystem::create_directory_symlink(outside / "folder", set / "linked_folder");
  auto no_record_outside = [&] {
    auto ids = (*db)->store().AllIds();
    ASSERT_TRUE(ids.ok());
    auto records = (*db)->store().GetMany(*ids);
    ASSERT_TRUE(records.ok());
    EXPECT_EQ(records->size(), 2u);
    for (const ImageRecord& r : *records) {
      EXPECT_EQ(r.path.rfind(set.string() + "/", 0), 0u) << r.path;
      EXPECT_EQ(r.path.find("alias"), std::string::npos) << "stored as the file itself";
    }
  };

  auto report = BuildService(**db).Build(set, {});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->indexed, 2u);
  EXPECT_EQ(report->total, 3u);
  ASSERT_EQ(report->failed.size(), 1u);
  EXPECT_EQ(report->failed[0].path, (set / "escape.png").string());
  EXPECT_NE(report->failed[0].reason.find("symbolic link"), std::string::npos)
      << report->failed[0].reason;
  no_record_outside();

  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  options.import_roots = {root.string()};
  // Builds `set` over HTTP on a server with `options`: the finished job.
  auto build_over_http = [&](const ServerOptions& with) {
    HttpServer server(**db, with);
    EXPECT_TRUE(server.Start().ok());
    httplib::Client client("127.0.0.1", server.port());
    auto res = client.Post("/api/v1/builds", json{{"path", set.string()}}.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 202) << (res ? res->body : "no answer");
    if (!res || res->status != 202) return json();
    const std::string job_url = "/api/v1/builds/" + json::parse(res->body)["id"].dump();
    json job;
    testing::WaitFor(
        [&] {
          res = client.Get(job_url);
          if (!res || res->status != 200) return true;
          job = json::parse(res->body);
          return job["state"] == "done" || job["state"] == "failed";
        },
        60s, 20ms);
    return job;
  };
  json job = build_over_http(options);
  ASSERT_EQ(job["state"], "done") << job.dump(2);
  EXPECT_EQ(job["indexed"], 0);
  EXPECT_EQ(job["skipped"], 2);
  ASSERT_EQ(job["failures"].size(), 1u) << job.dump(2);
  EXPECT_EQ(job["failures"][0]["path"], (set / "escape.png").string());
  EXPECT_NE(job["failures"][0]["reason"].get<std::string>().find("symbolic link"),
            std::string::npos);
  no_record_outside();
  // With paths hidden, a failure's path is relative to the build's folder
  // and no reason names a server path.
  options.hide_paths = true;
  job = build_over_http(options);
  ASSERT_EQ(job["failures"].size(), 1u) << job.dump(2);
  EXPECT_EQ(job["failures"][0]["path"], "escape.png");
  const std::string reason = job["failures"][0]["reason"].get<std::string>();
  EXPECT_EQ(reason.find(root.string()), std::string::npos) << reason;
  EXPECT_NE(reason.find("symbolic link"), std::string::npos) << reason;
}

// An empty build path is a clear 400, with or without import roots (it was a
// 500 from the filesystem library).
TEST(ServerBuildTest, EmptyBuildPathIs400) {
  TempDir tmp;
  std::filesystem::create_directories(tmp.path() / "import");
  for (bool with_root : {false, true}) {
    SCOPED_TRACE(with_root ? "with an import root" : "without");
    ServerOptions options;
    if (with_root) options.import_roots = {(tmp.path() / "import").string()};
    PolicyServer s(options);
    ASSERT_TRUE(s.server);
    httplib::Client client = s.Client();
    auto res = client.Post("/api/v1/builds", R"({"path": ""})", "application/json");
    ExpectError(res, 400, "INVALID_ARGUMENT");
    EXPECT_NE(ErrorMessage(res).find("empty"), std::string::npos) << res->body;
  }
  TempDir other;
  auto db = OpenTinyDatabase(other.path(), kDim, 7);
  ASSERT_TRUE(db.ok());
  auto report = BuildService(**db).Build("", {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kInvalidArgument) << report.status().ToString();
}

// Uploads are recorded relative to the database directory: a database moved
// elsewhere and reopened still serves them, and a delete there removes the
// file. An upload recorded by an older release (absolute, under DB/images)
// is served and deleted too.
TEST(ServerUploadTest, UploadsFollowAMovedDatabase) {
  TempDir tmp;
  const auto first = tmp.path() / "first";
  std::filesystem::create_directories(first);
  auto opened = OpenTinyDatabase(first, kDim, 7);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Database> db = std::move(*opened);
  const std::string picture = MakeImage(1);
  int64_t id = 0;
  std::string stored;
  {
    ServerOptions options;
    options.port = 0;
    options.log_requests = false;
    HttpServer server(*db, options);
    ASSERT_TRUE(server.Start().ok());
    httplib::Client client("127.0.0.1", server.port());
    auto res =
        client.Post("/api/v1/images",
                    httplib::MultipartFormDataItems{{"image", picture, "p.png", "image/png"}});
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 201) << res->body;
    id = json::parse(res->body)["ids"][0].get<int64_t>();
    auto record = db->store().Get(id);
    ASSERT_TRUE(record.ok());
    stored = record->path;
  }
  EXPECT_EQ(stored.rfind("images/", 0), 0u) << "recorded relative to the database: " << stored;
  EXPECT_EQ(testing::ReadBytes(first / "db" / stored), Bytes(picture));
  db.reset();

  const auto moved = tmp.path() / "elsewhere" / "moved-db";
  std::filesystem::create_directories(moved.parent_path());
  std::filesystem::rename(first / "db", moved);
  DatabaseOptions reopen;
  reopen.dir = moved;
  reopen.model = "tiny";
  reopen.home = first / "home";
  auto again = Database::Open(reopen, false);
  ASSERT_TRUE(again.ok()) << again.status().ToString();

  // An upload as older releases recorded it: the absolute path.
  const std::string legacy_bytes = MakeImage(3, ".jpg");
  const auto legacy_file = moved / "images" / "zz" / "legacy.jpg";
  std::filesystem::create_directories(legacy_file.parent_path());
  testing::WriteBytes(legacy_file, Bytes(legacy_bytes));
  ImageRecord legacy;
  legacy.path = legacy_file.string();
  legacy.name = "legacy.jpg";
  legacy.sha256 = Sha256Hex(Bytes(legacy_bytes));
  legacy.size_bytes = static_cast<int64_t>(legacy_bytes.size());
  legacy.format = "jpeg";
  legacy.width = legacy.height = 64;
  std::vector<float> feature(static_cast<size_t>((*again)->base_dimension()), 0.0f);
  feature[0] = 1.0f;  // unit length, as stored features are
  auto legacy_id = (*again)->Insert(legacy, feature, Bytes(MakeImage(3, ".jpg")));
  ASSERT_TRUE(legacy_id.ok()) << legacy_id.status().ToString();

  ServerOptions options;
  options.port = 0;
  options.log_requests = false;
  HttpServer server(**again, options);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());
  for (auto [image, body, file] : {std::tuple{id, picture, moved / stored},
                                   std::tuple{*legacy_id, legacy_bytes, legacy_file}}) {
    SCOPED_TRACE(file.string());
    const std::string image_url = "/api/v1/images/" + std::to_string(image);
    auto res = client.Get(image_url + "/file");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(res->body, body);
    res = client.Get(image_url + "/thumbnail");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    ASSERT_TRUE(std::filesystem::exists(file));
    res = client.Delete(image_url);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 204) << res->body;
    EXPECT_FALSE(std::filesystem::exists(file)) << "the delete removes the uploaded file";
  }
}

// With API keys (and unless told otherwise), no answer shows an absolute
// server path: built files relative to their library root, uploads relative
// to the database. hide_paths = false shows them as stored.
TEST(ServerPathsTest, KeysHideAbsolutePathsByDefault) {
  TempDir tmp;
  auto opened = OpenTinyDatabase(tmp.path(), kDim, 7);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Database> db = std::move(*opened);
  const auto photos = std::filesystem::canonical(tmp.path()) / "photos";
  std::filesystem::create_directories(photos / "red");
  testing::WriteBytes(photos / "red" / "r.png", Bytes(MakeImage(0)));
  testing::WriteBytes(photos / "top.png", Bytes(MakeImage(1)));
  ASSERT_TRUE(BuildService(*db).Build(photos, {}).ok());

  // What each answer shows as the paths of all stored images.
  auto paths_shown = [&](ServerOptions options, bool upload) {
    options.port = 0;
    options.log_requests = false;
    HttpServer server(*db, options);
    EXPECT_TRUE(server.Start().ok());
    httplib::Client client("127.0.0.1", server.port());
    if (upload) {
      client.set_bearer_token_auth("k");
      auto res = client.Post("/api/v1/images", httplib::MultipartFormDataItems{
                                                   {"image", MakeImage(3), "u.png", "image/png"}});
      EXPECT_TRUE(res && res->status == 201) << (res ? res->body : "no answer");
    }
    std::set<std::string> shown;
    auto res = client.Get("/api/v1/images");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
    if (!res) return shown;
    const json listed = json::parse(res->body);  // kept: the loop reads a part of it
    for (const json& image : listed["images"]) {
      shown.insert(image["path"].get<std::string>());
      // The record and a search by it show the same path.
      const std::string id = image["id"].dump();
      auto one = client.Get("/api/v1/images/" + id);
      EXPECT_TRUE(one && one->status == 200);
      if (one) {
        EXPECT_EQ(json::parse(one->body)["path"], image["path"]);
      }
      auto found =
          client.Post("/api/v1/search?top_k=3", R"({"image_id": )" + id + "}", "application/json");
      EXPECT_TRUE(found && found->status == 200);
      if (!found) continue;
      int seen = 0;
      const json answer = json::parse(found->body);
      for (const json& hit : answer["results"]) {
        if (hit["id"] != image["id"]) continue;
        EXPECT_EQ(hit["path"], image["path"]);
        ++seen;
      }
      EXPECT_EQ(seen, 1) << found->body;
    }
    return shown;
  };

  ServerOptions keyed;
  keyed.api_keys = {"k"};
  const std::set<std::string> hidden = paths_shown(keyed, /*upload=*/true);
  ASSERT_EQ(hidden.size(), 3u);
  EXPECT_TRUE(hidden.count("red/r.png"));
  EXPECT_TRUE(hidden.count("top.png"));
  for (const std::string& path : hidden) {
    EXPECT_NE(path.front(), '/') << path;
    if (path != "red/r.png" && path != "top.png") {
      EXPECT_EQ(path.rfind("images/", 0), 0u) << path;
    }
  }

  keyed.hide_paths = false;
  const std::set<std::string> shown = paths_shown(keyed, false);
  ASSERT_EQ(shown.size(), 3u);
  EXPECT_TRUE(shown.count((photos / "red" / "r.png").string()));
  EXPECT_TRUE(shown.count((photos / "top.png").string()));
  for (const std::string& path : shown) {  // an upload's resolved in the database
    if (path.find("photos") == std::string::npos) {
      EXPECT_EQ(path.rfind((db->dir() / "images").string() + "/", 0), 0u) << path;
    }
  }
  // Without keys, paths are shown unless asked to hide them.
  EXPECT_EQ(paths_shown(ServerOptions{}, false), shown);
  ServerOptions hide;
  hide.hide_paths = true;
  EXPECT_EQ(paths_shown(hide, false), hidden);
}

// How a hidden path is chosen: an upload's as recorded, an older upload's
// relative to the database, a built file's relative to the import root it
// fits (its label is its first folder there), else from the nearest folder
// named as its label, else its file name.
TEST(ServerPathsTest, ShownPathIsRelativeToTheLibraryRoot) {
  server::PathView view;
  view.hide = true;
  view.db_dir = "/srv/db";
  view.roots = {"/imports", "/imports/lib"};
  auto shown = [&](const std::string& path, const std::string& label) {
    ImageRecord r;
    r.path = path;
    r.label = label;
    return server::ShownPath(r, view);
  };
  EXPECT_EQ(shown("images/ab/abc.png", ""), "images/ab/abc.png");
  EXPECT_EQ(shown("/srv/db/images/ab/abc.png", ""), "images/ab/abc.png");
  EXPECT_EQ(shown("/imports/lib/cats/cats/x.jpg", "cats"), "cats/cats/x.jpg");  // the root decides
  EXPECT_EQ(shown("/imports/lib/top.jpg", ""), "top.jpg");
  EXPECT_EQ(shown("/imports/other/dogs/x.jpg", "dogs"), "dogs/x.jpg");
  EXPECT_EQ(shown("/home/u/pics/cats/cats/x.jpg", "cats"), "cats/x.jpg");  // nearest folder
  EXPECT_EQ(shown("/home/u/pics/cats/sub/x.jpg", "cats"), "cats/sub/x.jpg");
  EXPECT_EQ(shown("/home/u/pics/x.jpg", ""), "x.jpg");
  EXPECT_EQ(shown("/home/u/pics/x.jpg", "added-with-a-label"), "x.jpg");
  view.hide = false;
  EXPECT_EQ(shown("/home/u/pics/x.jpg", ""), "/home/u/pics/x.jpg");
  EXPECT_EQ(shown("images/ab/abc.png", ""), "/srv/db/images/ab/abc.png");
}
// The front's limits come from ServerOptions ([server] in the config file):
// a per-client cap of 2 closes a third connection at once, and a head
// deadline of half a second answers a slow head 408 although it keeps
// sending.
TEST(ServerPolicyTest, FrontLimitsComeFromTheOptions) {
  ServerOptions options;
  options.max_connections_per_client = 2;
  options.header_timeout_s = 0.5;
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  const int port = s.server->port();
  const int first = ConnectLoopback(port), second = ConnectLoopback(port);
  const int third = ConnectLoopback(port);
  timeval tv{2, 0};
  ::setsockopt(third, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[512];
  EXPECT_EQ(::recv(third, buf, sizeof(buf), 0), 0) << "a third connection was kept";
  ::close(third);
  ::setsockopt(first, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const auto start = std::chrono::steady_clock::now();
  for (char c : std::string("GET /healthz HTTP/1.1\r\n")) {
    if (::send(first, &c, 1, MSG_NOSIGNAL) != 1) break;
    std::this_thread::sleep_for(40ms);
    if (std::chrono::steady_clock::now() - start > 1500ms) break;
  }
  const ssize_t got = ::recv(first, buf, sizeof(buf) - 1, 0);
  ASSERT_GT(got, 0);
  EXPECT_TRUE(std::string(buf, static_cast<size_t>(got)).starts_with("HTTP/1.1 408"))
      << std::string(buf, static_cast<size_t>(got));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  ::close(first);
  ::close(second);
}

// A socket from `source` (another loopback address, another client for the
// server's per-client cap) to 127.0.0.1:port, or -1.
int ConnectFrom(const char* source, int port) {
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(sock, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      ::connect(sock, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(sock);
    return -1;
  }
  timeval tv{2, 0};
  ::setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return sock;
}

// Soak: for PIXSEEK_SOAK_SECONDS (default 30) two normal clients upload and
// search while hostile ones attack from other addresses: 20 slowloris
// connections, oversized chunked bodies, header floods, garbage, and floods
// of connections. Every normal request succeeds, their p99 stays under a
// second (a loaded 2-core CI machine), and every acknowledged upload is there
// at the end.
TEST(ServerSoakTest, NormalTrafficSurvivesHostileClients) {
  const char* env = std::getenv("PIXSEEK_SOAK_SECONDS");
  const int seconds = env != nullptr ? std::max(5, std::atoi(env)) : 30;
  ServerOptions options;
  options.threads = 4;
  options.max_request_bytes = 1 << 20;
  PolicyServer s(options);
  ASSERT_TRUE(s.server);
  const int port = s.server->port();
  std::atomic<bool> stop{false};
  std::atomic<long> attacks{0};

  auto slowloris = [&] {
    std::vector<int> socks;
    while (!stop) {
      while (socks.size() < 20) {
        const int fd = ConnectFrom("127.0.0.2", port);
        if (fd < 0) break;
        socks.push_back(fd);
      }
      for (size_t i = 0; i < socks.size();) {
        if (::send(socks[i], "X", 1, MSG_NOSIGNAL) != 1) {
          ::close(socks[i]);
          socks.erase(socks.begin() + static_cast<long>(i));
          ++attacks;
        } else {
          ++i;
        }
      }
      std::this_thread::sleep_for(200ms);
    }
    for (int fd : socks) ::close(fd);
  };
  auto flood = [&](const char* source, const std::string& head, const std::string& repeat) {
    while (!stop) {
      const int fd = ConnectFrom(source, port);
      if (fd < 0) continue;
      ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
      for (int i = 0; i < 4096 && !stop; ++i) {
        if (::send(fd, repeat.data(), repeat.size(), MSG_NOSIGNAL) <= 0) break;
      }
      ::close(fd);
      ++attacks;
    }
  };
  auto connection_flood = [&] {
    while (!stop) {
      std::vector<int> socks;
      for (int i = 0; i < 64; ++i) {
        const int fd = ConnectFrom("127.0.0.5", port);
        if (fd >= 0) socks.push_back(fd);
      }
      for (int fd : socks) ::close(fd);
      ++attacks;
      std::this_thread::sleep_for(50ms);
    }
  };
  std::vector<std::thread> hostile;
  hostile.emplace_back(slowloris);
  hostile.emplace_back(flood, "127.0.0.3",
                       "POST /api/v1/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                       "10000\r\n" + std::string(0x10000, 'x') + "\r\n");
  hostile.emplace_back(flood, "127.0.0.4", "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n",
                       "X-Flood: 0123456789abcdef\r\n");
  hostile.emplace_back(flood, "127.0.0.6", "", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03", 10));
  hostile.emplace_back(connection_flood);

  struct Normal {
    std::vector<double> ms;
    std::vector<int64_t> stored;
    int failures = 0;
    std::string first_failure;
  };
  std::vector<Normal> normal(2);
  std::vector<std::thread> clients;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (size_t c = 0; c < normal.size(); ++c) {
    clients.emplace_back([&, c] {
      Normal& n = normal[c];
      auto client = s.Client();
      client.set_read_timeout(30, 0);
      cv::RNG rng(static_cast<uint64_t>(c + 1));
      for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
        cv::Mat img(48, 48, CV_8UC3);
        rng.fill(img, cv::RNG::UNIFORM, 0, 255);  // distinct bytes every time
        std::vector<uchar> png;
        cv::imencode(".png", img, png);
        const std::string bytes(png.begin(), png.end());
        const auto start = std::chrono::steady_clock::now();
        auto res = i % 2 == 0
                       ? client.Post("/api/v1/images", httplib::MultipartFormDataItems{
                                                           {"image", bytes, "n.png", "image/png"}})
                       : client.Post("/api/v1/search?top_k=3", httplib::MultipartFormDataItems{
                                                                   {"image", bytes, "q.png", "image/png"}});
        n.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                                 start).count());
        const int want = i % 2 == 0 ? 201 : 200;
        if (!res || res->status != want) {
          if (n.failures++ == 0) {
            n.first_failure = res ? std::to_string(res->status) + " " + res->body : "no answer";
          }
          continue;
        }
        if (i % 2 == 0) {
          const json body = json::parse(res->body);
          for (const json& id : body["ids"]) n.stored.push_back(id.get<int64_t>());
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  stop = true;
  for (auto& t : hostile) t.join();

  std::vector<double> all;
  std::vector<int64_t> stored;
  for (const Normal& n : normal) {
    EXPECT_EQ(n.failures, 0) << n.first_failure;
    all.insert(all.end(), n.ms.begin(), n.ms.end());
    stored.insert(stored.end(), n.stored.begin(), n.stored.end());
  }
  ASSERT_GT(all.size(), 20u);
  std::sort(all.begin(), all.end());
  const double p50 = all[all.size() / 2], p99 = all[all.size() * 99 / 100];
  std::fprintf(stderr, "soak: %d s, %zu normal requests, p50 %.1f ms, p99 %.1f ms, %ld attacks\n",
               seconds, all.size(), p50, p99, attacks.load());
  EXPECT_LT(p99, 1000.0);
  EXPECT_GT(attacks.load(), 100);
  // Nothing acknowledged was lost.
  auto client = s.Client();
  for (int64_t id : stored) {
    auto res = client.Get("/api/v1/images/" + std::to_string(id));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << "image " << id;
  }
  EXPECT_EQ(s.db->index().size(), stored.size());
}

}  // namespace
}  // namespace pixseek
