// MetadataStore on MySQL/MariaDB through MariaDB Connector/C (libmariadb):
// URL parsing, schema migration, prepared statements, a connection pool and
// reconnection after the server went away.
#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/url.h"
#include "pixseek/metadata_store.h"
#include "store/coordination.h"
#include "store/feature_blob.h"

namespace pixseek {
namespace {

// ---------------------------------------------------------------------------
// URL

struct MysqlUrl {
  std::string user;
  std::string password;  // never printed
  std::string host;
  unsigned port = 3306;
  std::string database;

  // "HOST:PORT", the name errors use for the server.
  std::string Endpoint() const {
    bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }
};

bool IsHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// Which part of a URL that uriparser rejected is wrong, for the message
// only (the parse itself is uriparser's). Empty when no part stands out.
std::string DiagnoseSyntax(std::string_view text) {
  size_t start = text.find("://");
  if (start == std::string_view::npos) return {};
  std::string_view authority = text.substr(start + 3);
  authority = authority.substr(0, authority.find('/'));
  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    for (size_t i = userinfo.find('%'); i != std::string_view::npos;
         i = userinfo.find('%', i + 1)) {
      if (i + 2 >= userinfo.size() || !IsHex(userinfo[i + 1]) || !IsHex(userinfo[i + 2])) {
        return "bad percent-encoding in the user or password (write '%' as %25, '@' as %40, "
               "'/' as %2F)";
      }
    }
    authority.remove_prefix(at + 1);
  }
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return "unclosed '[' in the host";
    authority.remove_prefix(close + 1);
  }
  if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    if (port.find_first_not_of("0123456789") != std::string_view::npos) {
      return "bad port '" + std::string(port.substr(0, 16)) + "'";
    }
  }
  return {};
}

// The URL syntax is core/url.h's (uriparser, shared by every store); this
// checks what a MySQL URL needs. Messages never contain the password.
Result<MysqlUrl> ParseMysqlUrl(const std::string& text) {
  const auto bad = [](const std::string& why) {
    return Status::InvalidArgument("metadata URL: " + why +
                                   " (expected mysql://USER:PASSWORD@HOST:PORT/DATABASE)");
  };
  auto parsed = ParseStoreUrl(text);
  if (!parsed.ok()) {
    std::string part = DiagnoseSyntax(text);
    return part.empty() ? parsed.status() : bad(part);
  }
  StoreUrl url = std::move(parsed).value();
  if (url.scheme != "mysql" && url.scheme != "mariadb") {
    return bad("the scheme must be mysql:// or mariadb://");
  }
  if (url.user.empty()) return bad("no user");
  if (url.host.empty()) return bad("no host");
  if (url.path.empty() || url.path.find('/') != std::string::npos) {
    return bad("the path must be one database name");
  }
  if (!url.query.empty()) return bad("query parameters are not supported");
  MysqlUrl out;
  out.user = std::move(url.user);
  out.password = std::move(url.password);
  out.host = std::move(url.host);
  if (url.port != 0) out.port = static_cast<unsigned>(url.port);
  out.database = std::move(url.path);
  return out;
}

// ---------------------------------------------------------------------------
// Errors

// Errors that mean the connection (or the server) is gone, as opposed to an
// error in the statement.
bool IsConnectionError(unsigned code) {
  switch (code) {
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_UNKNOWN_HOST:
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_ERR_NET_READ:
    case CR_ERR_NET_WRITE:
    case ER_SERVER_SHUTDOWN:
    case ER_CONNECTION_KILLED:
      return true;
    default:
      return false;
  }
}

// Whether a statement that failed with `code` cannot have been executed by
// the server: the connection was already gone before it was sent.
bool NeverSent(unsigned code) {
  return code == CR_CONNECTION_ERROR || code == CR_CONN_HOST_ERROR || code == CR_UNKNOWN_HOST ||
         code == CR_SERVER_GONE_ERROR;
}

// Status for a server or client error that is not a lost connection.
Status MapError(unsigned code, std::string message) {
  switch (code) {
    case ER_DUP_ENTRY:
      return Status::AlreadyExists(std::move(message));
    case ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:  // not valid UTF-8
    case ER_DATA_TOO_LONG:
    case ER_WARN_DATA_OUT_OF_RANGE:
      return Status::InvalidArgument(std::move(message));
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_CON_COUNT_ERROR:
    case ER_TOO_MANY_USER_CONNECTIONS:
      return Status::Unavailable(std::move(message));
    case ER_NO_SUCH_TABLE:
    case ER_BAD_FIELD_ERROR:
      return Status::DataLoss(std::move(message));
    case ER_ACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
    case ER_DBACCESS_DENIED_ERROR:
    case ER_TABLEACCESS_DENIED_ERROR:
      return Status::PermissionDenied(std::move(message));
    case ER_BAD_DB_ERROR:
    case ER_NO_REFERENCED_ROW:  // a feature for an image that is not there
    case ER_NO_REFERENCED_ROW_2:
      return Status::NotFound(std::move(message));
    default:
      return Status::Internal(std::move(message));
  }
}

// ---------------------------------------------------------------------------
// Statements

// One bound parameter; text and bytes are borrowed and must outlive the call.
struct Param {
  enum Type { kInt, kText, kBlob };
  Type type = kInt;
  int64_t number = 0;
  std::string_view text;  // kText and kBlob
};
Param Int(int64_t v) { return Param{Param::kInt, v, {}}; }
Param Text(std::string_view v) { return Param{Param::kText, 0, v}; }
// Sent as binary: no character set conversion or UTF-8 check.
Param Blob(std::string_view bytes) { return Param{Param::kBlob, 0, bytes}; }

// One result column: integer columns fill `number`, the others `text`.
struct Cell {
  int64_t number = 0;
  std::string text;
};
using Row = std::vector<Cell>;

bool IsIntegerType(enum_field_types type) {
  switch (type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR:
      return true;
    default:
      return false;
  }
}

// The outcome of one statement.
struct Outcome {
  std::vector<Row> rows;
  uint64_t affected_rows = 0;
  uint64_t insert_id = 0;
};

