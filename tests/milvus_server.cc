// The Milvus REST API v2 test server (see milvus_server.h): cpp-httplib on
// 127.0.0.1, nlohmann-json for the protocol, one exact flat index per
// collection for the vectors.
#include "milvus_server.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cfloat>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "core/files.h"
#include "pixseek/vector_index.h"

namespace pixseek::testing {
namespace {

using Json = nlohmann::json;

// Bodies larger than this are refused before they are read.
constexpr size_t kMaxBodyBytes = size_t{64} << 20;
// Milvus's quota defaults: topK (limit + offset) and nq at most 16384.
constexpr int64_t kMaxTopK = 16384;
constexpr int64_t kMaxNq = 16384;
constexpr int64_t kMinDim = 2;
constexpr int64_t kMaxDim = 32768;
constexpr char kCatalogueFormat[] = "pixseek-milvus-test-server/1";

// Milvus error codes (pkg/util/merr/errors.go).
enum MilvusCode : int {
  kCollectionNotFound = 100,
  kCollectionNotLoaded = 101,
  kPartitionNotFound = 200,
  kIndexNotFound = 700,
  kDatabaseNotFound = 800,
  kParameterInvalid = 1100,
  kParameterTooLarge = 1102,
  kNeedAuthenticate = 1800,
  kIncorrectParameterFormat = 1801,
  kMissingRequiredParameters = 1802,
  kInvalidInsertData = 1804,
  kCheckPrimaryKey = 1806,
  kUnexpected = 65535,
};

struct ApiError {
  int code = kUnexpected;
  std::string message;
};

// merr's message shapes: a wrapped error reads "<context>: <leaf>", a leaf
// with fields "<leaf>[key=value]...".
ApiError InvalidParameter(const std::string& context) {
  return {kParameterInvalid, context + ": invalid parameter"};
}
ApiError InvalidParameter(const std::string& expected, const std::string& actual,
                          const std::string& context) {
  return {kParameterInvalid,
          context + ": invalid parameter[expected=" + expected + "][actual=" + actual + "]"};
}
ApiError FormatError(const std::string& detail) {
  return {kIncorrectParameterFormat, "can only accept json format request, error: " + detail};
}
ApiError InsertDataError(const std::string& detail) {
  return {kInvalidInsertData, "fail to deal the insert data, error: " + detail};
}
ApiError CollectionNotFound(const std::string& name) {
  return {kCollectionNotFound, "collection not found[database=default][collection=" + name + "]"};
}

#define MILVUS_TRY(expr)                                                             \
  do {                                                                               \
    if (std::optional<ApiError> milvus_error_ = (expr)) return Fail(*milvus_error_); \
  } while (0)

// What a handler answers: the HTTP status and the JSON body.
struct Reply {
  int http_status = 200;
  Json body;
};

Reply Fail(const ApiError& error) {
  return {200, Json{{"code", error.code}, {"message", error.message}}};
}
Reply Ok(Json data) { return {200, Json{{"code", 0}, {"data", std::move(data)}}}; }
// Data-plane calls also carry a "cost" (0 outside Zilliz Cloud).
Reply OkWithCost(Json data) {
  return {200, Json{{"code", 0}, {"data", std::move(data)}, {"cost", 0}}};
}

std::string Truncated(std::string text) {
  constexpr size_t kMax = 256;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

// Go's name for a JSON value's type, as encoding/json reports it.
std::string JsonTypeName(const Json& value) {
  if (value.is_number()) return "number";
  if (value.is_string()) return "string";
  if (value.is_boolean()) return "bool";
  if (value.is_array()) return "array";
  if (value.is_object()) return "object";
  return "null";
}

// The request fields, decoded as Go's encoding/json and gin's validator
// decode them into Milvus's request structs: a field of the wrong type is
// 1801 ("json: cannot unmarshal ..."), a missing required one 1802.
class Body {
 public:
  Body(const Json& json, std::string go_struct) : json_(json), go_struct_(std::move(go_struct)) {}

  // The value, or nullptr when absent or null (Go leaves the zero value).
  const Json* Find(const char* key) const {
    auto it = json_.find(key);
    if (it == json_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<ApiError> String(const char* key, bool required, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return required ? Missing(key) : std::nullopt;
    if (!v->is_string()) return TypeError(key, *v, "string");
    *out = v->get<std::string>();
    if (required && out->empty()) return Missing(key);
    return std::nullopt;
  }

  std::optional<ApiError> Int(const char* key, const char* go_type, int64_t lo, int64_t hi,
                              int64_t* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_number_integer()) {
      const bool fits = v->is_number_unsigned()
                            ? v->get<uint64_t>() <= static_cast<uint64_t>(hi)
                            : v->get<int64_t>() >= lo && v->get<int64_t>() <= hi;
      if (fits) {
        *out = v->get<int64_t>();
        return std::nullopt;
      }
    }
    if (v->is_number()) {
      return FormatError("json: cannot unmarshal number " + v->dump() + " into Go struct field " +
                         go_struct_ + "." + key + " of type " + go_type);
    }
    return TypeError(key, *v, go_type);
  }

  std::optional<ApiError> Bool(const char* key, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return TypeError(key, *v, "bool");
    *out = v->get<bool>();
    return std::nullopt;
  }

  // A []string field; *present tells whether the key was given.
  std::optional<ApiError> StringList(const char* key, std::vector<std::string>* out,
                                     bool* present) const {
    const Json* v = Find(key);
    *present = v != nullptr;
    if (v == nullptr) return std::nullopt;
    if (!v->is_array()) return TypeError(key, *v, "[]string");
    out->clear();
    for (const Json& item : *v) {
      if (!item.is_string()) {
        return FormatError("json: cannot unmarshal " + JsonTypeName(item) +
                           " into Go struct field " + go_struct_ + "." + key + " of type string");
      }
      out->push_back(item.get<std::string>());
    }
    return std::nullopt;
  }

  std::optional<ApiError> Object(const char* key, const char* go_type, const Json** out) const {
    const Json* v = Find(key);
    *out = v;
    if (v != nullptr && !v->is_object()) return TypeError(key, *v, go_type);
    return std::nullopt;
  }

  std::optional<ApiError> Array(const char* key, const char* go_type, bool required,
                                const Json** out) const {
    const Json* v = Find(key);
    *out = v;
    if (v == nullptr) return required ? Missing(key) : std::nullopt;
    if (!v->is_array()) return TypeError(key, *v, go_type);
    return std::nullopt;
  }

  std::optional<ApiError> Missing(const char* key) const {
    std::string go_field = key;
    go_field[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(go_field[0])));
    if (go_field == "Id") go_field = "ID";
    return ApiError{kMissingRequiredParameters, "missing required parameters, error: Key: '" +
                                                    go_struct_ + "." + go_field +
                                                    "' Error:Field validation for '" + go_field +
                                                    "' failed on the 'required' tag"};
  }

  std::optional<ApiError> TypeError(const char* key, const Json& value,
                                    const std::string& go_type) const {
    return FormatError("json: cannot unmarshal " + JsonTypeName(value) + " into Go struct field " +
                       go_struct_ + "." + key + " of type " + go_type);
  }

 private:
  const Json& json_;
  std::string go_struct_;
};

// An integer given as a JSON number or a decimal string (Milvus's
// cast.ToInt64E / json.Number accept both).
std::optional<int64_t> AsInt64(const Json& value) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX) return std::nullopt;
    return value.get<int64_t>();
  }
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && ptr == s.data() + s.size() && !s.empty()) return v;
  }
  return std::nullopt;
}

// Appends at most about `budget` characters of `value` as JSON, nesting at
// most a few levels: request values can nest deep enough to overflow the
// stack of a recursive dump.
void AppendPreview(const Json& value, int depth, size_t budget, std::string* out) {
  if (out->size() > budget) return;
  if (value.is_primitive()) {
    out->append(value.dump(-1, ' ', false, Json::error_handler_t::replace));
    return;
  }
  const bool array = value.is_array();
  out->push_back(array ? '[' : '{');
  if (depth >= 4) {
    out->append("...");
  } else {
    bool first = true;
    for (auto it = value.begin(); it != value.end() && out->size() <= budget; ++it) {
      if (!first) out->push_back(',');
      first = false;
      if (!array) out->append(Json(it.key()).dump() + ":");
      AppendPreview(*it, depth + 1, budget, out);
    }
  }
  out->push_back(array ? ']' : '}');
}

// A JSON value as text for an error message, strings without quotes (as
// gjson's String() gives them), cut short.
std::string RawText(const Json& value) {
  if (value.is_string()) return Truncated(value.get<std::string>());
  std::string out;
  AppendPreview(value, 0, 256, &out);
  return Truncated(out);
}

// One float32 vector of `dim` values; an error text as Go's json.Unmarshal
// into []float32 words it.
std::optional<std::string> ParseVector(const Json& value, std::vector<float>* out) {
  if (!value.is_array()) {
    return "json: cannot unmarshal " + JsonTypeName(value) + " into Go value of type []float32";
  }
  out->clear();
  out->reserve(value.size());
  for (const Json& x : value) {
    if (!x.is_number()) {
      return "json: cannot unmarshal " + JsonTypeName(x) + " into Go value of type float32";
    }
    const double d = x.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > FLT_MAX) {
      return "json: cannot unmarshal number " + x.dump() + " into Go value of type float32";
    }
    out->push_back(static_cast<float>(d));
  }
  return std::nullopt;
}

