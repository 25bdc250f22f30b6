// Tests for the KServe v2 (Triton) embedder against the KServe v2 test server
// (kserve_server.h), which runs the same ONNX network as the local embedder:
// remote vectors must equal local ones, with JSON and with binary tensors, and
// every failure (metadata mismatch, server down, slow, malformed replies)
// must be a clear Status, never a crash. Also the test server itself against
// the protocol. The CLI through a remote model: kserve_cli_test.cc.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "kserve_server.h"
#include "pixseek/embedder.h"
#include "pixseek/model_registry.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

using Json = nlohmann::json;
using testing::KServeFault;
using testing::KServeModelSpec;
using testing::KServeTestServer;
using testing::TempDir;
using testing::WriteBytes;

constexpr int kDim = 16;

// A picture of `w` x `h` with coloured blocks drawn from `seed`.
Image MakeImage(int w, int h, uint32_t seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  uint32_t s = seed * 2654435761u + 1;
  auto next = [&s] {
    s = s * 1664525u + 1013904223u;
    return s >> 8;
  };
  const int block = 16 + static_cast<int>(seed % 24);
  std::vector<uint8_t> colours(3 * 64);
  for (auto& c : colours) c = static_cast<uint8_t>(next() & 0xff);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const size_t k = static_cast<size_t>(((x / block) * 7 + (y / block) * 3) % 64);
      for (int c = 0; c < 3; ++c) {
        img.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = colours[k * 3 + c];
      }
    }
  }
  return img;
}

std::vector<float> EmbedAll(Embedder& e, const std::vector<Image>& images, Status* status) {
  std::vector<const Image*> ptrs;
  for (const Image& i : images) ptrs.push_back(&i);
  std::vector<float> out(images.size() * static_cast<size_t>(e.dimension()), -7.0f);
  *status = e.Embed(ptrs, out.data());
  return out;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

class KServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_.path() / "tiny.onnx";
    WriteBytes(model_, testing::MakeTinyOnnxModel(kDim, 7));
    auto card = ModelCard::FromJson(testing::TinyModelCardJson(kDim, "tiny.onnx"));
    ASSERT_TRUE(card.ok()) << card.status().ToString();
    local_card_ = *card;
    server_ = StartServer(Spec());
    ASSERT_NE(server_, nullptr);
    // Sizes that exercise the resize, the crop and both orientations.
    images_ = {MakeImage(320, 240, 1), MakeImage(240, 320, 2), MakeImage(224, 224, 3),
               MakeImage(500, 120, 4), MakeImage(300, 300, 5)};
  }

  KServeModelSpec Spec() const {
    KServeModelSpec spec;
    spec.onnx_file = model_;
    spec.output_shape = {-1, kDim, 1, 1};
    return spec;
  }

  static std::unique_ptr<KServeTestServer> StartServer(const KServeModelSpec& spec) {
    auto server = std::make_unique<KServeTestServer>(spec);
    const std::string error = server->Start();
    EXPECT_EQ(error, "");
    return error.empty() ? std::move(server) : nullptr;
  }

  ModelCard RemoteCard(bool binary, const KServeTestServer& server) const {
    ModelCard c = local_card_;
    c.runtime = Runtime::kKServe;
    c.kserve.server_url = server.url();
    c.kserve.remote_model = "tiny";
    c.kserve.input_tensor = "input";
    c.kserve.output_tensor = "features";
    c.kserve.binary_data = binary;
    c.kserve.timeout_ms = 120000;  // JSON tensors are slow under sanitizers on a busy machine
    return c;
  }
  ModelCard RemoteCard(bool binary) const { return RemoteCard(binary, *server_); }

  std::vector<float> LocalVectors(const ModelCard& card) {
    auto local = OpenEmbedder(card, model_);
    EXPECT_TRUE(local.ok()) << local.status().ToString();
    if (!local.ok()) return {};
    Status s;
    std::vector<float> v = EmbedAll(**local, images_, &s);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return v;
  }

  // Opens the remote embedder, which must fail with `code`; returns the message.
  std::string OpenFails(const ModelCard& card, StatusCode code) {
    auto e = OpenEmbedder(card, "");
    EXPECT_FALSE(e.ok());
    if (e.ok()) return "";
    EXPECT_EQ(e.status().code(), code) << e.status().ToString();
    return e.status().message();
  }

  TempDir tmp_;
  std::filesystem::path model_;
  ModelCard local_card_;
  std::unique_ptr<KServeTestServer> server_;
  std::vector<Image> images_;
};

