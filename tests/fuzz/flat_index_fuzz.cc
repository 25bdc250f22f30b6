// libFuzzer target for the flat index log parser (docs/index_format.md): any
// file content must open as an index or give a status (DataLoss,
// InvalidArgument), never crash, leak or read out of bounds. The first byte
// picks the dimension; the rest is the file.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "pixseek/vector_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int dimension = 1 + data[0] % 8;
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("flat_fuzz_" + std::to_string(::getpid()))).string();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  pixseek::FlatIndexOptions options;
  options.read_only = true;  // parse without repairing, so every input is seen as given
  options.num_threads = 1;
  auto index = pixseek::OpenFlatIndex(path, dimension, options);
  if (index.ok()) {
    std::vector<float> query(static_cast<size_t>(dimension), 1.0f);
    std::vector<std::vector<pixseek::SearchHit>> hits;
    if (!(*index)->Search(1, query.data(), 5, &hits).ok()) std::abort();
    for (int64_t id : (*index)->Ids()) {
      if (!(*index)->Get(id).ok()) std::abort();
    }
  }
  return 0;
}