void NormalizeInPlace(float* v, size_t dim) {
  double sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += static_cast<double>(v[i]) * v[i];
  if (sum <= 0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(sum));
  for (size_t i = 0; i < dim; ++i) v[i] *= inv;
}

Json Int64Json(int64_t v, bool as_numbers) {
  return as_numbers ? Json(v) : Json(std::to_string(v));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// ---------------------------------------------------------------- filters

// The filter expressions pixseek sends: none, `<pk> in [ids]`, or
// `<pk> <op> <integer>`.
struct Filter {
  enum class Kind { kAll, kIn, kCompare } kind = Kind::kAll;
  std::vector<int64_t> ids;         // kIn, as written
  std::vector<int64_t> sorted_ids;  // kIn, ascending and unique
  std::string op;                   // kCompare
  int64_t value = 0;

  bool Matches(int64_t id) const {
    switch (kind) {
      case Kind::kAll:
        return true;
      case Kind::kIn:
        return std::binary_search(sorted_ids.begin(), sorted_ids.end(), id);
      case Kind::kCompare:
        if (op == "==") return id == value;
        if (op == "!=") return id != value;
        if (op == ">") return id > value;
        if (op == ">=") return id >= value;
        if (op == "<") return id < value;
        return id <= value;
    }
    return false;
  }
};

class FilterParser {
 public:
  FilterParser(const std::string& expr, const std::string& pk) : s_(expr), pk_(pk) {}

  std::optional<ApiError> Parse(Filter* out) {
    SkipSpace();
    if (pos_ == s_.size()) return std::nullopt;  // kAll
    const std::string field = Identifier();
    if (field.empty()) return Unsupported();
    if (field != pk_) {
      return InvalidParameter("cannot parse expression: " + s_ + ", error: field " + field +
                              " not exist");
    }
    SkipSpace();
    const size_t before_word = pos_;
    const std::string word = Identifier();
    if (Lower(word) == "in") {
      SkipSpace();
      if (!Consume('[')) return Unsupported();
      out->kind = Filter::Kind::kIn;
      SkipSpace();
      if (!Consume(']')) {
        while (true) {
          int64_t v = 0;
          if (!Integer(&v)) return Unsupported();
          out->ids.push_back(v);
          SkipSpace();
          if (Consume(']')) break;
          if (!Consume(',')) return Unsupported();
        }
      }
    } else {
      pos_ = before_word;
      static const char* const kOps[] = {"==", "!=", ">=", "<=", ">", "<"};
      std::string op;
      for (const char* candidate : kOps) {
        if (s_.compare(pos_, std::char_traits<char>::length(candidate), candidate) == 0) {
          op = candidate;
          break;
        }
      }
      if (op.empty()) return Unsupported();
      pos_ += op.size();
      out->kind = Filter::Kind::kCompare;
      out->op = op;
      if (!Integer(&out->value)) return Unsupported();
    }
    SkipSpace();
    if (pos_ != s_.size()) return Unsupported();
    out->sorted_ids = out->ids;
    std::sort(out->sorted_ids.begin(), out->sorted_ids.end());
    out->sorted_ids.erase(std::unique(out->sorted_ids.begin(), out->sorted_ids.end()),
                          out->sorted_ids.end());
    return std::nullopt;
  }

 private:
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Consume(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string Identifier() {
    const size_t start = pos_;
    while (pos_ < s_.size() &&
           (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) {
      ++pos_;
    }
    if (start < pos_ && std::isdigit(static_cast<unsigned char>(s_[start]))) {
      pos_ = start;
      return "";
    }
    return s_.substr(start, pos_ - start);
  }
  // Milvus's parser reads the literal's digits as an int64 and applies the
  // sign after, so -9223372036854775808 does not parse (as there).
  bool Integer(int64_t* out) {
    SkipSpace();
    bool negative = false;
    if (pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) negative = s_[pos_++] == '-';
    SkipSpace();
    const size_t start = pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    auto [ptr, ec] = std::from_chars(s_.data() + start, s_.data() + pos_, *out);
    if (ec != std::errc() || ptr != s_.data() + pos_ || pos_ == start) return false;
    if (negative) *out = -*out;
    return true;
  }
  std::optional<ApiError> Unsupported() const {
    return InvalidParameter("cannot parse expression: " + s_ +
                            ", error: the pixseek Milvus test server understands only `" + pk_ +
                            " in [1, 2, 3]` and `" + pk_ + " <op> <integer>` filters");
  }

  const std::string& s_;
  const std::string& pk_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------- collections

struct IndexSpec {
  std::string name;
  std::string field;
  std::string type;              // DISKANN, HNSW, IVF_FLAT, FLAT, AUTOINDEX
  Json params = Json::object();  // build parameters as given (minus index_type / metric_type)

  bool operator==(const IndexSpec& o) const {
    return name == o.name && field == o.field && type == o.type && params == o.params;
  }
};

// One collection. Thread-safety: `mu` is taken shared by reads and
// exclusively by writes and state changes; every field below it is guarded
// by it, and `vectors` is only changed (added to, removed from, closed) with
// it held exclusively.
struct Collection {
  std::string name;
  int64_t id = 0;
  std::string description;
  int dimension = 0;
  std::string metric;  // COSINE or IP
  std::string primary_field = "id";
  std::string vector_field = "vector";
  bool enable_dynamic_field = false;
  std::string consistency_level = "Bounded";

  mutable std::shared_mutex mu;
  std::optional<IndexSpec> index;
  bool loaded = false;
  bool dropped = false;
  // Keys inserted again while present: Milvus keeps every row until
  // compaction, so count(*) counts them.
  std::map<int64_t, int64_t> duplicates;
  std::unique_ptr<VectorIndex> vectors;

  int64_t RowCount() const {
    int64_t rows = static_cast<int64_t>(vectors->size());
    for (const auto& [key, extra] : duplicates) rows += extra;
    return rows;
  }
  int64_t RowsOf(int64_t key) const {
    auto it = duplicates.find(key);
    return 1 + (it == duplicates.end() ? 0 : it->second);
  }
};

std::optional<ApiError> CheckCollectionName(const std::string& name) {
  auto invalid = [&](const std::string& why) {
    return InvalidParameter("Invalid collection name: " + name + ". " + why);
  };
  if (name.empty()) return invalid("collection name should not be empty");
  if (name.size() > 255)
    return invalid("the length of a collection name must be less than 255 characters");
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) {
    return invalid("the first character of a collection name must be an underscore or letter");
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) {
      return invalid("collection name can only contain numbers, letters and underscores");
    }
  }
  return std::nullopt;
}

// A numeric parameter given as a number or a numeric string, in [lo, hi];
// knowhere's wording when out of range.
std::optional<ApiError> CheckIntValue(const Json* value, const char* key, int64_t lo, int64_t hi,
                                      const std::string& context) {
  if (value == nullptr || value->is_null()) return std::nullopt;
  const std::optional<int64_t> v = AsInt64(*value);
  if (!v) {
    return InvalidParameter(context + ": param '" + key + "' (" + RawText(*value) +
                            ") should be an integer");
  }
  if (*v < lo || *v > hi) {
    return InvalidParameter(context + ": out of range in json: param '" + key + "' (" +
                            std::to_string(*v) + ") should be in range [" + std::to_string(lo) +
                            ", " + std::to_string(hi) + "]");
  }
  return std::nullopt;
}

// The member `key` of an object, or nullptr.
const Json* Lookup(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// Reads one indexParams entry (IndexParam in request_v2.go) for a
// collection whose fields are given; checks the type, metric and build
// parameters as Milvus does.
std::optional<ApiError> ParseIndexParam(const Json& entry, const Collection& schema, IndexSpec* out,
                                        std::string* metric) {
  if (!entry.is_object()) {
    return FormatError("json: cannot unmarshal " + JsonTypeName(entry) +
                       " into Go struct field CollectionReq.indexParams of type "
                       "httpserver.IndexParam");
  }
  Body body(entry, "IndexParam");
  std::string field, index_name, metric_type, index_type;
  const Json* params = nullptr;
  if (auto e = body.String("fieldName", true, &field)) return e;
  if (auto e = body.String("indexName", false, &index_name)) return e;
  if (auto e = body.String("metricType", false, &metric_type)) return e;
  if (auto e = body.String("indexType", false, &index_type)) return e;
  if (auto e = body.Object("params", "map[string]interface {}", &params)) return e;
  if (params != nullptr) {
    for (const auto& [key, value] : params->items()) {
      if (!value.is_primitive()) {
        return InvalidParameter("invalid index params: param '" + key +
                                "' should be a number, a string or a boolean");
      }
    }
  }
  Json build = params != nullptr ? *params : Json::object();  // flat: a shallow copy
  if (index_type.empty() && build.contains("index_type") && build["index_type"].is_string()) {
    index_type = build["index_type"].get<std::string>();
  }
  if (metric_type.empty() && build.contains("metric_type") && build["metric_type"].is_string()) {
    metric_type = build["metric_type"].get<std::string>();
  }
  build.erase("index_type");
  build.erase("metric_type");
  if (field != schema.vector_field && field != schema.primary_field) {
    return ApiError{kMissingRequiredParameters,
                    "missing required parameters, error: `" + field + "` hasn't defined in schema"};
  }
  if (field == schema.primary_field) {
    return InvalidParameter("the pixseek Milvus test server indexes only the vector field `" +
                            schema.vector_field + "`");
  }
  if (index_type.empty()) index_type = "AUTOINDEX";
  static const std::set<std::string> kTypes = {"DISKANN", "HNSW", "IVF_FLAT", "FLAT", "AUTOINDEX"};
  if (kTypes.count(index_type) == 0) {
    return InvalidParameter("invalid index type: " + index_type +
                            " (the test server knows DISKANN, HNSW, IVF_FLAT, FLAT, AUTOINDEX)");
  }
  if (metric_type.empty()) return InvalidParameter("metric type not set for vector index");
  if (metric_type == "L2") {
    return InvalidParameter(
        "metric type L2 is not supported by the pixseek Milvus test server "
        "(COSINE and IP are)");
  }
  if (metric_type != "COSINE" && metric_type != "IP") {
    return InvalidParameter("metric type " + metric_type +
                            " not found or not supported, supported: [L2 IP COSINE]");
  }
  const std::string context = "invalid index params";
  if (index_type == "HNSW") {
    if (auto e = CheckIntValue(Lookup(build, "M"), "M", 2, 2048, context)) return e;
    if (auto e = CheckIntValue(Lookup(build, "efConstruction"), "efConstruction", 1, INT32_MAX,
                               context)) {
      return e;
    }
  } else if (index_type == "IVF_FLAT") {
    if (auto e = CheckIntValue(Lookup(build, "nlist"), "nlist", 1, 65536, context)) return e;
  }
  out->name = index_name.empty() ? field : index_name;
  out->field = field;
  out->type = index_type;
  out->params = build;
  *metric = metric_type;
  return std::nullopt;
}

// The search parameters (searchParams in SearchReqV2) checked against the
// index as knowhere checks them; k is limit + offset.
std::optional<ApiError> CheckSearchParams(const Collection& c, const Json* search_params,
                                          int64_t k) {
  if (search_params == nullptr) return std::nullopt;
  auto metric = search_params->find("metricType");
  if (metric != search_params->end() && metric->is_string() &&
      !metric->get<std::string>().empty() && metric->get<std::string>() != c.metric) {
    return InvalidParameter(c.metric, metric->get<std::string>(), "metric type not match");
  }
  // The knobs sit in searchParams.params (or, leniently, in searchParams).
  const Json* nested = Lookup(*search_params, "params");
  auto param = [&](const char* key) {
    const Json* v = nested != nullptr ? Lookup(*nested, key) : nullptr;
    return v != nullptr ? v : Lookup(*search_params, key);
  };
  if (param("radius") != nullptr || param("range_filter") != nullptr) {
    return InvalidParameter(
        "range search (radius, range_filter) is not supported by the pixseek "
        "Milvus test server");
  }
  const std::string context = "failed to search";
  const std::string type = c.index ? c.index->type : "";
  if (type == "DISKANN") {
    return CheckIntValue(param("search_list"), "search_list", k, std::max<int64_t>(200, 10 * k),
                         context);
  }
  if (type == "HNSW") return CheckIntValue(param("ef"), "ef", k, INT32_MAX, context);
  if (type == "IVF_FLAT") return CheckIntValue(param("nprobe"), "nprobe", 1, 65536, context);
  return std::nullopt;
}

std::optional<ApiError> CheckConsistencyLevel(const Body& body) {
  std::string level;
  if (auto e = body.String("consistencyLevel", false, &level)) return e;
  static const std::set<std::string> kLevels = {"Strong", "Session", "Bounded", "Eventually",
                                                "Customized"};
  if (!level.empty() && kLevels.count(level) == 0) {
    return ApiError{kParameterInvalid,
                    "consistencyLevel can only be [Strong, Session, Bounded, Eventually, "
                    "Customized], default: Bounded, err:parameter:'" +
                        level + "' is incorrect, please check it: invalid parameter"};
  }
  return std::nullopt;
}

// partitionNames: only the default partition exists.
std::optional<ApiError> CheckPartitions(const Body& body) {
  std::vector<std::string> names;
  bool present = false;
  if (auto e = body.StringList("partitionNames", &names, &present)) return e;
  std::string single;
  if (auto e = body.String("partitionName", false, &single)) return e;
  if (!single.empty()) names.push_back(single);
  for (const std::string& name : names) {
    if (name != "_default") {
      return ApiError{kPartitionNotFound, "partition not found[partition=" + name + "]"};
    }
  }
  return std::nullopt;
}

// Which fields a query or search returns.
struct OutputFields {
  bool id = false;
  bool vector = false;
};

std::optional<ApiError> ResolveOutputFields(const Collection& c,
                                            const std::vector<std::string>& names,
                                            OutputFields* out) {
  for (const std::string& raw : names) {
    const std::string name = Trim(raw);
    if (name == "*") {
      out->id = out->vector = true;
    } else if (name == c.primary_field) {
      out->id = true;
    } else if (name == c.vector_field) {
      out->vector = true;
    } else if (Lower(name) == "count(*)") {
      return InvalidParameter("count(*) must be the only output field");
    } else {
      return InvalidParameter("field " + name + " not exist");
    }
  }
  return std::nullopt;
}

Json CatalogueJson(const Collection& c) {
  Json duplicates = Json::array();
  for (const auto& [key, extra] : c.duplicates) duplicates.push_back({key, extra});
  Json index = nullptr;
  if (c.index) {
    index = Json{{"name", c.index->name},
                 {"field", c.index->field},
                 {"type", c.index->type},
                 {"params", c.index->params}};
  }
  return Json{{"format", kCatalogueFormat},
              {"name", c.name},
              {"id", c.id},
              {"description", c.description},
              {"dimension", c.dimension},
              {"metric", c.metric},
              {"primary_field", c.primary_field},
              {"vector_field", c.vector_field},
              {"enable_dynamic_field", c.enable_dynamic_field},
              {"consistency_level", c.consistency_level},
              {"index", index},
              {"loaded", c.loaded},
              {"duplicates", duplicates}};
}

// Fills the schema and state of `c` from its catalogue; an error message
// when the catalogue is not one this server wrote.
std::string ReadCatalogue(const Json& j, Collection* c) {
  try {
    if (j.at("format") != kCatalogueFormat) return "unknown catalogue format";
    c->name = j.at("name").get<std::string>();
    c->id = j.at("id").get<int64_t>();
    c->description = j.at("description").get<std::string>();
    c->dimension = j.at("dimension").get<int>();
    c->metric = j.at("metric").get<std::string>();
    c->primary_field = j.at("primary_field").get<std::string>();
    c->vector_field = j.at("vector_field").get<std::string>();
    c->enable_dynamic_field = j.at("enable_dynamic_field").get<bool>();
    c->consistency_level = j.at("consistency_level").get<std::string>();
    const Json& index = j.at("index");
    if (!index.is_null()) {
      c->index =
          IndexSpec{index.at("name").get<std::string>(), index.at("field").get<std::string>(),
                    index.at("type").get<std::string>(), index.at("params")};
    }
    c->loaded = j.at("loaded").get<bool>();
    for (const Json& pair : j.at("duplicates")) {
      c->duplicates[pair.at(0).get<int64_t>()] = pair.at(1).get<int64_t>();
    }
  } catch (const Json::exception& e) {
    return e.what();
  }
  if (c->dimension < kMinDim || c->dimension > kMaxDim || CheckCollectionName(c->name)) {
    return "bad name or dimension";
  }
  // A collection created without an index has no metric yet.
  if (c->metric != "COSINE" && c->metric != "IP" && !(c->metric.empty() && !c->index)) {
    return "bad metric " + c->metric;
  }
  return "";
}

}  // namespace

// ---------------------------------------------------------------- the server

struct MilvusTestServer::Impl {
  MilvusTestServerOptions options;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  int port = 0;

  // Guards the map (not the collections): shared to look one up, exclusive
  // to create, drop, open or close them.
  std::shared_mutex collections_mu;
  std::map<std::string, std::shared_ptr<Collection>> collections;  // guarded by collections_mu
  std::mutex ids_mu;
  int64_t next_id = 0;  // guarded by ids_mu; collection and compaction ids

  int64_t NewId() {
    std::lock_guard lock(ids_mu);
    const int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    next_id = std::max(next_id + 1, now);
    return next_id;
  }

  std::filesystem::path CataloguePath(const std::string& name) const {
    return options.dir / (name + ".json");
  }
  std::filesystem::path VectorsPath(const std::string& name) const {
    return options.dir / (name + ".flat");
  }

  // Called with c.mu held exclusively (or before c is shared).
  Status SaveCatalogue(const Collection& c) {
    return WriteFileAtomic(CataloguePath(c.name), CatalogueJson(c).dump(1) + "\n");
  }

  Result<std::unique_ptr<VectorIndex>> OpenVectors(const std::string& name, int dimension) {
    FlatIndexOptions flat;
    flat.num_threads = 2;
    return OpenFlatIndex(VectorsPath(name), dimension, flat);
  }

  std::string OpenAll();
  void Routes();

  std::shared_ptr<Collection> Find(const std::string& name) {
    std::shared_lock lock(collections_mu);
    auto it = collections.find(name);
    return it == collections.end() ? nullptr : it->second;
  }

  // --- handlers; each gets the decoded body and whether Int64s are numbers.
  struct Call {
    const Json& json;
    bool int64_numbers = true;
  };
  using Handler = Reply (Impl::*)(const Call&);

  Reply HasCollection(const Call& call);
  Reply ListCollections(const Call& call);
  Reply DescribeCollection(const Call& call);
  Reply CreateCollection(const Call& call);
  Reply DropCollection(const Call& call);
  Reply LoadCollection(const Call& call);
  Reply ReleaseCollection(const Call& call);
  Reply GetLoadState(const Call& call);
  Reply GetStats(const Call& call);
  Reply Flush(const Call& call);
  Reply Compact(const Call& call);
  Reply GetCompactionState(const Call& call);
  Reply CreateIndex(const Call& call);
  Reply DescribeIndex(const Call& call);
  Reply ListIndexes(const Call& call);
  Reply DropIndex(const Call& call);
  Reply Insert(const Call& call);
  Reply Upsert(const Call& call);
  Reply Delete(const Call& call);
  Reply Get(const Call& call);
  Reply Query(const Call& call);
  Reply Search(const Call& call);

  // Helpers shared by the handlers.
  Reply Write(const Call& call, bool upsert);
  Reply QueryRows(const Collection& c, const Filter& filter, const std::vector<std::string>& fields,
                  int64_t limit, int64_t offset, bool int64_numbers);
  std::optional<ApiError> CollectionNameOf(const Body& body, std::string* name,
                                           std::shared_ptr<Collection>* c);
  std::optional<ApiError> ApplyIndex(Collection& c, const Json* index_params, bool* changed);
};

std::string MilvusTestServer::Impl::OpenAll() {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return "cannot create " + options.dir.string() + ": " + ec.message();
  std::unique_lock lock(collections_mu);
  collections.clear();
  for (const auto& entry : std::filesystem::directory_iterator(options.dir, ec)) {
    const std::filesystem::path& path = entry.path();
    if (path.extension() != ".json") continue;
    Result<std::string> text = ReadTextFile(path);
    if (!text.ok()) return text.status().ToString();
    auto c = std::make_shared<Collection>();
    Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    const std::string error = j.is_discarded() ? "not JSON" : ReadCatalogue(j, c.get());
    if (!error.empty()) return "collection catalogue " + path.string() + " is damaged: " + error;
    if (c->name != path.stem().string()) {
      return "collection catalogue " + path.string() + " names another collection";
    }
    Result<std::unique_ptr<VectorIndex>> vectors = OpenVectors(c->name, c->dimension);
    if (!vectors.ok()) return "collection " + c->name + ": " + vectors.status().ToString();
    c->vectors = std::move(vectors).value();
    collections[c->name] = std::move(c);
  }
  if (ec) return "cannot list " + options.dir.string() + ": " + ec.message();
  return "";
}

// Looks up the collection named by the body's collectionName: 1802 when
// absent, 100 when unknown.
std::optional<ApiError> MilvusTestServer::Impl::CollectionNameOf(const Body& body,
                                                                 std::string* name,
                                                                 std::shared_ptr<Collection>* c) {
  if (auto e = body.String("collectionName", true, name)) return e;
  *c = Find(*name);
  if (*c == nullptr) return CollectionNotFound(*name);
  return std::nullopt;
}

// Holds a collection's lock and re-checks that it was not dropped meanwhile.
#define MILVUS_LOCK(lock_type, c, name) \
  lock_type lock((c)->mu);              \
  if ((c)->dropped) return Fail(CollectionNotFound(name))

Reply MilvusTestServer::Impl::HasCollection(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  MILVUS_TRY(body.String("collectionName", true, &name));
  return Ok(Json{{"has", Find(name) != nullptr}});
}

Reply MilvusTestServer::Impl::ListCollections(const Call&) {
  std::shared_lock lock(collections_mu);
  Json names = Json::array();
  for (const auto& [name, c] : collections) names.push_back(name);
  return Ok(names);
}

Reply MilvusTestServer::Impl::DescribeCollection(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::shared_lock, c, name);
  Json fields = Json::array();
  fields.push_back(Json{{"name", c->primary_field},
                        {"id", 100},
                        {"type", "Int64"},
                        {"primaryKey", true},
                        {"partitionKey", false},
                        {"clusteringKey", false},
                        {"autoId", false},
                        {"description", ""},
                        {"nullable", false}});
  fields.push_back(Json{
      {"name", c->vector_field},
      {"id", 101},
      {"type", "FloatVector"},
      {"primaryKey", false},
      {"partitionKey", false},
      {"clusteringKey", false},
      {"autoId", false},
      {"description", ""},
      {"nullable", false},
      {"params", Json::array({Json{{"key", "dim"}, {"value", std::to_string(c->dimension)}}})}});
  Json indexes = Json::array();
  if (c->index) {
    indexes.push_back(Json{
        {"indexName", c->index->name}, {"fieldName", c->index->field}, {"metricType", c->metric}});
  }
  Json data = {{"collectionName", c->name},
               {"collectionID", c->id},
               {"description", c->description},
               {"autoId", false},
               {"fields", fields},
               {"functions", Json::array()},
               {"aliases", Json::array()},
               {"indexes", indexes},
               {"load", c->loaded ? "LoadStateLoaded" : "LoadStateNotLoad"},
               {"shardsNum", 1},
               {"partitionsNum", 1},
               {"consistencyLevel", c->consistency_level},
               {"enableDynamicField", c->enable_dynamic_field},
               {"properties", Json::array()}};
  Reply reply = Ok(std::move(data));
  reply.body["message"] = "";
  return reply;
}

// Creates the collection's index from indexParams (a JSON array) when it has
// none; an equal index is accepted again, another one refused.
std::optional<ApiError> MilvusTestServer::Impl::ApplyIndex(Collection& c, const Json* index_params,
                                                           bool* changed) {
  *changed = false;
  if (index_params == nullptr) return std::nullopt;
  for (const Json& entry : *index_params) {
    IndexSpec spec;
    std::string metric;
    if (auto e = ParseIndexParam(entry, c, &spec, &metric)) return e;
    if (c.index) {
      if (!(*c.index == spec) || metric != c.metric) {
        return InvalidParameter(
            "CreateIndex failed: at most one distinct index is allowed per "
            "field, existing index " +
            c.index->name + " (" + c.index->type + ", " + c.metric + ")");
      }
      continue;
    }
    c.metric = metric;
    c.index = spec;
    *changed = true;
  }
  return std::nullopt;
}

Reply MilvusTestServer::Impl::CreateCollection(const Call& call) {
  Body body(call.json, "CollectionReq");
  std::string name, metric_type, id_type, pk_name, vector_name, description;
  int64_t dimension = 0;
  bool auto_id = false;
  const Json* schema = nullptr;
  const Json* index_params = nullptr;
  const Json* params = nullptr;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.Int("dimension", "int32", INT32_MIN, INT32_MAX, &dimension));
  MILVUS_TRY(body.String("metricType", false, &metric_type));
  MILVUS_TRY(body.String("idType", false, &id_type));
  MILVUS_TRY(body.Bool("autoID", &auto_id));
  MILVUS_TRY(body.String("primaryFieldName", false, &pk_name));
  MILVUS_TRY(body.String("vectorFieldName", false, &vector_name));
  MILVUS_TRY(body.String("description", false, &description));
  MILVUS_TRY(body.Object("schema", "httpserver.CollectionSchema", &schema));
  MILVUS_TRY(body.Array("indexParams", "[]httpserver.IndexParam", false, &index_params));
  MILVUS_TRY(body.Object("params", "map[string]interface {}", &params));
  MILVUS_TRY(CheckCollectionName(name));

  auto c = std::make_shared<Collection>();
  c->name = name;
  c->description = description;
  const Json* fields = nullptr;
  if (schema != nullptr) {
    Body schema_body(*schema, "CollectionSchema");
    MILVUS_TRY(schema_body.Array("fields", "[]httpserver.FieldSchema", false, &fields));
    if (fields != nullptr && fields->empty()) fields = nullptr;
    if (fields != nullptr) {
      bool schema_auto_id = false;
      MILVUS_TRY(schema_body.Bool("autoID", &schema_auto_id));
      MILVUS_TRY(schema_body.Bool("enableDynamicField", &c->enable_dynamic_field));
      if (schema_auto_id) {
        return Fail(InvalidParameter("autoID is not supported by the pixseek Milvus test server"));
      }
    }
  }
  Json quick_index;  // the index a quick create makes
  if (fields == nullptr) {
    // The quick form: dimension, metricType, idType, field names.
    if (dimension == 0) {
      return Fail(InvalidParameter("collectionName & dimension", "collectionName",
                                   "dimension is required for quickly create collection(default "
                                   "metric type: L2)"));
    }
    if (!id_type.empty() && id_type != "Int64" && id_type != "int64") {
      if (id_type == "VarChar" || id_type == "Varchar") {
        return Fail(
            InvalidParameter("VarChar primary keys are not supported by the pixseek "
                             "Milvus test server"));
      }
      return Fail(InvalidParameter("Int64, Varchar", id_type,
                                   "idType can only be [Int64, VarChar], default: Int64"));
    }
    if (auto_id) {
      return Fail(InvalidParameter("autoID is not supported by the pixseek Milvus test server"));
    }
    c->primary_field = pk_name.empty() ? "id" : pk_name;
    c->vector_field = vector_name.empty() ? "vector" : vector_name;
    c->enable_dynamic_field = true;
    if (params != nullptr && params->contains("enableDynamicField")) {
      const Json& v = (*params)["enableDynamicField"];
      c->enable_dynamic_field = v.is_boolean() ? v.get<bool>() : v == "true";
    }
    c->dimension = static_cast<int>(dimension);
    quick_index = Json::array({Json{{"fieldName", c->vector_field},
                                    {"indexName", c->vector_field},
                                    {"metricType", metric_type.empty() ? "L2" : metric_type}}});
    index_params = &quick_index;
  } else {
    // The schema form: exactly an Int64 primary key and one FloatVector.
    int primaries = 0, vectors = 0;
    for (const Json& field : *fields) {
      if (!field.is_object()) {
        return Fail(FormatError("json: cannot unmarshal " + JsonTypeName(field) +
                                " into Go struct field CollectionSchema.schema.fields of type "
                                "httpserver.FieldSchema"));
      }
      Body fb(field, "FieldSchema");
      std::string field_name, data_type;
      bool is_primary = false;
      const Json* type_params = nullptr;
      MILVUS_TRY(fb.String("fieldName", true, &field_name));
      MILVUS_TRY(fb.String("dataType", true, &data_type));
      MILVUS_TRY(fb.Bool("isPrimary", &is_primary));
      MILVUS_TRY(fb.Object("elementTypeParams", "map[string]interface {}", &type_params));
      static const std::set<std::string> kTypes = {
          "Bool",        "Int8",          "Int16",          "Int32",
          "Int64",       "Float",         "Double",         "String",
          "VarChar",     "Array",         "JSON",           "BinaryVector",
          "FloatVector", "Float16Vector", "BFloat16Vector", "SparseFloatVector"};
      if (kTypes.count(data_type) == 0) {
        return Fail(ApiError{kParameterInvalid, "invalid parameter, data type " + data_type +
                                                    " is invalid(case sensitive)."});
      }
      if (is_primary) {
        if (data_type != "Int64") {
          return Fail(
              InvalidParameter("the pixseek Milvus test server supports only Int64 "
                               "primary keys, not " +
                               data_type));
        }
        ++primaries;
        c->primary_field = field_name;
      } else if (data_type == "FloatVector") {
        ++vectors;
        c->vector_field = field_name;
        const Json* dim = type_params != nullptr && type_params->contains("dim")
                              ? &(*type_params)["dim"]
                              : nullptr;
        const std::optional<int64_t> d = dim != nullptr ? AsInt64(*dim) : std::nullopt;
        if (!d) {
          return Fail(InvalidParameter("dimension is not defined in field type params of field " +
                                       field_name + ", check type param `dim` for vector field"));
        }
        if (*d < kMinDim || *d > kMaxDim) {
          return Fail(InvalidParameter("invalid dimension: " + std::to_string(*d) +
                                       ". should be in range 2 ~ 32768"));
        }
        c->dimension = static_cast<int>(*d);
      } else {
        return Fail(
            InvalidParameter("the pixseek Milvus test server supports only an Int64 "
                             "primary key and one FloatVector field, not field " +
                             field_name + " (" + data_type + ")"));
      }
    }
    if (primaries != 1) {
      return Fail(InvalidParameter(primaries == 0 ? "primary key is not specified"
                                                  : "there are more than one primary key"));
    }
    if (vectors != 1) {
      return Fail(
          InvalidParameter("the pixseek Milvus test server needs exactly one FloatVector "
                           "field"));
    }
    if (c->primary_field == c->vector_field) {
      return Fail(InvalidParameter("duplicated field name " + c->primary_field));
    }
  }
  if (params != nullptr && params->contains("consistencyLevel")) {
    const Json& level = (*params)["consistencyLevel"];
    static const std::set<std::string> kLevels = {"Strong", "Session", "Bounded", "Eventually",
                                                  "Customized"};
    if (!level.is_string() || kLevels.count(level.get<std::string>()) == 0) {
      return Fail(InvalidParameter("Strong, Session, Bounded, Eventually, Customized",
                                   RawText(level),
                                   "consistencyLevel can only be [Strong, Session, Bounded, "
                                   "Eventually, Customized], default: Bounded"));
    }
    c->consistency_level = level.get<std::string>();
  }
  bool indexed = false;
  MILVUS_TRY(ApplyIndex(*c, index_params, &indexed));

  std::unique_lock lock(collections_mu);
  auto existing = collections.find(name);
  if (existing != collections.end()) {
    // Milvus accepts the same create again; another schema or index is refused.
    Collection& old = *existing->second;
    std::unique_lock old_lock(old.mu);
    const bool same =
        c->dimension == old.dimension && c->primary_field == old.primary_field &&
        c->vector_field == old.vector_field &&
        (!indexed || (old.index && *old.index == *c->index && c->metric == old.metric));
    if (!same) {
      return Fail(
          InvalidParameter("create duplicate collection with different parameters, "
                           "collection: " +
                           name));
    }
    return Ok(Json::object());
  }
  c->id = NewId();
  c->loaded = indexed;  // create loads the collection once it has an index
  std::error_code ec;
  std::filesystem::remove(VectorsPath(name), ec);  // a leftover of a create that died midway
  Result<std::unique_ptr<VectorIndex>> vectors = OpenVectors(name, c->dimension);
  if (!vectors.ok()) return Fail(ApiError{kUnexpected, vectors.status().ToString()});
  c->vectors = std::move(vectors).value();
  if (Status s = SaveCatalogue(*c); !s.ok()) {
    c->vectors.reset();
    std::filesystem::remove(VectorsPath(name), ec);
    return Fail(ApiError{kUnexpected, s.ToString()});
  }
  collections[name] = std::move(c);
  return Ok(Json::object());
}

