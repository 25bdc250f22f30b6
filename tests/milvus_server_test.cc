// The Milvus REST API v2 test server on its own, through raw HTTP requests:
// the envelope, the error codes, search against a brute-force ranking,
// Milvus's duplicate-key and load-state behaviour, auth, persistence across a
// restart, and the executable killed with SIGTERM and started again.
#include "milvus_server.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "subprocess.h"
#include "test_util.h"

namespace pixseek::testing {
namespace {

using Json = nlohmann::json;

struct Answer {
  int status = 0;  // HTTP status; -1 when the request failed
  Json body;
  int code() const { return body.value("code", -1); }
  std::string message() const { return body.value("message", std::string()); }
};

// POSTs raw text to /v2/vectordb/<path>.
Answer PostRaw(int port, const std::string& path, const std::string& body,
               const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  auto res = client.Post(("/v2/vectordb/" + path).c_str(), headers, body, "application/json");
  Answer answer;
  if (!res) {
    answer.status = -1;
    return answer;
  }
  answer.status = res->status;
  answer.body = Json::parse(res->body, nullptr, false);
  if (answer.body.is_discarded()) answer.body = Json{{"raw", res->body}};
  return answer;
}

Answer Post(int port, const std::string& path, const Json& body,
            const httplib::Headers& headers = {}) {
  return PostRaw(port, path, body.dump(), headers);
}

// A collection as pixseek creates it: Int64 "id", FloatVector "vector".
Json CreateRequest(const std::string& name, int dim, const std::string& metric = "COSINE",
                   const std::string& index_type = "DISKANN", bool with_index = true) {
  Json req = {{"collectionName", name},
              {"schema",
               {{"autoID", false},
                {"enableDynamicField", false},
                {"fields",
                 Json::array({Json{{"fieldName", "id"}, {"dataType", "Int64"}, {"isPrimary", true}},
                              Json{{"fieldName", "vector"},
                                   {"dataType", "FloatVector"},
                                   {"elementTypeParams", {{"dim", std::to_string(dim)}}}}})}}}};
  if (with_index) {
    req["indexParams"] = Json::array({Json{{"fieldName", "vector"},
                                           {"indexName", "vector_index"},
                                           {"metricType", metric},
                                           {"params", {{"index_type", index_type}}}}});
  }
  return req;
}

std::vector<float> RandomVector(std::mt19937& rng, int dim) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(dim));
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<float> Normalized(std::vector<float> v) {
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * x;
  const float inv = static_cast<float>(1.0 / std::sqrt(sum));
  for (float& x : v) x *= inv;
  return v;
}

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

Json Rows(const std::map<int64_t, std::vector<float>>& rows) {
  Json data = Json::array();
  for (const auto& [id, v] : rows) data.push_back(Json{{"id", id}, {"vector", v}});
  return data;
}

int64_t Count(int port, const std::string& name, const std::string& filter = "") {
  Answer a = Post(port, "entities/query",
                  {{"collectionName", name}, {"filter", filter}, {"outputFields", {"count(*)"}}});
  EXPECT_EQ(a.code(), 0) << a.body.dump();
  if (a.code() != 0) return -1;
  return a.body["data"][0]["count(*)"].get<int64_t>();
}

class MilvusServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer(const std::string& token = "") {
    server_ = std::make_unique<MilvusTestServer>(MilvusTestServerOptions{dir_.path(), 0, token});
    ASSERT_EQ(server_->Start(), "");
    port_ = server_->port();
  }

  void Create(const Json& request) {
    Answer a = Post(port_, "collections/create", request);
    ASSERT_EQ(a.status, 200);
    ASSERT_EQ(a.code(), 0) << a.body.dump();
  }

  void Insert(const std::string& name, const Json& data, const char* verb = "entities/insert") {
    Answer a = Post(port_, verb, {{"collectionName", name}, {"data", data}});
    ASSERT_EQ(a.code(), 0) << a.body.dump();
  }

  TempDir dir_;
  std::unique_ptr<MilvusTestServer> server_;
  int port_ = 0;
};

