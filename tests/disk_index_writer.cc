// A child process for the disk index kill test: adds vectors one by one to
// the disk index in DIR (compacting in the background as it grows), removes
// every seventh id soon after, and reports each acknowledged change on
// stderr ("ACK id" / "DEL id") only after the call returned OK, and each
// compaction it sees committed ("GEN n", the index's generation). The test
// kills it at random moments and checks that every reported change survived.
//
//   disk_index_writer DIR FIRST_ID COUNT
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "pixseek/disk_index.h"

namespace {

constexpr int kDim = 32;

// The vector of an id, the same in the test.
std::vector<float> VectorFor(int64_t id) {
  std::mt19937 rng(static_cast<uint32_t>(id * 2654435761u));
  std::normal_distribution<float> normal;
  std::vector<float> v(kDim);
  double norm = 0;
  for (float& x : v) {
    x = normal(rng);
    norm += double{x} * x;
  }
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: disk_index_writer DIR FIRST_ID COUNT\n");
    return 2;
  }
  pixseek::DiskIndexOptions options;
  options.storage = "fp32";
  options.min_base_vectors = 256;
  options.compact_ratio = 0.2;
  options.background_compaction = true;
  options.max_degree = 16;
  options.build_list = 32;
  options.num_threads = 1;
  auto index = pixseek::OpenDiskIndex(argv[1], kDim, options);
  if (!index.ok()) {
    std::fprintf(stderr, "open failed: %s\n", index.status().ToString().c_str());
    return 1;
  }
  const int64_t first = std::stoll(argv[2]);
  const int64_t count = std::stoll(argv[3]);
  std::fprintf(stderr, "READY\n");
  uint64_t generation = (*index)->stats().generation;
  for (int64_t id = first; id < first + count; ++id) {
    const std::vector<float> v = VectorFor(id);
    pixseek::Status s = (*index)->Add(1, &id, v.data());
    if (!s.ok()) {
      std::fprintf(stderr, "add failed: %s\n", s.ToString().c_str());
      return 1;
    }
    std::fprintf(stderr, "ACK %lld\n", static_cast<long long>(id));
    if (const uint64_t g = (*index)->stats().generation; g > generation) {
      generation = g;
      std::fprintf(stderr, "GEN %llu\n", static_cast<unsigned long long>(g));
    }
    if (id % 7 == 0 && id - 3 >= first) {
      const int64_t gone = id - 3;
      s = (*index)->Remove({&gone, 1});
      if (!s.ok()) {
        std::fprintf(stderr, "remove failed: %s\n", s.ToString().c_str());
        return 1;
      }
      std::fprintf(stderr, "DEL %lld\n", static_cast<long long>(gone));
    }
  }
  std::fprintf(stderr, "DONE\n");
  return 0;
}
