// libFuzzer target for the disk graph file (docs/index_format.md, "Disk
// graph"): any file content must open or give a status, and an opened graph
// must search, read vectors and stream its nodes without crashing, leaking or
// reading out of bounds. Seed it with small real files (the disk index tests
// write them) so that it gets past the header checksum. Checksums make most
// mutations fail at open; the node-block and neighbour checks behind them are
// what a hash collision or a hand-made file reaches.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "index/disk_graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("disk_fuzz_" + std::to_string(::getpid()))).string();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  pixseek::DiskGraphOptions options;
  options.cache_bytes = 1 << 16;
  options.direct_io = false;
  auto graph = pixseek::DiskGraph::Open(path, options);
  if (!graph.ok()) return 0;
  const pixseek::DiskGraph& g = **graph;
  std::vector<float> query(static_cast<size_t>(g.dimension()), 0.5f);
  std::vector<pixseek::SearchHit> hits;
  pixseek::DiskSearchParams params;
  params.search_list = 16;
  (void)g.Search(query.data(), 5, params, nullptr, &hits);
  (void)g.ReadVector(0);
  (void)g.ForEachVector([](uint32_t, const float*) { return pixseek::Status::Ok(); });
  return 0;
}
