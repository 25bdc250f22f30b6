// The configuration file, the environment and their order, and the store URL
// parser they rely on.
#include "pixseek/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "core/url.h"
#include "pixseek/disk_index.h"
#include "pixseek/index_params.h"
#include "test_util.h"

namespace pixseek {
namespace {

using testing::TempDir;

std::filesystem::path WriteToml(const TempDir& tmp, const std::string& text) {
  const auto file = tmp.path() / "pixseek.toml";
  std::ofstream(file) << text;
  return file;
}

GetEnv FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ConfigTest, ReadsEverySection) {
  TempDir tmp;
  const auto file = WriteToml(tmp, R"(
[database]
dir = "/srv/pixseek/photos"
model = "resnet50"
metadata_url = "mysql://pixseek:secret@127.0.0.1:3306/pixseek"
cache_url = "redis://127.0.0.1:6379/0"
cache_bytes = 1048576
threads = 2
max_pixels = 50000000

[index]
kind = "disk"
ram_budget = 500_000_000
storage = "int8"
alpha = 1.3
search_list = 80

[server]
host = "0.0.0.0"
port = 9000
api_keys = ["a", "b"]
keyed_reads = true
hide_paths = false
import_roots = ["/srv/import"]
rate_limit_per_s = 20
log_format = "json"
header_timeout_s = 2.5
max_connections_per_client = 200

[batching]
max_batch = 8
max_wait_ms = 1.5
)");
  Config c;
  ASSERT_TRUE(LoadConfigFile(file, c).ok());
  EXPECT_EQ(c.database.dir, "/srv/pixseek/photos");
  EXPECT_EQ(c.database.model, "resnet50");
  EXPECT_EQ(c.database.metadata_url, "mysql://pixseek:secret@127.0.0.1:3306/pixseek");
  EXPECT_EQ(c.database.cache_url, "redis://127.0.0.1:6379/0");
  EXPECT_EQ(c.database.cache_bytes, 1048576u);
  EXPECT_EQ(c.database.threads, 2);
  EXPECT_EQ(c.database.limits.max_pixels, 50000000u);
  EXPECT_EQ(c.database.index_kind, "disk");
  const IndexParams& ip = c.database.index_params;
  EXPECT_EQ(ip.Int("ram_budget", 0), 500000000);
  EXPECT_EQ(ip.String("storage", ""), "int8");
  EXPECT_DOUBLE_EQ(ip.Real("alpha", 0), 1.3);
  EXPECT_EQ(ip.Int("search_list", 0), 80);
  EXPECT_EQ(ip.Find("max_degree"), nullptr);  // not set: not overridden
  ASSERT_NE(ip.Find("storage"), nullptr);
  EXPECT_EQ(ip.Find("storage")->source, file.string() + ":14");  // where it was set
  EXPECT_EQ(c.server.host, "0.0.0.0");
  EXPECT_EQ(c.server.port, 9000);
  EXPECT_EQ(c.server.api_keys, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.server.keyed_reads);
  EXPECT_EQ(c.server.hide_paths, std::optional<bool>(false));  // set, even against the keys
  EXPECT_EQ(c.server.import_roots, (std::vector<std::string>{"/srv/import"}));
  EXPECT_DOUBLE_EQ(c.server.rate_limit_per_s, 20);
  EXPECT_EQ(c.server.log_format, "json");
  EXPECT_DOUBLE_EQ(c.server.header_timeout_s, 2.5);
  EXPECT_EQ(c.server.max_connections_per_client, 200);
  EXPECT_EQ(c.server.max_connections, 1024);  // absent: the default
  EXPECT_EQ(c.database.batching.max_batch, 8);
  EXPECT_EQ(c.database.batching.max_wait, std::chrono::microseconds(1500));
}

TEST(ConfigTest, AbsentKeysKeepTheirValues) {
  TempDir tmp;
  Config c;
  c.server.port = 1234;
  c.database.cache_bytes = 77;
  ASSERT_TRUE(LoadConfigFile(WriteToml(tmp, "[server]\nhost = \"::1\"\n"), c).ok());
  EXPECT_EQ(c.server.host, "::1");
  EXPECT_EQ(c.server.port, 1234);
  EXPECT_EQ(c.database.cache_bytes, 77u);
  EXPECT_FALSE(c.server.hide_paths.has_value());  // unset: the server decides by its keys
}

// Each mistake is named with file, line and key, and a bad file changes
// nothing.
TEST(ConfigTest, ErrorsNameFileLineAndKey) {
  struct Case {
    std::string text;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"[database]\ncache_byts = 5\n", ":2: [database] cache_byts is not a known key"},
      {"[server]\nport = \"80\"\n", ":2: [server] port must be an integer"},
      {"[server]\nport = 70000\n", "port must be an integer in [0, 65535]"},
      {"[index]\nstorage = \"fp8\"\n", "storage must be fp32, fp16 or int8"},
      {"[index]\ncompact_ratio = 0\n", ":2: [index] compact_ratio must be a number in (0, 100]"},
      {"[index]\nmax_degree = 2.5\n", ":2: [index] max_degree must be an integer"},
      {"[index]\nalpha = 0.5\n", "alpha must be a number in"},
      {"[server]\napi_keys = \"k\"\n", "api_keys must be an array of strings"},
      {"[server]\napi_keys = [1, 2]\n", "api_keys must be an array of strings"},
      {"[databse]\ndir = \"x\"\n", "unknown section [databse]"},
      {"port = 80\n", "'port' must be a [section]"},
      {"[server\nport = 80\n", "pixseek.toml:1"},
      {"[server]\nkeyed_reads = 1\n", "keyed_reads must be true or false"},
      {"[server]\nhide_paths = \"yes\"\n", ":2: [server] hide_paths must be true or false"},
      {"[server]\nheader_timeout_s = 0\n", "header_timeout_s must be a number in"},
      {"[server]\nmax_connections_per_client = 0\n", "max_connections_per_client must be an integer in"},
      {"[batching]\nmax_batch = -1\n", "max_batch must be an integer in [0, 4096]"},
      {"[batching]\nmax_wait_ms = 5000\n", "max_wait_ms must be a number in"},
  };
  for (const auto& c : cases) {
    TempDir tmp;
    Config config;
    config.server.port = 4321;
    Status s = LoadConfigFile(WriteToml(tmp, c.text), config);
    ASSERT_FALSE(s.ok()) << c.text;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("pixseek.toml"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s.message();
    EXPECT_EQ(config.server.port, 4321) << "a bad file must change nothing";
  }
  Config config;
  EXPECT_EQ(LoadConfigFile("/no/such/pixseek.toml", config).code(), StatusCode::kNotFound);
}

TEST(ConfigTest, EnvironmentOverridesTheFile) {
  TempDir tmp;
  Config c;
  ASSERT_TRUE(LoadConfigFile(WriteToml(tmp, R"(
[database]
dir = "/from/file"
metadata_url = "sqlite:///file.db"
vector_url = "milvus://from-file:19530/images"
[server]
port = 9000
api_keys = ["file-key"]
)"),
                             c)
                  .ok());
  ASSERT_TRUE(ApplyEnvironment(c, FakeEnv({{"PIXSEEK_DB", "/from/env"},
                                           {"PIXSEEK_CACHE_URL", "redis://h:1/2"},
                                           {"PIXSEEK_API_KEYS", " k1, k2 ,,k3 "},
                                           {"PIXSEEK_PORT", "9100"}}))
                  .ok());
  EXPECT_EQ(c.database.dir, "/from/env");
  EXPECT_EQ(c.database.metadata_url, "sqlite:///file.db");  // not in the environment
  EXPECT_EQ(c.database.vector_url, "milvus://from-file:19530/images");
  EXPECT_EQ(c.database.cache_url, "redis://h:1/2");
  EXPECT_EQ(c.server.api_keys, (std::vector<std::string>{"k1", "k2", "k3"}));
  EXPECT_EQ(c.server.port, 9100);

  ASSERT_TRUE(
      ApplyEnvironment(c, FakeEnv({{"PIXSEEK_VECTOR_URL", "milvus://env:19530/other"}})).ok());
  EXPECT_EQ(c.database.vector_url, "milvus://env:19530/other");

  Status bad = ApplyEnvironment(c, FakeEnv({{"PIXSEEK_PORT", "http"}}));
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("PIXSEEK_PORT"), std::string::npos);
  EXPECT_EQ(c.server.port, 9100);
}