Reply MilvusTestServer::Impl::DropCollection(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  MILVUS_TRY(body.String("collectionName", true, &name));
  std::unique_lock lock(collections_mu);
  auto it = collections.find(name);
  if (it == collections.end()) return Ok(Json::object());  // dropping is idempotent in Milvus
  std::shared_ptr<Collection> c = it->second;
  std::unique_lock c_lock(c->mu);
  std::error_code ec;
  if (!std::filesystem::remove(CataloguePath(name), ec) && ec) {
    return Fail(ApiError{kUnexpected, "cannot drop " + name + ": " + ec.message()});
  }
  c->dropped = true;
  c->vectors.reset();
  std::filesystem::remove(VectorsPath(name), ec);
  collections.erase(it);
  return Ok(Json::object());
}

Reply MilvusTestServer::Impl::LoadCollection(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::unique_lock, c, name);
  if (!c->index) {
    return Fail(ApiError{kIndexNotFound, "there is no vector index on field: [" + c->vector_field +
                                             "], please create index firstly: index not "
                                             "found[collection=" +
                                             name + "]"});
  }
  if (!c->loaded) {
    c->loaded = true;
    if (Status s = SaveCatalogue(*c); !s.ok()) {
      c->loaded = false;
      return Fail(ApiError{kUnexpected, s.ToString()});
    }
  }
  return Ok(Json::object());
}

