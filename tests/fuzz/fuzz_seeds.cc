// Writes the seed corpus of one libFuzzer target in this directory:
//
//   fuzz_seeds FUZZER OUT_DIR   (OUT_DIR is emptied first)
//
// Seeds are made by pixseek's own writers (and OpenCV's encoders) at run time
// rather than checked in, so that a change of file format changes the seeds
// with it: a fuzzer whose seeds no longer open spends its time on the magic
// number and the header checksum. scripts/run-fuzzer.sh runs this before the
// fuzzer. Exits non-zero, naming the seed, when one cannot be made.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "index/disk_graph.h"
#include "pixseek/image.h"
#include "pixseek/model_registry.h"
#include "pixseek/vector_index.h"

namespace fs = std::filesystem;

namespace {

void Fail(const std::string& what, const pixseek::Status& status) {
  std::fprintf(stderr, "fuzz_seeds: %s: %s\n", what.c_str(), status.ToString().c_str());
  std::exit(1);
}

void WriteFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "fuzz_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

void WriteFile(const fs::path& path, std::string_view text) {
  WriteFile(path, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

std::vector<uint8_t> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// n unit vectors of dim floats, deterministic.
std::vector<float> UnitVectors(size_t n, int dim) {
  std::vector<float> v(n * static_cast<size_t>(dim));
  for (size_t i = 0; i < n; ++i) {
    float norm = 0;
    for (int d = 0; d < dim; ++d) {
      float x = std::sin(static_cast<float>(i * 7 + static_cast<size_t>(d) * 13 + 1));
      v[i * static_cast<size_t>(dim) + static_cast<size_t>(d)] = x;
      norm += x * x;
    }
    for (int d = 0; d < dim; ++d) v[i * static_cast<size_t>(dim) + static_cast<size_t>(d)] /= std::sqrt(norm);
  }
  return v;
}

// A JPEG APP1 segment holding EXIF orientation 6 (rotate 90) and a DateTime,
// so that the decoder's EXIF path is reached from the first run.
std::vector<uint8_t> ExifSegment() {
  std::vector<uint8_t> tiff = {'I', 'I', 42, 0, 8, 0, 0, 0,  // little-endian, IFD0 at 8
                               2, 0,                          // two entries
                               0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0,     // Orientation SHORT 6
                               0x32, 0x01, 2, 0, 20, 0, 0, 0, 38, 0, 0, 0,   // DateTime ASCII[20] @38
                               0, 0, 0, 0};                   // no next IFD
  const std::string_view date = "2024:05:17 12:34:56";
  tiff.insert(tiff.end(), date.begin(), date.end());
  tiff.push_back(0);
  std::vector<uint8_t> segment = {0xFF, 0xE1, 0, 0, 'E', 'x', 'i', 'f', 0, 0};
  segment.insert(segment.end(), tiff.begin(), tiff.end());
  const size_t length = segment.size() - 2;
  segment[2] = static_cast<uint8_t>(length >> 8);
  segment[3] = static_cast<uint8_t>(length & 0xFF);
  return segment;
}

void WriteImageSeeds(const fs::path& dir) {
  // 12x8 with colour in both directions, so that rotation and subsampling show.
  pixseek::Image image;
  image.width = 12;
  image.height = 8;
  image.rgb.resize(3 * 12 * 8);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 12; ++x) {
      uint8_t* p = &image.rgb[3 * static_cast<size_t>(y * 12 + x)];
      p[0] = static_cast<uint8_t>(x * 20);
      p[1] = static_cast<uint8_t>(y * 30);
      p[2] = static_cast<uint8_t>((x + y) * 10);
    }
  }
  auto jpeg = pixseek::EncodeThumbnail(image, 64);
  if (!jpeg.ok()) Fail("jpeg", jpeg.status());
  WriteFile(dir / "plain.jpg", *jpeg);
  std::vector<uint8_t> exif_jpeg(jpeg->begin(), jpeg->begin() + 2);  // SOI
  const std::vector<uint8_t> exif = ExifSegment();
  exif_jpeg.insert(exif_jpeg.end(), exif.begin(), exif.end());
  exif_jpeg.insert(exif_jpeg.end(), jpeg->begin() + 2, jpeg->end());
  WriteFile(dir / "exif.jpg", exif_jpeg);

  cv::Mat bgr(image.height, image.width, CV_8UC3);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* p = &image.rgb[3 * static_cast<size_t>(y * image.width + x)];
      bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(p[2], p[1], p[0]);
    }
  }
  cv::Mat grey;
  cv::extractChannel(bgr, grey, 1);
  const struct {
    const char* name;
    const cv::Mat* mat;
  } encodings[] = {{"rgb.png", &bgr}, {"grey.png", &grey}, {"rgb.webp", &bgr},
                   {"rgb.bmp", &bgr}, {"rgb.tiff", &bgr}};
  for (const auto& e : encodings) {
    std::vector<uint8_t> bytes;
    const std::string ext = fs::path(e.name).extension().string();
    if (!cv::imencode(ext, *e.mat, bytes)) Fail(e.name, pixseek::Status::Internal("imencode failed"));
    WriteFile(dir / e.name, bytes);
  }
  // OpenCV has no GIF encoder: a 2x2 GIF89a, four-colour global table, one
  // transparent index (graphic control extension), LZW minimum code size 2.
  const uint8_t gif[] = {
      'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x81, 0, 0,         // screen, 4-colour table
      255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255,              // red green blue white
      0x21, 0xF9, 4, 1, 0, 0, 3, 0,                                // GCE: index 3 transparent
      0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0,                             // image descriptor
      2, 3, 0x44, 0x34, 0x05, 0,                                   // LZW data: 0 1 2 3
      0x3B};
  WriteFile(dir / "tiny.gif", std::span<const uint8_t>(gif, sizeof(gif)));
}

