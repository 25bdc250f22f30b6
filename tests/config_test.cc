// The configuration file, the environment and their order, and the store URL
// parser they rely on.
#include "pixseek/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "core/url.h"
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
import_roots = ["/srv/import"]
rate_limit_per_s = 20
log_format = "json"

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
  EXPECT_EQ(c.database.disk_params.ram_budget, 500000000u);
  EXPECT_EQ(c.database.disk_params.storage, "int8");
  EXPECT_FLOAT_EQ(c.database.disk_params.alpha.value(), 1.3f);
  EXPECT_EQ(c.database.disk_params.search_list, 80);
  EXPECT_FALSE(c.database.disk_params.max_degree.has_value());  // not set: not overridden
  EXPECT_EQ(c.server.host, "0.0.0.0");
  EXPECT_EQ(c.server.port, 9000);
  EXPECT_EQ(c.server.api_keys, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.server.keyed_reads);
  EXPECT_EQ(c.server.import_roots, (std::vector<std::string>{"/srv/import"}));
  EXPECT_DOUBLE_EQ(c.server.rate_limit_per_s, 20);
  EXPECT_EQ(c.server.log_format, "json");
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
      {"[index]\nstorage = \"fp8\"\n", "storage must be one of fp32, fp16, int8"},
      {"[index]\nalpha = 0.5\n", "alpha must be a number in"},
      {"[server]\napi_keys = \"k\"\n", "api_keys must be an array of strings"},
      {"[server]\napi_keys = [1, 2]\n", "api_keys must be an array of strings"},
      {"[databse]\ndir = \"x\"\n", "unknown section [databse]"},
      {"port = 80\n", "'port' must be a [section]"},
      {"[server\nport = 80\n", "pixseek.toml:1"},
      {"[server]\nkeyed_reads = 1\n", "keyed_reads must be true or false"},
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
  EXPECT_EQ(c.database.cache_url, "redis://h:1/2");
  EXPECT_EQ(c.server.api_keys, (std::vector<std::string>{"k1", "k2", "k3"}));
  EXPECT_EQ(c.server.port, 9100);

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
  auto bad = ParseStoreUrl("mysql://u:topsecret@h:99999/db");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("topsecret"), std::string::npos) << bad.status().message();
  auto garbage = ParseStoreUrl("mysql://u:top secret@h/db");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().message().find("secret"), std::string::npos);
}

TEST(DiskIndexParamsTest, JsonRoundTripAndRanges) {
  DiskIndexParams p;
  p.max_degree = 32;
  p.storage = "int8";
  p.alpha = 1.5f;
  auto back = DiskIndexParams::FromJson(p.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->max_degree, 32);
  EXPECT_EQ(back->storage, "int8");
  EXPECT_FLOAT_EQ(back->alpha.value(), 1.5f);
  EXPECT_FALSE(back->build_list.has_value());
  DiskIndexOptions o;
  back->ApplyTo(o);
  EXPECT_EQ(o.max_degree, 32);
  EXPECT_EQ(o.build_list, DiskIndexOptions{}.build_list);
  EXPECT_FALSE(DiskIndexParams::FromJson(R"({"max_degree": 0})").ok());
  EXPECT_FALSE(DiskIndexParams::FromJson(R"({"max_degree": "big"})").ok());
  EXPECT_FALSE(DiskIndexParams::FromJson(R"({"degree": 3})").ok());
  EXPECT_FALSE(DiskIndexParams::FromJson(R"({"storage": "fp64"})").ok());
}

}  // namespace
}  // namespace pixseek
