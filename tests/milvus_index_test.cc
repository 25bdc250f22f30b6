// The milvus index beyond the shared VectorIndex suite (vector_index_test.cc
// runs that suite on it): its URL and the secrets in it, authentication,
// a collection of another dimension or metric, Milvus going away and coming
// back, AlreadyExists across requests, filters of several chunks, read-only
// opens, the other Milvus index types and `pixseek check`'s report. Against
// the Milvus test server (milvus_server.h) on 127.0.0.1.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "index/milvus_client.h"
#include "milvus_server.h"
#include "pixseek/vector_index.h"
#include "test_util.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using milvus::MilvusEndpoint;
using milvus::ParseMilvusUrl;
using milvus::RedactMilvusUrl;
using pixseek::testing::MilvusTestServer;
using pixseek::testing::MilvusTestServerOptions;
using pixseek::testing::TempDir;

constexpr const char* kSecret = "s3cr3t-Pw";

std::vector<float> UnitVectors(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) {
      out[i * dim + d] = normal(rng);
      norm += double{out[i * dim + d]} * out[i * dim + d];
    }
    for (size_t d = 0; d < dim; ++d) out[i * dim + d] /= static_cast<float>(std::sqrt(norm));
  }
  return out;
}

// Opens the milvus kind through the registry, as a database does, with the
// kind's defaults overlaid by `given`.
Result<std::unique_ptr<VectorIndex>> OpenMilvus(const std::string& url, int dimension,
                                                const std::map<std::string, ParamValue>& given = {},
                                                bool read_only = false) {
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* kind, FindVectorIndexKind("milvus"));
  IndexParams params;
  for (const auto& [name, value] : given) params.Set(name, value, "test");
  VectorIndexSpec spec;
  spec.kind = "milvus";
  spec.url = url;
  spec.dimension = dimension;
  spec.read_only = read_only;
  PIXSEEK_ASSIGN_OR_RETURN(spec.params, MergeParams("milvus", kind->params, {}, params, false));
  return OpenVectorIndex(spec);
}

std::string StatText(const IndexStat& stat) {
  return std::visit(
      [](const auto& v) {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string>) {
          return v;
        } else {
          return std::to_string(v);
        }
      },
      stat.value);
}

// A server on a temporary directory; Restart keeps its port and data.
class MilvusIndexTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(""); }

  void StartServer(const std::string& token, int port = 0) {
    MilvusTestServerOptions options;
    options.dir = dir_.path() / "milvus";
    options.port = port;
    options.token = token;
    server_ = std::make_unique<MilvusTestServer>(options);
    ASSERT_EQ(server_->Start(), "");
  }

  std::string Url(const std::string& collection) const { return server_->url(collection); }
  // The URL with credentials: milvus://USER:PASSWORD@127.0.0.1:PORT/COLLECTION.
  std::string UrlWith(const std::string& userinfo, const std::string& collection) const {
    return "milvus://" + userinfo + "@127.0.0.1:" + std::to_string(server_->port()) + "/" +
           collection;
  }

  TempDir dir_;
  std::unique_ptr<MilvusTestServer> server_;
};

TEST(MilvusUrlTest, ParsesEveryForm) {
  auto plain = ParseMilvusUrl("milvus://db.example:19531/images");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->host, "db.example");
  EXPECT_EQ(plain->port, 19531);
  EXPECT_EQ(plain->collection, "images");
  EXPECT_EQ(plain->database, "");
  EXPECT_EQ(plain->token, "");
  EXPECT_EQ(plain->display, "milvus://db.example:19531/images");

  auto defaults = ParseMilvusUrl("milvus://localhost/_c1");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->port, milvus::kDefaultPort);

  auto user = ParseMilvusUrl(std::string("milvus://root:") + kSecret + "@h:1/prod/images");
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(user->token, std::string("root:") + kSecret);
  EXPECT_EQ(user->database, "prod");
  EXPECT_EQ(user->collection, "images");
  EXPECT_EQ(user->display, "milvus://root@h:1/prod/images");

  // Percent-encoded passwords are decoded; a token wins over userinfo.
  auto encoded = ParseMilvusUrl("milvus://u:p%40ss@h/c");
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(encoded->token, "u:p@ss");
  auto token = ParseMilvusUrl(std::string("milvus://u:x@h/c?token=") + kSecret);
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->token, kSecret);
  EXPECT_EQ(token->display.find(kSecret), std::string::npos);
}