// One server connection and its prepared statements (keyed by the address
// of the SQL text, always a string literal). Not thread-safe: the pool hands
// a connection to one caller at a time. After a connection error, lost()
// is true; the pool discards unusable() connections.
class Connection {
 public:
  Connection() = default;
  ~Connection() {
    for (auto& [sql, stmt] : statements_) mysql_stmt_close(stmt);
    if (mysql_ != nullptr) mysql_close(mysql_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Unavailable when the server cannot be reached; other codes (refused
  // user, unknown database) otherwise. The message is the driver's, which
  // names the user and host but never the password.
  static Result<std::unique_ptr<Connection>> Open(const MysqlUrl& url,
                                                  const MysqlStoreOptions& options) {
    static std::once_flag init;
    // mysql_library_init is not thread-safe; mysql_init would call it lazily.
    std::call_once(init, [] { mysql_library_init(0, nullptr, nullptr); });
    auto conn = std::make_unique<Connection>();
    conn->mysql_ = mysql_init(nullptr);
    if (conn->mysql_ == nullptr) return Status::ResourceExhausted("mysql_init failed");
    MYSQL* m = conn->mysql_;
    unsigned connect_s = static_cast<unsigned>(options.connect_timeout_s);
    unsigned read_s = static_cast<unsigned>(options.read_timeout_s);
    unsigned write_s = static_cast<unsigned>(options.write_timeout_s);
    my_bool no = 0;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &read_s);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &write_s);
    // The pool reconnects itself: the driver's silent reconnect would drop
    // the prepared statements and any open transaction.
    mysql_options(m, MYSQL_OPT_RECONNECT, &no);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    // Strict mode turns silent truncation of too-long or invalid text into
    // errors; the store never stores something other than what it was given.
    // UTC sessions: lease expiry is computed from NOW(3), and a local time
    // zone would make UNIX_TIMESTAMP(NOW(3)) jump at daylight-saving changes.
    mysql_options(m, MYSQL_INIT_COMMAND,
                  "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "
                  "time_zone = '+00:00'");
    if (mysql_real_connect(m, url.host.c_str(), url.user.c_str(), url.password.c_str(),
                           url.database.c_str(), url.port, nullptr, 0) == nullptr) {
      unsigned code = mysql_errno(m);
      std::string message = mysql_error(m);
      if (IsConnectionError(code)) return Status::Unavailable(std::move(message));
      return MapError(code, std::move(message));
    }
    return conn;
  }

  // Whether the server closed this connection while it sat idle (it
  // restarted, or killed the session). Checked before reuse, so that a
  // statement is not sent on a connection already known to be dead and a
  // restart does not look like a failure in the middle of a write. An idle
  // connection never has anything to read: any data, EOF or error means
  // the server is done with it.
  bool ClosedByServer() const {
    int fd = static_cast<int>(mysql_get_socket(mysql_));
    if (fd < 0) return true;
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

  // The server went away: the call may retry on a new connection.
  bool lost() const { return lost_; }
  // Not to be used again (lost, or in an unknown protocol state).
  bool unusable() const { return lost_ || broken_; }
  // The lost connection may have run the last statement.
  bool maybe_executed() const { return maybe_executed_; }
  unsigned last_error() const { return last_error_; }
  const std::string& last_message() const { return last_message_; }

  // Runs the prepared statement for `sql` with `params`; collects its rows
  // when it returns a result set.
  Result<Outcome> Run(const char* sql, std::initializer_list<Param> params) {
    return Run(sql, std::span<const Param>(params.begin(), params.size()));
  }
  Result<Outcome> Run(const char* sql, std::span<const Param> params) {
    PIXSEEK_ASSIGN_OR_RETURN(MYSQL_STMT * stmt, Prepared(sql));
    std::vector<MYSQL_BIND> binds(params.size());
    std::vector<unsigned long> lengths(params.size());
    std::vector<int64_t> numbers(params.size());
    size_t i = 0;
    for (const Param& p : params) {
      MYSQL_BIND& b = binds[i];
      if (p.type != Param::kInt) {
        lengths[i] = static_cast<unsigned long>(p.text.size());
        b.buffer_type = p.type == Param::kBlob ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
        b.buffer = const_cast<char*>(p.text.data());
        b.buffer_length = lengths[i];
        b.length = &lengths[i];
      } else {
        numbers[i] = p.number;
        b.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &numbers[i];
      }
      ++i;
    }
    if (!binds.empty() && mysql_stmt_bind_param(stmt, binds.data()) != 0) {
      return StatementError(stmt, sql);
    }
    if (mysql_stmt_execute(stmt) != 0) return StatementError(stmt, sql);
    Outcome out;
    out.affected_rows = mysql_stmt_affected_rows(stmt);
    out.insert_id = mysql_stmt_insert_id(stmt);
    MYSQL_RES* meta = mysql_stmt_result_metadata(stmt);
    if (meta == nullptr) return out;  // no result set
    Status s = FetchRows(stmt, meta, &out.rows);
    mysql_free_result(meta);
    mysql_stmt_free_result(stmt);
    if (!s.ok()) return s;
    return out;
  }

  // Runs SQL without parameters or results (DDL) through the text protocol.
  Status Execute(const std::string& sql) {
    if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) {
      return Fail(mysql_errno(mysql_), mysql_error(mysql_));
    }
    if (MYSQL_RES* res = mysql_store_result(mysql_)) mysql_free_result(res);
    return Status::Ok();
  }

  // Prepares `sql` now: checks that the tables have what it needs.
  Status Prepare(const char* sql) { return Prepared(sql).status(); }

 private:
  Result<MYSQL_STMT*> Prepared(const char* sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    MYSQL_STMT* stmt = mysql_stmt_init(mysql_);
    if (stmt == nullptr) return Fail(mysql_errno(mysql_), mysql_error(mysql_));
    if (mysql_stmt_prepare(stmt, sql, std::strlen(sql)) != 0) {
      Status s = StatementError(stmt, sql);
      mysql_stmt_close(stmt);
      return s;
    }
    // Makes mysql_stmt_store_result compute each column's longest value,
    // so that result buffers can be sized exactly.
    my_bool update_max_length = 1;
    mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &update_max_length);
    statements_.emplace(sql, stmt);
    return stmt;
  }

  Status FetchRows(MYSQL_STMT* stmt, MYSQL_RES* meta, std::vector<Row>* rows) {
    if (mysql_stmt_store_result(stmt) != 0) return StatementError(stmt, "fetch");
    const unsigned n = mysql_num_fields(meta);
    MYSQL_FIELD* fields = mysql_fetch_fields(meta);
    std::vector<MYSQL_BIND> binds(n);
    std::vector<std::vector<char>> buffers(n);
    std::vector<int64_t> numbers(n);
    std::vector<unsigned long> lengths(n);
    std::vector<my_bool> nulls(n);
    for (unsigned c = 0; c < n; ++c) {
      MYSQL_BIND& b = binds[c];
      b.length = &lengths[c];
      b.is_null = &nulls[c];
      if (IsIntegerType(fields[c].type)) {
        b.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &numbers[c];
      } else {
        buffers[c].resize(std::max<size_t>(fields[c].max_length, 1));
        b.buffer_type = MYSQL_TYPE_STRING;
        b.buffer = buffers[c].data();
        b.buffer_length = static_cast<unsigned long>(buffers[c].size());
      }
    }
    if (mysql_stmt_bind_result(stmt, binds.data()) != 0) return StatementError(stmt, "fetch");
    rows->reserve(mysql_stmt_num_rows(stmt));
    for (;;) {
      int rc = mysql_stmt_fetch(stmt);
      if (rc == MYSQL_NO_DATA) break;
      if (rc == 1) return StatementError(stmt, "fetch");
      if (rc == MYSQL_DATA_TRUNCATED) {
        return Status::Internal("MariaDB returned a value longer than its column's maximum");
      }
      Row row(n);
      for (unsigned c = 0; c < n; ++c) {
        if (nulls[c]) continue;
        if (binds[c].buffer_type == MYSQL_TYPE_LONGLONG) {
          row[c].number = numbers[c];
        } else {
          row[c].text.assign(buffers[c].data(), lengths[c]);
        }
      }
      rows->push_back(std::move(row));
    }
    return Status::Ok();
  }

  Status StatementError(MYSQL_STMT* stmt, const char* what) {
    return Fail(mysql_stmt_errno(stmt), std::string(mysql_stmt_error(stmt)) +
                                            " (in: " + std::string(what).substr(0, 80) + ")");
  }