TEST(ConfigTest, ConfigFileFromArgsOrEnvironment) {
  const GetEnv none = FakeEnv({});
  const GetEnv env = FakeEnv({{"PIXSEEK_CONFIG", "/etc/pixseek.toml"}});
  const char* a1[] = {"pixseek", "serve", "--config", "a.toml"};
  const char* a2[] = {"pixseek", "serve", "--config=b.toml"};
  const char* a3[] = {"pixseek", "serve", "--db", "x"};
  const char* a4[] = {"pixseek", "add", "--", "--config"};
  EXPECT_EQ(ConfigFileFromArgs(4, a1, env), std::filesystem::path("a.toml"));
  EXPECT_EQ(ConfigFileFromArgs(3, a2, none), std::filesystem::path("b.toml"));
  EXPECT_EQ(ConfigFileFromArgs(4, a3, env), std::filesystem::path("/etc/pixseek.toml"));
  EXPECT_FALSE(ConfigFileFromArgs(4, a3, none).has_value());
  EXPECT_FALSE(ConfigFileFromArgs(4, a4, none).has_value());
}

TEST(StoreUrlTest, ParsesAndRedacts) {
  auto url = ParseStoreUrl("mysql://pix%40seek:p%3Ass@db.example:3307/photos?x=1");
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_EQ(url->scheme, "mysql");
  EXPECT_EQ(url->user, "pix@seek");
  EXPECT_EQ(url->password, "p:ss");
  EXPECT_EQ(url->host, "db.example");
  EXPECT_EQ(url->port, 3307);
  EXPECT_EQ(url->path, "photos");
  EXPECT_EQ(url->query.at("x"), "1");

  auto sqlite = ParseStoreUrl("sqlite:///var/lib/pixseek/metadata.db");
  ASSERT_TRUE(sqlite.ok());
  EXPECT_EQ(sqlite->path, "/var/lib/pixseek/metadata.db");

  EXPECT_EQ(RedactUrl("mysql://u:topsecret@h:1/db"), "mysql://u:***@h:1/db");
  EXPECT_EQ(RedactUrl("redis://h:6379/0"), "redis://h:6379/0");
  // Milvus carries its credentials in the user info or in ?token=.
  EXPECT_EQ(RedactUrl("milvus://root:Milvus@h:19530/coll"), "milvus://root:***@h:19530/coll");
  EXPECT_EQ(RedactUrl("milvus://h:19530/coll?token=root%3AMilvus&db=x"),
            "milvus://h:19530/coll?token=***&db=x");
  EXPECT_EQ(RedactUrl("milvus://u:pw@h:19530/coll?a=1&TOKEN=k"),
            "milvus://u:***@h:19530/coll?a=1&TOKEN=***");
  auto bad = ParseStoreUrl("mysql://u:topsecret@h:99999/db");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("topsecret"), std::string::npos) << bad.status().message();
  auto garbage = ParseStoreUrl("mysql://u:top secret@h/db");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().message().find("secret"), std::string::npos);
}