TEST(MilvusUrlTest, BadUrlsNeverShowTheSecret) {
  const std::string secret(kSecret);
  for (const std::string& url :
       {"http://u:" + secret + "@h/c", "milvus://u:" + secret + "@h",
        "milvus://u:" + secret + "@h/", "milvus://u:" + secret + "@h/1abc",
        "milvus://u:" + secret + "@h/a-b", "milvus://u:" + secret + "@h/db-1/c",
        "milvus://h/c?token=" + secret + "&tls=1", "milvus://u:" + secret + "@h:99999/c",
        "milvus://u:" + secret + "@/c", "not a url " + secret,
        "milvus://h/" + std::string(256, 'x')}) {
    SCOPED_TRACE(RedactMilvusUrl(url));
    auto parsed = ParseMilvusUrl(url);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(parsed.status().message().find(secret), std::string::npos)
        << parsed.status().message();
  }
}

TEST(MilvusUrlTest, Redaction) {
  EXPECT_EQ(RedactMilvusUrl(std::string("milvus://root:") + kSecret + "@h:19530/c"),
            "milvus://root:***@h:19530/c");
  EXPECT_EQ(RedactMilvusUrl(std::string("milvus://h/c?token=") + kSecret),
            "milvus://h/c?token=***");
  EXPECT_EQ(RedactMilvusUrl(std::string("milvus://h/c?a=1&token=") + kSecret + "&b=2"),
            "milvus://h/c?a=1&token=***&b=2");
  EXPECT_EQ(RedactMilvusUrl("milvus://h/c"), "milvus://h/c");
  EXPECT_EQ(RedactMilvusUrl("::not a url::"), "<unparsable URL>");
}

TEST(MilvusUrlTest, ErrorCodes) {
  EXPECT_EQ(milvus::MilvusErrorCode(100), StatusCode::kNotFound);
  EXPECT_EQ(milvus::MilvusErrorCode(2), StatusCode::kUnavailable);
  EXPECT_EQ(milvus::MilvusErrorCode(10001), StatusCode::kUnavailable);
  EXPECT_EQ(milvus::MilvusErrorCode(503), StatusCode::kUnavailable);
  EXPECT_EQ(milvus::MilvusErrorCode(1100), StatusCode::kInvalidArgument);
  EXPECT_EQ(milvus::MilvusErrorCode(1804), StatusCode::kInvalidArgument);
  EXPECT_EQ(milvus::MilvusErrorCode(1800), StatusCode::kUnauthenticated);
  EXPECT_EQ(milvus::MilvusErrorCode(1401), StatusCode::kPermissionDenied);
  EXPECT_EQ(milvus::MilvusErrorCode(9), StatusCode::kResourceExhausted);
  EXPECT_EQ(milvus::MilvusErrorCode(65535), StatusCode::kInternal);
}