TEST_F(MilvusServerTest, CollectionLifecycle) {
  EXPECT_EQ(server_->url("images"), "milvus://127.0.0.1:" + std::to_string(port_) + "/images");
  Answer has = Post(port_, "collections/has", {{"collectionName", "images"}});
  ASSERT_EQ(has.code(), 0);
  EXPECT_FALSE(has.body["data"]["has"].get<bool>());

  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("images", 8)));
  has = Post(port_, "collections/has", {{"collectionName", "images"}});
  EXPECT_TRUE(has.body["data"]["has"].get<bool>());

  Answer describe = Post(port_, "collections/describe", {{"collectionName", "images"}});
  ASSERT_EQ(describe.code(), 0) << describe.body.dump();
  const Json& d = describe.body["data"];
  EXPECT_EQ(d["collectionName"], "images");
  EXPECT_EQ(d["autoId"], false);
  EXPECT_EQ(d["load"], "LoadStateLoaded");
  ASSERT_EQ(d["fields"].size(), 2u);
  EXPECT_EQ(d["fields"][0]["name"], "id");
  EXPECT_EQ(d["fields"][0]["type"], "Int64");
  EXPECT_EQ(d["fields"][0]["primaryKey"], true);
  EXPECT_EQ(d["fields"][1]["type"], "FloatVector");
  EXPECT_EQ(d["fields"][1]["params"][0], (Json{{"key", "dim"}, {"value", "8"}}));
  ASSERT_EQ(d["indexes"].size(), 1u);
  EXPECT_EQ(d["indexes"][0]["metricType"], "COSINE");
  EXPECT_EQ(d["indexes"][0]["indexName"], "vector_index");

  Answer index = Post(port_, "indexes/describe",
                      {{"collectionName", "images"}, {"indexName", "vector_index"}});
  ASSERT_EQ(index.code(), 0) << index.body.dump();
  EXPECT_EQ(index.body["data"][0]["indexType"], "DISKANN");
  EXPECT_EQ(index.body["data"][0]["metricType"], "COSINE");
  EXPECT_EQ(
      Post(port_, "indexes/describe", {{"collectionName", "images"}, {"indexName", "x"}}).code(),
      700);
  Answer indexes = Post(port_, "indexes/list", {{"collectionName", "images"}});
  EXPECT_EQ(indexes.body["data"], Json::array({"vector_index"}));

  // The same create again is accepted; another dimension or metric is not.
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("images", 8)));
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("images", 16)).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("images", 8, "IP")).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/list", Json::object()).body["data"], Json::array({"images"}));

  Answer load_state = Post(port_, "collections/get_load_state", {{"collectionName", "images"}});
  EXPECT_EQ(load_state.body["data"]["loadState"], "LoadStateLoaded");

  ASSERT_EQ(Post(port_, "collections/drop", {{"collectionName", "images"}}).code(), 0);
  EXPECT_FALSE(Post(port_, "collections/has", {{"collectionName", "images"}})
                   .body["data"]["has"]
                   .get<bool>());
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "images.json"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "images.flat"));
  // Dropping what is not there is not an error in Milvus.
  EXPECT_EQ(Post(port_, "collections/drop", {{"collectionName", "images"}}).code(), 0);
  Answer missing = Post(port_, "collections/describe", {{"collectionName", "images"}});
  EXPECT_EQ(missing.status, 200);
  EXPECT_EQ(missing.code(), 100);
  EXPECT_NE(missing.message().find("collection not found"), std::string::npos);
}

TEST_F(MilvusServerTest, QuickCreateAndBadSchemas) {
  ASSERT_NO_FATAL_FAILURE(
      Create({{"collectionName", "quick"}, {"dimension", 4}, {"metricType", "IP"}}));
  Answer d = Post(port_, "collections/describe", {{"collectionName", "quick"}});
  EXPECT_EQ(d.body["data"]["load"], "LoadStateLoaded");
  EXPECT_EQ(d.body["data"]["indexes"][0]["metricType"], "IP");

  // Quick create defaults to L2, which the test server refuses clearly.
  Answer l2 = Post(port_, "collections/create", {{"collectionName", "l2"}, {"dimension", 4}});
  EXPECT_EQ(l2.code(), 1100);
  EXPECT_NE(l2.message().find("L2"), std::string::npos);
  EXPECT_EQ(Post(port_, "collections/create", {{"collectionName", "nodim"}}).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("9bad", 4)).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("../escape", 4)).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("tiny", 1)).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("huge", 40000)).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/create", CreateRequest("odd", 4, "COSINE", "SCANN")).code(),
            1100);
  Json hnsw = CreateRequest("hnsw", 4, "COSINE", "HNSW");
  hnsw["indexParams"][0]["params"]["M"] = 1;
  EXPECT_EQ(Post(port_, "collections/create", hnsw).code(), 1100);
  Json unknown_field = CreateRequest("unknownfield", 4);
  unknown_field["indexParams"][0]["fieldName"] = "embedding";
  EXPECT_EQ(Post(port_, "collections/create", unknown_field).code(), 1802);
  Json varchar = CreateRequest("varchar", 4);
  varchar["schema"]["fields"][0]["dataType"] = "VarChar";
  EXPECT_EQ(Post(port_, "collections/create", varchar).code(), 1100);
  Json bad_type = CreateRequest("badtype", 4);
  bad_type["schema"]["fields"][1]["dataType"] = "floatvector";
  EXPECT_EQ(Post(port_, "collections/create", bad_type).code(), 1100);
  EXPECT_EQ(Post(port_, "collections/list", Json::object()).body["data"], Json::array({"quick"}));
}