Reply MilvusTestServer::Impl::ReleaseCollection(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::unique_lock, c, name);
  if (c->loaded) {
    c->loaded = false;
    if (Status s = SaveCatalogue(*c); !s.ok()) {
      c->loaded = true;
      return Fail(ApiError{kUnexpected, s.ToString()});
    }
  }
  return Ok(Json::object());
}

Reply MilvusTestServer::Impl::GetLoadState(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  MILVUS_TRY(body.String("collectionName", true, &name));
  std::shared_ptr<Collection> c = Find(name);
  if (c == nullptr)
    return Fail({kCollectionNotFound, "collection not found[collection=" + name + "]"});
  MILVUS_LOCK(std::shared_lock, c, name);
  if (!c->loaded) return Ok(Json{{"loadState", "LoadStateNotLoad"}});
  Reply reply = Ok(Json{{"loadState", "LoadStateLoaded"}, {"loadProgress", 100}});
  reply.body["message"] = "";
  return reply;
}

Reply MilvusTestServer::Impl::GetStats(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::shared_lock, c, name);
  return Ok(Json{{"rowCount", c->RowCount()}});
}

Reply MilvusTestServer::Impl::Flush(const Call& call) {
  // Every write is already durable.
  Body body(call.json, "FlushReq");
  std::string name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  return Ok(Json::object());
}