TEST(IndexParamsTest, JsonRoundTripAndRanges) {
  const auto specs = DiskIndexParamSpecs();
  IndexParams p;
  p.Set("max_degree", int64_t{32}, "test");
  p.Set("storage", std::string("int8"), "test");
  p.Set("alpha", 1.5, "test");
  auto back = IndexParams::FromJson(p.ToJson(), specs, "json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->Int("max_degree", 0), 32);
  EXPECT_EQ(back->String("storage", ""), "int8");
  EXPECT_DOUBLE_EQ(back->Real("alpha", 0), 1.5);
  EXPECT_EQ(back->Find("build_list"), nullptr);
  DiskIndexOptions o = DiskIndexOptionsFrom(*back);
  EXPECT_EQ(o.max_degree, 32);
  EXPECT_FLOAT_EQ(o.alpha, 1.5f);
  EXPECT_EQ(o.build_list, DiskIndexOptions{}.build_list);
  EXPECT_FALSE(IndexParams::FromJson(R"({"max_degree": 0})", specs, "json").ok());
  EXPECT_FALSE(IndexParams::FromJson(R"({"max_degree": "big"})", specs, "json").ok());
  EXPECT_FALSE(IndexParams::FromJson(R"({"degree": 3})", specs, "json").ok());
  EXPECT_FALSE(IndexParams::FromJson(R"({"storage": "fp64"})", specs, "json").ok());
  EXPECT_FALSE(IndexParams::FromJson(R"({"compact_ratio": 0})", specs, "json").ok());
}

// The table's defaults are DiskIndexOptions' defaults: a database created
// with no parameter set records what an index opened with {} uses.
TEST(IndexParamsTest, TableDefaultsAreTheOptionsDefaults) {
  auto merged = MergeParams("disk", DiskIndexParamSpecs(), {}, {}, /*existing=*/false);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  const DiskIndexOptions from_table = DiskIndexOptionsFrom(*merged);
  const DiskIndexOptions defaults;
  EXPECT_EQ(from_table.max_degree, defaults.max_degree);
  EXPECT_EQ(from_table.build_list, defaults.build_list);
  EXPECT_FLOAT_EQ(from_table.alpha, defaults.alpha);
  EXPECT_EQ(from_table.build_passes, defaults.build_passes);
  EXPECT_EQ(from_table.storage, defaults.storage);
  EXPECT_EQ(from_table.pq_bytes, defaults.pq_bytes);
  EXPECT_EQ(from_table.ram_budget, defaults.ram_budget);
  EXPECT_EQ(from_table.build_ram_budget, defaults.build_ram_budget);
  EXPECT_EQ(from_table.search_list, defaults.search_list);
  EXPECT_EQ(from_table.beam_width, defaults.beam_width);
  EXPECT_DOUBLE_EQ(from_table.compact_ratio, defaults.compact_ratio);
  EXPECT_EQ(merged->values().size(), DiskIndexParamSpecs().size());
}

TEST(IndexParamsTest, MergeKeepsCreationParametersOfAnExistingDatabase) {
  const auto specs = DiskIndexParamSpecs();
  IndexParams recorded;
  recorded.Set("storage", std::string("fp16"), "the manifest");
  recorded.Set("search_list", int64_t{50}, "the manifest");
  IndexParams given;
  given.Set("search_list", int64_t{90}, "--search-list");  // a run-time one: applies
  auto merged = MergeParams("disk", specs, recorded, given, /*existing=*/true);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  EXPECT_EQ(merged->Int("search_list", 0), 90);
  EXPECT_EQ(merged->String("storage", ""), "fp16");

  given.Set("storage", std::string("fp16"), "--storage");  // the same value: fine (a resumed build)
  EXPECT_TRUE(MergeParams("disk", specs, recorded, given, true).ok());
  given.Set("storage", std::string("int8"), "--storage");
  auto changed = MergeParams("disk", specs, recorded, given, true);
  ASSERT_FALSE(changed.ok());
  EXPECT_EQ(changed.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(changed.status().message().find("--storage"), std::string::npos);
  EXPECT_NE(changed.status().message().find("fp16"), std::string::npos);
  // A new database takes it.
  EXPECT_TRUE(MergeParams("disk", specs, {}, given, /*existing=*/false).ok());

  IndexParams foreign;
  foreign.Set("max_degree", int64_t{8}, "--max-degree");
  auto flat = MergeParams("flat", {}, {}, foreign, false);
  ASSERT_FALSE(flat.ok());
  EXPECT_NE(flat.status().message().find("flat"), std::string::npos);
}

TEST(IndexParamsTest, ConfigFileRangeErrorNamesFileLineAndKey) {
  TempDir tmp;
  const auto file = WriteToml(tmp, "[index]\nkind = \"disk\"\ncompact_ratio = 0\n");
  Config c;
  Status s = LoadConfigFile(file, c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(file.string() + ":3"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("compact_ratio"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("(0, 100]"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace pixseek
