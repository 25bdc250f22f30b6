// The "milvus" vector index: the vectors live in a Milvus collection, spoken
// to through Milvus's RESTful API v2 (milvus_client.h), so that several
// pixseek processes on several machines share one index.
//
// The collection (VectorIndexSpec::url names it) has two fields: "id", the
// INT64 primary key (autoId off: pixseek assigns the ids), and "vector", a
// FLOAT_VECTOR of the database's dimension, indexed by DISKANN (or HNSW or
// IVF_FLAT) under the COSINE (or IP) metric. A writable open creates it when
// missing and loads it; an existing one of another dimension or metric is
// refused with what it holds and what pixseek needs.
//
// How the VectorIndex contract maps onto Milvus:
// - Add checks first that none of the ids is present (entities/get), then
//   inserts in requests of at most milvus_batch_rows rows: Milvus itself accepts a
//   primary key twice. A request failing midway deletes the rows the earlier
//   requests of the same Add inserted, so a failed Add leaves nothing behind
//   unless Milvus went away altogether (the message says so). Two processes
//   adding the same id at the same moment are not caught: pixseek's ids come
//   from the metadata store, which never hands one out twice.
// - Every read (search, query, get) asks for consistencyLevel "Strong" (and
//   the collection is created Strong, which query and get use), so an
//   acknowledged insert or delete is seen by the next request of any process.
//   Milvus acknowledges a write once it is in its write-ahead log: durable.
// - Remove deletes by `id in [...]` in requests of milvus_batch_rows ids.
// - Ids pages through a query `id > last` with Milvus's largest window
//   (16384 rows), relying on Milvus returning a limited query in primary-key
//   order (proxy reduceRetrieveResults merges the segments by key), as
//   pymilvus's QueryIterator does.
// - Search sends up to kQueriesPerRequest query vectors per request, splits
//   the answer by its "topks" (one flat list, query after query), and sorts
//   each query's hits best first, ties by smaller id. A filter becomes
//   `id in [...]` over at most filter_chunk ids per expression (Milvus parses
//   the whole expression for every request; a few thousand ids keep it small
//   and fast): a larger filter is searched chunk by chunk and the hits merged,
//   which is exact because each chunk returns its own k best.
// - INT64_MIN cannot be written in a Milvus expression (its grammar reads
//   "-9223372036854775808" as minus an out-of-range literal), so that one id
//   is always addressed as `id < -9223372036854775807`.
// - Compact asks Milvus to compact the collection (collections/compact, a
//   background job that folds deletions away); a Milvus without that route
//   (before 2.5) answers 404 and Compact is a no-op. CompactIfNeeded does
//   nothing: Milvus compacts on its own.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "index/index_kinds.h"
#include "index/milvus_client.h"
#include "pixseek/vector_index.h"

