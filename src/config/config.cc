// The configuration file (TOML, read with toml++) and environment variables.
#include "pixseek/config.h"

#include "pixseek/vector_index.h"

#include <toml++/toml.h>

#include <algorithm>

#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

namespace pixseek {
namespace {

// Reads the keys of one [section], remembering which it knew so that the
// rest can be reported as unknown. The first error wins.
class SectionReader {
 public:
  SectionReader(const std::string& file, const std::string& section, const toml::table* table)
      : file_(file), section_(section), table_(table) {}

  template <typename T>
  void Int(const char* key, T& out, int64_t lo, int64_t hi) {
    const toml::node* node = Find(key);
    if (node == nullptr) return;
    auto v = node->value_exact<int64_t>();
    if (!v || *v < lo || *v > hi) {
      return Fail(*node, key, "must be an integer in [" + std::to_string(lo) + ", " +
                                  std::to_string(hi) + "]");
    }
    out = static_cast<T>(*v);
  }

  template <typename T>
  void Int(const char* key, std::optional<T>& out, int64_t lo, int64_t hi) {
    T value{};
    bool had = Find(key) != nullptr;
    Int(key, value, lo, hi);
    if (had && status_.ok()) out = value;
  }

  template <typename T>
  void Real(const char* key, T& out, double lo, double hi) {
    const toml::node* node = Find(key);
    if (node == nullptr) return;
    auto v = node->value<double>();
    if (!v || !(*v >= lo && *v <= hi)) {
      return Fail(*node, key, "must be a number in [" + std::to_string(lo) + ", " +
                                  std::to_string(hi) + "]");
    }
    out = static_cast<T>(*v);
  }

  template <typename T>
  void Real(const char* key, std::optional<T>& out, double lo, double hi) {
    T value{};
    bool had = Find(key) != nullptr;
    Real(key, value, lo, hi);
    if (had && status_.ok()) out = value;
  }

  void Bool(const char* key, bool& out) {
    const toml::node* node = Find(key);
    if (node == nullptr) return;
    auto v = node->value_exact<bool>();
    if (!v) return Fail(*node, key, "must be true or false");
    out = *v;
  }

  void Bool(const char* key, std::optional<bool>& out) {
    bool value = false;
    bool had = Find(key) != nullptr;
    Bool(key, value);
    if (had && status_.ok()) out = value;
  }

  // `allowed` empty = any string.
  void String(const char* key, std::string& out, const std::vector<std::string>& allowed = {}) {
    const toml::node* node = Find(key);
    if (node == nullptr) return;
    auto v = node->value_exact<std::string>();
    if (!v) return Fail(*node, key, "must be a string");
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), *v) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return Fail(*node, key, "must be one of " + list);
    }
    out = *v;
  }

  void String(const char* key, std::optional<std::string>& out,
              const std::vector<std::string>& allowed = {}) {
    std::string value;
    bool had = Find(key) != nullptr;
    String(key, value, allowed);
    if (had && status_.ok()) out = value;
  }

  void Strings(const char* key, std::vector<std::string>& out) {
    const toml::node* node = Find(key);
    if (node == nullptr) return;
    const toml::array* array = node->as_array();
    std::vector<std::string> values;
    bool ok = array != nullptr;
    if (ok) {
      for (const toml::node& item : *array) {
        auto v = item.value_exact<std::string>();
        if (!v) {
          ok = false;
          break;
        }
        values.push_back(*v);
      }
    }
    if (!ok) return Fail(*node, key, "must be an array of strings");
    out = std::move(values);
  }

  // An index parameter: a TOML value of the spec's type, in its range, kept
  // with "FILE:LINE" as its source.
  void Param(const IndexParamSpec& spec, IndexParams& out) {
    const toml::node* node = Find(spec.name);
    if (node == nullptr) return;
    ParamValue value;
    if (auto i = node->value_exact<int64_t>()) {
      value = *i;
    } else if (auto d = node->value_exact<double>()) {
      value = *d;
    } else if (auto str = node->value_exact<std::string>()) {
      value = *str;
    } else {
      return Fail(*node, spec.name, "must be a number or a string");
    }
    auto checked = CheckParam(spec, std::move(value));
    if (!checked.ok()) {
      // The message starts with the key; Fail puts the key first itself.
      std::string what = checked.status().message();
      if (what.rfind(spec.name, 0) == 0) what = what.substr(std::strlen(spec.name) + 1);
      return Fail(*node, spec.name, what);
    }
    out.Set(spec.name, std::move(*checked),
            file_ + ":" + std::to_string(node->source().begin.line));
  }

  // Reports the first key of the section that no reader call asked for.
  Status Finish() {
    if (!status_.ok() || table_ == nullptr) return status_;
    for (auto&& [key, node] : *table_) {
      if (known_.count(std::string(key.str())) == 0) {
        Fail(node, std::string(key.str()).c_str(), "is not a known key of [" + section_ + "]");
        break;
      }
    }
    return status_;
  }

 private:
  const toml::node* Find(const char* key) {
    known_.insert(key);
    if (table_ == nullptr || !status_.ok()) return nullptr;
    return table_->get(key);
  }

  void Fail(const toml::node& node, const char* key, const std::string& what) {
    if (!status_.ok()) return;
    std::ostringstream where;
    where << file_ << ":" << node.source().begin.line;
    status_ = Status::InvalidArgument(where.str() + ": [" + section_ + "] " + key + " " + what);
  }

  std::string file_;
  std::string section_;
  const toml::table* table_;
  std::set<std::string> known_;
  Status status_ = Status::Ok();
};

constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxI64 = std::numeric_limits<int64_t>::max();

Status ReadDatabase(SectionReader& r, DatabaseOptions& d) {
  std::string dir = d.dir.string(), home = d.home.string();
  r.String("dir", dir);
  r.String("model", d.model);
  r.String("home", home);
  r.String("metadata_url", d.metadata_url);
  r.String("vector_url", d.vector_url);
  r.String("cache_url", d.cache_url);
  r.Int("cache_bytes", d.cache_bytes, 0, kMaxI64);
  r.Int("threads", d.threads, 0, 1024);
  r.Int("max_bytes", d.limits.max_bytes, 1, kMaxI64);
  r.Int("max_pixels", d.limits.max_pixels, 1, kMaxI64);
  // Preprocessing of a new database; on an existing one, when set, it must
  // match the manifest's.
  ImagePreprocessing pre = d.preprocessing.value_or(ImagePreprocessing{});
  r.Bool("grey", pre.grey);
  r.Bool("denoise", pre.denoise);
  r.Int("store_max_side", pre.stored_max_side, 0, 1 << 16);
  r.Int("store_quality", pre.stored_quality, 1, 100);
  if (pre != ImagePreprocessing{}) d.preprocessing = pre;
  d.dir = dir;
  d.home = home;
  return r.Finish();
}

// [index]: the kind and every parameter of the index kinds' tables
// (include/pixseek/index_params.h), checked as the table says.
Status ReadIndex(SectionReader& r, DatabaseOptions& d) {
  std::vector<std::string> kinds;
  for (const VectorIndexKind& kind : VectorIndexKinds()) kinds.push_back(kind.name);
  r.String("kind", d.index_kind, kinds);
  for (const IndexParamSpec& spec : AllIndexParams()) r.Param(spec, d.index_params);
  return r.Finish();
}

Status ReadBatching(SectionReader& r, EmbedBatchingOptions& b) {
  r.Int("max_batch", b.max_batch, 0, 4096);
  double wait_ms = static_cast<double>(b.max_wait.count()) / 1000.0;
  r.Real("max_wait_ms", wait_ms, 0.0, 1000.0);
  b.max_wait = std::chrono::microseconds(static_cast<int64_t>(wait_ms * 1000.0));
  return r.Finish();
}

Status ReadServer(SectionReader& r, ServerOptions& s) {
  r.String("host", s.host);
  r.Int("port", s.port, 0, 65535);
  r.Int("threads", s.threads, 1, 1024);
  r.Int("max_request_bytes", s.max_request_bytes, 1, kMaxI64);
  r.Strings("import_roots", s.import_roots);
  r.Strings("api_keys", s.api_keys);
  r.Bool("keyed_reads", s.keyed_reads);
  r.Bool("hide_paths", s.hide_paths);
  r.Int("max_concurrent_requests", s.max_concurrent_requests, 0, 100000);
  r.Real("rate_limit_per_s", s.rate_limit_per_s, 0.0, 1e9);
  r.Int("rate_burst", s.rate_burst, 1, 1000000);
  r.Bool("log_requests", s.log_requests);
  r.String("log_format", s.log_format, {"text", "json"});
  r.Int("retry_after_s", s.retry_after_s, 1, 3600);
  r.Real("header_timeout_s", s.header_timeout_s, 0.1, 3600.0);
  r.Real("body_timeout_s", s.body_timeout_s, 0.1, 86400.0);
  r.Real("idle_timeout_s", s.idle_timeout_s, 0.1, 86400.0);
  r.Int("max_connections", s.max_connections, 1, 1000000);
  r.Int("max_connections_per_client", s.max_connections_per_client, 1, 1000000);
  return r.Finish();
}