TEST_F(MilvusServerTest, InsertGetQueryDeleteUpsert) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("c", 3, "IP")));
  std::map<int64_t, std::vector<float>> rows = {
      {1, {1, 0, 0}}, {2, {0, 1, 0}}, {3, {0, 0, 1}}, {4, {1, 1, 0}}, {5, {0.5f, 0.25f, 2}}};
  Answer insert = Post(port_, "entities/insert", {{"collectionName", "c"}, {"data", Rows(rows)}});
  ASSERT_EQ(insert.code(), 0) << insert.body.dump();
  EXPECT_EQ(insert.body["data"]["insertCount"], 5);
  EXPECT_EQ(insert.body["data"]["insertIds"], Json::array({1, 2, 3, 4, 5}));
  EXPECT_EQ(Count(port_, "c"), 5);
  EXPECT_EQ(
      Post(port_, "collections/get_stats", {{"collectionName", "c"}}).body["data"]["rowCount"], 5);

  Answer get = Post(port_, "entities/get", {{"collectionName", "c"}, {"id", {5, 3, 99}}});
  ASSERT_EQ(get.code(), 0) << get.body.dump();
  ASSERT_EQ(get.body["data"].size(), 2u);  // 99 is absent
  for (const Json& row : get.body["data"]) {
    const int64_t id = row["id"].get<int64_t>();
    EXPECT_EQ(row["vector"].get<std::vector<float>>(), rows[id]) << id;
  }
  Answer one =
      Post(port_, "entities/get", {{"collectionName", "c"}, {"id", 2}, {"outputFields", {"id"}}});
  ASSERT_EQ(one.body["data"].size(), 1u);
  EXPECT_FALSE(one.body["data"][0].contains("vector"));
  EXPECT_EQ(Post(port_, "entities/get", {{"collectionName", "c"}, {"id", {"x"}}}).code(), 1806);

  // Query: filters, limit, offset; rows ascending by key.
  Answer in =
      Post(port_, "entities/query",
           {{"collectionName", "c"}, {"filter", "id in [4, 2, 42]"}, {"outputFields", {"id"}}});
  ASSERT_EQ(in.code(), 0) << in.body.dump();
  EXPECT_EQ(in.body["data"], Json::parse(R"([{"id":2},{"id":4}])"));
  Answer page = Post(port_, "entities/query",
                     {{"collectionName", "c"},
                      {"filter", "id >= 0"},
                      {"limit", 2},
                      {"offset", 1},
                      {"outputFields", {"id"}}});
  EXPECT_EQ(page.body["data"], Json::parse(R"([{"id":2},{"id":3}])"));
  Answer all = Post(port_, "entities/query", {{"collectionName", "c"}, {"filter", ""}});
  ASSERT_EQ(all.code(), 0);
  EXPECT_EQ(all.body["data"].size(), 5u);  // default outputFields "*"
  EXPECT_TRUE(all.body["data"][0].contains("vector"));
  EXPECT_EQ(Count(port_, "c", "id > 2"), 3);
  EXPECT_EQ(Count(port_, "c", "id < -9223372036854775807"), 0);
  EXPECT_EQ(Count(port_, "c", " id  IN [ -1 ,5 ] "), 1);
  EXPECT_EQ(Count(port_, "c", "id != 4"), 4);
  EXPECT_EQ(
      Post(port_, "entities/query", {{"collectionName", "c"}, {"filter", ""}, {"limit", 0}}).code(),
      1100);  // an empty expression needs a limit
  EXPECT_EQ(
      Post(port_, "entities/query",
           {{"collectionName", "c"}, {"filter", "id >= 0"}, {"limit", 16000}, {"offset", 500}})
          .code(),
      1100);
  EXPECT_EQ(
      Post(port_, "entities/query", {{"collectionName", "c"}, {"outputFields", {"name"}}}).code(),
      1100);

  // Int64 values as strings when the client asks for it.
  Answer strings =
      Post(port_, "entities/query",
           {{"collectionName", "c"}, {"filter", "id in [1]"}, {"outputFields", {"id"}}},
           {{"Accept-Type-Allow-Int64", "false"}});
  EXPECT_EQ(strings.body["data"][0]["id"], "1");

  // Delete by keys counts the keys given.
  Answer del =
      Post(port_, "entities/delete", {{"collectionName", "c"}, {"filter", "id in [2, 3]"}});
  ASSERT_EQ(del.code(), 0) << del.body.dump();
  EXPECT_EQ(del.body["data"]["deleteCount"], 2);
  EXPECT_EQ(Count(port_, "c"), 3);
  Answer range = Post(port_, "entities/delete", {{"collectionName", "c"}, {"filter", "id >= 5"}});
  EXPECT_EQ(range.body["data"]["deleteCount"], 1);
  EXPECT_EQ(Count(port_, "c"), 2);
  EXPECT_EQ(Post(port_, "entities/delete", {{"collectionName", "c"}}).code(), 1802);

  // Upsert replaces and adds; the same key twice in one batch is refused.
  Answer upsert =
      Post(port_, "entities/upsert",
           {{"collectionName", "c"},
            {"data", Json::parse(R"([{"id":1,"vector":[0,2,0]},{"id":7,"vector":[3,0,0]}])")}});
  ASSERT_EQ(upsert.code(), 0) << upsert.body.dump();
  EXPECT_EQ(upsert.body["data"]["upsertCount"], 2);
  EXPECT_EQ(upsert.body["data"]["upsertIds"], Json::array({1, 7}));
  get = Post(port_, "entities/get", {{"collectionName", "c"}, {"id", {1}}});
  EXPECT_EQ(get.body["data"][0]["vector"], Json::array({0.0, 2.0, 0.0}));
  EXPECT_EQ(Count(port_, "c"), 3);
  EXPECT_EQ(
      Post(port_, "entities/upsert",
           {{"collectionName", "c"},
            {"data", Json::parse(R"([{"id":8,"vector":[1,0,0]},{"id":8,"vector":[0,1,0]}])")}})
          .code(),
      1100);
}

