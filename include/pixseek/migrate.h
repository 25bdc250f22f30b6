// `pixseek migrate`: moves an embedded database (its vectors in a disk or
// flat index in the database directory, its metadata in SQLite or already in
// MariaDB) to the servers named by URL, in place, so that several serving
// nodes can share it (docs/configuration.md, "Vectors on a server").
#ifndef PIXSEEK_MIGRATE_H_
#define PIXSEEK_MIGRATE_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "pixseek/index_params.h"
#include "pixseek/status.h"

namespace pixseek {

struct MigrateOptions {
  std::filesystem::path dir;  // the database directory
  // Where models are installed; empty = DefaultPixseekHome(). The database
  // is opened (for writing) as every command opens it, model included.
  std::filesystem::path home;
  // The vector server to move the vectors to: "milvus://..." as
  // DatabaseOptions::vector_url. Required.
  std::string vector_url;
  // A database with SQLite metadata: the MariaDB store to move the rows to
  // ("mysql://..."; empty = the rows stay in DIR/metadata.db). A database
  // whose rows are already in MariaDB: that store's URL (required then;
  // only the vectors move).
  std::string metadata_url;
  // Parameters of the new index (the server kind's table, e.g.
  // milvus_index), as `pixseek build` takes them; the rest are defaults.
  IndexParams index_params;
  // Rows copied per call to either server.
  size_t batch_rows = 1000;
  // Progress (phase, count, rate, ETA) goes here; nullptr = none.
  std::FILE* progress_out = stderr;
  // Set from another thread or a signal handler: the copy stops after the
  // batch in flight (Cancelled); a later run continues from there.
  const std::atomic<bool>* cancel = nullptr;
  // For tests of resumption only: the process kills itself (SIGKILL) after
  // this many batches (0 = never), as a crash at that point would.
  uint64_t kill_after_batches = 0;
};

struct MigrateReport {
  uint64_t images = 0;           // images the database holds (and now the servers)
  uint64_t vectors_copied = 0;   // by this run
  uint64_t vectors_present = 0;  // copied by an earlier, interrupted run
  uint64_t rows_copied = 0;      // metadata rows, by this run (0 when they stay)
  uint64_t rows_present = 0;
  uint64_t stale_removed = 0;  // copied earlier, removed from the database since
  std::string vector_store;    // the vector URL without its password or token
  std::string metadata_store;  // "sqlite" or the store's URL without its password
  // What the database no longer uses, left in place: the old index's files
  // and, when the rows moved, the SQLite file (with its -wal and -shm).
  std::vector<std::filesystem::path> old_files;
  double seconds = 0;
};

// Copies every vector (by id, in batches) into the vector server and, when
// the rows move, every metadata row with its id, base feature and the
// database's settings into the metadata server; checks that both hold
// exactly the database's ids; then replaces the manifest (atomically, the
// last step). Until that step the embedded database is whole and usable;
// killed at any point and run again, the copy continues where it stopped
// (the progress is kept in DIR/migrate.json) and nothing ends up twice.
// The database's writer lock is held throughout.
// Errors: InvalidArgument for a missing or unknown vector URL or a metadata
// URL that is not a server; NotFound when DIR holds no database;
// FailedPrecondition for a database already on a vector server, a target
// collection or store that holds another database's data, or a metadata
// URL missing for rows in MariaDB; Unavailable when another process (a
// running server) holds the database's writer lock, or a server cannot be
// reached (run again once it is back); Cancelled.
Result<MigrateReport> MigrateDatabase(const MigrateOptions& options);

}  // namespace pixseek

#endif  // PIXSEEK_MIGRATE_H_