  Status Fail(unsigned code, std::string message) {
    last_error_ = code;
    last_message_ = message;
    if (IsConnectionError(code)) {
      lost_ = true;
      maybe_executed_ = !NeverSent(code);
      return Status::Unavailable(std::move(message));
    }
    // Client-side errors (CR_*) other than a lost connection leave the
    // connection in an unknown protocol state: do not reuse it.
    if (code >= CR_MIN_ERROR && code <= CR_MAX_ERROR) broken_ = true;
    return MapError(code, std::move(message));
  }

  MYSQL* mysql_ = nullptr;
  std::unordered_map<const char*, MYSQL_STMT*> statements_;
  bool lost_ = false;
  bool broken_ = false;
  bool maybe_executed_ = false;
  unsigned last_error_ = 0;
  std::string last_message_;
};

// ---------------------------------------------------------------------------
// Pool

// Up to `pool_size` connections, opened on demand and kept while healthy.
// Thread-safe.
class Pool {
 public:
  Pool(MysqlUrl url, MysqlStoreOptions options) : url_(std::move(url)), options_(options) {}

  // An idle connection that the server has not closed, or a new one while
  // fewer than pool_size are open; waits for one otherwise. `fresh` forces
  // a new connection (the caller just lost one).
  Result<std::unique_ptr<Connection>> Acquire(bool fresh) {
    std::unique_ptr<Connection> stale;  // closed outside the lock
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !idle_.empty() || open_ < options_.pool_size; });
      if (!idle_.empty()) {
        auto conn = std::move(idle_.back());
        idle_.pop_back();
        if (!fresh && !conn->ClosedByServer()) return conn;
        stale = std::move(conn);  // its slot goes to the new connection
      } else {
        ++open_;
      }
    }
    stale.reset();
    auto conn = Connection::Open(url_, options_);
    if (!conn.ok()) {
      std::lock_guard lock(mu_);
      --open_;
      cv_.notify_one();
    }
    return conn;
  }

  // Returns `conn` to the idle list, or closes it when it is unusable.
  void Release(std::unique_ptr<Connection> conn) {
    std::unique_lock lock(mu_);
    if (conn->unusable()) {
      --open_;
      lock.unlock();
      conn.reset();
      lock.lock();
    } else {
      idle_.push_back(std::move(conn));
    }
    cv_.notify_one();
  }

  // Closes every idle connection: after one was found dead, the others
  // (from before the server went away) are dead too.
  void DropIdle() {
    std::vector<std::unique_ptr<Connection>> dropped;
    {
      std::lock_guard lock(mu_);
      dropped.swap(idle_);
      open_ -= static_cast<int>(dropped.size());
      cv_.notify_all();
    }
  }

 private:
  const MysqlUrl url_;
  const MysqlStoreOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;  // GUARDED_BY(mu_)
  int open_ = 0;                                   // GUARDED_BY(mu_): idle plus handed out
};