TEST(MilvusRegistryTest, KindParametersAndBadSpecs) {
  auto kind = FindVectorIndexKind("milvus");
  ASSERT_TRUE(kind.ok());
  EXPECT_STREQ((*kind)->files, "");
  for (const char* name :
       {"milvus_index", "metric", "search_list", "ef", "nprobe", "hnsw_m", "ef_construction",
        "nlist", "timeout_ms", "milvus_batch_rows", "filter_chunk"}) {
    EXPECT_NE(FindParam((*kind)->params, name), nullptr) << name;
  }
  // No URL, a bad URL, a bad dimension and a parameter out of range never
  // reach a server.
  VectorIndexSpec spec;
  spec.kind = "milvus";
  spec.dimension = 8;
  auto no_url = OpenVectorIndex(spec);
  EXPECT_EQ(no_url.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(no_url.status().message().find("milvus://"), std::string::npos);
  EXPECT_EQ(OpenMilvus("redis://h/c", 8).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenMilvus("milvus://127.0.0.1:1/c", 0).status().code(), StatusCode::kInvalidArgument);
  spec.url = "milvus://127.0.0.1:1/c";
  spec.params.Set("milvus_batch_rows", int64_t{0}, "test");
  auto bad = OpenVectorIndex(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("milvus_batch_rows"), std::string::npos);
}

TEST_F(MilvusIndexTest, CreatesChecksAndReopensTheCollection) {
  {
    auto index = OpenMilvus(Url("photos"), 16);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    EXPECT_EQ((*index)->kind(), "milvus");
    auto data = UnitVectors(3, 16, 1);
    std::vector<int64_t> ids = {5, 6, 7};
    ASSERT_TRUE((*index)->Add(3, ids.data(), data.data()).ok());
    std::map<std::string, std::string> stats;
    for (const IndexStat& s : (*index)->Stats()) stats[s.name] = StatText(s);
    EXPECT_EQ(stats["milvus_collection"], "photos");
    EXPECT_EQ(stats["milvus_index"], "DISKANN");
    EXPECT_EQ(stats["metric"], "COSINE");
    EXPECT_EQ(stats["vectors"], "3");
  }
  // Another dimension: what the collection holds and what the database needs.
  auto wider = OpenMilvus(Url("photos"), 32);
  ASSERT_FALSE(wider.ok());
  EXPECT_EQ(wider.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wider.status().message().find("16-dimensional"), std::string::npos);
  EXPECT_NE(wider.status().message().find("32-dimensional"), std::string::npos);
  // Another metric.
  auto ip = OpenMilvus(Url("photos"), 16, {{"metric", std::string("IP")}});
  ASSERT_FALSE(ip.ok());
  EXPECT_EQ(ip.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(ip.status().message().find("COSINE"), std::string::npos);
  EXPECT_NE(ip.status().message().find("IP"), std::string::npos);
  // Still all there.
  auto again = OpenMilvus(Url("photos"), 16);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Ids(), (std::vector<int64_t>{5, 6, 7}));
}

TEST_F(MilvusIndexTest, HnswAndIvfFlatAreSelectable) {
  for (const char* type : {"HNSW", "IVF_FLAT"}) {
    SCOPED_TRACE(type);
    const std::string collection = std::string("c_") + type;
    auto index = OpenMilvus(Url(collection), 24,
                            {{"milvus_index", std::string(type)},
                             {"metric", std::string("IP")},
                             {"hnsw_m", int64_t{8}},
                             {"nlist", int64_t{4}},
                             {"nprobe", int64_t{4}}});
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    auto data = UnitVectors(40, 24, 2);
    std::vector<int64_t> ids(40);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i) * 3;
    ASSERT_TRUE((*index)->Add(ids.size(), ids.data(), data.data()).ok());
    bool named = false;
    for (const IndexStat& s : (*index)->Stats()) {
      if (s.name == "milvus_index") named = StatText(s) == type;
    }
    EXPECT_TRUE(named);
    SearchParams wide;
    wide.search_list = 100;
    for (const SearchParams& params : {SearchParams{}, wide}) {
      std::vector<std::vector<SearchHit>> results;
      ASSERT_TRUE((*index)->Search(1, data.data() + 5 * 24, 3, params, &results).ok());
      ASSERT_EQ(results[0].size(), 3u);
      EXPECT_EQ(results[0][0].id, 15);
      EXPECT_NEAR(results[0][0].score, 1.0f, 1e-5);
    }
  }
}

TEST_F(MilvusIndexTest, PasswordNeverShownAndTokenSent) {
  const std::string token = std::string("root:") + kSecret;
  server_->Stop();
  StartServer(token);
  // user:password in the URL is the Bearer token.
  {
    auto index = OpenMilvus(UrlWith(token, "secure"), 8);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    auto data = UnitVectors(2, 8, 3);
    std::vector<int64_t> ids = {1, 2};
    ASSERT_TRUE((*index)->Add(2, ids.data(), data.data()).ok());
    for (const IndexStat& s : (*index)->Stats()) {
      EXPECT_EQ(StatText(s).find(kSecret), std::string::npos) << s.name;
    }
    // Errors after the server went away do not show it either.
    const int port = server_->port();
    server_->Stop();
    std::vector<std::vector<SearchHit>> results;
    Status down = (*index)->Search(1, data.data(), 1, &results);
    EXPECT_EQ(down.code(), StatusCode::kUnavailable);
    EXPECT_EQ(down.message().find(kSecret), std::string::npos) << down.message();
    EXPECT_NE(down.message().find("root@127.0.0.1"), std::string::npos) << down.message();
    StartServer(token, port);
  }
  // ?token= works the same.
  {
    auto index = OpenMilvus(Url("secure") + "?token=" + token, 8);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    EXPECT_EQ((*index)->size(), 2u);
  }
  // No credential, a wrong one: Unauthenticated, and no secret in the message.
  auto none = OpenMilvus(Url("secure"), 8);
  EXPECT_EQ(none.status().code(), StatusCode::kUnauthenticated);
  auto wrong = OpenMilvus(UrlWith(std::string("root:") + kSecret + "x", "secure"), 8);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong.status().message().find(kSecret), std::string::npos) << wrong.status().message();
}