Reply MilvusTestServer::Impl::Compact(const Call& call) {
  Body body(call.json, "CompactReq");
  std::string name;
  std::shared_ptr<Collection> c;
  bool clustering = false;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_TRY(body.Bool("isClustering", &clustering));
  MILVUS_LOCK(std::unique_lock, c, name);
  // Compaction folds the duplicate rows of a key into its newest.
  if (!c->duplicates.empty()) {
    std::map<int64_t, int64_t> before;
    before.swap(c->duplicates);
    if (Status s = SaveCatalogue(*c); !s.ok()) {
      c->duplicates.swap(before);
      return Fail(ApiError{kUnexpected, s.ToString()});
    }
  }
  if (Status s = c->vectors->Compact(); !s.ok()) return Fail(ApiError{kUnexpected, s.ToString()});
  return Ok(Json{{"compactionID", NewId()}});
}

Reply MilvusTestServer::Impl::GetCompactionState(const Call& call) {
  Body body(call.json, "GetCompactionStateReq");
  int64_t job = 0;
  MILVUS_TRY(body.Int("jobID", "int64", INT64_MIN, INT64_MAX, &job));
  // Compaction finishes before compact answers.
  return Ok(Json{{"compactionID", job},
                 {"state", "Completed"},
                 {"executingPlanNumber", 0},
                 {"timeoutPlanNumber", 0},
                 {"completedPlanNumber", 1}});
}