// [search]: the default re-ranking of `pixseek query`, `pixseek eval` and
// the server's searches.
Status ReadSearch(SectionReader& r, RerankOptions& rerank) {
  std::string method(ToString(rerank.method));
  r.String("rerank", method,
           std::vector<std::string>(std::begin(kRerankMethodNames), std::end(kRerankMethodNames)));
  r.Int("qe_n", rerank.qe_n, 1, kMaxQeN);
  r.Real("qe_alpha", rerank.qe_alpha, 0.0, 20.0);
  r.Int("spatial_top", rerank.spatial_top, 1, kMaxSpatialTop);
  PIXSEEK_RETURN_IF_ERROR(r.Finish());
  PIXSEEK_ASSIGN_OR_RETURN(rerank.method, ParseRerankMethod(method));
  return Status::Ok();
}

std::vector<std::string> SplitKeys(const std::string& text) {
  std::vector<std::string> keys;
  std::stringstream in(text);
  std::string key;
  while (std::getline(in, key, ',')) {
    const auto b = key.find_first_not_of(" \t");
    const auto e = key.find_last_not_of(" \t");
    if (b != std::string::npos) keys.push_back(key.substr(b, e - b + 1));
  }
  return keys;
}

}  // namespace

Status LoadConfigFile(const std::filesystem::path& file, Config& config) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    return Status::NotFound("config file " + file.string() + " does not exist");
  }
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << file.string() << ":" << e.source().begin.line << ": " << e.description();
    return Status::InvalidArgument("config file " + where.str());
  }
  const std::string name = file.string();
  Config next = config;  // all or nothing: a bad file changes nothing
  for (auto&& [key, node] : root) {
    const std::string section(key.str());
    if (!node.is_table()) {
      return Status::InvalidArgument(name + ":" + std::to_string(node.source().begin.line) +
                                     ": '" + section +
                                     "' must be a [section] (database, index, server, batching "
                                     "or search)");
    }
    SectionReader reader(name, section, node.as_table());
    if (section == "database") {
      PIXSEEK_RETURN_IF_ERROR(ReadDatabase(reader, next.database));
    } else if (section == "index") {
      PIXSEEK_RETURN_IF_ERROR(ReadIndex(reader, next.database));
    } else if (section == "server") {
      PIXSEEK_RETURN_IF_ERROR(ReadServer(reader, next.server));
    } else if (section == "batching") {
      PIXSEEK_RETURN_IF_ERROR(ReadBatching(reader, next.database.batching));
    } else if (section == "search") {
      PIXSEEK_RETURN_IF_ERROR(ReadSearch(reader, next.server.rerank));
    } else {
      return Status::InvalidArgument(name + ":" + std::to_string(node.source().begin.line) +
                                     ": unknown section [" + section +
                                     "] (expected database, index, server, batching or search)");
    }
  }
  config = std::move(next);
  return Status::Ok();
}

Status ApplyEnvironment(Config& config, const GetEnv& getenv) {
  Config next = config;
  if (auto v = getenv("PIXSEEK_DB")) next.database.dir = *v;
  if (auto v = getenv("PIXSEEK_MODEL")) next.database.model = *v;
  if (auto v = getenv("PIXSEEK_HOME")) next.database.home = *v;
  if (auto v = getenv("PIXSEEK_METADATA_URL")) next.database.metadata_url = *v;
  if (auto v = getenv("PIXSEEK_VECTOR_URL")) next.database.vector_url = *v;
  if (auto v = getenv("PIXSEEK_CACHE_URL")) next.database.cache_url = *v;
  if (auto v = getenv("PIXSEEK_API_KEYS")) next.server.api_keys = SplitKeys(*v);
  if (auto v = getenv("PIXSEEK_HOST")) next.server.host = *v;
  if (auto v = getenv("PIXSEEK_PORT")) {
    char* end = nullptr;
    long port = std::strtol(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0' || port < 0 || port > 65535) {
      return Status::InvalidArgument("PIXSEEK_PORT must be a port number (0-65535), got '" + *v +
                                     "'");
    }
    next.server.port = static_cast<int>(port);
  }
  config = std::move(next);
  return Status::Ok();
}

GetEnv ProcessEnvironment() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

std::optional<std::filesystem::path> ConfigFileFromArgs(int argc, const char* const* argv,
                                                        const GetEnv& getenv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--config" && i + 1 < argc) return std::filesystem::path(argv[i + 1]);
    if (arg.starts_with("--config=")) return std::filesystem::path(arg.substr(9));
  }
  if (auto v = getenv("PIXSEEK_CONFIG"); v && !v->empty()) return std::filesystem::path(*v);
  return std::nullopt;
}

}  // namespace pixseek
