// What the SQLite and MariaDB stores share of leases and job records
// (MetadataStore's coordination API): the argument checks, so that both
// stores refuse the same things with the same messages.
//
// Both keep a lease as one row (name, owner, expires_ms, version) and a job
// as one row (id, kind, state, payload, created_at, updated_at, revision);
// expiry is in milliseconds of the store's clock. Every write of a row also
// increments its version/revision, so that a write always changes the row:
// MariaDB counts only changed rows as affected, and a renewal within the same
// millisecond, or a progress write that repeats the last one, must still be
// told apart from a write whose condition failed.
#ifndef PIXSEEK_STORE_COORDINATION_H_
#define PIXSEEK_STORE_COORDINATION_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "pixseek/metadata_store.h"
#include "pixseek/status.h"

namespace pixseek::store_internal {

constexpr size_t kMaxLeaseNameLength = 255;  // lease names and owners
constexpr size_t kMaxJobKindLength = 64;
constexpr size_t kMaxJobStateLength = 32;
constexpr std::chrono::milliseconds kMaxLeaseTtl = std::chrono::hours(24);

// InvalidArgument unless name and owner are 1..255 characters (and, when
// `ttl` is given, it is 1 ms..24 h).
inline Status CheckLease(const std::string& name, const std::string& owner,
                         std::chrono::milliseconds ttl = std::chrono::milliseconds(1)) {
  if (name.empty() || name.size() > kMaxLeaseNameLength) {
    return Status::InvalidArgument("a lease name must be 1 to 255 characters");
  }
  if (owner.empty() || owner.size() > kMaxLeaseNameLength) {
    return Status::InvalidArgument("a lease owner must be 1 to 255 characters");
  }
  if (ttl < std::chrono::milliseconds(1) || ttl > kMaxLeaseTtl) {
    return Status::InvalidArgument("a lease lasts 1 ms to 24 hours; got " +
                                   std::to_string(ttl.count()) + " ms");
  }
  return Status::Ok();
}

// InvalidArgument for a job state that is empty or too long.
inline Status CheckJobState(const std::string& state) {
  if (state.empty() || state.size() > kMaxJobStateLength) {
    return Status::InvalidArgument("a job state must be 1 to 32 characters");
  }
  return Status::Ok();
}

// InvalidArgument for a new job's kind or state that is empty or too long,
// or a negative id.
inline Status CheckNewJob(const JobRecord& job) {
  if (job.id < 0) return Status::InvalidArgument("a job id cannot be negative");
  if (job.kind.empty() || job.kind.size() > kMaxJobKindLength) {
    return Status::InvalidArgument("a job kind must be 1 to 64 characters");
  }
  return CheckJobState(job.state);
}

inline Status CheckJobQuery(const JobQuery& query) {
  if (query.kind.empty() || query.kind.size() > kMaxJobKindLength) {
    return Status::InvalidArgument("a job kind must be 1 to 64 characters");
  }
  return Status::Ok();
}

// The message of UpdateJob's FailedPrecondition.
inline Status LeaseNotHeld(const std::string& lease, const std::string& owner, int64_t job) {
  return Status::FailedPrecondition("cannot update job " + std::to_string(job) + ": " + owner +
                                    " does not hold lease " + lease);
}

}  // namespace pixseek::store_internal

#endif  // PIXSEEK_STORE_COORDINATION_H_