TEST_F(MilvusServerTest, InsertKeepsDuplicateKeysLikeMilvus) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("c", 2, "IP")));
  ASSERT_NO_FATAL_FAILURE(
      Insert("c", Json::parse(R"([{"id":1,"vector":[1,0]},{"id":2,"vector":[0,1]}])")));
  // Inserting key 1 again is accepted, and so is a key twice in one batch.
  ASSERT_NO_FATAL_FAILURE(Insert("c", Json::parse(R"([{"id":1,"vector":[2,0]}])")));
  ASSERT_NO_FATAL_FAILURE(
      Insert("c", Json::parse(R"([{"id":3,"vector":[1,1]},{"id":3,"vector":[3,3]}])")));
  // count(*) counts every row; get and search show one row per key, the newest.
  EXPECT_EQ(Count(port_, "c"), 5);
  Answer get = Post(port_, "entities/get", {{"collectionName", "c"}, {"id", {1, 3}}});
  ASSERT_EQ(get.body["data"].size(), 2u);
  EXPECT_EQ(get.body["data"][0]["vector"], Json::array({2.0, 0.0}));
  EXPECT_EQ(get.body["data"][1]["vector"], Json::array({3.0, 3.0}));
  Answer search = Post(port_, "entities/search",
                       {{"collectionName", "c"},
                        {"data", {{1, 0}}},
                        {"limit", 10},
                        {"searchParams", {{"params", {{"search_list", 100}}}}}});
  ASSERT_EQ(search.code(), 0) << search.body.dump();
  EXPECT_EQ(search.body["topks"], Json::array({3}));
  // The duplicates survive a restart, until compaction folds them away.
  server_->Stop();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  EXPECT_EQ(Count(port_, "c"), 5);
  Answer compact = Post(port_, "collections/compact", {{"collectionName", "c"}});
  ASSERT_EQ(compact.code(), 0) << compact.body.dump();
  EXPECT_TRUE(compact.body["data"].contains("compactionID"));
  EXPECT_EQ(Count(port_, "c"), 3);
  // Delete removes every row of a key.
  ASSERT_NO_FATAL_FAILURE(Insert("c", Json::parse(R"([{"id":2,"vector":[0,5]}])")));
  EXPECT_EQ(Count(port_, "c"), 4);
  ASSERT_EQ(
      Post(port_, "entities/delete", {{"collectionName", "c"}, {"filter", "id in [2]"}}).code(), 0);
  EXPECT_EQ(Count(port_, "c"), 2);
}

// Search answers the exact ranking: checked against a brute-force one, with
// one and several query vectors, offset and filters.
void CheckSearch(int port, const std::string& name, const std::string& metric,
                 const std::map<int64_t, std::vector<float>>& stored,
                 const std::vector<std::vector<float>>& queries, int limit, int offset,
                 const std::string& filter, const std::vector<int64_t>& allowed) {
  Json request = {{"collectionName", name},
                  {"data", queries},
                  {"annsField", "vector"},
                  {"limit", limit},
                  {"offset", offset},
                  {"filter", filter},
                  {"outputFields", {"id"}},
                  {"consistencyLevel", "Strong"},
                  {"searchParams", {{"metricType", metric}, {"params", {{"search_list", 200}}}}}};
  Answer a = Post(port, "entities/search", request);
  ASSERT_EQ(a.code(), 0) << a.body.dump();
  const Json& data = a.body["data"];
  const Json& topks = a.body["topks"];
  ASSERT_EQ(topks.size(), queries.size());
  size_t row = 0;
  for (size_t q = 0; q < queries.size(); ++q) {
    const std::vector<float> query = metric == "COSINE" ? Normalized(queries[q]) : queries[q];
    std::vector<std::pair<double, int64_t>> expected;
    for (const auto& [id, v] : stored) {
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), id) == allowed.end()) {
        continue;
      }
      expected.push_back({Dot(query, metric == "COSINE" ? Normalized(v) : v), id});
    }
    std::sort(expected.begin(), expected.end(), [](const auto& x, const auto& y) {
      return x.first != y.first ? x.first > y.first : x.second < y.second;
    });
    const size_t begin = std::min(expected.size(), static_cast<size_t>(offset));
    const size_t n = std::min(expected.size() - begin, static_cast<size_t>(limit));
    ASSERT_EQ(topks[q].get<size_t>(), n) << "query " << q;
    for (size_t i = 0; i < n; ++i, ++row) {
      ASSERT_LT(row, data.size());
      const auto& [score, id] = expected[begin + i];
      EXPECT_EQ(data[row]["id"].get<int64_t>(), id) << "query " << q << " rank " << i;
      EXPECT_NEAR(data[row]["distance"].get<double>(), score, 1e-4)
          << "query " << q << " rank " << i;
    }
  }
  EXPECT_EQ(row, data.size());
}