// Rewrites every stored vector of `c` L2-normalised; c.mu held exclusively.
static Status NormalizeStored(Collection& c) {
  const std::vector<int64_t> ids = c.vectors->Ids();
  const size_t dim = static_cast<size_t>(c.dimension);
  std::vector<float> all;
  all.reserve(ids.size() * dim);
  for (int64_t id : ids) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<float> v, c.vectors->Get(id));
    NormalizeInPlace(v.data(), dim);
    all.insert(all.end(), v.begin(), v.end());
  }
  PIXSEEK_RETURN_IF_ERROR(c.vectors->Remove(ids));
  return c.vectors->Add(ids.size(), ids.data(), all.data());
}

Reply MilvusTestServer::Impl::CreateIndex(const Call& call) {
  Body body(call.json, "IndexParamReq");
  std::string name;
  std::shared_ptr<Collection> c;
  const Json* index_params = nullptr;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.Array("indexParams", "[]httpserver.IndexParam", true, &index_params));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::unique_lock, c, name);
  const std::optional<IndexSpec> before_index = c->index;
  const std::string before_metric = c->metric;
  bool changed = false;
  MILVUS_TRY(ApplyIndex(*c, index_params, &changed));
  if (changed && c->metric == "COSINE" && before_metric != "COSINE" && c->vectors->size() > 0) {
    // Rows inserted before the collection had a metric were stored as
    // given; COSINE searches normalised vectors.
    if (Status s = NormalizeStored(*c); !s.ok()) {
      c->index = before_index;
      c->metric = before_metric;
      return Fail(ApiError{kUnexpected, s.ToString()});
    }
  }
  if (changed) {
    if (Status s = SaveCatalogue(*c); !s.ok()) {
      c->index = before_index;
      c->metric = before_metric;
      return Fail(ApiError{kUnexpected, s.ToString()});
    }
  }
  return Ok(Json::object());
}

Reply MilvusTestServer::Impl::DescribeIndex(const Call& call) {
  Body body(call.json, "IndexReq");
  std::string name, index_name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.String("indexName", true, &index_name));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::shared_lock, c, name);
  if (!c->index || c->index->name != index_name) {
    return Fail(ApiError{kIndexNotFound, "index not found[collection=" + name + "]"});
  }
  const int64_t rows = c->RowCount();
  return Ok(Json::array({Json{{"indexName", c->index->name},
                              {"fieldName", c->index->field},
                              {"indexType", c->index->type},
                              {"metricType", c->metric},
                              {"totalRows", rows},
                              {"pendingRows", 0},
                              {"indexedRows", rows},
                              {"indexState", "Finished"},
                              {"failReason", ""}}}));
}

Reply MilvusTestServer::Impl::ListIndexes(const Call& call) {
  Body body(call.json, "CollectionNameReq");
  std::string name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::shared_lock, c, name);
  Json names = Json::array();
  if (c->index) names.push_back(c->index->name);
  return Ok(names);
}

Reply MilvusTestServer::Impl::DropIndex(const Call& call) {
  Body body(call.json, "IndexReq");
  std::string name, index_name;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.String("indexName", true, &index_name));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  MILVUS_LOCK(std::unique_lock, c, name);
  if (!c->index || c->index->name != index_name) {
    return Fail(ApiError{kIndexNotFound, "index not found[collection=" + name + "]"});
  }
  if (c->loaded) {
    return Fail(
        InvalidParameter("index cannot be dropped, collection is loaded, please release "
                         "it first"));
  }
  const std::optional<IndexSpec> before = c->index;
  c->index.reset();
  if (Status s = SaveCatalogue(*c); !s.ok()) {
    c->index = before;
    return Fail(ApiError{kUnexpected, s.ToString()});
  }
  return Ok(Json::object());
}

// insert and upsert: rows [{pk: int, vector: [floats]}].
Reply MilvusTestServer::Impl::Write(const Call& call, bool upsert) {
  Body body(call.json, "CollectionDataReq");
  std::string name;
  std::shared_ptr<Collection> c;
  const Json* data = nullptr;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.Array("data", "[]map[string]interface {}", true, &data));
  for (const Json& row : *data) {
    if (!row.is_object()) {
      return Fail(FormatError("json: cannot unmarshal " + JsonTypeName(row) +
                              " into Go struct field CollectionDataReq.data of type "
                              "map[string]interface {}"));
    }
  }
  MILVUS_TRY(CheckPartitions(body));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  if (data->empty()) return Fail(InsertDataError("missing required parameters"));

  // Decode every row before changing anything.
  const size_t dim = static_cast<size_t>(c->dimension);
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  ids.reserve(data->size());
  vectors.reserve(data->size() * dim);
  std::vector<float> v;
  for (const Json& row : *data) {
    auto pk = row.find(c->primary_field);
    const std::string pk_text = pk == row.end() || pk->is_null() ? "" : RawText(*pk);
    const std::optional<int64_t> id = pk == row.end() ? std::nullopt : AsInt64(*pk);
    if (!id) {
      return Fail(InsertDataError(
          "strconv.ParseInt: parsing \"" + pk_text +
          "\": invalid syntax: invalid parameter[expected=Int64][actual=" + pk_text + "]"));
    }
    auto vec = row.find(c->vector_field);
    if (vec == row.end() || vec->is_null()) {
      return Fail(InsertDataError("missing vector field: " + c->vector_field +
                                  ": invalid parameter[expected=FloatVector][actual=]"));
    }
    if (std::optional<std::string> error = ParseVector(*vec, &v)) {
      return Fail(InsertDataError(
          *error + ": invalid parameter[expected=FloatVector][actual=" + RawText(*vec) + "]"));
    }
    for (const auto& [key, value] : row.items()) {
      if (key == c->primary_field || key == c->vector_field) continue;
      if (!c->enable_dynamic_field) {
        return Fail(InsertDataError(
            "has pass more field without dynamic schema, please check it: invalid parameter"));
      }
      return Fail(InsertDataError("dynamic field " + key +
                                  ": dynamic fields are not supported by the pixseek Milvus test "
                                  "server: invalid parameter"));
    }
    if (v.size() != dim) {
      return Fail(InsertDataError("[]float32 size " + std::to_string(v.size()) +
                                  " doesn't equal to vector dimension " + std::to_string(dim) +
                                  " of FloatVector"));
    }
    ids.push_back(*id);
    vectors.insert(vectors.end(), v.begin(), v.end());
  }

  // The newest row of each key, and how often each key came.
  std::map<int64_t, size_t> last_row;
  std::map<int64_t, int64_t> times;
  for (size_t i = 0; i < ids.size(); ++i) {
    last_row[ids[i]] = i;
    ++times[ids[i]];
  }
  if (upsert) {
    for (const auto& [key, n] : times) {
      if (n > 1) {
        return Fail(
            InvalidParameter("duplicate primary keys are not allowed in the same batch, "
                             "primary key: " +
                             std::to_string(key)));
      }
    }
  }
  std::vector<int64_t> unique_ids;
  std::vector<float> unique_vectors;
  unique_ids.reserve(last_row.size());
  unique_vectors.reserve(last_row.size() * dim);
  for (const auto& [key, row] : last_row) {
    unique_ids.push_back(key);
    unique_vectors.insert(unique_vectors.end(), vectors.begin() + static_cast<ptrdiff_t>(row * dim),
                          vectors.begin() + static_cast<ptrdiff_t>((row + 1) * dim));
  }

  MILVUS_LOCK(std::unique_lock, c, name);
  if (c->metric == "COSINE") {
    for (size_t i = 0; i < unique_ids.size(); ++i) NormalizeInPlace(&unique_vectors[i * dim], dim);
  }
  std::vector<int64_t> present;
  for (int64_t key : unique_ids) {
    if (c->vectors->Get(key).ok()) present.push_back(key);
  }
  std::map<int64_t, int64_t> duplicates = c->duplicates;
  for (const auto& [key, n] : times) {
    const bool existed = std::binary_search(present.begin(), present.end(), key);
    if (upsert) {
      duplicates.erase(key);
    } else if (const int64_t extra = n - (existed ? 0 : 1); extra > 0) {
      duplicates[key] += extra;
    }
  }
  // The log records the removal and the addition separately; a crash between
  // them loses the replaced rows (acceptable for a test server).
  if (Status s = c->vectors->Remove(present); !s.ok()) {
    return Fail(ApiError{kUnexpected, s.ToString()});
  }
  if (Status s = c->vectors->Add(unique_ids.size(), unique_ids.data(), unique_vectors.data());
      !s.ok()) {
    return Fail(ApiError{kUnexpected, s.ToString()});
  }
  if (duplicates != c->duplicates) {
    c->duplicates.swap(duplicates);
    if (Status s = SaveCatalogue(*c); !s.ok()) return Fail(ApiError{kUnexpected, s.ToString()});
  }
  Json out_ids = Json::array();
  for (int64_t id : ids) out_ids.push_back(Int64Json(id, call.int64_numbers));
  const char* count_key = upsert ? "upsertCount" : "insertCount";
  const char* ids_key = upsert ? "upsertIds" : "insertIds";
  return OkWithCost(Json{{count_key, ids.size()}, {ids_key, out_ids}});
}

Reply MilvusTestServer::Impl::Insert(const Call& call) { return Write(call, false); }
Reply MilvusTestServer::Impl::Upsert(const Call& call) { return Write(call, true); }