namespace pixseek {
namespace {

using milvus::Json;
using milvus::MilvusClient;
using milvus::MilvusEndpoint;

constexpr const char* kIndexTypes[] = {"DISKANN", "HNSW", "IVF_FLAT"};
constexpr const char* kMetrics[] = {"COSINE", "IP"};

constexpr unsigned kSearching = kCmdQuery | kCmdEval | kCmdServe;
constexpr unsigned kEveryCommand = kCmdBuild | kSearching | kCmdAdd | kCmdRemove | kCmdCompact;

// clang-format off: one row a parameter, as in disk_params.cc.
const IndexParamSpec kSpecs[] = {
    {"milvus_index", ParamType::kString, 0, 0, false, kIndexTypes, "DISKANN", ParamPhase::kCreate,
     kCmdBuild, "The index Milvus builds over the collection's vectors"},
    {"metric", ParamType::kString, 0, 0, false, kMetrics, "COSINE", ParamPhase::kCreate, kCmdBuild,
     "Milvus's similarity; COSINE and IP rank pixseek's unit vectors alike"},
    {"hnsw_m",
     ParamType::kInt,
     2,
     2048,
     false,
     {},
     "16",
     ParamPhase::kCreate,
     kCmdBuild,
     "HNSW graph degree M (milvus_index = HNSW)"},
    {"ef_construction",
     ParamType::kInt,
     1,
     2147483647,
     false,
     {},
     "200",
     ParamPhase::kCreate,
     kCmdBuild,
     "HNSW candidate list while building (milvus_index = HNSW)"},
    {"nlist",
     ParamType::kInt,
     1,
     65536,
     false,
     {},
     "1024",
     ParamPhase::kCreate,
     kCmdBuild,
     "IVF_FLAT clusters (milvus_index = IVF_FLAT)"},
    // DISKANN's search_list (Milvus takes [k, max(200, 10 k)]: clamped to
    // it); a query's own SearchParams::search_list also sets HNSW's ef. The
    // same name, type and range as the disk index's, so one flag serves both.
    {"search_list",
     ParamType::kInt,
     0,
     kMaxSearchList,
     false,
     {},
     "0",
     ParamPhase::kOpen,
     kSearching,
     "Search list L: larger finds more true neighbours, slower (0 = max(64, 2k))"},
    {"ef",
     ParamType::kInt,
     0,
     kMaxSearchList,
     false,
     {},
     "0",
     ParamPhase::kOpen,
     kSearching,
     "HNSW search candidate list ef (0 = max(64, 2k))"},
    {"nprobe",
     ParamType::kInt,
     1,
     65536,
     false,
     {},
     "16",
     ParamPhase::kOpen,
     kSearching,
     "IVF_FLAT clusters searched per query"},
    {"timeout_ms",
     ParamType::kInt,
     100,
     600000,
     false,
     {},
     "10000",
     ParamPhase::kOpen,
     kEveryCommand,
     "Bound on connecting to Milvus and on each request to it"},
    // Not "batch_rows": `pixseek migrate` has its own --batch-rows.
    {"milvus_batch_rows",
     ParamType::kInt,
     1,
     100000,
     false,
     {},
     "1000",
     ParamPhase::kOpen,
     kEveryCommand,
     "Rows per insert and ids per delete request to Milvus"},
    {"filter_chunk",
     ParamType::kInt,
     1,
     100000,
     false,
     {},
     "4096",
     ParamPhase::kOpen,
     kSearching,
     "Ids per `id in [...]` of a filtered search; more are searched chunk by chunk"},
};
// clang-format on

// Milvus's largest topK and query window (offset + limit).
constexpr size_t kMaxTopK = 16384;
constexpr size_t kQueryWindow = 16384;
// Query vectors per search request (their results come back as one list).
constexpr size_t kQueriesPerRequest = 64;
// How long an open waits for Milvus to load the collection.
constexpr auto kLoadWait = std::chrono::seconds(120);

constexpr int64_t kMinId = std::numeric_limits<int64_t>::min();
// What selects kMinId alone in a Milvus expression.
constexpr const char* kMinIdFilter = "id < -9223372036854775807";

struct MilvusConfig {
  std::string index_type;
  std::string metric;
  int64_t hnsw_m = 16;
  int64_t ef_construction = 200;
  int64_t nlist = 1024;
  int64_t search_list = 0;
  int64_t ef = 0;
  int64_t nprobe = 16;
  int timeout_ms = 10000;
  size_t batch_rows = 1000;
  size_t filter_chunk = 4096;
};

Result<MilvusConfig> ConfigFrom(const IndexParams& params) {
  for (const IndexParamSpec& spec : kSpecs) {
    if (const IndexParams::Entry* e = params.Find(spec.name)) {
      PIXSEEK_RETURN_IF_ERROR(ValidateParam(spec, e->value));
    }
  }
  MilvusConfig c;
  c.index_type = params.String("milvus_index", "DISKANN");
  c.metric = params.String("metric", "COSINE");
  c.hnsw_m = params.Int("hnsw_m", c.hnsw_m);
  c.ef_construction = params.Int("ef_construction", c.ef_construction);
  c.nlist = params.Int("nlist", c.nlist);
  c.search_list = params.Int("search_list", c.search_list);
  c.ef = params.Int("ef", c.ef);
  c.nprobe = params.Int("nprobe", c.nprobe);
  c.timeout_ms = static_cast<int>(params.Int("timeout_ms", c.timeout_ms));
  c.batch_rows =
      static_cast<size_t>(params.Int("milvus_batch_rows", static_cast<int64_t>(c.batch_rows)));
  c.filter_chunk =
      static_cast<size_t>(params.Int("filter_chunk", static_cast<int64_t>(c.filter_chunk)));
  return c;
}

bool AllFinite(const float* values, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return false;
  }
  return true;
}

// An id of a reply row: a JSON number, or a decimal string when Milvus
// formats int64 as text (Accept-Type-Allow-Int64 off).
bool ReadId(const Json& v, int64_t* id) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX}) return false;
    *id = v.get<int64_t>();
    return true;
  }
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    try {
      size_t used = 0;
      *id = std::stoll(s, &used);
      return used == s.size();
    } catch (const std::exception&) {
      return false;
    }
  }
  return false;
}