// A connection borrowed from the pool, given back on destruction.
class Lease {
 public:
  Lease(Pool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
  ~Lease() { pool_->Release(std::move(conn_)); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Connection& operator*() { return *conn_; }
  Connection* operator->() { return conn_.get(); }

 private:
  Pool* pool_;
  std::unique_ptr<Connection> conn_;
};

// ---------------------------------------------------------------------------
// Schema

// Schema migrations, applied in order; the version reached is the one row of
// schema_version. MySQL commits DDL implicitly, so each step must be safe to
// run again after a crash half-way (CREATE ... IF NOT EXISTS). To change the
// schema, append a step; never edit a shipped one.
struct Migration {
  int version;
  std::vector<const char*> statements;
};

// utf8mb4_nopad_bin compares text byte for byte like SQLite does: case and
// trailing spaces matter (the PAD SPACE utf8mb4_bin would make 'a' = 'a ').
const Migration kMigrations[] = {
    {1,
     {"CREATE TABLE IF NOT EXISTS images ("
      "  id BIGINT NOT NULL AUTO_INCREMENT,"
      "  path TEXT NOT NULL,"
      // Paths can be longer than an index key may be; the unique key is
      // on their hash, and lookups compare the path too.
      "  path_hash BINARY(32) AS (UNHEX(SHA2(path, 256))) STORED,"
      "  name TEXT NOT NULL,"
      "  sha256 VARCHAR(255) NOT NULL,"
      "  size_bytes BIGINT NOT NULL DEFAULT 0,"
      "  format VARCHAR(255) NOT NULL DEFAULT '',"
      "  width INT NOT NULL DEFAULT 0,"
      "  height INT NOT NULL DEFAULT 0,"
      "  exif_datetime VARCHAR(255) NOT NULL DEFAULT '',"
      "  label VARCHAR(255) NOT NULL DEFAULT '',"
      "  added_at BIGINT NOT NULL DEFAULT 0,"
      "  PRIMARY KEY (id),"
      "  UNIQUE KEY images_path (path_hash),"
      "  KEY images_sha256 (sha256),"
      "  KEY images_label (label, id)"
      ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin",
      "CREATE TABLE IF NOT EXISTS settings ("
      "  name VARCHAR(255) NOT NULL,"
      "  value LONGTEXT NOT NULL,"
      "  PRIMARY KEY (name)"
      ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"}},
    // Base features (feature_blob.h), apart from images so that reading
    // records never reads them; the cascade removes a feature in the DELETE
    // of its image.
    {2,
     {"CREATE TABLE IF NOT EXISTS features ("
      "  id BIGINT NOT NULL,"
      "  vector LONGBLOB NOT NULL,"
      "  PRIMARY KEY (id),"
      "  CONSTRAINT features_image FOREIGN KEY (id) REFERENCES images (id) ON DELETE CASCADE"
      ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"}},
    // Leases and jobs (MetadataStore's coordination API, store/coordination.h).
    {3,
     {"CREATE TABLE IF NOT EXISTS leases ("
      "  name VARCHAR(255) NOT NULL,"
      "  owner VARCHAR(255) NOT NULL,"
      "  expires_ms BIGINT NOT NULL,"
      "  version BIGINT NOT NULL DEFAULT 0,"
      "  PRIMARY KEY (name)"
      ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin",
      "CREATE TABLE IF NOT EXISTS jobs ("
      "  id BIGINT NOT NULL AUTO_INCREMENT,"
      "  kind VARCHAR(64) NOT NULL,"
      "  state VARCHAR(32) NOT NULL,"
      "  payload LONGTEXT NOT NULL,"
      "  created_at BIGINT NOT NULL DEFAULT 0,"
      "  updated_at BIGINT NOT NULL DEFAULT 0,"
      "  revision BIGINT NOT NULL DEFAULT 0,"
      "  PRIMARY KEY (id),"
      "  KEY jobs_kind_state (kind, state, id)"
      ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"}},
};
constexpr int kSchemaVersion = 3;  // the last step's

// Every query that reads whole rows selects these columns in this order
// (ReadRecord depends on it).
#define PIXSEEK_SELECT_IMAGES                                                         \
  "SELECT id, path, name, sha256, size_bytes, format, width, height, exif_datetime, " \
  "label, added_at FROM images "
// GetMany looks up this many ids per statement; unused slots repeat id 0,
// which AUTO_INCREMENT never hands out.
constexpr size_t kBatch = 32;
#define PIXSEEK_Q4 "?, ?, ?, ?, "
#define PIXSEEK_Q32 PIXSEEK_Q4 PIXSEEK_Q4 PIXSEEK_Q4 PIXSEEK_Q4 PIXSEEK_Q4 PIXSEEK_Q4 PIXSEEK_Q4
constexpr const char* kInsert =
    "INSERT INTO images (path, name, sha256, size_bytes, format, width, height, "
    "exif_datetime, label, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
constexpr const char* kInsertWithId =
    "INSERT INTO images (path, name, sha256, size_bytes, format, width, height, "
    "exif_datetime, label, added_at, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
constexpr const char* kGet = PIXSEEK_SELECT_IMAGES "WHERE id = ?";
constexpr const char* kGetBatch = PIXSEEK_SELECT_IMAGES "WHERE id IN (" PIXSEEK_Q32 "?, ?, ?, ?)";
constexpr const char* kFindByPath =
    PIXSEEK_SELECT_IMAGES "WHERE path_hash = UNHEX(SHA2(?, 256)) AND path = ?";
constexpr const char* kDelete = "DELETE FROM images WHERE id = ?";
constexpr const char* kList = PIXSEEK_SELECT_IMAGES "WHERE id > ? ORDER BY id LIMIT ?";
constexpr const char* kListLabel =
    PIXSEEK_SELECT_IMAGES "WHERE label = ? AND id > ? ORDER BY id LIMIT ?";
constexpr const char* kAllIds = "SELECT id FROM images ORDER BY id";
// FilterIds: an absent date bound is bound as the widest value, an absent
// format as 0 in the first of its two parameters. The label has a statement
// of its own so that it can use the images_label index.
#define PIXSEEK_FILTER_CONDITIONS \
  "added_at >= ? AND added_at < ? AND width >= ? AND height >= ? AND (? = 0 OR format = ?) "
constexpr const char* kFilterIds =
    "SELECT id FROM images WHERE " PIXSEEK_FILTER_CONDITIONS "ORDER BY id";
constexpr const char* kFilterIdsLabel =
    "SELECT id FROM images WHERE " PIXSEEK_FILTER_CONDITIONS "AND label = ? ORDER BY id";
#undef PIXSEEK_FILTER_CONDITIONS
constexpr const char* kPutFeature =
    "INSERT INTO features (id, vector) VALUES (?, ?) "
    "ON DUPLICATE KEY UPDATE vector = VALUES(vector)";
constexpr const char* kGetFeature = "SELECT vector FROM features WHERE id = ?";
constexpr const char* kScanFeatures =
    "SELECT id, vector FROM features WHERE id > ? ORDER BY id LIMIT ?";
constexpr const char* kCountFeatures = "SELECT COUNT(*) FROM features";
// CheckIntegrity: every table read through (features' rows without an
// image would be a broken foreign key).
constexpr const char* kCountImages = "SELECT COUNT(*) FROM images";
constexpr const char* kCountSettings = "SELECT COUNT(*) FROM settings";
constexpr const char* kOrphanFeatures =
    "SELECT COUNT(*) FROM features f LEFT JOIN images i ON i.id = f.id WHERE i.id IS NULL";
constexpr const char* kGetSetting = "SELECT value FROM settings WHERE name = ?";
constexpr const char* kSetSetting =
    "INSERT INTO settings (name, value) VALUES (?, ?) "
    "ON DUPLICATE KEY UPDATE value = VALUES(value)";
// Leases and jobs. Times are the server's clock (sessions are UTC): now in
// milliseconds and in seconds since the epoch; NOW() is fixed within one
// statement. UpdateJob's subquery is a locking read (a subquery of an
// UPDATE takes shared locks on the rows it reads), so it waits for an
// AcquireLease in progress and sees its outcome.
#define PIXSEEK_NOW_MS "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
// Parameters: owner, ttl in ms, name, owner (WHERE is evaluated on the old
// row, before SET).
constexpr const char* kTakeLease =
    "UPDATE leases SET owner = ?, expires_ms = " PIXSEEK_NOW_MS " + ?, version = version + 1 "
    "WHERE name = ? AND (owner = ? OR expires_ms <= " PIXSEEK_NOW_MS ")";
// name, owner, ttl; changes no row when the name exists.
constexpr const char* kNewLease =
    "INSERT INTO leases (name, owner, expires_ms) VALUES (?, ?, " PIXSEEK_NOW_MS " + ?) "
    "ON DUPLICATE KEY UPDATE name = name";
// ttl, name, owner.
constexpr const char* kRenewLease =
    "UPDATE leases SET expires_ms = " PIXSEEK_NOW_MS " + ?, version = version + 1 "
    "WHERE name = ? AND owner = ?";
#undef PIXSEEK_NOW_MS
constexpr const char* kReleaseLease = "DELETE FROM leases WHERE name = ? AND owner = ?";
// kind, state, payload (and first the id, for kCreateJobWithId).
constexpr const char* kCreateJob =
    "INSERT INTO jobs (kind, state, payload, created_at, updated_at) "
    "VALUES (?, ?, ?, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())";
constexpr const char* kCreateJobWithId =
    "INSERT INTO jobs (id, kind, state, payload, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())";
// state, payload, id, lease name, owner.
constexpr const char* kUpdateJob =
    "UPDATE jobs SET state = ?, payload = ?, updated_at = UNIX_TIMESTAMP(), "
    "revision = revision + 1 "
    "WHERE id = ? AND EXISTS (SELECT 1 FROM leases WHERE name = ? AND owner = ?)";
// ReadJob depends on the order of the columns.
#define PIXSEEK_SELECT_JOBS "SELECT id, kind, state, payload, created_at, updated_at FROM jobs "
constexpr const char* kGetJob = PIXSEEK_SELECT_JOBS "WHERE id = ?";
// kind (, state), limit.
constexpr const char* kListJobs = PIXSEEK_SELECT_JOBS "WHERE kind = ? ORDER BY id LIMIT ?";
constexpr const char* kListJobsDesc =
    PIXSEEK_SELECT_JOBS "WHERE kind = ? ORDER BY id DESC LIMIT ?";
constexpr const char* kListJobsState =
    PIXSEEK_SELECT_JOBS "WHERE kind = ? AND state = ? ORDER BY id LIMIT ?";
constexpr const char* kListJobsStateDesc =
    PIXSEEK_SELECT_JOBS "WHERE kind = ? AND state = ? ORDER BY id DESC LIMIT ?";
#undef PIXSEEK_SELECT_JOBS
constexpr const char* kCountLeases = "SELECT COUNT(*) FROM leases";
constexpr const char* kCountJobs = "SELECT COUNT(*) FROM jobs";
constexpr const char* kBeginSnapshot = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
constexpr const char* kBegin = "START TRANSACTION";
constexpr const char* kCommit = "COMMIT";
constexpr const char* kRollback = "ROLLBACK";
constexpr const char* kTables =
    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()";
constexpr const char* kGetVersion = "SELECT version FROM schema_version WHERE id = 1";
constexpr const char* kSetVersion =
    "INSERT INTO schema_version (id, version) VALUES (1, ?) "
    "ON DUPLICATE KEY UPDATE version = VALUES(version)";
// DDL is not transactional: a named lock keeps two processes opening a new
// database at once from migrating it together.
constexpr const char* kLock = "SELECT GET_LOCK(CONCAT('pixseek_schema.', DATABASE()), 30)";
constexpr const char* kUnlock = "SELECT RELEASE_LOCK(CONCAT('pixseek_schema.', DATABASE()))";
#undef PIXSEEK_Q32
#undef PIXSEEK_Q4
#undef PIXSEEK_SELECT_IMAGES
constexpr const char* kAllStatements[] = {
    kInsert,          kGet,          kGetBatch,      kFindByPath,    kDelete,
    kList,            kListLabel,    kAllIds,        kFilterIds,     kFilterIdsLabel,
    kPutFeature,      kGetFeature,   kScanFeatures,  kCountFeatures, kGetSetting,
    kSetSetting,      kTakeLease,    kNewLease,      kRenewLease,    kReleaseLease,
    kCreateJob,       kCreateJobWithId, kUpdateJob,  kGetJob,        kListJobs,
    kListJobsDesc,    kListJobsState, kListJobsStateDesc};

ImageRecord ReadRecord(Row& row) {
  ImageRecord r;
  r.id = row[0].number;
  r.path = std::move(row[1].text);
  r.name = std::move(row[2].text);
  r.sha256 = std::move(row[3].text);
  r.size_bytes = row[4].number;
  r.format = std::move(row[5].text);
  r.width = static_cast<int>(row[6].number);
  r.height = static_cast<int>(row[7].number);
  r.exif_datetime = std::move(row[8].text);
  r.label = std::move(row[9].text);
  r.added_at = row[10].number;
  return r;
}

JobRecord ReadJob(Row& row) {
  JobRecord job;
  job.id = row[0].number;
  job.kind = std::move(row[1].text);
  job.state = std::move(row[2].text);
  job.payload = std::move(row[3].text);
  job.created_at = row[4].number;
  job.updated_at = row[5].number;
  return job;
}

bool SameRecord(const ImageRecord& a, const ImageRecord& b) {
  return a.path == b.path && a.name == b.name && a.sha256 == b.sha256 &&
         a.size_bytes == b.size_bytes && a.format == b.format && a.width == b.width &&
         a.height == b.height && a.exif_datetime == b.exif_datetime && a.label == b.label &&
         a.added_at == b.added_at;
}

// ---------------------------------------------------------------------------
// The store

// Every call borrows a pooled connection, so concurrent calls run in
// parallel up to pool_size. A call whose connection turns out dead retries
// once on a fresh connection and otherwise answers Unavailable; the next
// call tries again, so the store recovers by itself when the server is back.
// Autocommit is on: a write is committed when its statement returns.
//
// Thread-safety: all methods are safe to call concurrently. Owns the pool.
class MysqlStore final : public MetadataStore {
 public:
  MysqlStore(MysqlUrl url, const MysqlStoreOptions& options)
      : endpoint_(url.Endpoint()), database_(url.database), pool_(std::move(url), options) {}

  Status Open() {
    PIXSEEK_RETURN_IF_ERROR(Call([&](Connection& c, bool) { return Migrate(c); }));
    // Preparing every statement now also checks that the tables have the
    // columns this code expects.
    return Call([&](Connection& c, bool) -> Status {
      for (const char* sql : kAllStatements) {
        Status s = c.Prepare(sql);
        if (c.lost()) return s;
        if (!s.ok()) {
          return Status::DataLoss(Where() + " does not have the pixseek schema: " + s.message());
        }
      }
      return Status::Ok();
    });
  }

  using MetadataStore::Insert;

  Result<int64_t> Insert(const ImageRecord& r, std::span<const float> feature) override {
    if (r.path.empty()) return Status::InvalidArgument("image record without a path");
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckFinite(feature, "the base feature of " + r.path));
    return Call([&](Connection& c, bool retry_after_maybe_executed) -> Result<int64_t> {
      auto id = InsertOnce(c, r, feature);
      if (id.status().code() != StatusCode::kAlreadyExists) return id;
      if (retry_after_maybe_executed) {
        // The first try may have committed before the connection dropped:
        // if the stored row is this record, that insert is this one.
        auto existing = c.Run(kFindByPath, {Text(r.path), Text(r.path)});
        if (existing.ok() && existing->rows.size() == 1) {
          ImageRecord stored = ReadRecord(existing->rows[0]);
          if (SameRecord(stored, r) && HasFeature(c, stored.id, feature)) return stored.id;
        }
      }
      return id;
    });
  }

  Result<std::vector<int64_t>> InsertMany(std::span<const ImageRecord> records, int dimension,
                                          std::span<const float> features) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckNewRecords(records, dimension, features));
    const auto d = static_cast<size_t>(dimension);
    return Call([&](Connection& c,
                    bool retry_after_maybe_executed) -> Result<std::vector<int64_t>> {
      auto ids = InTransaction(c, [&]() -> Result<std::vector<int64_t>> {
        std::vector<int64_t> out;
        out.reserve(records.size());
        for (size_t i = 0; i < records.size(); ++i) {
          PIXSEEK_ASSIGN_OR_RETURN(int64_t id, InsertRecord(c, records[i]));
          PIXSEEK_RETURN_IF_ERROR(PutFeature(c, id, features.subspan(i * d, d)));
          out.push_back(id);
        }
        return out;
      });
      if (ids.status().code() != StatusCode::kAlreadyExists || !retry_after_maybe_executed) {
        return ids;
      }
      // As in Insert: the first try may have committed before the connection
      // dropped; then every record is stored exactly as given.
      std::vector<int64_t> stored_ids;
      for (size_t i = 0; i < records.size(); ++i) {
        auto existing = c.Run(kFindByPath, {Text(records[i].path), Text(records[i].path)});
        if (!existing.ok() || existing->rows.size() != 1) return ids;
        ImageRecord stored = ReadRecord(existing->rows[0]);
        if (!SameRecord(stored, records[i]) ||
            !HasFeature(c, stored.id, features.subspan(i * d, d))) {
          return ids;
        }
        stored_ids.push_back(stored.id);
      }
      return stored_ids;
    });
  }

  Status InsertWithIds(std::span<const ImageRecord> records,
                       std::span<const std::vector<float>> features) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckImportedRecords(records, features));
    // An explicit id raises AUTO_INCREMENT past it, so later Inserts get
    // larger ids.
    return Call([&](Connection& c, bool retry_after_maybe_executed) -> Status {
      Status s = InTransaction(c, [&]() -> Status {
        for (size_t i = 0; i < records.size(); ++i) {
          const ImageRecord& r = records[i];
          auto out = c.Run(kInsertWithId,
                           {Text(r.path), Text(r.name), Text(r.sha256), Int(r.size_bytes),
                            Text(r.format), Int(r.width), Int(r.height), Text(r.exif_datetime),
                            Text(r.label), Int(r.added_at), Int(r.id)});
          if (out.status().code() == StatusCode::kAlreadyExists) {
            return Status::AlreadyExists("an image with id " + std::to_string(r.id) +
                                         " or path " + r.path + " is already stored");
          }
          if (!out.ok()) {
            return out.status().WithContext(Where() + ": cannot insert image " + r.path);
          }
          if (!features[i].empty()) PIXSEEK_RETURN_IF_ERROR(PutFeature(c, r.id, features[i]));
        }
        return Status::Ok();
      });
      if (s.code() != StatusCode::kAlreadyExists || !retry_after_maybe_executed) return s;
      // As in InsertMany: the first try may have committed before the
      // connection dropped; then every record is stored exactly as given.
      for (size_t i = 0; i < records.size(); ++i) {
        auto existing = c.Run(kGet, {Int(records[i].id)});
        if (!existing.ok() || existing->rows.size() != 1 ||
            !SameRecord(ReadRecord(existing->rows[0]), records[i]) ||
            !HasFeature(c, records[i].id, features[i])) {
          return s;
        }
      }
      return Status::Ok();
    });
  }

  Result<ImageRecord> Get(int64_t id) const override {
    return Call([&](Connection& c, bool) -> Result<ImageRecord> {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out, Checked(c.Run(kGet, {Int(id)}), "cannot read image"));
      if (out.rows.empty()) return Status::NotFound("no image with id " + std::to_string(id));
      return ReadRecord(out.rows[0]);
    });
  }

  Result<std::vector<ImageRecord>> GetMany(std::span<const int64_t> ids) const override {
    if (ids.empty()) return std::vector<ImageRecord>();
    return Call([&](Connection& c, bool) -> Result<std::vector<ImageRecord>> {
      // More than one statement: read them from one snapshot.
      const bool snapshot = ids.size() > kBatch;
      if (snapshot) {
        PIXSEEK_RETURN_IF_ERROR(Checked(c.Run(kBeginSnapshot, {}), "cannot begin").status());
      }
      std::unordered_map<int64_t, ImageRecord> found;
      Status s;
      for (size_t start = 0; start < ids.size() && s.ok(); start += kBatch) {
        std::vector<Param> params(kBatch, Int(0));
        for (size_t i = 0; i < kBatch && start + i < ids.size(); ++i) {
          params[i] = Int(ids[start + i]);
        }
        auto out = c.Run(kGetBatch, params);
        if (!out.ok()) {
          s = out.status().WithContext(Where() + ": cannot read images");
          break;
        }
        for (Row& row : out->rows) {
          ImageRecord r = ReadRecord(row);
          found.emplace(r.id, std::move(r));
        }
      }
      if (snapshot) {
        if (!s.ok()) {
          if (!c.unusable()) (void)c.Run(kRollback, {});
          return s;
        }
        PIXSEEK_RETURN_IF_ERROR(Checked(c.Run(kCommit, {}), "cannot commit").status());
      }
      PIXSEEK_RETURN_IF_ERROR(s);
      std::vector<ImageRecord> records;
      records.reserve(ids.size());
      for (int64_t id : ids) {
        auto it = found.find(id);
        if (it != found.end()) records.push_back(it->second);
      }
      return records;
    });
  }

  Result<std::optional<ImageRecord>> FindByPath(const std::string& path) const override {
    return Call([&](Connection& c, bool) -> Result<std::optional<ImageRecord>> {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out, Checked(c.Run(kFindByPath, {Text(path), Text(path)}),
                                                    "cannot look up image " + path));
      if (out.rows.empty()) return std::optional<ImageRecord>();
      return std::optional<ImageRecord>(ReadRecord(out.rows[0]));
    });
  }

  // One statement: the foreign key's cascade deletes the feature with it.
  Status Remove(int64_t id) override {
    return Call([&](Connection& c, bool retry_after_maybe_executed) -> Status {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out, Checked(c.Run(kDelete, {Int(id)}),
                                                    "cannot remove image " + std::to_string(id)));
      // After a try that may have deleted the row, a missing row is that
      // delete's doing.
      if (out.affected_rows == 0 && !retry_after_maybe_executed) {
        return Status::NotFound("no image with id " + std::to_string(id));
      }
      return Status::Ok();
    });
  }