TEST_F(MilvusServerTest, SearchMatchesBruteForce) {
  constexpr int kDim = 16;
  std::mt19937 rng(7);
  for (const std::string metric : {"COSINE", "IP"}) {
    const std::string name = "s_" + metric;
    ASSERT_NO_FATAL_FAILURE(Create(CreateRequest(name, kDim, metric)));
    std::map<int64_t, std::vector<float>> stored;
    for (int64_t id = 0; id < 300; ++id) stored[id * 3 + 1] = RandomVector(rng, kDim);
    ASSERT_NO_FATAL_FAILURE(Insert(name, Rows(stored)));
    std::vector<std::vector<float>> queries;
    for (int q = 0; q < 4; ++q) queries.push_back(RandomVector(rng, kDim));

    SCOPED_TRACE(metric);
    CheckSearch(port_, name, metric, stored, {queries[0]}, 10, 0, "", {});
    CheckSearch(port_, name, metric, stored, queries, 7, 0, "", {});
    CheckSearch(port_, name, metric, stored, queries, 5, 3, "", {});
    CheckSearch(port_, name, metric, stored, queries, 5, 0, "id in [4, 7, 10, 13, 2]",
                {4, 7, 10, 13});
    std::vector<int64_t> small;
    for (const auto& [id, v] : stored) {
      if (id < 100) small.push_back(id);
    }
    CheckSearch(port_, name, metric, stored, queries, 8, 0, "id < 100", small);
    // A filter nothing matches: no rows at all.
    Answer none = Post(port_, "entities/search",
                       {{"collectionName", name}, {"data", {queries[0]}}, {"filter", "id in [2]"}});
    ASSERT_EQ(none.code(), 0);
    EXPECT_EQ(none.body["data"], Json::array());
  }
}

TEST_F(MilvusServerTest, SearchParametersAreValidatedLikeMilvus) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("disk", 2, "COSINE", "DISKANN")));
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("hnsw", 2, "COSINE", "HNSW")));
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("ivf", 2, "COSINE", "IVF_FLAT")));
  auto search = [&](const std::string& name, int limit, const Json& params,
                    const std::string& metric = "") {
    Json sp = {{"params", params}};
    if (!metric.empty()) sp["metricType"] = metric;
    return Post(
        port_, "entities/search",
        {{"collectionName", name}, {"data", {{1.0, 0.0}}}, {"limit", limit}, {"searchParams", sp}});
  };
  // DISKANN: search_list in [limit, max(200, 10 * limit)].
  EXPECT_EQ(search("disk", 10, {{"search_list", 10}}).code(), 0);
  EXPECT_EQ(search("disk", 10, {{"search_list", 200}}).code(), 0);
  Answer small = search("disk", 10, {{"search_list", 5}});
  EXPECT_EQ(small.code(), 1100);
  EXPECT_NE(small.message().find("search_list"), std::string::npos) << small.message();
  EXPECT_EQ(search("disk", 10, {{"search_list", 201}}).code(), 1100);
  EXPECT_EQ(search("disk", 50, {{"search_list", 500}}).code(), 0);
  // HNSW: ef >= limit. IVF_FLAT: nprobe in [1, 65536].
  EXPECT_EQ(search("hnsw", 10, {{"ef", 64}}).code(), 0);
  EXPECT_EQ(search("hnsw", 10, {{"ef", 5}}).code(), 1100);
  EXPECT_EQ(search("ivf", 10, {{"nprobe", 16}}).code(), 0);
  EXPECT_EQ(search("ivf", 10, {{"nprobe", 0}}).code(), 1100);
  // Another metric than the index's; limits out of range.
  EXPECT_EQ(search("disk", 10, Json::object(), "IP").code(), 1100);
  EXPECT_EQ(search("disk", 0, Json::object()).code(), 1100);
  EXPECT_EQ(search("disk", 20000, Json::object()).code(), 1100);
  EXPECT_EQ(Post(port_, "entities/search",
                 {{"collectionName", "disk"}, {"data", {{1.0, 0.0}}}, {"consistencyLevel", "Now"}})
                .code(),
            1100);
  EXPECT_EQ(
      Post(port_, "entities/search", {{"collectionName", "disk"}, {"data", Json::array()}}).code(),
      1100);
  EXPECT_EQ(Post(port_, "entities/search",
                 {{"collectionName", "disk"}, {"data", {{1.0, 0.0}}}, {"annsField", "other"}})
                .code(),
            1801);
}