Reply MilvusTestServer::Impl::Delete(const Call& call) {
  Body body(call.json, "CollectionFilterReq");
  std::string name, expr;
  std::shared_ptr<Collection> c;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.String("filter", true, &expr));
  MILVUS_TRY(CheckPartitions(body));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  Filter filter;
  MILVUS_TRY(FilterParser(expr, c->primary_field).Parse(&filter));
  MILVUS_LOCK(std::unique_lock, c, name);
  std::vector<int64_t> targets;
  int64_t count = 0;
  if (filter.kind == Filter::Kind::kIn) {
    // A delete by keys is not evaluated against the data: every key counts.
    targets = filter.ids;
    count = static_cast<int64_t>(filter.ids.size());
  } else {
    // Other expressions are evaluated by a query first, which needs the
    // collection loaded.
    if (!c->loaded) {
      return Fail(ApiError{kCollectionNotLoaded, "collection not loaded[collection=" + name + "]"});
    }
    for (int64_t id : c->vectors->Ids()) {
      if (filter.Matches(id)) {
        targets.push_back(id);
        count += c->RowsOf(id);
      }
    }
  }
  if (Status s = c->vectors->Remove(targets); !s.ok()) {
    return Fail(ApiError{kUnexpected, s.ToString()});
  }
  bool changed = false;
  for (int64_t id : targets) changed |= c->duplicates.erase(id) > 0;
  if (changed) {
    if (Status s = SaveCatalogue(*c); !s.ok()) return Fail(ApiError{kUnexpected, s.ToString()});
  }
  return Ok(Json{{"deleteCount", count}});
}

// The rows of a query: the keys matching `filter`, ascending, after
// `offset`, at most `limit` (0 = all); or their count for count(*).
Reply MilvusTestServer::Impl::QueryRows(const Collection& c, const Filter& filter,
                                        const std::vector<std::string>& fields, int64_t limit,
                                        int64_t offset, bool int64_numbers) {
  if (fields.size() == 1 && Lower(Trim(fields[0])) == "count(*)") {
    int64_t count = 0;
    if (filter.kind == Filter::Kind::kAll) {
      count = c.RowCount();
    } else {
      for (int64_t id : c.vectors->Ids()) {
        if (filter.Matches(id)) count += c.RowsOf(id);
      }
    }
    return OkWithCost(Json::array({Json{{"count(*)", Int64Json(count, int64_numbers)}}}));
  }
  OutputFields out;
  MILVUS_TRY(ResolveOutputFields(c, fields, &out));
  std::vector<int64_t> keys;
  if (filter.kind == Filter::Kind::kIn) {
    std::set<int64_t> wanted(filter.ids.begin(), filter.ids.end());
    for (int64_t id : wanted) {
      if (c.vectors->Get(id).ok()) keys.push_back(id);
    }
  } else {
    for (int64_t id : c.vectors->Ids()) {
      if (filter.Matches(id)) keys.push_back(id);
    }
  }
  Json rows = Json::array();
  const size_t begin = std::min(keys.size(), static_cast<size_t>(offset));
  const size_t end =
      limit > 0 ? std::min(keys.size(), begin + static_cast<size_t>(limit)) : keys.size();
  for (size_t i = begin; i < end; ++i) {
    Json row = Json::object();
    row[c.primary_field] = Int64Json(keys[i], int64_numbers);  // the key is always returned
    if (out.vector) {
      Result<std::vector<float>> v = c.vectors->Get(keys[i]);
      if (!v.ok()) continue;  // removed meanwhile cannot happen under the lock
      row[c.vector_field] = *v;
    }
    rows.push_back(std::move(row));
  }
  return OkWithCost(std::move(rows));
}

Reply MilvusTestServer::Impl::Get(const Call& call) {
  Body body(call.json, "CollectionIDReq");
  std::string name;
  std::shared_ptr<Collection> c;
  std::vector<std::string> fields = {"*"};
  bool fields_given = false;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.StringList("outputFields", &fields, &fields_given));
  if (body.Find("id") == nullptr) return Fail(*body.Missing("id"));
  MILVUS_TRY(CheckConsistencyLevel(body));
  MILVUS_TRY(CheckPartitions(body));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  const Json& id = *body.Find("id");
  Filter filter;
  filter.kind = Filter::Kind::kIn;
  for (const Json& item : id.is_array() ? id : Json::array({id})) {
    const std::optional<int64_t> key = AsInt64(item);
    if (!key) {
      return Fail(ApiError{kCheckPrimaryKey,
                           "please check the primary key and its' type can only in [int, string], "
                           "error: unable to cast " +
                               RawText(item) + " of type " + JsonTypeName(item) + " to int64"});
    }
    filter.ids.push_back(*key);
  }
  MILVUS_LOCK(std::shared_lock, c, name);
  if (!c->loaded) {
    return Fail(ApiError{kCollectionNotLoaded, "collection not loaded[collection=" + name + "]"});
  }
  return QueryRows(*c, filter, fields, 0, 0, call.int64_numbers);
}

Reply MilvusTestServer::Impl::Query(const Call& call) {
  Body body(call.json, "QueryReqV2");
  std::string name, expr;
  std::shared_ptr<Collection> c;
  std::vector<std::string> fields = {"*"};
  bool fields_given = false;
  int64_t limit = 100, offset = 0;  // Milvus's defaults for the REST query
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.StringList("outputFields", &fields, &fields_given));
  MILVUS_TRY(body.String("filter", false, &expr));
  MILVUS_TRY(body.Int("limit", "int32", INT32_MIN, INT32_MAX, &limit));
  MILVUS_TRY(body.Int("offset", "int32", INT32_MIN, INT32_MAX, &offset));
  MILVUS_TRY(CheckConsistencyLevel(body));
  MILVUS_TRY(CheckPartitions(body));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  const bool count = fields.size() == 1 && Lower(Trim(fields[0])) == "count(*)";
  if (limit < 0) limit = 0;  // not sent on to the query by Milvus's handler
  if (offset < 0) offset = 0;
  if (count) {
    limit = 0;
    offset = 0;
  }
  Filter filter;
  MILVUS_TRY(FilterParser(expr, c->primary_field).Parse(&filter));
  if (!count && Trim(expr).empty() && limit == 0) {
    return Fail(InvalidParameter("empty expression should be used with limit"));
  }
  if (limit > 0 && (limit + offset > kMaxTopK)) {
    return Fail(
        InvalidParameter("invalid max query result window, (offset+limit) should be in "
                         "range [1, 16384], but got " +
                         std::to_string(limit + offset)));
  }
  MILVUS_LOCK(std::shared_lock, c, name);
  if (!c->loaded) {
    return Fail(ApiError{kCollectionNotLoaded, "collection not loaded[collection=" + name + "]"});
  }
  return QueryRows(*c, filter, fields, limit, offset, call.int64_numbers);
}

Reply MilvusTestServer::Impl::Search(const Call& call) {
  Body body(call.json, "SearchReqV2");
  std::string name, expr, anns_field;
  std::shared_ptr<Collection> c;
  const Json* data = nullptr;
  const Json* search_params = nullptr;
  std::vector<std::string> fields;
  bool fields_given = false;
  int64_t limit = 100, offset = 0;
  MILVUS_TRY(body.String("collectionName", true, &name));
  MILVUS_TRY(body.Array("data", "[]interface {}", true, &data));
  MILVUS_TRY(body.String("annsField", false, &anns_field));
  MILVUS_TRY(body.String("filter", false, &expr));
  MILVUS_TRY(body.Int("limit", "int32", INT32_MIN, INT32_MAX, &limit));
  MILVUS_TRY(body.Int("offset", "int32", INT32_MIN, INT32_MAX, &offset));
  MILVUS_TRY(body.StringList("outputFields", &fields, &fields_given));
  MILVUS_TRY(body.Object("searchParams", "map[string]interface {}", &search_params));
  MILVUS_TRY(CheckConsistencyLevel(body));
  MILVUS_TRY(CheckPartitions(body));
  MILVUS_TRY(CollectionNameOf(body, &name, &c));
  if (!anns_field.empty() && anns_field != c->vector_field) {
    return Fail(FormatError("cannot find a vector field named: " + anns_field));
  }
  const size_t dim = static_cast<size_t>(c->dimension);
  std::vector<float> queries;
  std::vector<float> v;
  for (const Json& q : *data) {
    if (std::optional<std::string> error = ParseVector(q, &v)) {
      return Fail(FormatError(
          *error + ": invalid parameter[expected=FloatVector][actual=" + RawText(*data) + "]"));
    }
    if (v.size() != dim) {
      return Fail(FormatError("dimension: " + std::to_string(dim) +
                              ", but length of []float: " + std::to_string(v.size()) +
                              ": invalid parameter[expected=FloatVector][actual=" + RawText(*data) +
                              "]"));
    }
    queries.insert(queries.end(), v.begin(), v.end());
  }
  const int64_t nq = static_cast<int64_t>(data->size());
  if (nq < 1 || nq > kMaxNq) {
    return Fail(
        InvalidParameter("nq (number of search vector per search request) should be in "
                         "range [1, 16384], but got " +
                         std::to_string(nq)));
  }
  if (limit < 1 || limit > kMaxTopK) {
    return Fail(InvalidParameter("topk [" + std::to_string(limit) +
                                 "] is invalid, it should be in range [1, 16384], but got " +
                                 std::to_string(limit)));
  }
  if (offset < 0 || limit + offset > kMaxTopK) {
    return Fail(InvalidParameter("topk+offset [" + std::to_string(limit + offset) +
                                 "] is invalid, it should be in range [1, 16384], but got " +
                                 std::to_string(limit + offset)));
  }
  Filter filter;
  MILVUS_TRY(FilterParser(expr, c->primary_field).Parse(&filter));

  MILVUS_LOCK(std::shared_lock, c, name);
  if (!c->loaded) {
    return Fail(ApiError{kCollectionNotLoaded, "collection not loaded[collection=" + name + "]"});
  }
  MILVUS_TRY(CheckSearchParams(*c, search_params, limit + offset));
  if (c->metric == "COSINE") {
    for (size_t i = 0; i < static_cast<size_t>(nq); ++i) NormalizeInPlace(&queries[i * dim], dim);
  }
  OutputFields out;
  MILVUS_TRY(ResolveOutputFields(*c, fields, &out));

  std::vector<std::vector<SearchHit>> results;
  std::optional<IdFilter> id_filter;
  bool nothing = false;
  if (filter.kind != Filter::Kind::kAll) {
    std::vector<int64_t> allowed;
    if (filter.kind == Filter::Kind::kIn) {
      allowed = filter.ids;
    } else {
      for (int64_t id : c->vectors->Ids()) {
        if (filter.Matches(id)) allowed.push_back(id);
      }
    }
    nothing = allowed.empty();
    id_filter.emplace(std::move(allowed));
  }
  if (nothing || c->vectors->size() == 0) {
    results.assign(static_cast<size_t>(nq), {});
  } else {
    SearchParams params;
    params.filter = id_filter ? &*id_filter : nullptr;
    if (Status s = c->vectors->Search(static_cast<size_t>(nq), queries.data(),
                                      static_cast<size_t>(limit + offset), params, &results);
        !s.ok()) {
      return Fail(ApiError{kUnexpected, s.ToString()});
    }
  }
  Json rows = Json::array();
  Json topks = Json::array();
  for (const std::vector<SearchHit>& hits : results) {
    int64_t n = 0;
    for (size_t i = static_cast<size_t>(offset); i < hits.size(); ++i, ++n) {
      Json row = Json::object();
      if (out.id) row[c->primary_field] = Int64Json(hits[i].id, call.int64_numbers);
      if (out.vector) {
        Result<std::vector<float>> vec = c->vectors->Get(hits[i].id);
        if (vec.ok()) row[c->vector_field] = *vec;
      }
      row["id"] = Int64Json(hits[i].id, call.int64_numbers);
      row["distance"] = hits[i].score;
      rows.push_back(std::move(row));
    }
    topks.push_back(n);
  }
  if (rows.empty()) return OkWithCost(Json::array());
  Reply reply = OkWithCost(std::move(rows));
  reply.body["topks"] = std::move(topks);
  return reply;
}

