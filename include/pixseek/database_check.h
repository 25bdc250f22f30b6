// `pixseek check`: verifies every part of a database directory (the
// manifest, the metadata store, the vector index's files, the agreement
// between the store and the index, the stored base features, thumbnails and
// uploaded files) and, with --repair, salvages what is intact and says
// exactly what was lost. What each part checks and what a repair does:
// docs/architecture.md, "Checking and repairing a database".
#ifndef PIXSEEK_DATABASE_CHECK_H_
#define PIXSEEK_DATABASE_CHECK_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

struct CheckOptions {
  std::filesystem::path dir;  // the database directory
  // The metadata store when it is not DIR/metadata.db ("mysql://..."; the
  // manifest records it without its password). Empty = DIR's SQLite file.
  std::string metadata_url;
  // The vector server when the vectors are not in DIR ("milvus://..."; the
  // manifest records it without its password), as DatabaseOptions::vector_url.
  // Empty = the database's own index.
  std::string vector_url;
  // Where models are installed; empty = DefaultPixseekHome(). Only a repair
  // that restores vectors of a database whose model has a trained head
  // needs the model (its head projects the stored features).
  std::filesystem::path home;
  // Limits for reading the stored image files (uploads, thumbnails).
  DecodeLimits limits;
};

// One finding of a check, or one thing a repair did or could not save.
struct CheckIssue {
  std::string part;          // set in RepairReport's lists: the part it concerns
  std::string message;       // what, with the file and offset where they are known
  std::vector<int64_t> ids;  // the image ids concerned, ascending (may be empty)
};

// One part of a database as the check found it. Parts, in order: manifest,
// metadata, index, consistency, features, thumbnails, uploads, files.
struct CheckPart {
  std::string name;
  std::string summary;             // what was read ("12 records"), or why it was not
  bool checked = true;             // false: it could not be checked (summary says why)
  std::vector<CheckIssue> damage;  // empty: intact
  // Worth knowing, not damage: a torn last log record (a crash's trace, that
  // the next writable open drops), a library file moved away, a writer
  // running meanwhile.
  std::vector<CheckIssue> notes;

  bool damaged() const { return !damage.empty(); }
};

struct CheckReport {
  std::filesystem::path dir;  // absolute
  std::vector<CheckPart> parts;

  // Damage in any part, or a part that could not be checked.
  bool damaged() const;
};

struct RepairReport {
  CheckReport before;
  std::vector<CheckIssue> actions;  // what the repair changed
  std::vector<CheckIssue> lost;     // what it could not save, and what to do
  CheckReport after;                // the check run again once repaired
};

// Reads every part of the database in options.dir without changing
// anything and without the writer's lock (a writer running meanwhile is
// noted: its writes in flight may look like damage). Damage is reported,
// not returned. NotFound when options.dir holds no database.
Result<CheckReport> CheckDatabase(const CheckOptions& options);

// Checks, repairs, and checks again. A damaged log (write-ahead or flat) is
// replayed up to its damaged record and cut there; a damaged disk graph is
// set aside (each damaged file is kept beside it as
// "<file>.damaged-<unix seconds>"); vectors whose record is gone are
// removed; records whose vector was lost get it back from their stored base
// feature (projected, and augmented under DBA, as Database::Insert does);
// missing or unreadable thumbnails are made again from the stored image
// file. What cannot be repaired (a damaged manifest, metadata store or
// feature, an uploaded file changed or gone) is listed in `lost`, never
// deleted. Takes the index's writer lock for the whole repair: Unavailable
// when another process has the database open for writing (a running
// server). NotFound when options.dir holds no database.
Result<RepairReport> RepairDatabase(const CheckOptions& options);

// The reports as one JSON object, and as text for a terminal.
std::string CheckReportJson(const CheckReport& report);
std::string RepairReportJson(const RepairReport& report);
std::string CheckReportText(const CheckReport& report);
std::string RepairReportText(const RepairReport& report);

}  // namespace pixseek

#endif  // PIXSEEK_DATABASE_CHECK_H_