  Result<std::vector<ImageRecord>> List(const ListOptions& options) const override {
    const auto limit = static_cast<int64_t>(
        std::min<size_t>(options.limit, static_cast<size_t>(std::numeric_limits<int64_t>::max())));
    return Call([&](Connection& c, bool) -> Result<std::vector<ImageRecord>> {
      auto run = options.label
                     ? c.Run(kListLabel, {Text(*options.label), Int(options.after_id), Int(limit)})
                     : c.Run(kList, {Int(options.after_id), Int(limit)});
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out, Checked(std::move(run), "cannot list images"));
      std::vector<ImageRecord> records;
      records.reserve(out.rows.size());
      for (Row& row : out.rows) records.push_back(ReadRecord(row));
      return records;
    });
  }

  Result<std::vector<int64_t>> AllIds() const override {
    return Call([&](Connection& c, bool) -> Result<std::vector<int64_t>> {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out, Checked(c.Run(kAllIds, {}), "cannot list image ids"));
      std::vector<int64_t> ids;
      ids.reserve(out.rows.size());
      for (const Row& row : out.rows) ids.push_back(row[0].number);
      return ids;
    });
  }

  Result<std::vector<int64_t>> FilterIds(const RecordFilter& filter) const override {
    std::vector<Param> params = {
        Int(filter.added_after.value_or(std::numeric_limits<int64_t>::min())),
        Int(filter.added_before.value_or(std::numeric_limits<int64_t>::max())),
        Int(filter.min_width),
        Int(filter.min_height),
        Int(filter.format ? 1 : 0),
        Text(filter.format ? std::string_view(*filter.format) : std::string_view())};
    if (filter.label) params.push_back(Text(*filter.label));
    return Call([&](Connection& c, bool) -> Result<std::vector<int64_t>> {
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome out, Checked(c.Run(filter.label ? kFilterIdsLabel : kFilterIds, params),
                               "cannot filter images"));
      std::vector<int64_t> ids;
      ids.reserve(out.rows.size());
      for (const Row& row : out.rows) ids.push_back(row[0].number);
      return ids;
    });
  }

  Status PutFeatures(std::span<const int64_t> ids, int dimension,
                     std::span<const float> features) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckFeatureRows(ids.size(), dimension, features));
    if (ids.empty()) return Status::Ok();
    const auto d = static_cast<size_t>(dimension);
    // Setting a feature twice is harmless: a retry after a lost answer needs no care.
    return Call([&](Connection& c, bool) -> Status {
      return InTransaction(c, [&]() -> Status {
        for (size_t i = 0; i < ids.size(); ++i) {
          PIXSEEK_RETURN_IF_ERROR(PutFeature(c, ids[i], features.subspan(i * d, d)));
        }
        return Status::Ok();
      });
    });
  }

  Result<std::vector<float>> GetFeature(int64_t id) const override {
    return Call([&](Connection& c, bool) -> Result<std::vector<float>> {
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome out, Checked(c.Run(kGetFeature, {Int(id)}),
                               "cannot read the feature of image " + std::to_string(id)));
      if (out.rows.empty()) {
        return Status::NotFound("no base feature stored for image " + std::to_string(id));
      }
      return store_internal::DecodeFeature(id, out.rows[0][0].text);
    });
  }

  // Each page is one statement on a connection borrowed for it alone, so
  // `visit` may call the store even with a pool of one.
  Status ScanFeatures(int dimension, const FeatureVisitor& visit) const override {
    const auto read_page = [&](int64_t after_id, std::vector<int64_t>* ids,
                               std::vector<float>* rows) {
      return Call([&](Connection& c, bool) -> Status {
        ids->clear();  // a retry reads the page again
        rows->clear();
        PIXSEEK_ASSIGN_OR_RETURN(
            Outcome out,
            Checked(c.Run(kScanFeatures,
                          {Int(after_id), Int(static_cast<int64_t>(kFeaturePageRows))}),
                    "cannot read features"));
        for (const Row& row : out.rows) {
          PIXSEEK_RETURN_IF_ERROR(
              store_internal::AppendFeature(row[0].number, row[1].text, dimension, rows));
          ids->push_back(row[0].number);
        }
        return Status::Ok();
      });
    };
    return store_internal::ScanFeaturePages(dimension, read_page, visit);
  }

  Result<uint64_t> CountFeatures() const override {
    return Call([&](Connection& c, bool) -> Result<uint64_t> {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out,
                               Checked(c.Run(kCountFeatures, {}), "cannot count features"));
      return static_cast<uint64_t>(out.rows.at(0).at(0).number);
    });
  }

  Status CheckIntegrity() const override {
    return Call([&](Connection& c, bool) -> Status {
      for (const char* sql :
           {kCountImages, kCountFeatures, kCountSettings, kCountLeases, kCountJobs}) {
        PIXSEEK_RETURN_IF_ERROR(
            Checked(c.Run(sql, {}), std::string("cannot read through: ") + sql).status());
      }
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out,
                               Checked(c.Run(kOrphanFeatures, {}), "cannot check features"));
      if (const int64_t orphans = out.rows.at(0).at(0).number; orphans > 0) {
        return Status::DataLoss(std::to_string(orphans) + " features belong to no image");
      }
      return Status::Ok();
    });
  }

  Result<std::optional<std::string>> GetSetting(const std::string& key) const override {
    return Call([&](Connection& c, bool) -> Result<std::optional<std::string>> {
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome out, Checked(c.Run(kGetSetting, {Text(key)}), "cannot read setting " + key));
      if (out.rows.empty()) return std::optional<std::string>();
      return std::optional<std::string>(std::move(out.rows[0][0].text));
    });
  }

  Status SetSetting(const std::string& key, const std::string& value) override {
    return Call([&](Connection& c, bool) -> Status {
      return Checked(c.Run(kSetSetting, {Text(key), Text(value)}), "cannot write setting " + key)
          .status();
    });
  }

  // Every lease and job call is safe to retry after a lost answer: a take or
  // renewal that did run left the lease the caller's, which the retry takes
  // or renews again; a release or job update repeated changes nothing more.
  Result<bool> AcquireLease(const std::string& name, const std::string& owner,
                            std::chrono::milliseconds ttl) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(name, owner, ttl));
    const int64_t ms = ttl.count();
    return Call([&](Connection& c, bool) -> Result<bool> {
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome taken, Checked(c.Run(kTakeLease, {Text(owner), Int(ms), Text(name), Text(owner)}),
                                 "cannot take lease " + name));
      if (taken.affected_rows == 1) return true;
      // No row yet, or another owner's unexpired one: create it if missing.
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome created, Checked(c.Run(kNewLease, {Text(name), Text(owner), Int(ms)}),
                                   "cannot take lease " + name));
      return created.affected_rows == 1;
    });
  }

  Result<bool> RenewLease(const std::string& name, const std::string& owner,
                          std::chrono::milliseconds ttl) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(name, owner, ttl));
    return Call([&](Connection& c, bool) -> Result<bool> {
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome out, Checked(c.Run(kRenewLease, {Int(ttl.count()), Text(name), Text(owner)}),
                               "cannot renew lease " + name));
      return out.affected_rows == 1;
    });
  }

  Status ReleaseLease(const std::string& name, const std::string& owner) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(name, owner));
    return Call([&](Connection& c, bool) -> Status {
      return Checked(c.Run(kReleaseLease, {Text(name), Text(owner)}),
                     "cannot release lease " + name)
          .status();
    });
  }

  Result<int64_t> CreateJob(const JobRecord& job) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckNewJob(job));
    return Call([&](Connection& c, bool retry_after_maybe_executed) -> Result<int64_t> {
      auto out = job.id == 0
                     ? c.Run(kCreateJob, {Text(job.kind), Text(job.state), Text(job.payload)})
                     : c.Run(kCreateJobWithId, {Int(job.id), Text(job.kind), Text(job.state),
                                                Text(job.payload)});
      if (out.ok()) return static_cast<int64_t>(out->insert_id);
      if (out.status().code() != StatusCode::kAlreadyExists) {
        return out.status().WithContext(Where() + ": cannot create a " + job.kind + " job");
      }
      // As in Insert: the first try may have stored this very job.
      if (retry_after_maybe_executed) {
        auto stored = c.Run(kGetJob, {Int(job.id)});
        if (stored.ok() && stored->rows.size() == 1) {
          JobRecord existing = ReadJob(stored->rows[0]);
          if (existing.kind == job.kind && existing.state == job.state &&
              existing.payload == job.payload) {
            return job.id;
          }
        }
      }
      return Status::AlreadyExists("a job with id " + std::to_string(job.id) + " exists");
    });
  }

  Status UpdateJob(const JobRecord& job, const std::string& lease,
                   const std::string& owner) override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckJobState(job.state));
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckLease(lease, owner));
    return Call([&](Connection& c, bool) -> Status {
      PIXSEEK_ASSIGN_OR_RETURN(
          Outcome out, Checked(c.Run(kUpdateJob, {Text(job.state), Text(job.payload), Int(job.id),
                                                  Text(lease), Text(owner)}),
                               "cannot update job " + std::to_string(job.id)));
      if (out.affected_rows == 1) return Status::Ok();
      // Nothing changed: no such job, or the lease is not the owner's.
      PIXSEEK_ASSIGN_OR_RETURN(Outcome found, Checked(c.Run(kGetJob, {Int(job.id)}),
                                                      "cannot read job " + std::to_string(job.id)));
      if (found.rows.empty()) return Status::NotFound("no job with id " + std::to_string(job.id));
      return store_internal::LeaseNotHeld(lease, owner, job.id);
    });
  }

  Result<JobRecord> GetJob(int64_t id) const override {
    return Call([&](Connection& c, bool) -> Result<JobRecord> {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out, Checked(c.Run(kGetJob, {Int(id)}),
                                                    "cannot read job " + std::to_string(id)));
      if (out.rows.empty()) return Status::NotFound("no job with id " + std::to_string(id));
      return ReadJob(out.rows[0]);
    });
  }

  Result<std::vector<JobRecord>> ListJobs(const JobQuery& query) const override {
    PIXSEEK_RETURN_IF_ERROR(store_internal::CheckJobQuery(query));
    const auto limit = static_cast<int64_t>(
        std::min<size_t>(query.limit, static_cast<size_t>(std::numeric_limits<int64_t>::max())));
    return Call([&](Connection& c, bool) -> Result<std::vector<JobRecord>> {
      auto run = query.state
                     ? c.Run(query.newest_first ? kListJobsStateDesc : kListJobsState,
                             {Text(query.kind), Text(*query.state), Int(limit)})
                     : c.Run(query.newest_first ? kListJobsDesc : kListJobs,
                             {Text(query.kind), Int(limit)});
      PIXSEEK_ASSIGN_OR_RETURN(Outcome out,
                               Checked(std::move(run), "cannot list " + query.kind + " jobs"));
      std::vector<JobRecord> jobs;
      jobs.reserve(out.rows.size());
      for (Row& row : out.rows) jobs.push_back(ReadJob(row));
      return jobs;
    });
  }

 private:
  // "MariaDB at HOST:PORT, database DB", the prefix of error messages.
  std::string Where() const { return "MariaDB at " + endpoint_ + ", database " + database_; }

  Result<Outcome> Checked(Result<Outcome> out, const std::string& what) const {
    if (out.ok()) return out;
    return out.status().WithContext(Where() + ": " + what);
  }

  // One try of Insert: the record alone (one statement, autocommitted), or
  // the record and its feature in a transaction.
  Result<int64_t> InsertOnce(Connection& c, const ImageRecord& r,
                             std::span<const float> feature) const {
    if (feature.empty()) return InsertRecord(c, r);
    return InTransaction(c, [&]() -> Result<int64_t> {
      PIXSEEK_ASSIGN_OR_RETURN(int64_t id, InsertRecord(c, r));
      PIXSEEK_RETURN_IF_ERROR(PutFeature(c, id, feature));
      return id;
    });
  }

  Result<int64_t> InsertRecord(Connection& c, const ImageRecord& r) const {
    auto out = c.Run(kInsert, {Text(r.path), Text(r.name), Text(r.sha256), Int(r.size_bytes),
                               Text(r.format), Int(r.width), Int(r.height), Text(r.exif_datetime),
                               Text(r.label), Int(r.added_at)});
    if (out.ok()) return static_cast<int64_t>(out->insert_id);
    if (out.status().code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("an image with path " + r.path + " is already stored");
    }
    return out.status().WithContext(Where() + ": cannot insert image " + r.path);
  }

  // Sets the feature of image `id`; NotFound (from the foreign key) when
  // there is no such image.
  Status PutFeature(Connection& c, int64_t id, std::span<const float> feature) const {
    auto out = c.Run(kPutFeature, {Int(id), Blob(store_internal::FeatureBytes(feature))});
    if (out.ok()) return Status::Ok();
    if (out.status().code() == StatusCode::kNotFound && !c.lost()) {
      return Status::NotFound("no image with id " + std::to_string(id));
    }
    return out.status().WithContext(Where() + ": cannot write the feature of image " +
                                    std::to_string(id));
  }

  // Whether image `id` has `feature` stored (trivially so for an empty one).
  bool HasFeature(Connection& c, int64_t id, std::span<const float> feature) const {
    if (feature.empty()) return true;
    auto out = c.Run(kGetFeature, {Int(id)});
    return out.ok() && out->rows.size() == 1 &&
           out->rows[0][0].text == store_internal::FeatureBytes(feature);
  }

  static Status StatusOf(const Status& s) { return s; }
  template <typename T>
  static Status StatusOf(const Result<T>& r) {
    return r.status();
  }

  // Runs fn (returning a Status or a Result) in a transaction on `c`:
  // committed when it succeeds, rolled back otherwise. A connection lost
  // before COMMIT was sent leaves nothing behind: the server rolls back
  // what a dead session had not committed.
  template <typename Fn>
  auto InTransaction(Connection& c, Fn&& fn) const -> decltype(fn()) {
    PIXSEEK_RETURN_IF_ERROR(Checked(c.Run(kBegin, {}), "cannot begin").status());
    auto result = fn();
    Status s = StatusOf(result);
    if (s.ok()) s = Checked(c.Run(kCommit, {}), "cannot commit").status();
    if (!s.ok()) {
      if (!c.unusable()) (void)c.Run(kRollback, {});
      return s;
    }
    return result;
  }

  // Runs fn(connection, retry_after_maybe_executed) on a pooled connection.
  // When the connection is lost (or none can be opened), retries once on a
  // fresh one; `retry_after_maybe_executed` tells fn that the first try may
  // have run its statement. Unavailable when the retry fails too.
  template <typename Fn>
  auto Call(Fn&& fn) const -> decltype(fn(std::declval<Connection&>(), false)) {
    std::string lost;
    bool maybe_executed = false;
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto conn = pool_.Acquire(/*fresh=*/attempt > 0);
      if (!conn.ok()) {
        if (conn.status().code() != StatusCode::kUnavailable) {
          return conn.status().WithContext(Where());
        }
        lost = conn.status().message();
        continue;
      }
      Lease lease(&pool_, std::move(conn).value());
      auto result = fn(*lease, maybe_executed);
      if (!lease->lost()) return result;
      maybe_executed = maybe_executed || lease->maybe_executed();
      lost = lease->last_message();
      pool_.DropIdle();
    }
    return Status::Unavailable("MariaDB at " + endpoint_ + " is unreachable: " + lost);
  }

  Status Migrate(Connection& c) {
    PIXSEEK_ASSIGN_OR_RETURN(Outcome lock, Checked(c.Run(kLock, {}), "cannot lock the schema"));
    if (lock.rows.empty() || lock.rows[0][0].number != 1) {
      return Status::Unavailable(Where() +
                                 ": timed out waiting for another process "
                                 "creating the pixseek tables");
    }
    Status s = MigrateLocked(c);
    if (!c.unusable()) (void)c.Run(kUnlock, {});
    return s;
  }

  Status MigrateLocked(Connection& c) {
    PIXSEEK_ASSIGN_OR_RETURN(Outcome tables, Checked(c.Run(kTables, {}), "cannot list tables"));
    std::set<std::string> names;
    for (const Row& row : tables.rows) names.insert(row[0].text);
    int64_t version = 0;
    if (names.count("schema_version") != 0) {
      PIXSEEK_ASSIGN_OR_RETURN(Outcome v, Checked(c.Run(kGetVersion, {}), "cannot read version"));
      if (!v.rows.empty()) version = v.rows[0][0].number;
    } else if (!names.empty()) {
      // Anything else in the database is someone else's data.
      return Status::FailedPrecondition(Where() + " holds other tables (" + *names.begin() +
                                        ", ...): not a pixseek metadata database");
    }
    if (version > kSchemaVersion) {
      return Status::FailedPrecondition(
          Where() + " has metadata schema version " + std::to_string(version) +
          "; this build of pixseek knows versions up to " + std::to_string(kSchemaVersion));
    }
    if (version == kSchemaVersion) return Status::Ok();
    // Created first, so a half-migrated database is still recognised as ours.
    PIXSEEK_RETURN_IF_ERROR(
        c.Execute("CREATE TABLE IF NOT EXISTS schema_version ("
                  "  id TINYINT NOT NULL PRIMARY KEY,"
                  "  version INT NOT NULL"
                  ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"));
    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      for (const char* sql : m.statements) {
        PIXSEEK_RETURN_IF_ERROR(c.Execute(sql).WithContext(
            Where() + ": migration to schema version " + std::to_string(m.version)));
      }
      PIXSEEK_RETURN_IF_ERROR(
          Checked(c.Run(kSetVersion, {Int(m.version)}), "cannot record the schema version")
              .status());
    }
    return Status::Ok();
  }

  const std::string endpoint_;
  const std::string database_;
  mutable Pool pool_;
};

}  // namespace

Result<std::unique_ptr<MetadataStore>> OpenMysqlStore(const std::string& url,
                                                      const MysqlStoreOptions& options) {
  PIXSEEK_ASSIGN_OR_RETURN(MysqlUrl parsed, ParseMysqlUrl(url));
  if (options.pool_size < 1) {
    return Status::InvalidArgument("MySQL store: pool_size must be at least 1");
  }
  if (options.connect_timeout_s < 1 || options.read_timeout_s < 1 || options.write_timeout_s < 1) {
    return Status::InvalidArgument("MySQL store: timeouts must be at least 1 second");
  }
  auto store = std::make_unique<MysqlStore>(std::move(parsed), options);
  PIXSEEK_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<MetadataStore>(std::move(store));
}

}  // namespace pixseek
