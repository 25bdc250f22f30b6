// A Milvus RESTful API v2 server for the tests: the subset of Milvus's
// HTTP/JSON interface that pixseek speaks, backed by pixseek's own exact
// (flat) index. No Milvus can be installed on the test machines, so CI checks
// the protocol against this server, NOT a live Milvus; the typed VectorIndex
// suite runs against a real Milvus whenever PIXSEEK_TEST_MILVUS_URL is set.
//
// It is written from Milvus's public API reference and its REST handler
// source (internal/distributed/proxy/httpserver: request_v2.go for the
// request fields, handler_v2.go for routes and replies, utils.go for how rows
// and results are encoded, pkg/util/merr for the error codes). No Milvus code
// is copied.
//
// Protocol, as Milvus answers it:
// - Every call is POST /v2/vectordb/<group>/<verb> with a JSON body; the reply
//   is HTTP 200 with {"code": 0, "data": ...} or {"code": <merr code>,
//   "message": "..."}. Only a failed authentication answers HTTP 401 (still
//   with the envelope: code 1800 "user hasn't authenticated"). Unknown paths
//   answer HTTP 404 "404 page not found" like Milvus's router.
// - Codes used: 100 collection not found, 101 collection not loaded,
//   200 partition not found (only "_default" exists), 700 index not found,
//   800 database not found (only "default" exists), 1100 invalid parameter
//   (bad filter or output field, out-of-range limit or search parameter,
//   unsupported schema, L2 metric, ...), 1102 parameter too large (a body
//   over 64 MiB; HTTP 200 too), 1800 not authenticated, 1801 malformed JSON
//   or a field of the wrong type (including a search vector of the wrong
//   dimension), 1802 missing required parameter, 1804 bad insert/upsert data
//   (including a vector of the wrong dimension), 1806 bad primary keys in
//   get, 65535 an unexpected failure (the disk). Messages follow Milvus's
//   ("collection not found[database=default][collection=x]", ...); where
//   Milvus's own wording comes from deep inside (knowhere's parameter
//   checks) the code is Milvus's and the text close to it.
// - Int64 values (ids, count(*)) are JSON numbers, or decimal strings when
//   the request says "Accept-Type-Allow-Int64: false" (Milvus's default for
//   that header is true).
// - Search with several query vectors answers one flat "data" list (each row
//   {"id", "distance", output fields...}, query after query) and "topks", the
//   number of rows of each query, as current Milvus does.
//
// Implemented:
//   collections/ has, describe, list, create (quick form: dimension +
//     metricType; or schema: one Int64 primary field with autoId false and
//     one FloatVector field with elementTypeParams.dim, plus indexParams),
//     drop, load, release, get_load_state, get_stats, flush, compact,
//     get_compaction_state;
//   indexes/ create, describe, list, drop;
//   entities/ insert, upsert, delete, get, query (filter, limit, offset,
//     outputFields, count(*)), search (several query vectors, limit,
//     offset, filter, outputFields, annsField, searchParams,
//     consistencyLevel).
//   Filters: `<pk> in [1, 2, 3]` and `<pk> <op> <integer>` with op one of
//   == != > >= < <=, or none; anything else is a clear 1100 error. As in
//   Milvus, an integer literal is read without its sign, so
//   -9223372036854775808 does not parse.
// Not implemented (answered 404 or a clear error): partitions, aliases,
//   databases other than "default", users and roles, hybrid search, import
//   jobs, dynamic fields, scalar fields other than the primary key, VarChar
//   or autoId primary keys, the L2 metric, range search, grouping.
//
// Behaviour worth knowing:
// - Metrics: COSINE stores and searches L2-normalised vectors (so get/query
//   return the normalised vector, unlike Milvus, which keeps the original;
//   rows inserted before a COSINE index was created are normalised then);
//   IP stores the vectors as given. The distance is the inner product, a
//   similarity: higher is better. The search is exact whatever the index
//   type; index and search parameters are validated as Milvus/knowhere does
//   (HNSW: M in [2, 2048], efConstruction >= 1, search ef in [limit, 2^31);
//   IVF_FLAT: nlist in [1, 65536], nprobe in [1, 65536]; DISKANN:
//   search_list in [limit, max(200, 10 * limit)]).
// - Insert does not reject a primary key that already exists: like Milvus,
//   it keeps both rows until compaction. get/query/search show the newest
//   row of a key (Milvus deduplicates by key, newest first), while count(*)
//   and get_stats count every row, as Milvus's do. upsert replaces all rows
//   of its keys (and refuses the same key twice in one batch, as Milvus
//   does); delete removes them; compact folds the duplicates away.
// - Consistency: always strong. Every write is durable and visible to the
//   next request before it is acknowledged, whatever consistencyLevel says
//   (which is still validated).
// - A collection created with indexParams is loaded at once (as Milvus's
//   create does); one created without an index is not, and load refuses it
//   (700) until indexes/create. Searching or querying a collection that is
//   not loaded is 101. The load state survives a restart.
// - Persistence: each collection is a flat-index log "<name>.flat" and a JSON
//   catalogue "<name>.json" (schema, metric, index, load state, duplicate
//   counts) in options.dir, the catalogue written atomically. Start opens
//   every catalogue there; another server on the same directory fails to
//   start (the flat index's writer lock).
#ifndef PIXSEEK_TESTS_MILVUS_SERVER_H_
#define PIXSEEK_TESTS_MILVUS_SERVER_H_

#include <filesystem>
#include <memory>
#include <string>

namespace pixseek::testing {

struct MilvusTestServerOptions {
  std::filesystem::path dir;  // where collections persist (flat-index logs + a JSON catalogue)
  int port = 0;               // 0 = a free port
  std::string token;          // when set, every request needs "Authorization: Bearer <token>"
};

// Thread-safety: Start and Stop are called by the owner's thread; requests are
// served on the HTTP server's own threads meanwhile (the collections are
// guarded inside). Owns the HTTP server, its thread and the open indexes.
class MilvusTestServer {
 public:
  explicit MilvusTestServer(MilvusTestServerOptions options);
  ~MilvusTestServer();
  MilvusTestServer(const MilvusTestServer&) = delete;
  MilvusTestServer& operator=(const MilvusTestServer&) = delete;

  // Opens the collections in options.dir (creating it when absent) and
  // listens on 127.0.0.1. Returns an error message, empty on success; the
  // server accepts connections when it returns. Start after Stop reopens.
  std::string Start();
  // Stops listening and closes every collection (releasing the indexes'
  // writer locks); idempotent.
  void Stop();

  int port() const;
  // "milvus://127.0.0.1:<port>/<collection>"
  std::string url(const std::string& collection) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_MILVUS_SERVER_H_
