// The stored form of a base feature, shared by the SQLite and MariaDB stores:
// one BLOB of raw little-endian IEEE-754 float32 values, no header. The blob
// carries no dimension; the reader names the one it expects, and a blob of
// another length is DataLoss.
#ifndef PIXSEEK_STORE_FEATURE_BLOB_H_
#define PIXSEEK_STORE_FEATURE_BLOB_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/metadata_store.h"
#include "pixseek/status.h"

namespace pixseek::store_internal {

// The blob is the in-memory floats copied as they are; a big-endian build
// would need a byte swap here and in DecodeFeature.
static_assert(std::endian::native == std::endian::little, "feature blobs are little-endian");
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4);

// The bytes to store for `feature`; borrows it.
inline std::string_view FeatureBytes(std::span<const float> feature) {
  return {reinterpret_cast<const char*>(feature.data()), feature.size_bytes()};
}

// InvalidArgument unless every value is finite: a NaN or infinity would
// poison whatever is trained from the stored features.
inline Status CheckFinite(std::span<const float> values, const std::string& what) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return Status::InvalidArgument(what + " has a non-finite value at position " +
                                     std::to_string(i));
    }
  }
  return Status::Ok();
}

inline Status CheckDimension(int dimension) {
  if (dimension < 1) {
    return Status::InvalidArgument("feature dimension " + std::to_string(dimension) +
                                   " is not positive");
  }
  return Status::Ok();
}

// InvalidArgument unless `features` is ids_size rows of `dimension` finite floats.
inline Status CheckFeatureRows(size_t ids_size, int dimension, std::span<const float> features) {
  PIXSEEK_RETURN_IF_ERROR(CheckDimension(dimension));
  // Divided rather than multiplied: ids_size * dimension could overflow.
  if (features.size() / static_cast<size_t>(dimension) != ids_size ||
      features.size() % static_cast<size_t>(dimension) != 0) {
    return Status::InvalidArgument(std::to_string(features.size()) + " floats are not " +
                                   std::to_string(ids_size) + " features of dimension " +
                                   std::to_string(dimension));
  }
  return CheckFinite(features, "a base feature");
}

// InvalidArgument unless every record has a path and `features` is one
// finite row of `dimension` per record (MetadataStore::InsertMany's input).
inline Status CheckNewRecords(std::span<const ImageRecord> records, int dimension,
                              std::span<const float> features) {
  PIXSEEK_RETURN_IF_ERROR(CheckFeatureRows(records.size(), dimension, features));
  for (const ImageRecord& r : records) {
    if (r.path.empty()) return Status::InvalidArgument("image record without a path");
  }
  return Status::Ok();
}

// The arguments of InsertWithIds: as many features as records, ids >= 1,
// paths set, finite values.
inline Status CheckImportedRecords(std::span<const ImageRecord> records,
                                   std::span<const std::vector<float>> features) {
  if (records.size() != features.size()) {
    return Status::InvalidArgument(std::to_string(records.size()) + " records but " +
                                   std::to_string(features.size()) + " features");
  }
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].id < 1) {
      return Status::InvalidArgument("image id " + std::to_string(records[i].id) +
                                     " is not positive");
    }
    if (records[i].path.empty()) return Status::InvalidArgument("image record without a path");
    PIXSEEK_RETURN_IF_ERROR(CheckFinite(features[i], "the base feature of " + records[i].path));
  }
  return Status::Ok();
}

// Appends the feature of image `id` stored as `bytes` to `rows`; DataLoss
// naming the id when it is not `dimension` floats.
inline Status AppendFeature(int64_t id, std::string_view bytes, int dimension,
                            std::vector<float>* rows) {
  const size_t expected = static_cast<size_t>(dimension) * sizeof(float);
  if (bytes.size() != expected) {
    return Status::DataLoss("the stored base feature of image " + std::to_string(id) + " has " +
                            std::to_string(bytes.size()) + " bytes, not " +
                            std::to_string(dimension) + " floats");
  }
  const size_t old = rows->size();
  rows->resize(old + static_cast<size_t>(dimension));
  std::memcpy(rows->data() + old, bytes.data(), bytes.size());
  return Status::Ok();
}

// The feature of image `id` stored as `bytes`, whatever its length;
// DataLoss when the bytes are not whole floats.
inline Result<std::vector<float>> DecodeFeature(int64_t id, std::string_view bytes) {
  if (bytes.size() % sizeof(float) != 0) {
    return Status::DataLoss("the stored base feature of image " + std::to_string(id) + " has " +
                            std::to_string(bytes.size()) + " bytes, not whole floats");
  }
  std::vector<float> feature(bytes.size() / sizeof(float));
  if (!bytes.empty()) std::memcpy(feature.data(), bytes.data(), bytes.size());
  return feature;
}

// The loop of ScanFeatures, for both stores: keyset paging by id.
// read_page(after_id, &ids, &rows) appends the features with ids above
// after_id, at most kFeaturePageRows of them, ascending (AppendFeature).
// It is called between visits, never during one, so a store that locks
// inside read_page does not hold its lock while `visit` runs.
template <typename ReadPage>
Status ScanFeaturePages(int dimension, ReadPage&& read_page,
                        const MetadataStore::FeatureVisitor& visit) {
  PIXSEEK_RETURN_IF_ERROR(CheckDimension(dimension));
  constexpr size_t kPage = MetadataStore::kFeaturePageRows;
  std::vector<int64_t> ids;
  std::vector<float> rows;
  ids.reserve(kPage);
  rows.reserve(kPage * static_cast<size_t>(dimension));
  int64_t after_id = std::numeric_limits<int64_t>::min();
  for (;;) {
    ids.clear();
    rows.clear();
    PIXSEEK_RETURN_IF_ERROR(read_page(after_id, &ids, &rows));
    if (ids.empty()) return Status::Ok();
    PIXSEEK_RETURN_IF_ERROR(visit(ids, rows));
    if (ids.size() < kPage) return Status::Ok();
    after_id = ids.back();
  }
}

}  // namespace pixseek::store_internal

#endif  // PIXSEEK_STORE_FEATURE_BLOB_H_
