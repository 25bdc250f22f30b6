// Checking a search's RecordFilter (QueryParams::filter) and naming it in the
// result cache's key. Internal to the service module; QueryService is the
// caller (the parsers of its fields are public, in pixseek/services.h).
#ifndef PIXSEEK_SERVICE_RECORD_FILTER_H_
#define PIXSEEK_SERVICE_RECORD_FILTER_H_

#include <string>

#include "pixseek/metadata_store.h"
#include "pixseek/status.h"

namespace pixseek {

// InvalidArgument for a label that is not a plausible label, an unknown
// format, a negative minimum size, or an empty time range.
[[nodiscard]] Status ValidateRecordFilter(const RecordFilter& filter);

// "" for no filter, else a self-delimiting text (JSON) that differs between
// filters that differ.
std::string RecordFilterKey(const RecordFilter& filter);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_RECORD_FILTER_H_