TEST_F(MilvusServerTest, ErrorsUseMilvusCodes) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("c", 4)));
  const Json vec4 = Json::array({1, 2, 3, 4});
  // A missing collection: 100 from every verb that needs one.
  for (const auto& [path, body] : std::vector<std::pair<std::string, Json>>{
           {"collections/describe", {{"collectionName", "nope"}}},
           {"collections/load", {{"collectionName", "nope"}}},
           {"collections/get_load_state", {{"collectionName", "nope"}}},
           {"entities/insert",
            {{"collectionName", "nope"}, {"data", {{{"id", 1}, {"vector", vec4}}}}}},
           {"entities/upsert",
            {{"collectionName", "nope"}, {"data", {{{"id", 1}, {"vector", vec4}}}}}},
           {"entities/delete", {{"collectionName", "nope"}, {"filter", "id in [1]"}}},
           {"entities/get", {{"collectionName", "nope"}, {"id", {1}}}},
           {"entities/query", {{"collectionName", "nope"}, {"filter", "id >= 0"}}},
           {"entities/search", {{"collectionName", "nope"}, {"data", {vec4}}}},
       }) {
    Answer a = Post(port_, path, body);
    EXPECT_EQ(a.status, 200) << path;
    EXPECT_EQ(a.code(), 100) << path << " " << a.body.dump();
  }
  // Wrong dimensions: 1804 on insert, 1801 on search (as Milvus decodes them).
  Answer insert = Post(port_, "entities/insert",
                       {{"collectionName", "c"}, {"data", {{{"id", 1}, {"vector", {1, 2}}}}}});
  EXPECT_EQ(insert.code(), 1804) << insert.body.dump();
  EXPECT_NE(insert.message().find("dimension"), std::string::npos);
  Answer search = Post(port_, "entities/search", {{"collectionName", "c"}, {"data", {{1, 2}}}});
  EXPECT_EQ(search.code(), 1801) << search.body.dump();
  EXPECT_NE(search.message().find("dimension: 4"), std::string::npos);
  // Bad rows: a missing or non-integer key, a missing vector, a string in the
  // vector, an extra field without a dynamic schema, no rows at all.
  for (const char* rows :
       {R"([{"vector":[1,2,3,4]}])", R"([{"id":1.5,"vector":[1,2,3,4]}])", R"([{"id":1}])",
        R"([{"id":1,"vector":[1,"x",3,4]}])", R"([{"id":1,"vector":[1,2,3,4],"label":"cat"}])",
        R"([])", R"([{"id":1,"vector":[1e39,2,3,4]}])"}) {
    Answer a =
        Post(port_, "entities/insert", {{"collectionName", "c"}, {"data", Json::parse(rows)}});
    EXPECT_EQ(a.code(), 1804) << rows << " " << a.body.dump();
  }
  EXPECT_EQ(Count(port_, "c"), 0);  // nothing of a refused batch was kept
  // Malformed requests.
  EXPECT_EQ(PostRaw(port_, "entities/query", "{\"collectionName\": ").code(), 1801);
  EXPECT_EQ(PostRaw(port_, "entities/query", "").code(), 1801);
  EXPECT_EQ(PostRaw(port_, "entities/query", "[1, 2]").code(), 1801);
  EXPECT_EQ(Post(port_, "entities/query", {{"filter", "id >= 0"}}).code(), 1802);
  EXPECT_EQ(Post(port_, "entities/query", {{"collectionName", 5}}).code(), 1801);
  EXPECT_EQ(Post(port_, "entities/query", {{"collectionName", "c"}, {"limit", "ten"}}).code(),
            1801);
  EXPECT_EQ(Post(port_, "entities/insert", {{"collectionName", "c"}, {"data", {1, 2}}}).code(),
            1801);
  EXPECT_EQ(Post(port_, "entities/search", {{"collectionName", "c"}}).code(), 1802);
  // Values nested deep enough to overflow a recursive walk are refused.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(
      PostRaw(port_, "entities/search", R"({"collectionName":"c","data":)" + deep + "}").code(),
      1801);
  EXPECT_EQ(PostRaw(port_, "entities/insert",
                    R"({"collectionName":"c","data":[{"id":1,"vector":)" + deep + "}]}")
                .code(),
            1804);
  EXPECT_EQ(PostRaw(port_, "entities/query", std::string(1000000, '[')).code(), 1801);
  Json deep_index = CreateRequest("deep", 4);
  deep_index["indexParams"][0]["params"]["M"] = "DEEP";
  std::string deep_text = deep_index.dump();
  deep_text.replace(deep_text.find("\"DEEP\""), 6, deep);
  EXPECT_EQ(PostRaw(port_, "collections/create", deep_text).code(), 1100);
  // Filters beyond what pixseek sends are refused clearly.
  for (const char* filter : {"id in [1, 2", "id like 3", "id >= 1 and id < 5", "vector == 3",
                             "id in [1, x]", "id < -9223372036854775808"}) {
    Answer a = Post(port_, "entities/query", {{"collectionName", "c"}, {"filter", filter}});
    EXPECT_EQ(a.code(), 1100) << filter;
    EXPECT_NE(a.message().find("cannot parse expression"), std::string::npos) << a.message();
  }
  // Only the default database and partition exist.
  EXPECT_EQ(Post(port_, "collections/has", {{"collectionName", "c"}, {"dbName", "other"}}).code(),
            800);
  EXPECT_EQ(
      Post(port_, "entities/query", {{"collectionName", "c"}, {"partitionNames", {"p1"}}}).code(),
      200);
  // Unknown paths answer like Milvus's router.
  Answer unknown = Post(port_, "collections/rename_everything", {{"collectionName", "c"}});
  EXPECT_EQ(unknown.status, 404);
  // A body over the limit is refused with an envelope, and the server lives on.
  std::string huge = R"({"collectionName":"c","data":[)" + std::string(65u << 20, ' ') + "]}";
  Answer big = PostRaw(port_, "entities/insert", huge);
  EXPECT_EQ(big.status, 200);
  EXPECT_EQ(big.code(), 1102) << big.body.dump();
  EXPECT_EQ(Post(port_, "collections/has", {{"collectionName", "c"}}).code(), 0);
}