// ------------------------------------------------------------ vectors

TEST_F(KServeTest, JsonTensorsGiveTheLocalVectors) {
  auto remote = OpenEmbedder(RemoteCard(false), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  EXPECT_EQ((*remote)->dimension(), kDim);
  Status s;
  std::vector<float> got = EmbedAll(**remote, images_, &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(server_->last_request_binary());
  EXPECT_FALSE(server_->last_reply_binary());
  EXPECT_LE(MaxAbsDiff(got, LocalVectors(local_card_)), 1e-5f);
  // Unit length, and different pictures give different vectors.
  for (size_t i = 0; i < images_.size(); ++i) {
    double norm = 0;
    for (int c = 0; c < kDim; ++c) norm += got[i * kDim + c] * got[i * kDim + c];
    EXPECT_NEAR(norm, 1.0, 1e-4);
  }
  EXPECT_GT(MaxAbsDiff(std::vector<float>(got.begin(), got.begin() + kDim),
                       std::vector<float>(got.begin() + kDim, got.begin() + 2 * kDim)),
            1e-3f);
}

TEST_F(KServeTest, BinaryTensorsGiveTheLocalVectors) {
  auto remote = OpenEmbedder(RemoteCard(true), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  Status s;
  std::vector<float> got = EmbedAll(**remote, images_, &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(server_->last_request_binary());
  EXPECT_TRUE(server_->last_reply_binary());
  EXPECT_LE(MaxAbsDiff(got, LocalVectors(local_card_)), 1e-5f);
}

TEST_F(KServeTest, BatchesFollowMaxBatch) {
  ModelCard card = RemoteCard(true);
  card.max_batch = 2;
  auto remote = OpenEmbedder(card, "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  const int before = server_->infer_count();
  Status s;
  std::vector<float> got = EmbedAll(**remote, images_, &s);  // 5 images: 2 + 2 + 1
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(server_->infer_count() - before, 3);
  EXPECT_EQ(server_->last_batch(), 1);
  EXPECT_LE(MaxAbsDiff(got, LocalVectors(local_card_)), 1e-5f);
}

TEST_F(KServeTest, SplitPreprocessingGivesTheSameVectors) {
  auto remote = OpenEmbedder(RemoteCard(true), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  Embedder& e = **remote;
  ASSERT_EQ(e.preprocessed_size(), 3u * 224 * 224);
  std::vector<float> input(images_.size() * e.preprocessed_size());
  for (size_t i = 0; i < images_.size(); ++i) {
    ASSERT_TRUE(e.Preprocess(images_[i], input.data() + i * e.preprocessed_size()).ok());
  }
  std::vector<float> got(images_.size() * kDim);
  ASSERT_TRUE(e.EmbedPreprocessed(input.data(), images_.size(), got.data()).ok());
  EXPECT_LE(MaxAbsDiff(got, LocalVectors(local_card_)), 1e-5f);
}

TEST_F(KServeTest, FixedBatchModelGetsPaddedBatches) {
  KServeModelSpec spec = Spec();
  spec.input_shape = {1, 3, 224, 224};  // a model exported for batch 1 only
  auto server = StartServer(spec);
  ASSERT_NE(server, nullptr);
  auto remote = OpenEmbedder(RemoteCard(true, *server), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  Status s;
  std::vector<float> got = EmbedAll(**remote, images_, &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(server->last_batch(), 1);
  EXPECT_LE(MaxAbsDiff(got, LocalVectors(local_card_)), 1e-5f);
}

TEST_F(KServeTest, ModelVersionIsPartOfThePath) {
  ModelCard card = RemoteCard(false);
  card.kserve.remote_version = "1";
  auto remote = OpenEmbedder(card, "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  card.kserve.remote_version = "2";
  std::string m = OpenFails(card, StatusCode::kUnavailable);
  EXPECT_NE(m.find("version '2'"), std::string::npos) << m;
  EXPECT_NE(m.find("not ready"), std::string::npos) << m;
}

// ------------------------------------------------------------ open errors

TEST_F(KServeTest, MetadataMismatchNamesIt) {
  ModelCard card = RemoteCard(true);
  card.kserve.input_tensor = "pixels";
  std::string m = OpenFails(card, StatusCode::kFailedPrecondition);
  EXPECT_NE(m.find("'pixels'"), std::string::npos) << m;
  EXPECT_NE(m.find("'input'"), std::string::npos) << m;  // what the model has

  card = RemoteCard(true);
  card.kserve.output_tensor = "logits";
  m = OpenFails(card, StatusCode::kFailedPrecondition);
  EXPECT_NE(m.find("'logits'"), std::string::npos) << m;
  EXPECT_NE(m.find("'features'"), std::string::npos) << m;

  card = RemoteCard(true);
  card.dimension = 32;
  m = OpenFails(card, StatusCode::kFailedPrecondition);
  EXPECT_NE(m.find("dimension 32"), std::string::npos) << m;

  card = RemoteCard(true);
  card.preprocess.input_width = card.preprocess.input_height = 160;
  m = OpenFails(card, StatusCode::kFailedPrecondition);
  EXPECT_NE(m.find("[-1,3,224,224]"), std::string::npos) << m;
  EXPECT_NE(m.find("[-1,3,160,160]"), std::string::npos) << m;

  card = RemoteCard(true);
  card.output.pooling = Pooling::kCls;  // needs [N,T,D], the model gives [N,C,1,1]
  m = OpenFails(card, StatusCode::kFailedPrecondition);
  EXPECT_NE(m.find("[N,T,D]"), std::string::npos) << m;

  KServeModelSpec spec = Spec();
  spec.input_datatype = "FP16";
  auto fp16 = StartServer(spec);
  ASSERT_NE(fp16, nullptr);
  m = OpenFails(RemoteCard(true, *fp16), StatusCode::kFailedPrecondition);
  EXPECT_NE(m.find("FP16"), std::string::npos) << m;
}

TEST_F(KServeTest, UnknownModelOrNotReadyIsUnavailable) {
  ModelCard card = RemoteCard(true);
  card.kserve.remote_model = "nosuch";
  std::string m = OpenFails(card, StatusCode::kUnavailable);
  EXPECT_NE(m.find("'nosuch'"), std::string::npos) << m;

  server_->set_ready(false);
  m = OpenFails(RemoteCard(true), StatusCode::kUnavailable);
  EXPECT_NE(m.find("not ready"), std::string::npos) << m;
  EXPECT_NE(m.find(server_->url()), std::string::npos) << m;
}

TEST_F(KServeTest, ServerDownIsUnavailableQuickly) {
  auto remote = OpenEmbedder(RemoteCard(true), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  const std::string url = server_->url();
  server_->Stop();

  auto start = std::chrono::steady_clock::now();
  std::string m = OpenFails(RemoteCard(true), StatusCode::kUnavailable);
  EXPECT_NE(m.find(url), std::string::npos) << m;
  Status s;
  EmbedAll(**remote, images_, &s);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find(url), std::string::npos) << s.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(KServeTest, SlowServerTimesOut) {
  ModelCard card = RemoteCard(true);
  card.kserve.timeout_ms = 300;
  auto remote = OpenEmbedder(card, "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  server_->set_fault(KServeFault::kSlow);
  auto start = std::chrono::steady_clock::now();
  Status s;
  EmbedAll(**remote, images_, &s);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
}

TEST_F(KServeTest, InvalidKServeCardsAreRejected) {
  ModelCard card = RemoteCard(true);
  card.kserve.server_url = "localhost:8000";
  auto e = OpenEmbedder(card, "");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("server_url"), std::string::npos);

  card = RemoteCard(true);
  card.kserve.input_datatype = "FP16";
  EXPECT_EQ(OpenEmbedder(card, "").status().code(), StatusCode::kInvalidArgument);
  card = RemoteCard(true);
  card.kserve.remote_model = "a/b";
  EXPECT_EQ(OpenEmbedder(card, "").status().code(), StatusCode::kInvalidArgument);
  card = RemoteCard(true);
  card.kserve.output_tensor = "";
  EXPECT_EQ(OpenEmbedder(card, "").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(KServeTest, CardRoundTripsThroughJson) {
  ModelCard card = RemoteCard(false);
  card.kserve.remote_version = "3";
  card.kserve.timeout_ms = 1234;
  auto again = ModelCard::FromJson(card.ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->runtime, Runtime::kKServe);
  EXPECT_EQ(again->kserve.server_url, card.kserve.server_url);
  EXPECT_EQ(again->kserve.remote_model, "tiny");
  EXPECT_EQ(again->kserve.remote_version, "3");
  EXPECT_EQ(again->kserve.input_tensor, "input");
  EXPECT_EQ(again->kserve.output_tensor, "features");
  EXPECT_EQ(again->kserve.input_datatype, "FP32");
  EXPECT_FALSE(again->kserve.binary_data);
  EXPECT_EQ(again->kserve.timeout_ms, 1234);
  EXPECT_EQ(again->ToJson(), card.ToJson());
}

// ------------------------------------------------------------ reply errors

TEST_F(KServeTest, MalformedRepliesAreErrorsNotCrashes) {
  struct Case {
    KServeFault fault;
    bool binary;
    StatusCode code;
    const char* needle;
  };
  const Case cases[] = {
      {KServeFault::kGarbage, true, StatusCode::kDataLoss, "not JSON"},
      {KServeFault::kGarbage, false, StatusCode::kDataLoss, "not JSON"},
      {KServeFault::kTruncatedBinary, true, StatusCode::kDataLoss, "bytes of binary"},
      {KServeFault::kHeaderPastEnd, true, StatusCode::kDataLoss, "truncated"},
      {KServeFault::kWrongBinarySize, true, StatusCode::kDataLoss, "binary_data_size"},
      {KServeFault::kShortJsonData, false, StatusCode::kDataLoss, "\"data\""},
      {KServeFault::kWrongBatch, true, StatusCode::kDataLoss, "batch of"},
      {KServeFault::kWrongBatch, false, StatusCode::kDataLoss, "batch of"},
      {KServeFault::kServerError, true, StatusCode::kInternal, "injected failure"},
  };
  images_.resize(2);  // JSON tensors of 224x224 images are slow to print and parse
  for (const Case& c : cases) {
    SCOPED_TRACE(static_cast<int>(c.fault));
    server_->set_fault(KServeFault::kNone);
    auto remote = OpenEmbedder(RemoteCard(c.binary), "");
    ASSERT_TRUE(remote.ok()) << remote.status().ToString();
    server_->set_fault(c.fault);
    Status s;
    EmbedAll(**remote, images_, &s);
    EXPECT_EQ(s.code(), c.code) << s.ToString();
    EXPECT_NE(s.message().find(c.needle), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(server_->url()), std::string::npos) << s.message();
  }
  // And the embedder works again once the server does.
  server_->set_fault(KServeFault::kNone);
  auto remote = OpenEmbedder(RemoteCard(true), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
}

// ------------------------------------------------------------ the test server

TEST_F(KServeTest, TestServerFollowsTheProtocol) {
  httplib::Client http(server_->url());
  auto r = http.Get("/v2/health/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->body.empty());
  r = http.Get("/v2/models/tiny/versions/1/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  r = http.Get("/v2/models/tiny");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  Json meta = Json::parse(r->body);
  EXPECT_EQ(meta["name"], "tiny");
  EXPECT_EQ(meta["inputs"][0]["name"], "input");
  EXPECT_EQ(meta["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(meta["inputs"][0]["shape"], Json({-1, 3, 224, 224}));
  EXPECT_EQ(meta["outputs"][0]["shape"], Json({-1, kDim, 1, 1}));

  // Unknown model: an error status and {"error": "..."}.
  r = http.Get("/v2/models/nosuch");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(Json::parse(r->body)["error"].is_string());

  // Nested "data" (the protocol allows it), outputs not named: all, as JSON.
  Json image = Json::array();
  for (int c = 0; c < 3; ++c) {
    Json plane = Json::array();
    for (int y = 0; y < 224; ++y) plane.push_back(std::vector<float>(224, 0.25f * c));
    image.push_back(plane);
  }
  Json request = {{"id", "42"},
                  {"inputs",
                   {{{"name", "input"},
                     {"shape", {1, 3, 224, 224}},
                     {"datatype", "FP32"},
                     {"data", Json::array({image})}}}}};
  r = http.Post("/v2/models/tiny/infer", request.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_FALSE(r->has_header("Inference-Header-Content-Length"));
  Json reply = Json::parse(r->body);
  EXPECT_EQ(reply["model_name"], "tiny");
  EXPECT_EQ(reply["id"], "42");
  EXPECT_EQ(reply["outputs"][0]["name"], "features");
  EXPECT_EQ(reply["outputs"][0]["shape"], Json({1, kDim, 1, 1}));
  EXPECT_EQ(reply["outputs"][0]["data"].size(), static_cast<size_t>(kDim));

  // binary_data_output on the request: binary reply with the header.
  request["parameters"] = {{"binary_data_output", true}};
  r = http.Post("/v2/models/tiny/infer", request.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  ASSERT_TRUE(r->has_header("Inference-Header-Content-Length"));
  const size_t json_size = std::stoul(r->get_header_value("Inference-Header-Content-Length"));
  reply = Json::parse(r->body.substr(0, json_size));
  EXPECT_EQ(reply["outputs"][0]["parameters"]["binary_data_size"], kDim * 4);
  EXPECT_EQ(r->body.size() - json_size, static_cast<size_t>(kDim * 4));

  // Bad requests: 400 with the reason.
  request["inputs"][0]["name"] = "pixels";
  r = http.Post("/v2/models/tiny/infer", request.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(Json::parse(r->body)["error"].get<std::string>().find("pixels"), std::string::npos);
  r = http.Post("/v2/models/tiny/infer", "{not json", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(Json::parse(r->body)["error"].is_string());
}

// ------------------------------------------------------------ real model

TEST_F(KServeTest, RealMobileNetV2MatchesLocal) {
  auto file = testing::SharedMobilenet();
  if (!file) GTEST_SKIP() << "../shared/models/mobilenetv2-12-int8 not found";
  // The test server runs the network with OpenCV DNN: compare with the
  // same engine locally.
  ModelCard local = KnownModels().front().card;
  local.onnx.engine = Engine::kOpenCv;
  KServeModelSpec spec;
  spec.name = "mobilenetv2";
  spec.onnx_file = *file;
  spec.output_layer = local.onnx.output_layer;  // the embedding layer, as the card says
  spec.output_name = "embedding";
  spec.output_shape = {-1, local.dimension, 7, 7};
  auto server = StartServer(spec);
  ASSERT_NE(server, nullptr);

  ModelCard card = local;
  card.runtime = Runtime::kKServe;
  card.kserve.server_url = server->url();
  card.kserve.remote_model = "mobilenetv2";
  card.kserve.input_tensor = "input";
  card.kserve.output_tensor = "embedding";
  card.max_batch = 3;
  images_.resize(3);
  for (bool binary : {true, false}) {
    SCOPED_TRACE(binary);
    card.kserve.binary_data = binary;
    auto remote = OpenEmbedder(card, "");
    ASSERT_TRUE(remote.ok()) << remote.status().ToString();
    auto onnx = OpenEmbedder(local, *file);
    ASSERT_TRUE(onnx.ok()) << onnx.status().ToString();
    Status s1, s2;
    std::vector<float> got = EmbedAll(**remote, images_, &s1);
    std::vector<float> want = EmbedAll(**onnx, images_, &s2);
    ASSERT_TRUE(s1.ok()) << s1.ToString();
    ASSERT_TRUE(s2.ok()) << s2.ToString();
    EXPECT_LE(MaxAbsDiff(got, want), 1e-5f);
  }
}

}  // namespace
}  // namespace pixseek
