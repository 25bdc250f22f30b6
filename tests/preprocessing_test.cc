// A database's preprocessing (include/pixseek/image.h, ImagePreprocessing):
// recorded in the manifest at creation, applied to every image embedded
// (a greyscale database embeds a colour image as its grey copy), refused when
// a later command asks for other filters, and the size cap of uploaded
// copies (a large upload is re-encoded, a small one kept byte for byte).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/image.h"
#include "pixseek/model_registry.h"
#include "pixseek/services.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

constexpr int kDim = 16;

class PreprocessingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    const Status installed = testing::InstallTinyModel(home_, tmp_.path(), kDim, 5);
    ASSERT_TRUE(installed.ok()) << installed.ToString();
  }

  DatabaseOptions Options(const std::string& name,
                          std::optional<ImagePreprocessing> preprocessing) const {
    DatabaseOptions o;
    o.dir = tmp_.path() / name;
    o.model = "tiny";
    o.home = home_;
    o.index_kind = "flat";
    o.threads = 1;
    o.preprocessing = preprocessing;
    return o;
  }

  static Image Decode(const std::vector<uint8_t>& bytes) {
    auto decoded = DecodeImage(bytes, DecodeOptions{});
    EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
    return decoded.ok() ? decoded->image : Image{};
  }

  static std::vector<float> EmbedOne(Database& db, const Image& image) {
    std::vector<float> v(static_cast<size_t>(db.base_dimension()));
    const Status s = db.EmbedOne(image, v.data());
    EXPECT_TRUE(s.ok()) << s.ToString();
    return v;
  }

  testing::TempDir tmp_;
  std::filesystem::path home_;
};

TEST_F(PreprocessingTest, ManifestRecordsItAndReopenUsesIt) {
  ImagePreprocessing asked;
  asked.grey = true;
  asked.denoise = true;
  asked.stored_max_side = 512;
  asked.stored_quality = 80;
  {
    auto db = Database::Open(Options("db", asked), true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
  }
  std::ifstream in(tmp_.path() / "db" / "pixseek.json");
  const nlohmann::json m = nlohmann::json::parse(in);
  ASSERT_TRUE(m.contains("preprocess")) << m.dump();
  EXPECT_EQ(m["preprocess"]["grey"], true);
  EXPECT_EQ(m["preprocess"]["denoise"], true);
  EXPECT_EQ(m["preprocess"]["stored_max_side"], 512);
  EXPECT_EQ(m["preprocess"]["stored_quality"], 80);

  // A command that names no preprocessing gets the database's.
  auto db = Database::Open(Options("db", std::nullopt), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->preprocessing(), asked);
  // And its stats show it (`pixseek stats`, GET /api/v1/stats).
  auto stats = (*db)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->preprocessing, asked);
}

TEST_F(PreprocessingTest, NoneRecordsNothing) {
  {
    auto db = Database::Open(Options("db", std::nullopt), true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto stats = (*db)->Stats();
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->preprocessing, ImagePreprocessing{});
  }
  std::ifstream in(tmp_.path() / "db" / "pixseek.json");
  EXPECT_FALSE(nlohmann::json::parse(in).contains("preprocess"));
}