// flat_index_fuzz reads the dimension from the first byte (1 + byte % 8),
// then the index file.
void WriteFlatIndexSeeds(const fs::path& dir, const fs::path& scratch) {
  constexpr int kDim = 4;
  const fs::path file = scratch / "flat.idx";
  {
    auto index = pixseek::OpenFlatIndex(file, kDim);
    if (!index.ok()) Fail("flat index", index.status());
    const std::vector<float> v = UnitVectors(3, kDim);
    const int64_t ids[] = {1, 2, 40};
    if (auto s = (*index)->Add(3, ids, v.data()); !s.ok()) Fail("flat add", s);
    const int64_t removed[] = {2};
    if (auto s = (*index)->Remove(removed); !s.ok()) Fail("flat remove", s);
  }
  std::vector<uint8_t> seed = {kDim - 1};
  const std::vector<uint8_t> bytes = ReadFile(file);
  seed.insert(seed.end(), bytes.begin(), bytes.end());
  WriteFile(dir / "add_remove", seed);
}

// The smallest graph BuildDiskGraph accepts (256 rows, the quantizer's
// minimum), in each vector storage.
void WriteDiskGraphSeeds(const fs::path& dir) {
  constexpr int kDim = 8;
  constexpr size_t kRows = 256;
  const std::vector<float> v = UnitVectors(kRows, kDim);
  std::vector<int64_t> ids(kRows);
  for (size_t i = 0; i < kRows; ++i) ids[i] = static_cast<int64_t>(i * 3 + 1);
  pixseek::MemoryVectorSource source(v.data(), kRows, kDim);
  for (auto storage : {pixseek::VectorStorage::kFloat32, pixseek::VectorStorage::kFloat16,
                       pixseek::VectorStorage::kInt8}) {
    pixseek::DiskBuildParams params;
    params.graph.max_degree = 8;
    params.graph.build_list = 16;
    params.graph.num_threads = 1;
    params.storage = storage;
    params.pq_bytes = 2;
    params.pq_train_rows = kRows;
    const fs::path out = dir / (std::string(pixseek::StorageName(storage)) + ".graph");
    if (auto s = pixseek::BuildDiskGraph(source, ids, out, params); !s.ok()) Fail(out.string(), s);
  }
}

void WriteModelCardSeeds(const fs::path& dir) {
  for (const pixseek::KnownModel& model : pixseek::KnownModels()) {
    WriteFile(dir / (model.name + ".json"), model.card.ToJson());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds FUZZER OUT_DIR\n");
    return 2;
  }
  const std::string_view fuzzer = argv[1];
  const fs::path out = argv[2];
  fs::remove_all(out);
  fs::create_directories(out);
  if (fuzzer == "decode_fuzz") {
    WriteImageSeeds(out);
  } else if (fuzzer == "flat_index_fuzz") {
    const fs::path scratch = out.string() + ".scratch";
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    WriteFlatIndexSeeds(out, scratch);
    fs::remove_all(scratch);
  } else if (fuzzer == "disk_graph_fuzz") {
    WriteDiskGraphSeeds(out);
  } else if (fuzzer == "model_card_fuzz") {
    WriteModelCardSeeds(out);
  } else {
    std::fprintf(stderr, "fuzz_seeds: no seeds for %s\n", argv[1]);
    return 2;
  }
  return 0;
}