TEST_F(MilvusServerTest, UnloadedCollectionCannotBeSearched) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("c", 2, "COSINE", "DISKANN", /*with_index=*/false)));
  Answer state = Post(port_, "collections/get_load_state", {{"collectionName", "c"}});
  EXPECT_EQ(state.body["data"]["loadState"], "LoadStateNotLoad");
  // Writes work without loading; search, query and get do not.
  ASSERT_NO_FATAL_FAILURE(
      Insert("c", Json::parse(R"([{"id":1,"vector":[3,4]},{"id":2,"vector":[0,1]}])")));
  Answer search = Post(port_, "entities/search", {{"collectionName", "c"}, {"data", {{1, 0}}}});
  EXPECT_EQ(search.code(), 101) << search.body.dump();
  EXPECT_NE(search.message().find("collection not loaded"), std::string::npos);
  EXPECT_EQ(Post(port_, "entities/query", {{"collectionName", "c"}, {"filter", "id >= 0"}}).code(),
            101);
  EXPECT_EQ(Post(port_, "entities/get", {{"collectionName", "c"}, {"id", {1}}}).code(), 101);
  // No index, no load.
  EXPECT_EQ(Post(port_, "collections/load", {{"collectionName", "c"}}).code(), 700);
  Answer index = Post(port_, "indexes/create",
                      {{"collectionName", "c"},
                       {"indexParams",
                        {{{"fieldName", "vector"},
                          {"indexName", "vi"},
                          {"metricType", "COSINE"},
                          {"indexType", "HNSW"},
                          {"params", {{"M", 16}, {"efConstruction", 200}}}}}}});
  ASSERT_EQ(index.code(), 0) << index.body.dump();
  ASSERT_EQ(Post(port_, "collections/load", {{"collectionName", "c"}}).code(), 0);
  state = Post(port_, "collections/get_load_state", {{"collectionName", "c"}});
  EXPECT_EQ(state.body["data"]["loadState"], "LoadStateLoaded");
  // Rows inserted before the COSINE index are searched normalised.
  search =
      Post(port_, "entities/search", {{"collectionName", "c"}, {"data", {{1, 0}}}, {"limit", 1}});
  ASSERT_EQ(search.code(), 0) << search.body.dump();
  EXPECT_EQ(search.body["data"][0]["id"], 1);
  EXPECT_NEAR(search.body["data"][0]["distance"].get<double>(), 0.6, 1e-5);
  // An index cannot be dropped while loaded.
  EXPECT_EQ(Post(port_, "indexes/drop", {{"collectionName", "c"}, {"indexName", "vi"}}).code(),
            1100);
  // The load state survives a restart.
  ASSERT_EQ(Post(port_, "collections/release", {{"collectionName", "c"}}).code(), 0);
  server_->Stop();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  EXPECT_EQ(Post(port_, "entities/search", {{"collectionName", "c"}, {"data", {{1, 0}}}}).code(),
            101);
  ASSERT_EQ(Post(port_, "collections/load", {{"collectionName", "c"}}).code(), 0);
  server_->Stop();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  EXPECT_EQ(Post(port_, "entities/search", {{"collectionName", "c"}, {"data", {{1, 0}}}}).code(),
            0);
}