TEST_F(PreprocessingTest, GreyDatabaseEmbedsTheGreyImage) {
  const Image colour =
      Decode(testing::SyntheticImage(".png", 64, 48, 220, 40, 30, /*seed=*/7));
  Image grey = colour;
  ASSERT_TRUE(ApplyPreprocessing(ImagePreprocessing{.grey = true}, &grey).ok());
  ASSERT_NE(grey.rgb, colour.rgb);

  auto plain = Database::Open(Options("plain", std::nullopt), true);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  auto grey_db = Database::Open(Options("grey", ImagePreprocessing{.grey = true}), true);
  ASSERT_TRUE(grey_db.ok()) << grey_db.status().ToString();

  const std::vector<float> of_grey = EmbedOne(**plain, grey);
  // The test means something only when colour changes the vector.
  EXPECT_NE(EmbedOne(**plain, colour), of_grey);
  // Every way the database embeds (one image, a batch, preprocess + network)
  // sees the grey image.
  EXPECT_EQ(EmbedOne(**grey_db, colour), of_grey);
  std::vector<float> batch(of_grey.size());
  const Image* images[] = {&colour};
  ASSERT_TRUE((*grey_db)->Embed(images, batch.data()).ok());
  EXPECT_EQ(batch, of_grey);
  if ((*grey_db)->preprocessed_size() > 0) {
    std::vector<float> input((*grey_db)->preprocessed_size());
    ASSERT_TRUE((*grey_db)->Preprocess(colour, input.data()).ok());
    std::vector<float> out(of_grey.size());
    ASSERT_TRUE((*grey_db)->EmbedPreprocessed(input.data(), 1, out.data()).ok());
    EXPECT_EQ(out, of_grey);
  }
  // The decoded image handed in is left as it was.
  EXPECT_NE(colour.rgb, grey.rgb);
}

TEST_F(PreprocessingTest, RefusesOtherPreprocessingOnReopen) {
  { ASSERT_TRUE(Database::Open(Options("db", ImagePreprocessing{.grey = true}), true).ok()); }
  auto other = Database::Open(Options("db", ImagePreprocessing{.denoise = true}), false);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("greyscale"), std::string::npos)
      << other.status().message();
  auto none = Database::Open(Options("db", ImagePreprocessing{}), false);
  EXPECT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  // The same filters, or none named, open it.
  EXPECT_TRUE(Database::Open(Options("db", ImagePreprocessing{.grey = true}), false).ok());
  EXPECT_TRUE(Database::Open(Options("db", std::nullopt), false).ok());
  // A plain database refuses a greyscale query pipeline.
  { ASSERT_TRUE(Database::Open(Options("plain", std::nullopt), true).ok()); }
  auto grey_query = Database::Open(Options("plain", ImagePreprocessing{.grey = true}), false);
  EXPECT_EQ(grey_query.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(PreprocessingTest, SizeCapReencodesLargeUploadsAndKeepsSmallOnes) {
  ImagePreprocessing cap;
  cap.stored_max_side = 40;
  cap.stored_quality = 80;
  auto db = Database::Open(Options("db", cap), true);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  UploadService upload(**db);

  const std::vector<uint8_t> large = testing::SyntheticImage(".png", 64, 48, 200, 30, 30, 1);
  auto large_id = upload.AddBytes(large, "large.png");
  ASSERT_TRUE(large_id.ok()) << large_id.status().ToString();
  auto large_record = (*db)->store().Get(*large_id);
  ASSERT_TRUE(large_record.ok());
  EXPECT_EQ(large_record->format, "jpeg");
  EXPECT_EQ(large_record->width, 40);
  EXPECT_EQ(large_record->height, 30);
  auto stored = ReadFileLimited((*db)->FilePath(*large_record), 1 << 20);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(SniffFormat(*stored), ImageFormat::kJpeg);
  EXPECT_NE(*stored, large);
  // The same bytes sent again are the same stored image.
  auto again = upload.AddBytes(large, "large.png");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *large_id);

  const std::vector<uint8_t> small = testing::SyntheticImage(".png", 32, 24, 30, 30, 200, 2);
  auto small_id = upload.AddBytes(small, "small.png");
  ASSERT_TRUE(small_id.ok()) << small_id.status().ToString();
  auto small_record = (*db)->store().Get(*small_id);
  ASSERT_TRUE(small_record.ok());
  auto kept = ReadFileLimited((*db)->FilePath(*small_record), 1 << 20);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, small);

  // Files indexed in place are never rewritten, whatever their size.
  const auto in_place = tmp_.path() / "big.png";
  testing::WriteBytes(in_place, large);
  auto file_id = upload.AddFile(in_place, "");
  ASSERT_TRUE(file_id.ok()) << file_id.status().ToString();
  auto on_disk = ReadFileLimited(in_place, 1 << 20);
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(*on_disk, large);
}

}  // namespace
}  // namespace pixseek
