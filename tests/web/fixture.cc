// Writes the files the web end-to-end test (tests/web/e2e.mjs) needs into one
// folder: the tiny ONNX model and its card, a labelled photo collection to
// build the database from, query and upload pictures, near-duplicate pairs,
// and folders for builds started from the browser (with broken files that
// must be listed as failed).
//   web_e2e_fixture OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_images.h"
#include "tiny_onnx.h"

namespace fs = std::filesystem;
using pixseek::testing::EditedCopy;
using pixseek::testing::SyntheticImage;

namespace {

bool Write(const fs::path& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

bool WriteText(const fs::path& path, const std::string& text) {
  return Write(path, std::vector<uint8_t>(text.begin(), text.end()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  bool ok = Write(out / "tiny.onnx", pixseek::testing::MakeTinyOnnxModel(16, 7)) &&
            WriteText(out / "tiny.json", pixseek::testing::TinyModelCardJson(16, "tiny.onnx"));

  // The collection: three labelled colours, eight pictures each.
  struct Colour { const char* label; int r, g, b; const char* ext; };
  const Colour colours[] = {{"red", 220, 30, 30, ".jpg"}, {"blue", 30, 40, 220, ".png"},
                            {"yellow", 230, 220, 40, ".jpg"}};
  uint32_t seed = 100;
  for (const Colour& c : colours) {
    for (int i = 0; i < 8; ++i) {
      const std::string name = std::string(c.label).substr(0, 1) + std::to_string(i) + c.ext;
      ok = ok && Write(out / "photos" / c.label / name,
                       SyntheticImage(c.ext, 320, 240, c.r, c.g, c.b, seed++));
    }
  }
  // Pictures for the library uploads, one per viewport and flow: green,
  // unlike anything stored, so a search for one finds it first. And a file
  // that is no image.
  ok = ok && Write(out / "upload" / "green-desktop.png",
                   SyntheticImage(".png", 256, 256, 30, 200, 40, 4242));
  ok = ok && Write(out / "upload" / "green-phone.png",
                   SyntheticImage(".png", 256, 256, 40, 190, 60, 4343));
  ok = ok && Write(out / "upload" / "green-key-desktop.png",
                   SyntheticImage(".png", 256, 256, 50, 210, 30, 4444));
  ok = ok && Write(out / "upload" / "green-key-phone.png",
                   SyntheticImage(".png", 256, 256, 60, 180, 50, 4545));
  ok = ok && WriteText(out / "upload" / "notes.png", "this is text, not a picture\n");

  // Near-duplicate pairs for the library's duplicates block, one per
  // viewport: a photo and its downsized, re-saved copy. Each pair has a
  // colour nothing else stored has (the tiny model mostly sees colour), so
  // that a group holds the pair and nothing more.
  struct Pair { const char* name; int r, g, b; uint32_t seed; };
  const Pair pairs[] = {{"dup-desktop", 30, 180, 180, 4646}, {"dup-phone", 235, 235, 235, 4747}};
  for (const Pair& p : pairs) {
    const std::vector<uint8_t> original = SyntheticImage(".png", 320, 240, p.r, p.g, p.b, p.seed);
    ok = ok && Write(out / "dups" / (std::string(p.name) + ".png"), original) &&
         Write(out / "dups" / (std::string(p.name) + "-copy.jpg"),
               EditedCopy(original, 0.5, ".jpg", 60));
  }

  // Folders for builds started from the browser, under the import root.
  for (const char* batch : {"batch-desktop", "batch-phone"}) {
    const fs::path dir = out / "import" / batch;
    for (int i = 0; i < 5; ++i) {
      ok = ok && Write(dir / "purple" / ("p" + std::to_string(i) + ".jpg"),
                       SyntheticImage(".jpg", 300, 200, 150, 40, 180, seed++));
    }
    ok = ok && Write(dir / "purple" / "empty.jpg", {});
    ok = ok && WriteText(dir / "purple" / "readme.png", "not an image either\n");
  }
  if (!ok) {
    std::fprintf(stderr, "web_e2e_fixture: cannot write under %s\n", out.c_str());
    return 1;
  }
  return 0;
}