TEST_F(MilvusIndexTest, UnavailableWithinTheTimeoutThenRecovers) {
  auto opened = OpenMilvus(Url("flaky"), 8, {{"timeout_ms", int64_t{500}}});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<VectorIndex> index = std::move(opened).value();
  auto data = UnitVectors(4, 8, 4);
  std::vector<int64_t> ids = {1, 2, 3, 4};
  ASSERT_TRUE(index->Add(2, ids.data(), data.data()).ok());

  // Stopped: refused at once.
  const int port = server_->port();
  server_->Stop();
  std::vector<std::vector<SearchHit>> results;
  EXPECT_EQ(index->Search(1, data.data(), 2, &results).code(), StatusCode::kUnavailable);
  EXPECT_EQ(index->Add(2, ids.data() + 2, data.data() + 16).code(), StatusCode::kUnavailable);
  EXPECT_EQ(index->Get(1).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(OpenMilvus(Url("flaky"), 8).status().code(), StatusCode::kUnavailable);

  // A listener that never answers: bounded by timeout_ms.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  // As httplib's listener, so that the port is free again at once.
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  ASSERT_EQ(::listen(fd, 16), 0);
  const auto start = std::chrono::steady_clock::now();
  Status hung = index->Search(1, data.data(), 2, &results);
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_EQ(hung.code(), StatusCode::kUnavailable) << hung.ToString();
  EXPECT_GE(took, std::chrono::milliseconds(400));
  EXPECT_LT(took, std::chrono::milliseconds(3000));

  // Back on the same port and data: the same index object works again, and
  // nothing acknowledged was lost.
  StartServer("", port);
  ASSERT_TRUE(index->Search(1, data.data(), 2, &results).ok());
  ASSERT_EQ(results[0].size(), 2u);
  EXPECT_EQ(results[0][0].id, 1);
  ASSERT_TRUE(index->Add(2, ids.data() + 2, data.data() + 16).ok());
  EXPECT_EQ(index->Ids(), ids);
}

TEST_F(MilvusIndexTest, AlreadyExistsAddsNothingAcrossRequests) {
  // Three rows a request: the clash is in the last request of the batch.
  auto opened = OpenMilvus(Url("dups"), 8, {{"milvus_batch_rows", int64_t{3}}});
  ASSERT_TRUE(opened.ok());
  std::unique_ptr<VectorIndex> index = std::move(opened).value();
  auto data = UnitVectors(10, 8, 5);
  std::vector<int64_t> first = {100, 101, 102, 103, 104, 105, 106};
  ASSERT_TRUE(index->Add(first.size(), first.data(), data.data()).ok());
  EXPECT_EQ(index->size(), 7u);
  std::vector<int64_t> clash = {1, 2, 3, 4, 5, 6, 106};
  Status added = index->Add(clash.size(), clash.data(), data.data());
  EXPECT_EQ(added.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(added.message().find("106"), std::string::npos);
  EXPECT_EQ(index->Ids(), first);
  EXPECT_EQ(index->Get(1).status().code(), StatusCode::kNotFound);
  // The extreme ids are ids like any other.
  std::vector<int64_t> extremes = {std::numeric_limits<int64_t>::min(),
                                   std::numeric_limits<int64_t>::max()};
  ASSERT_TRUE(index->Add(2, extremes.data(), data.data() + 7 * 8).ok());
  EXPECT_EQ(index->Add(1, extremes.data(), data.data()).code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(index->Get(extremes[0]).ok());
  ASSERT_TRUE(index->Remove(extremes).ok());
  EXPECT_EQ(index->Get(extremes[0]).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(index->Ids(), first);
}

TEST_F(MilvusIndexTest, FiltersLargerThanOneChunk) {
  const size_t n = 60, dim = 12, k = 5;
  // Seven ids per `id in [...]`: a filter of 30 is five requests, merged.
  auto opened = OpenMilvus(Url("filtered"), dim,
                           {{"filter_chunk", int64_t{7}}, {"milvus_batch_rows", int64_t{16}}});
  ASSERT_TRUE(opened.ok());
  std::unique_ptr<VectorIndex> index = std::move(opened).value();
  auto data = UnitVectors(n + 1, dim, 6);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i) * 10;
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  const int64_t min_id = std::numeric_limits<int64_t>::min();
  ASSERT_TRUE(index->Add(1, &min_id, data.data() + n * dim).ok());
  ASSERT_TRUE(index->Remove(std::vector<int64_t>{20, 40}).ok());

  std::vector<int64_t> allowed = {min_id, 20, 40, 7, 99999};  // removed and unknown ids
  for (size_t i = 0; i < n; i += 2) allowed.push_back(ids[i]);
  const IdFilter filter(allowed);
  SearchParams params;
  params.filter = &filter;
  auto queries = UnitVectors(4, dim, 7);
  std::copy_n(data.data() + n * dim, dim, queries.begin());  // the min id's own vector
  std::vector<std::vector<SearchHit>> results;
  ASSERT_TRUE(index->Search(4, queries.data(), k, params, &results).ok());
  for (size_t q = 0; q < 4; ++q) {
    // Brute force over the live allowed ids.
    std::vector<SearchHit> want;
    const auto score = [&](size_t row) {
      double s = 0;
      for (size_t d = 0; d < dim; ++d) s += double{queries[q * dim + d]} * data[row * dim + d];
      return static_cast<float>(s);
    };
    for (size_t i = 0; i < n; ++i) {
      if (filter.Contains(ids[i]) && ids[i] != 20 && ids[i] != 40) {
        want.push_back({ids[i], score(i)});
      }
    }
    want.push_back({min_id, score(n)});
    std::sort(want.begin(), want.end(), [](const SearchHit& a, const SearchHit& b) {
      return a.score > b.score || (a.score == b.score && a.id < b.id);
    });
    want.resize(k);
    ASSERT_EQ(results[q].size(), k);
    for (size_t i = 0; i < k; ++i) {
      EXPECT_EQ(results[q][i].id, want[i].id) << "query " << q << " rank " << i;
      EXPECT_NEAR(results[q][i].score, want[i].score, 1e-4);
    }
  }
  EXPECT_EQ(results[0][0].id, min_id);
}

// Ids pages through Milvus's query window (16384 rows a request).
TEST_F(MilvusIndexTest, IdsPageThroughMoreThanOneQueryWindow) {
  const size_t n = 16384 + 300;
  auto opened = OpenMilvus(Url("large"), 2, {{"milvus_batch_rows", int64_t{5000}}});
  ASSERT_TRUE(opened.ok());
  std::unique_ptr<VectorIndex> index = std::move(opened).value();
  std::vector<float> data(n * 2);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) {
    // Ids added in scrambled order, negative ones included.
    ids[i] = static_cast<int64_t>((i * 7919) % n) - 1000;
    data[2 * i] = std::cos(static_cast<float>(i));
    data[2 * i + 1] = std::sin(static_cast<float>(i));
  }
  ASSERT_TRUE(index->Add(n, ids.data(), data.data()).ok());
  std::vector<int64_t> want = ids;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(index->Ids(), want);
  EXPECT_EQ(index->size(), n);
}

TEST_F(MilvusIndexTest, ReadOnlyCreatesAndChangesNothing) {
  auto missing = OpenMilvus(Url("absent"), 8, {}, /*read_only=*/true);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  // The refused open created nothing.
  EXPECT_EQ(OpenMilvus(Url("absent"), 8, {}, true).status().code(), StatusCode::kNotFound);
  auto writer = OpenMilvus(Url("shared"), 8);
  ASSERT_TRUE(writer.ok());
  auto data = UnitVectors(2, 8, 8);
  std::vector<int64_t> ids = {1, 2};
  ASSERT_TRUE((*writer)->Add(2, ids.data(), data.data()).ok());
  auto reader = OpenMilvus(Url("shared"), 8, {}, /*read_only=*/true);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ((*reader)->Add(2, ids.data(), data.data()).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Remove(ids).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Compact().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Ids(), ids);
  // What one process writes, another's next read sees.
  std::vector<int64_t> more = {3};
  ASSERT_TRUE((*writer)->Add(1, more.data(), data.data()).ok());
  EXPECT_EQ((*reader)->size(), 3u);
}

TEST_F(MilvusIndexTest, VerifyReportsTheCollection) {
  VectorIndexSpec spec;
  spec.kind = "milvus";
  spec.url = Url("checked");
  spec.dimension = 8;
  auto kind = FindVectorIndexKind("milvus");
  ASSERT_TRUE(kind.ok());
  auto params = MergeParams("milvus", (*kind)->params, {}, {}, false);
  ASSERT_TRUE(params.ok());
  spec.params = *params;
  EXPECT_EQ(VerifyVectorIndex(spec).status().code(), StatusCode::kNotFound);
  {
    auto index = OpenVectorIndex(spec);
    ASSERT_TRUE(index.ok());
    auto data = UnitVectors(3, 8, 9);
    std::vector<int64_t> ids = {30, 10, 20};
    ASSERT_TRUE((*index)->Add(3, ids.data(), data.data()).ok());
  }
  auto report = VerifyVectorIndex(spec);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->ids, (std::vector<int64_t>{10, 20, 30}));
  EXPECT_FALSE(report->damaged());
  ASSERT_EQ(report->files.size(), 1u);
  EXPECT_NE(report->files[0].summary.find("3 rows"), std::string::npos);
  spec.dimension = 9;
  EXPECT_EQ(VerifyVectorIndex(spec).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pixseek