// `id in [a,b,c]` over ids (none of them kMinId).
std::string InFilter(std::span<const int64_t> ids) {
  std::string out = "id in [";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  out += ']';
  return out;
}

// The ids without kMinId, and whether it was among them.
std::vector<int64_t> WithoutMinId(std::span<const int64_t> ids, bool* had_min) {
  std::vector<int64_t> out;
  out.reserve(ids.size());
  *had_min = false;
  for (int64_t id : ids) {
    if (id == kMinId) {
      *had_min = true;
    } else {
      out.push_back(id);
    }
  }
  return out;
}

bool BetterHit(const SearchHit& a, const SearchHit& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Thread-safety: as VectorIndex. Searches and reads go straight to Milvus
// (the client opens a connection per request); Add and Remove hold write_mu_
// so that one process's check-then-insert of an Add is not interleaved with
// another of its writes. Owns the client only.
class MilvusIndex final : public VectorIndex {
 public:
  MilvusIndex(MilvusClient client, int dimension, MilvusConfig config, bool read_only)
      : client_(std::move(client)),
        dim_(static_cast<size_t>(dimension)),
        config_(std::move(config)),
        read_only_(read_only) {}

  // Finds (or creates) the collection, checks it and loads it. Called once,
  // before sharing.
  Status Open() {
    PIXSEEK_ASSIGN_OR_RETURN(Json has, client_.Call("collections/has", client_.CollectionBody()));
    if (!has.is_object() || !has.value("has", false)) {
      if (read_only_) {
        return Status::NotFound(Where() + ": the collection does not exist (a read-only open " +
                                "creates nothing)");
      }
      PIXSEEK_RETURN_IF_ERROR(Create());
    }
    PIXSEEK_RETURN_IF_ERROR(Check());
    return Load();
  }

  std::string kind() const override { return "milvus"; }
  int dimension() const override { return static_cast<int>(dim_); }

  size_t size() const override {
    auto n = Count();
    if (n.ok()) last_size_ = *n;
    return last_size_;
  }

  Status Add(size_t n, const int64_t* ids, const float* vectors) override {
    if (read_only_) return Status::FailedPrecondition(Where() + " is open read-only");
    if (n == 0) return Status::Ok();
    if (ids == nullptr || vectors == nullptr) {
      return Status::InvalidArgument("Add: null ids or vectors");
    }
    if (!AllFinite(vectors, n * dim_)) {
      return Status::InvalidArgument("Add: the vectors hold non-finite values (NaN or infinity)");
    }
    const std::span<const int64_t> batch(ids, n);
    std::unordered_set<int64_t> seen;
    for (int64_t id : batch) {
      if (!seen.insert(id).second) {
        return Status::AlreadyExists("Add: id " + std::to_string(id) + " appears twice");
      }
    }
    std::lock_guard lock(write_mu_);
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<int64_t> present, Present(batch));
    if (!present.empty()) {
      return Status::AlreadyExists(
          "id " + std::to_string(present.front()) + " is already in " + Where() +
          (present.size() > 1
               ? " (and " + std::to_string(present.size() - 1) + " more of this batch)"
               : "") +
          "; nothing was added");
    }
    for (size_t start = 0; start < n; start += config_.batch_rows) {
      const size_t count = std::min(config_.batch_rows, n - start);
      Status inserted = Insert(ids + start, vectors + start * dim_, count);
      if (!inserted.ok()) return Undo(inserted, batch.first(start));
    }
    return Status::Ok();
  }

  Status Remove(std::span<const int64_t> ids) override {
    if (read_only_) return Status::FailedPrecondition(Where() + " is open read-only");
    if (ids.empty()) return Status::Ok();
    std::lock_guard lock(write_mu_);
    return Delete(ids);
  }

  Result<std::vector<float>> Get(int64_t id) const override {
    PIXSEEK_ASSIGN_OR_RETURN(Json rows, Fetch(std::span<const int64_t>(&id, 1), true));
    for (const Json& row : rows) {
      int64_t got = 0;
      if (!row.is_object() || !ReadId(row.value("id", Json()), &got) || got != id) continue;
      return ReadVector(row);
    }
    return Status::NotFound("id " + std::to_string(id) + " is not in " + Where());
  }

  std::vector<int64_t> Ids() const override {
    auto ids = AllIds();
    return ids.ok() ? std::move(ids).value() : std::vector<int64_t>{};
  }

  Status Search(size_t n, const float* queries, size_t k, const SearchParams& params,
                std::vector<std::vector<SearchHit>>* results) const override {
    results->assign(n, {});
    if (n == 0 || k == 0) return Status::Ok();
    if (queries == nullptr) return Status::InvalidArgument("Search: null queries");
    if (!AllFinite(queries, n * dim_)) {
      return Status::InvalidArgument("Search: the queries hold non-finite values");
    }
    if (k > kMaxTopK) {
      return Status::InvalidArgument("Search: k = " + std::to_string(k) +
                                     " is above Milvus's largest topK, " +
                                     std::to_string(kMaxTopK));
    }
    const Json search_params = SearchParamsJson(k, params.search_list);
    if (params.filter == nullptr) {
      return SearchAll(n, queries, k, search_params, "", results);
    }
    // Chunks of the allowed ids; each chunk's k best, merged.
    bool had_min = false;
    const std::vector<int64_t> allowed = WithoutMinId(params.filter->ids(), &had_min);
    std::vector<std::string> filters;
    for (size_t start = 0; start < allowed.size(); start += config_.filter_chunk) {
      const size_t count = std::min(config_.filter_chunk, allowed.size() - start);
      filters.push_back(InFilter(std::span<const int64_t>(allowed).subspan(start, count)));
    }
    if (had_min) filters.push_back(kMinIdFilter);
    for (const std::string& filter : filters) {
      std::vector<std::vector<SearchHit>> part;
      PIXSEEK_RETURN_IF_ERROR(SearchAll(n, queries, k, search_params, filter, &part));
      for (size_t q = 0; q < n; ++q) {
        std::vector<SearchHit>& hits = (*results)[q];
        hits.insert(hits.end(), part[q].begin(), part[q].end());
        std::sort(hits.begin(), hits.end(), BetterHit);
        if (hits.size() > k) hits.resize(k);
      }
    }
    return Status::Ok();
  }

  Status Compact() override {
    if (read_only_) return Status::FailedPrecondition(Where() + " is open read-only");
    auto compacted = client_.Call("collections/compact", client_.CollectionBody());
    // A Milvus before 2.5 has no such route: it compacts on its own only.
    if (!compacted.ok() && compacted.status().code() != StatusCode::kUnsupported) {
      return compacted.status();
    }
    return Status::Ok();
  }

  std::vector<IndexStat> Stats() const override {
    std::vector<IndexStat> out = {{"milvus_url", client_.endpoint().display},
                                  {"milvus_collection", client_.endpoint().collection},
                                  {"milvus_index", index_type_},
                                  {"metric", metric_}};
    auto n = Count();
    if (n.ok()) {
      out.push_back({"vectors", static_cast<int64_t>(*n)});
    } else {
      out.push_back({"milvus_error", n.status().message()});
    }
    return out;
  }

  // Every id, ascending; the error when Milvus cannot be asked.
  Result<std::vector<int64_t>> AllIds() const {
    std::vector<int64_t> out;
    std::string filter;  // the first page: no filter at all (kMinId included)
    for (;;) {
      Json body = client_.CollectionBody();
      body["filter"] = filter;
      body["limit"] = kQueryWindow;
      body["outputFields"] = Json::array({"id"});
      body["consistencyLevel"] = "Strong";
      PIXSEEK_ASSIGN_OR_RETURN(Json rows, client_.Call("entities/query", body));
      if (!rows.is_array()) return Malformed("entities/query", "data is not a list");
      int64_t last = kMinId;
      for (const Json& row : rows) {
        int64_t id = 0;
        if (!row.is_object() || !ReadId(row.value("id", Json()), &id)) {
          return Malformed("entities/query", "a row without an integer id");
        }
        out.push_back(id);
        last = std::max(last, id);
      }
      if (rows.size() < kQueryWindow || last == std::numeric_limits<int64_t>::max()) break;
      filter = "id > " + std::to_string(last);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  // The number of rows (count(*)).
  Result<size_t> Count() const {
    Json body = client_.CollectionBody();
    body["filter"] = "";
    body["outputFields"] = Json::array({"count(*)"});
    body["consistencyLevel"] = "Strong";
    PIXSEEK_ASSIGN_OR_RETURN(Json rows, client_.Call("entities/query", body));
    if (!rows.is_array() || rows.size() != 1 || !rows[0].is_object()) {
      return Malformed("entities/query count(*)", "not one row");
    }
    int64_t count = 0;
    if (!ReadId(rows[0].value("count(*)", Json()), &count) || count < 0) {
      return Malformed("entities/query count(*)", "no count");
    }
    return static_cast<size_t>(count);
  }

  const std::string& index_type() const { return index_type_; }
  const std::string& metric() const { return metric_; }
  std::string Where() const { return "Milvus collection " + client_.endpoint().display; }

 private:
  Status Malformed(const std::string& call, const std::string& what) const {
    return Status::Internal(Where() + ": unexpected answer to " + call + ": " + what);
  }

  // collections/create with the schema, the index and strong consistency.
  Status Create() {
    Json index_params = {{"index_type", config_.index_type}};
    if (config_.index_type == "HNSW") {
      index_params["M"] = config_.hnsw_m;
      index_params["efConstruction"] = config_.ef_construction;
    } else if (config_.index_type == "IVF_FLAT") {
      index_params["nlist"] = config_.nlist;
    }
    Json body = client_.CollectionBody();
    body["schema"] = {
        {"autoID", false},
        {"enableDynamicField", false},
        {"fields", Json::array({{{"fieldName", "id"}, {"dataType", "Int64"}, {"isPrimary", true}},
                                {{"fieldName", "vector"},
                                 {"dataType", "FloatVector"},
                                 {"elementTypeParams", {{"dim", std::to_string(dim_)}}}}})},
    };
    body["indexParams"] = Json::array({{{"fieldName", "vector"},
                                        {"indexName", "vector"},
                                        {"metricType", config_.metric},
                                        {"indexType", config_.index_type},
                                        {"params", index_params}}});
    body["params"] = {{"consistencyLevel", "Strong"}};
    auto created = client_.Call("collections/create", body);
    if (created.ok()) return Status::Ok();
    // Another process may have created it meanwhile: Check decides.
    auto has = client_.Call("collections/has", client_.CollectionBody());
    if (has.ok() && has->is_object() && has->value("has", false)) return Status::Ok();
    return created.status();
  }

  // The collection's schema, metric and index against what pixseek needs.
  Status Check() {
    PIXSEEK_ASSIGN_OR_RETURN(Json d,
                             client_.Call("collections/describe", client_.CollectionBody()));
    if (!d.is_object() || !d.contains("fields") || !d["fields"].is_array()) {
      return Malformed("collections/describe", "no fields");
    }
    const Json* primary = nullptr;
    const Json* vector = nullptr;
    for (const Json& f : d["fields"]) {
      if (!f.is_object()) continue;
      if (f.value("primaryKey", false)) primary = &f;
      if (f.value("type", std::string()).find("Vector") != std::string::npos && vector == nullptr) {
        vector = &f;
      }
    }
    const std::string needs = "pixseek needs an Int64 primary key \"id\" (autoId off) and a " +
                              std::to_string(dim_) + "-dimensional FloatVector \"vector\"";
    if (primary == nullptr || primary->value("name", std::string()) != "id" ||
        primary->value("type", std::string()) != "Int64" || primary->value("autoId", false)) {
      return Status::FailedPrecondition(Where() + " has another primary key; " + needs);
    }
    if (vector == nullptr || vector->value("name", std::string()) != "vector" ||
        vector->value("type", std::string()) != "FloatVector") {
      return Status::FailedPrecondition(Where() + " has no FloatVector field \"vector\"; " + needs);
    }
    int64_t dim = 0;
    if (auto p = vector->find("params"); p != vector->end() && p->is_array()) {
      for (const Json& kv : *p) {
        if (kv.is_object() && kv.value("key", std::string()) == "dim") {
          const Json& v = kv.contains("value") ? kv["value"] : Json();
          if (!ReadId(v, &dim)) dim = 0;
        }
      }
    }
    if (dim != static_cast<int64_t>(dim_)) {
      return Status::InvalidArgument(Where() + " holds " + std::to_string(dim) +
                                     "-dimensional vectors; this database's are " +
                                     std::to_string(dim_) + "-dimensional");
    }
    std::string index_name;
    if (auto idx = d.find("indexes"); idx != d.end() && idx->is_array()) {
      for (const Json& i : *idx) {
        if (i.is_object() && i.value("fieldName", std::string()) == "vector") {
          index_name = i.value("indexName", std::string());
          metric_ = i.value("metricType", std::string());
        }
      }
    }
    if (index_name.empty()) {
      return Status::FailedPrecondition(Where() +
                                        " has no index on \"vector\"; create one (metric " +
                                        config_.metric + ") or let pixseek create the collection");
    }
    if (metric_ != config_.metric) {
      return Status::FailedPrecondition(Where() + " ranks by the " + metric_ +
                                        " metric; this database uses " + config_.metric +
                                        " (set metric = " + metric_ + " to use it as it is)");
    }
    Json body = client_.CollectionBody();
    body["indexName"] = index_name;
    PIXSEEK_ASSIGN_OR_RETURN(Json indexes, client_.Call("indexes/describe", body));
    if (indexes.is_array()) {
      for (const Json& i : indexes) {
        if (i.is_object() && i.value("indexName", std::string()) == index_name) {
          index_type_ = i.value("indexType", std::string());
        }
      }
    }
    // An index another tool made is used as it is: searches send the
    // parameters of its type (Stats names it).
    if (index_type_.empty()) index_type_ = config_.index_type;
    return Status::Ok();
  }

  // collections/load, then get_load_state until loaded.
  Status Load() {
    PIXSEEK_RETURN_IF_ERROR(client_.Call("collections/load", client_.CollectionBody()).status());
    const auto deadline = std::chrono::steady_clock::now() + kLoadWait;
    for (;;) {
      PIXSEEK_ASSIGN_OR_RETURN(
          Json state, client_.Call("collections/get_load_state", client_.CollectionBody()));
      if (state.is_object() && state.value("loadState", std::string()) == "LoadStateLoaded") {
        return Status::Ok();
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::Unavailable(Where() + " is still loading after " +
                                   std::to_string(kLoadWait.count()) + " s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  // The rows of the given ids (entities/get; kMinId by a query), with their
  // vectors when `vectors`.
  Result<Json> Fetch(std::span<const int64_t> ids, bool vectors) const {
    bool had_min = false;
    const std::vector<int64_t> rest = WithoutMinId(ids, &had_min);
    Json fields = vectors ? Json::array({"id", "vector"}) : Json::array({"id"});
    Json rows = Json::array();
    const auto append = [&](Result<Json> got, const char* call) -> Status {
      if (!got.ok()) return got.status();
      if (!got->is_array()) return Malformed(call, "data is not a list");
      for (Json& row : *got) rows.push_back(std::move(row));
      return Status::Ok();
    };
    for (size_t start = 0; start < rest.size(); start += config_.batch_rows) {
      const size_t count = std::min(config_.batch_rows, rest.size() - start);
      Json body = client_.CollectionBody();
      body["id"] = std::vector<int64_t>(rest.begin() + start, rest.begin() + start + count);
      body["outputFields"] = fields;
      PIXSEEK_RETURN_IF_ERROR(append(client_.Call("entities/get", body), "entities/get"));
    }
    if (had_min) {
      Json body = client_.CollectionBody();
      body["filter"] = kMinIdFilter;
      body["limit"] = 1;
      body["outputFields"] = fields;
      body["consistencyLevel"] = "Strong";
      PIXSEEK_RETURN_IF_ERROR(append(client_.Call("entities/query", body), "entities/query"));
    }
    return rows;
  }

  // The ids of `ids` that are present.
  Result<std::vector<int64_t>> Present(std::span<const int64_t> ids) const {
    PIXSEEK_ASSIGN_OR_RETURN(Json rows, Fetch(ids, false));
    std::vector<int64_t> out;
    for (const Json& row : rows) {
      int64_t id = 0;
      if (row.is_object() && ReadId(row.value("id", Json()), &id)) out.push_back(id);
    }
    return out;
  }

  Result<std::vector<float>> ReadVector(const Json& row) const {
    auto v = row.find("vector");
    if (v == row.end() || !v->is_array() || v->size() != dim_) {
      return Malformed("entities/get", "no " + std::to_string(dim_) + "-float vector");
    }
    std::vector<float> out(dim_);
    for (size_t d = 0; d < dim_; ++d) {
      const Json& x = (*v)[d];
      if (!x.is_number()) return Malformed("entities/get", "a vector value is not a number");
      out[d] = static_cast<float>(x.get<double>());
    }
    return out;
  }

  // One entities/insert of `count` rows.
  Status Insert(const int64_t* ids, const float* vectors, size_t count) {
    Json data = Json::array();
    for (size_t i = 0; i < count; ++i) {
      data.push_back(
          {{"id", ids[i]},
           {"vector", std::vector<float>(vectors + i * dim_, vectors + (i + 1) * dim_)}});
    }
    Json body = client_.CollectionBody();
    body["data"] = std::move(data);
    PIXSEEK_ASSIGN_OR_RETURN(Json reply, client_.Call("entities/insert", body));
    int64_t inserted = -1;
    if (!reply.is_object() || !ReadId(reply.value("insertCount", Json()), &inserted) ||
        inserted != static_cast<int64_t>(count)) {
      return Malformed("entities/insert", "insertCount is not " + std::to_string(count));
    }
    return Status::Ok();
  }

  // entities/delete of `ids` in requests of batch_rows ids.
  Status Delete(std::span<const int64_t> ids) const {
    bool had_min = false;
    const std::vector<int64_t> rest = WithoutMinId(ids, &had_min);
    std::vector<std::string> filters;
    for (size_t start = 0; start < rest.size(); start += config_.batch_rows) {
      const size_t count = std::min(config_.batch_rows, rest.size() - start);
      filters.push_back(InFilter(std::span<const int64_t>(rest).subspan(start, count)));
    }
    if (had_min) filters.push_back(kMinIdFilter);
    for (const std::string& filter : filters) {
      Json body = client_.CollectionBody();
      body["filter"] = filter;
      PIXSEEK_RETURN_IF_ERROR(client_.Call("entities/delete", body).status());
    }
    return Status::Ok();
  }

  // A failed Add: removes what its earlier requests inserted.
  Status Undo(const Status& failure, std::span<const int64_t> inserted) {
    if (inserted.empty()) return failure;
    Status undone = Delete(inserted);
    if (undone.ok()) {
      return failure.WithContext("Add (its first " + std::to_string(inserted.size()) +
                                 " rows were removed again)");
    }
    return failure.WithContext("Add (its first " + std::to_string(inserted.size()) +
                               " rows stay in the collection: removing them failed too)");
  }

  // searchParams for k hits; search_list overrides the candidate list knob.
  Json SearchParamsJson(size_t k, int search_list) const {
    const int64_t kk = static_cast<int64_t>(k);
    const int64_t fallback = std::max<int64_t>(64, 2 * kk);
    Json params = Json::object();
    if (index_type_ == "DISKANN") {
      int64_t l = search_list > 0 ? search_list
                                  : (config_.search_list > 0 ? config_.search_list : fallback);
      // knowhere takes search_list in [k, max(200, 10 k)].
      l = std::clamp<int64_t>(l, kk, std::max<int64_t>(200, 10 * kk));
      params["search_list"] = l;
    } else if (index_type_ == "HNSW") {
      const int64_t ef = search_list > 0 ? search_list : (config_.ef > 0 ? config_.ef : fallback);
      params["ef"] = std::max(ef, kk);
    } else if (index_type_.rfind("IVF", 0) == 0) {
      params["nprobe"] = config_.nprobe;
    }
    return {{"metricType", metric_}, {"params", params}};
  }

  // Every query against one filter ("" = none), kQueriesPerRequest a request.
  Status SearchAll(size_t n, const float* queries, size_t k, const Json& search_params,
                   const std::string& filter, std::vector<std::vector<SearchHit>>* results) const {
    results->assign(n, {});
    for (size_t start = 0; start < n; start += kQueriesPerRequest) {
      const size_t count = std::min(kQueriesPerRequest, n - start);
      PIXSEEK_RETURN_IF_ERROR(SearchRequest(queries + start * dim_, count, k, search_params, filter,
                                            results->data() + start));
    }
    return Status::Ok();
  }

  // One entities/search of `count` queries into results[0, count).
  Status SearchRequest(const float* queries, size_t count, size_t k, const Json& search_params,
                       const std::string& filter, std::vector<SearchHit>* results) const {
    Json data = Json::array();
    for (size_t q = 0; q < count; ++q) {
      data.push_back(std::vector<float>(queries + q * dim_, queries + (q + 1) * dim_));
    }
    Json body = client_.CollectionBody();
    body["data"] = std::move(data);
    body["annsField"] = "vector";
    body["limit"] = k;
    body["searchParams"] = search_params;
    body["consistencyLevel"] = "Strong";
    if (!filter.empty()) body["filter"] = filter;
    PIXSEEK_ASSIGN_OR_RETURN(Json envelope, client_.CallEnvelope("entities/search", body));
    const Json rows = envelope.value("data", Json::array());
    if (!rows.is_array()) return Malformed("entities/search", "data is not a list");
    // How many rows belong to each query: "topks" where Milvus sends it;
    // one query owns them all; else they split evenly only when every query
    // got k, and otherwise each query is asked again on its own.
    std::vector<size_t> per_query;
    if (auto t = envelope.find("topks");
        t != envelope.end() && t->is_array() && t->size() == count) {
      for (const Json& x : *t) {
        int64_t v = 0;
        if (!ReadId(x, &v) || v < 0) return Malformed("entities/search", "a bad topks entry");
        per_query.push_back(static_cast<size_t>(v));
      }
    } else if (count == 1) {
      per_query.push_back(rows.size());
    } else if (rows.size() == count * k) {
      per_query.assign(count, k);
    } else {
      for (size_t q = 0; q < count; ++q) {
        PIXSEEK_RETURN_IF_ERROR(
            SearchRequest(queries + q * dim_, 1, k, search_params, filter, results + q));
      }
      return Status::Ok();
    }
    size_t total = 0;
    for (size_t c : per_query) total += c;
    if (total != rows.size()) return Malformed("entities/search", "topks do not add up");
    size_t row = 0;
    for (size_t q = 0; q < count; ++q) {
      std::vector<SearchHit>& hits = results[q];
      hits.clear();
      for (size_t i = 0; i < per_query[q]; ++i, ++row) {
        const Json& r = rows[row];
        SearchHit hit;
        if (!r.is_object() || !ReadId(r.value("id", Json()), &hit.id) || !r.contains("distance") ||
            !r["distance"].is_number()) {
          return Malformed("entities/search", "a row without id and distance");
        }
        hit.score = static_cast<float>(r["distance"].get<double>());
        hits.push_back(hit);
      }
      std::sort(hits.begin(), hits.end(), BetterHit);
      if (hits.size() > k) hits.resize(k);
    }
    return Status::Ok();
  }

  const MilvusClient client_;
  const size_t dim_;
  const MilvusConfig config_;
  const bool read_only_;
  // What the collection has (Check): its metric and index type.
  std::string metric_;
  std::string index_type_;
  // The last count size() learnt: what it answers while Milvus is away.
  mutable std::atomic<size_t> last_size_{0};
  std::mutex write_mu_;  // held by Add and Remove
};

// The index of spec.url, opened and checked.
Result<std::unique_ptr<MilvusIndex>> OpenMilvus(const VectorIndexSpec& spec, bool read_only) {
  if (spec.dimension <= 0) {
    return Status::InvalidArgument("index dimension must be positive, got " +
                                   std::to_string(spec.dimension));
  }
  if (spec.url.empty()) {
    return Status::InvalidArgument(
        "the milvus index needs a URL (vector_url = "
        "milvus://[USER:PASSWORD@]HOST[:PORT]/COLLECTION)");
  }
  PIXSEEK_ASSIGN_OR_RETURN(MilvusEndpoint endpoint, milvus::ParseMilvusUrl(spec.url));
  PIXSEEK_ASSIGN_OR_RETURN(MilvusConfig config, ConfigFrom(spec.params));
  auto index = std::make_unique<MilvusIndex>(MilvusClient(std::move(endpoint), config.timeout_ms),
                                             spec.dimension, std::move(config), read_only);
  PIXSEEK_RETURN_IF_ERROR(index->Open());
  return index;
}

}  // namespace

std::span<const IndexParamSpec> MilvusIndexParamSpecs() { return kSpecs; }

Result<std::unique_ptr<VectorIndex>> OpenMilvusIndexFromSpec(const VectorIndexSpec& spec) {
  PIXSEEK_ASSIGN_OR_RETURN(auto index, OpenMilvus(spec, spec.read_only));
  return std::unique_ptr<VectorIndex>(std::move(index));
}

Result<IndexVerifyReport> VerifyMilvusIndexFromSpec(const VectorIndexSpec& spec) {
  PIXSEEK_ASSIGN_OR_RETURN(auto index, OpenMilvus(spec, /*read_only=*/true));
  IndexVerifyReport report;
  PIXSEEK_ASSIGN_OR_RETURN(report.ids, index->AllIds());
  PIXSEEK_ASSIGN_OR_RETURN(size_t rows, index->Count());
  IndexFileCheck check;
  // Not a file: the collection, named without its secrets.
  check.file = index->Where();
  check.summary = std::to_string(rows) + " rows, " + std::to_string(report.ids.size()) +
                  " distinct ids, index " + index->index_type() + ", metric " + index->metric();
  if (rows != report.ids.size()) {
    check.note = std::to_string(rows - std::min(rows, report.ids.size())) +
                 " rows repeat an id (Milvus keeps both until it compacts; searches see the "
                 "newest)";
  }
  report.files.push_back(std::move(check));
  return report;
}

}  // namespace pixseek
