#include <algorithm>

#include "pixseek/vector_index.h"

namespace pixseek {
namespace {

// A bitmap over [0, largest id] is used when it costs at most this many bits
// per id (plus a floor, so that small sets of small ids always get one):
// metadata ids are dense, and a bitmap then answers in one load.
constexpr uint64_t kMaxBitsPerId = 64;
constexpr uint64_t kBitmapFloorBits = uint64_t{1} << 20;

}  // namespace

IdFilter::IdFilter(std::vector<int64_t> ids) : ids_(std::move(ids)) {
  std::sort(ids_.begin(), ids_.end());
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
  if (ids_.empty() || ids_.front() < 0) return;
  const uint64_t span = static_cast<uint64_t>(ids_.back()) + 1;
  if (span > kBitmapFloorBits + kMaxBitsPerId * ids_.size()) return;
  bits_.assign((span + 63) / 64, 0);
  for (int64_t id : ids_) bits_[static_cast<uint64_t>(id) >> 6] |= uint64_t{1} << (id & 63);
}

bool IdFilter::ContainsSparse(int64_t id) const {
  return std::binary_search(ids_.begin(), ids_.end(), id);
}

}  // namespace pixseek