TEST_F(MilvusServerTest, BearerTokenIsRequiredWhenSet) {
  server_->Stop();
  ASSERT_NO_FATAL_FAILURE(StartServer("root:Milvus"));
  const Json body = {{"collectionName", "c"}};
  for (const httplib::Headers& headers :
       {httplib::Headers{}, httplib::Headers{{"Authorization", "Bearer root:wrong"}},
        httplib::Headers{{"Authorization", "root:Milvus"}},
        httplib::Headers{{"Authorization", "Bearer root:Milvus2"}}}) {
    Answer a = Post(port_, "collections/has", body, headers);
    EXPECT_EQ(a.status, 401);
    EXPECT_EQ(a.code(), 1800);
    EXPECT_EQ(a.message(), "user hasn't authenticated");
  }
  Answer ok = Post(port_, "collections/has", body, {{"Authorization", "Bearer root:Milvus"}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.code(), 0);
}

TEST_F(MilvusServerTest, CollectionsPersistAcrossRestart) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("a", 4, "IP", "HNSW")));
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("b", 3, "COSINE")));
  std::mt19937 rng(3);
  std::map<int64_t, std::vector<float>> a_rows;
  for (int64_t id = 1; id <= 50; ++id) a_rows[id] = RandomVector(rng, 4);
  ASSERT_NO_FATAL_FAILURE(Insert("a", Rows(a_rows)));
  ASSERT_NO_FATAL_FAILURE(Insert("b", Json::parse(R"([{"id":9,"vector":[1,0,0]}])")));
  ASSERT_EQ(
      Post(port_, "entities/delete", {{"collectionName", "a"}, {"filter", "id in [1, 2]"}}).code(),
      0);
  a_rows.erase(1);
  a_rows.erase(2);

  // A second server cannot open the same directory while the first runs.
  MilvusTestServer second(MilvusTestServerOptions{dir_.path(), 0, ""});
  EXPECT_NE(second.Start(), "");

  server_->Stop();
  server_->Stop();  // idempotent
  ASSERT_NO_FATAL_FAILURE(StartServer());
  EXPECT_EQ(Post(port_, "collections/list", Json::object()).body["data"], Json::array({"a", "b"}));
  EXPECT_EQ(Count(port_, "a"), 48);
  Answer get = Post(port_, "entities/get", {{"collectionName", "a"}, {"id", {3, 50, 1}}});
  ASSERT_EQ(get.body["data"].size(), 2u);
  EXPECT_EQ(get.body["data"][0]["vector"].get<std::vector<float>>(), a_rows[3]);
  EXPECT_EQ(get.body["data"][1]["vector"].get<std::vector<float>>(), a_rows[50]);
  Answer index =
      Post(port_, "indexes/describe", {{"collectionName", "a"}, {"indexName", "vector_index"}});
  EXPECT_EQ(index.body["data"][0]["indexType"], "HNSW");
  EXPECT_EQ(index.body["data"][0]["metricType"], "IP");
  CheckSearch(port_, "a", "IP", a_rows, {RandomVector(rng, 4)}, 5, 0, "", {});
  EXPECT_EQ(Count(port_, "b"), 1);

  // A damaged catalogue stops the start with a message naming it.
  server_->Stop();
  WriteBytes(dir_.path() / "b.json", {'{', 'x'});
  MilvusTestServer damaged(MilvusTestServerOptions{dir_.path(), 0, ""});
  const std::string error = damaged.Start();
  EXPECT_NE(error.find("b.json"), std::string::npos) << error;
}

TEST_F(MilvusServerTest, ServesConcurrentClients) {
  ASSERT_NO_FATAL_FAILURE(Create(CreateRequest("c", 8, "IP")));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < 25; ++i) {
        const int64_t id = t * 1000 + i;
        Json rows = Json::array({Json{{"id", id}, {"vector", RandomVector(rng, 8)}}});
        if (Post(port_, "entities/insert", {{"collectionName", "c"}, {"data", rows}}).code() != 0) {
          ++failures;
        }
        Answer s = Post(port_, "entities/search",
                        {{"collectionName", "c"}, {"data", {RandomVector(rng, 8)}}, {"limit", 3}});
        if (s.code() != 0) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Count(port_, "c"), 100);
}

// The executable: started, killed with SIGTERM, started again on the same
// directory and port, with the data still there.
TEST(MilvusServerExecutableTest, RestartsAfterSigterm) {
  TempDir dir;
  auto start = [&](int port) {
    auto child = std::make_unique<ChildProcess>(
        std::vector<std::string>{PIXSEEK_MILVUS_TEST_SERVER_BIN, "--dir", dir.path().string(),
                                 "--port", std::to_string(port), "--token", "secret"});
    const std::string line = child->WaitForLine("listening on 127.0.0.1:", 20000);
    EXPECT_FALSE(line.empty()) << child->stderr_text();
    return std::make_pair(std::move(child),
                          line.empty() ? -1 : std::stoi(line.substr(line.rfind(':') + 1)));
  };
  const httplib::Headers auth = {{"Authorization", "Bearer secret"}};
  auto [first, port] = start(0);
  ASSERT_GT(port, 0);
  ASSERT_EQ(Post(port, "collections/create", CreateRequest("c", 2), auth).code(), 0);
  ASSERT_EQ(
      Post(port, "entities/insert",
           {{"collectionName", "c"}, {"data", Json::parse(R"([{"id":5,"vector":[1,0]}])")}}, auth)
          .code(),
      0);
  EXPECT_EQ(Post(port, "collections/has", {{"collectionName", "c"}}).status, 401);
  EXPECT_EQ(first->Stop(SIGTERM), 0) << first->stderr_text();
  EXPECT_EQ(Post(port, "collections/has", {{"collectionName", "c"}}, auth).status, -1);

  auto [second, port2] = start(port);
  ASSERT_EQ(port2, port);
  Answer count =
      Post(port, "entities/query", {{"collectionName", "c"}, {"outputFields", {"count(*)"}}}, auth);
  ASSERT_EQ(count.code(), 0) << count.body.dump();
  EXPECT_EQ(count.body["data"][0]["count(*)"], 1);
  EXPECT_EQ(second->Stop(SIGINT), 0) << second->stderr_text();

  // Bad arguments and an unusable directory fail with a message.
  CommandResult no_dir = RunCommand({PIXSEEK_MILVUS_TEST_SERVER_BIN});
  EXPECT_EQ(no_dir.exit_code, 2);
  WriteBytes(dir.path() / "file", {1});
  CommandResult bad_dir =
      RunCommand({PIXSEEK_MILVUS_TEST_SERVER_BIN, "--dir", (dir.path() / "file").string()});
  EXPECT_EQ(bad_dir.exit_code, 1);
  EXPECT_FALSE(bad_dir.err.empty());
}

}  // namespace
}  // namespace pixseek::testing