void MilvusTestServer::Impl::Routes() {
  struct Route {
    const char* path;
    Handler handler;
  };
  static const Route kRoutes[] = {
      {"/v2/vectordb/collections/has", &Impl::HasCollection},
      {"/v2/vectordb/collections/list", &Impl::ListCollections},
      {"/v2/vectordb/collections/describe", &Impl::DescribeCollection},
      {"/v2/vectordb/collections/create", &Impl::CreateCollection},
      {"/v2/vectordb/collections/drop", &Impl::DropCollection},
      {"/v2/vectordb/collections/load", &Impl::LoadCollection},
      {"/v2/vectordb/collections/release", &Impl::ReleaseCollection},
      {"/v2/vectordb/collections/get_load_state", &Impl::GetLoadState},
      {"/v2/vectordb/collections/get_stats", &Impl::GetStats},
      {"/v2/vectordb/collections/flush", &Impl::Flush},
      {"/v2/vectordb/collections/compact", &Impl::Compact},
      {"/v2/vectordb/collections/get_compaction_state", &Impl::GetCompactionState},
      {"/v2/vectordb/indexes/create", &Impl::CreateIndex},
      {"/v2/vectordb/indexes/describe", &Impl::DescribeIndex},
      {"/v2/vectordb/indexes/list", &Impl::ListIndexes},
      {"/v2/vectordb/indexes/drop", &Impl::DropIndex},
      {"/v2/vectordb/entities/insert", &Impl::Insert},
      {"/v2/vectordb/entities/upsert", &Impl::Upsert},
      {"/v2/vectordb/entities/delete", &Impl::Delete},
      {"/v2/vectordb/entities/get", &Impl::Get},
      {"/v2/vectordb/entities/query", &Impl::Query},
      {"/v2/vectordb/entities/search", &Impl::Search},
  };
  auto send = [](httplib::Response& res, const Reply& reply) {
    res.status = reply.http_status;
    res.set_content(reply.body.dump(-1, ' ', false, Json::error_handler_t::replace),
                    "application/json; charset=utf-8");
  };
  for (const Route& route : kRoutes) {
    const Handler handler = route.handler;
    server->Post(
        route.path, [this, handler, send](const httplib::Request& req, httplib::Response& res) {
          // Gin's binding: an empty body is io.EOF, anything but a JSON object a
          // decoding error.
          if (Trim(req.body).empty()) {
            return send(res, Fail(ApiError{kIncorrectParameterFormat,
                                           "can only accept json format request, the request body "
                                           "should be nil, however {} is valid"}));
          }
          Json json = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
          if (json.is_discarded()) {
            std::string detail;
            try {
              const Json rethrown = Json::parse(req.body);
            } catch (const Json::exception& e) {
              detail = e.what();
            }
            return send(res, Fail(FormatError(detail)));
          }
          if (!json.is_object()) {
            return send(res, Fail(FormatError("json: cannot unmarshal " + JsonTypeName(json) +
                                              " into Go value of type map[string]interface {}")));
          }
          // Only the default database exists.
          Body common(json, "DatabaseReq");
          std::string db;
          if (auto e = common.String("dbName", false, &db)) return send(res, Fail(*e));
          if (db.empty()) db = req.get_header_value("DB-Name");
          if (!db.empty() && db != "default") {
            return send(
                res, Fail(ApiError{kDatabaseNotFound, "database not found[database=" + db + "]"}));
          }
          Call call{json};
          const std::string allow = Lower(req.get_header_value("Accept-Type-Allow-Int64"));
          call.int64_numbers = !(allow == "false" || allow == "0" || allow == "f");
          try {
            send(res, (this->*handler)(call));
          } catch (const std::exception& e) {
            send(res, Fail(ApiError{kUnexpected, std::string("unexpected error: ") + e.what()}));
          }
        });
  }
}

MilvusTestServer::MilvusTestServer(MilvusTestServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}

MilvusTestServer::~MilvusTestServer() { Stop(); }

int MilvusTestServer::port() const { return impl_->port; }

std::string MilvusTestServer::url(const std::string& collection) const {
  return "milvus://127.0.0.1:" + std::to_string(impl_->port) + "/" + collection;
}

void MilvusTestServer::Stop() {
  Impl& im = *impl_;
  if (im.server) im.server->stop();
  if (im.thread.joinable()) im.thread.join();
  im.server.reset();
  std::unique_lock lock(im.collections_mu);
  for (auto& [name, c] : im.collections) {
    std::unique_lock c_lock(c->mu);
    c->dropped = true;  // a request still holding it answers "not found"
    c->vectors.reset();
  }
  im.collections.clear();
}

std::string MilvusTestServer::Start() {
  Impl& im = *impl_;
  if (im.server) return "already started";
  if (im.options.dir.empty()) return "no directory given";
  if (std::string error = im.OpenAll(); !error.empty()) {
    Stop();
    return error;
  }
  im.server = std::make_unique<httplib::Server>();
  httplib::Server& server = *im.server;
  server.set_payload_max_length(kMaxBodyBytes);
  server.set_read_timeout(30, 0);
  server.set_write_timeout(30, 0);
  const std::string token = im.options.token;
  server.set_pre_routing_handler([token](const httplib::Request& req, httplib::Response& res) {
    if (token.empty()) return httplib::Server::HandlerResponse::Unhandled;
    // Milvus reads "Bearer <token>" (user:password or an API key).
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (auth.size() == prefix.size() + token.size() &&
        auth.compare(0, prefix.size(), prefix) == 0 &&
        auth.compare(prefix.size(), std::string::npos, token) == 0) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.status = 401;
    res.set_content(
        Json{{"code", kNeedAuthenticate}, {"message", "user hasn't authenticated"}}.dump(),
        "application/json; charset=utf-8");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 413) {
      // A body over the limit: Milvus's envelope, HTTP 200, so that clients
      // see a request error rather than a transport one.
      res.status = 200;
      res.set_content(Json{{"code", kParameterTooLarge},
                           {"message", "parameter too large: the request body is over " +
                                           std::to_string(kMaxBodyBytes) + " bytes"}}
                          .dump(),
                      "application/json; charset=utf-8");
    } else if (res.status == 404) {
      res.set_content("404 page not found", "text/plain");
    }
  });
  im.Routes();
  const int port = im.options.port > 0 ? im.options.port : 0;
  if (port > 0) {
    if (!server.bind_to_port("127.0.0.1", port)) {
      Stop();
      return "cannot listen on 127.0.0.1:" + std::to_string(port);
    }
    im.port = port;
  } else {
    im.port = server.bind_to_any_port("127.0.0.1");
    if (im.port <= 0) {
      Stop();
      return "cannot listen on 127.0.0.1";
    }
  }
  im.thread = std::thread([&server] { server.listen_after_bind(); });
  // The socket accepts connections since bind; wait until the loop runs too.
  for (int i = 0; i < 500 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return "";
}

}  // namespace pixseek::testing
