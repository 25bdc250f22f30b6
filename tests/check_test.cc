// `pixseek check [--repair]` through the real binary, over both index kinds:
// a healthy database checks clean; each kind of damage (a flipped byte in
// the middle of the flat log and of the disk index's write-ahead log, a
// truncated disk graph block, a deleted thumbnail, an altered upload, a
// vector removed from the index but not the store) is found and named; and
// a repair salvages what is intact, says what was lost, and leaves a
// database that opens and checks clean.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "pixseek/database.h"
#include "pixseek/services.h"
#include "subprocess.h"
#include "test_images.h"
#include "test_util.h"
#include "tiny_onnx.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kDim = 16;

// One record of a log (docs/index_format.md, "Flat index log").
struct LogRecord {
  uint64_t offset = 0;
  uint64_t size = 0;
  bool add = false;
  std::vector<int64_t> ids;
};

std::vector<LogRecord> ParseLog(const std::vector<uint8_t>& bytes) {
  std::vector<LogRecord> records;
  uint64_t off = 20;
  while (off + 9 <= bytes.size()) {
    LogRecord r;
    r.offset = off;
    r.add = bytes[off + 4] == 1;
    uint32_t count;
    std::memcpy(&count, bytes.data() + off + 5, 4);
    r.ids.resize(count);
    std::memcpy(r.ids.data(), bytes.data() + off + 9, 8 * size_t(count));
    r.size = 13 + count * (8 + (r.add ? 4 * kDim : 0));
    records.push_back(r);
    off += r.size;
  }
  return records;
}

const json& Part(const json& report, const std::string& name) {
  for (const json& p : report["parts"]) {
    if (p["part"] == name) return p;
  }
  static const json kNone;
  ADD_FAILURE() << "no part " << name << " in " << report.dump(2);
  return kNone;
}

// Every id the damage entries of a part name.
std::vector<int64_t> DamagedIds(const json& part) {
  std::vector<int64_t> ids;
  for (const json& d : part["damage"]) {
    for (const json& id : d["ids"]) ids.push_back(id.get<int64_t>());
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string DamageText(const json& part) {
  std::string text;
  for (const json& d : part["damage"]) text += d["message"].get<std::string>() + "\n";
  return text;
}

class CheckTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    home_ = tmp_.path() / "home";
    db_ = tmp_.path() / "db";
    images_ = tmp_.path() / "images";
    const Status installed = testing::InstallTinyModel(home_, tmp_.path(), kDim, 5);
    ASSERT_TRUE(installed.ok()) << installed.ToString();
    for (int i = 0; i < 8; ++i) {
      const auto dir = images_ / (i % 2 == 0 ? "red" : "blue");
      fs::create_directories(dir);
      testing::WriteBytes(dir / ("img" + std::to_string(i) + ".png"),
                          testing::SyntheticImage(".png", 64, 48, i % 2 ? 20 : 220, 30,
                                                  i % 2 ? 220 : 20, static_cast<uint32_t>(i)));
    }
  }

  DatabaseOptions Options() const {
    DatabaseOptions o;
    o.dir = db_;
    o.home = home_;
    o.model = "tiny";
    o.index_kind = GetParam();
    o.threads = 2;
    return o;
  }

  // A database of the 8 images plus one upload (ids 1..9).
  void Build() {
    auto db = Database::Open(Options(), true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto report = BuildService(**db).Build(images_, {});
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_EQ(report->indexed, 8u);
    auto id = UploadService(**db).AddBytes(testing::SyntheticImage(".jpg", 80, 60, 10, 200, 10, 77),
                                           "upload.jpg");
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    upload_id_ = *id;
  }

  // `pixseek check --db DB --json [more]`: exit code and the parsed report.
  std::pair<int, json> Check(const std::vector<std::string>& more = {}) {
    std::vector<std::string> args = {PIXSEEK_BINARY, "--home",     home_.string(), "check",
                                     "--db",         db_.string(), "--json"};
    args.insert(args.end(), more.begin(), more.end());
    testing::CommandResult r = testing::RunCommand(args);
    json report = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(report.is_discarded()) << r.out << r.err;
    return {r.exit_code, report};
  }

  // The log every add and remove went to (the flat log, or the disk index's
  // only write-ahead log below 1,000 vectors).
  fs::path LogFile() const {
    return GetParam() == "flat" ? db_ / "vectors.flat" : db_ / "index" / "wal-0.log";
  }

  testing::TempDir tmp_;
  fs::path home_, db_, images_;
  int64_t upload_id_ = 0;
};

TEST_P(CheckTest, HealthyDatabaseChecksClean) {
  Build();
  auto [code, report] = Check();
  EXPECT_EQ(code, 0) << report.dump(2);
  EXPECT_TRUE(report["ok"].get<bool>());
  for (const char* name : {"manifest", "metadata", "index", "consistency", "features", "thumbnails",
                           "uploads", "files"}) {
    const json& part = Part(report, name);
    EXPECT_TRUE(part["ok"].get<bool>()) << name << ": " << part.dump(2);
    EXPECT_TRUE(part["notes"].empty()) << name << ": " << part.dump(2);
  }
  EXPECT_NE(Part(report, "metadata")["summary"].get<std::string>().find("9 records"),
            std::string::npos);
  // The text report says the same, and exit 0.
  testing::CommandResult text = testing::RunCommand(
      {PIXSEEK_BINARY, "--home", home_.string(), "check", "--db", db_.string()});
  EXPECT_EQ(text.exit_code, 0) << text.out << text.err;
  EXPECT_NE(text.out.find("no damage found"), std::string::npos) << text.out;
}

// A flipped byte in the middle of the log: the database refuses to open and
// says how to salvage it; check names the file, the offset and the vectors
// lost; --repair keeps every record, restores the lost vectors from the
// stored base features, keeps the damaged file, and the database opens and
// checks clean.
TEST_P(CheckTest, FlippedLogByteIsFoundAndRepaired) {
  Build();
  std::vector<uint8_t> bytes = testing::ReadBytes(LogFile());
  const std::vector<LogRecord> records = ParseLog(bytes);
  // The build writes one record per group of images it stores, the upload
  // one more: the damage hits a record in the middle, never the last (that
  // one's damage would read as a torn write).
  ASSERT_GE(records.size(), 2u);
  size_t logged = 0;
  for (const LogRecord& r : records) logged += r.ids.size();
  ASSERT_EQ(logged, 9u);
  const size_t hit_index = std::min(records.size() / 2, records.size() - 2);
  const LogRecord& hit = records[hit_index];
  bytes[hit.offset + 9 + 8 * hit.ids.size() + 5] ^= 0x40;  // a vector byte of that record
  testing::WriteBytes(LogFile(), bytes);
  std::vector<int64_t> kept, after_damage, lost;
  for (size_t i = 0; i < records.size(); ++i) {
    for (int64_t id : records[i].ids) {
      (i < hit_index ? kept : lost).push_back(id);
      if (i > hit_index) after_damage.push_back(id);
    }
  }
  std::sort(lost.begin(), lost.end());
  std::sort(after_damage.begin(), after_damage.end());

  const Status refused = Database::Open(Options(), false).status();
  EXPECT_EQ(refused.code(), StatusCode::kDataLoss) << refused.ToString();
  EXPECT_NE(refused.message().find("pixseek check --db " + db_.string() + " --repair"),
            std::string::npos)
      << refused.ToString();

  auto [code, report] = Check();
  EXPECT_EQ(code, 1) << report.dump(2);
  EXPECT_FALSE(report["ok"].get<bool>());
  const json& index = Part(report, "index");
  EXPECT_FALSE(index["ok"].get<bool>());
  const std::string damage = DamageText(index);
  EXPECT_NE(damage.find(LogFile().string() + " at offset " + std::to_string(hit.offset)),
            std::string::npos)
      << damage;
  EXPECT_NE(damage.find("checksum"), std::string::npos) << damage;
  EXPECT_EQ(DamagedIds(index), after_damage) << "the ids of the intact records after the damage";
  EXPECT_EQ(DamagedIds(Part(report, "consistency")), lost);
  EXPECT_TRUE(Part(report, "metadata")["ok"].get<bool>());

  auto [repaired, repair] = Check({"--repair"});
  EXPECT_EQ(repaired, 0) << repair.dump(2);
  EXPECT_TRUE(repair["ok"].get<bool>());
  EXPECT_TRUE(repair["after"]["ok"].get<bool>()) << repair["after"].dump(2);
  // What the salvage did, and which vectors came back from the features.
  bool salvaged = false, restored = false;
  for (const json& a : repair["repair"]["actions"]) {
    const std::string m = a["message"].get<std::string>();
    if (a["part"] == "index" && m.find(".damaged-") != std::string::npos) salvaged = true;
    if (a["part"] == "consistency" && m.find("restored") != std::string::npos) {
      restored = true;
      EXPECT_EQ(a["ids"].get<std::vector<int64_t>>(), lost) << m;
    }
  }
  EXPECT_TRUE(salvaged) << repair["repair"].dump(2);
  EXPECT_TRUE(restored) << repair["repair"].dump(2);
  EXPECT_TRUE(repair["repair"]["lost"].empty()) << repair["repair"].dump(2);
  bool copy_kept = false;
  for (const auto& e : fs::directory_iterator(LogFile().parent_path())) {
    if (e.path().filename().string().starts_with(LogFile().filename().string() + ".damaged-")) {
      copy_kept = testing::ReadBytes(e.path()) == bytes;
    }
  }
  EXPECT_TRUE(copy_kept) << "the damaged log is kept as it was";

  // The database opens again, with every record and every vector.
  {
    auto db = Database::Open(Options(), false);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto ids = (*db)->store().AllIds();
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->size(), 9u);
    EXPECT_EQ((*db)->index().Ids(), *ids);
    for (int64_t id : kept) EXPECT_TRUE((*db)->index().Get(id).ok()) << id;
  }
  auto [again, second] = Check();
  EXPECT_EQ(again, 0) << second.dump(2);
}

// A damaged header holds nothing the records need: a repair writes it again
// and keeps every record.
TEST_P(CheckTest, DamagedLogHeaderIsWrittenAgain) {
  Build();
  std::vector<uint8_t> bytes = testing::ReadBytes(LogFile());
  bytes[2] ^= 0xff;  // the magic
  testing::WriteBytes(LogFile(), bytes);
  auto [code, report] = Check();
  EXPECT_EQ(code, 1) << report.dump(2);
  EXPECT_NE(DamageText(Part(report, "index")).find("bad magic"), std::string::npos)
      << report.dump(2);
  EXPECT_TRUE(Part(report, "consistency")["ok"].get<bool>()) << "the records are intact";

  auto [repaired, repair] = Check({"--repair"});
  EXPECT_EQ(repaired, 0) << repair.dump(2);
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->index().size(), 9u);
}

// A torn last record is what a crash while appending leaves: a note, not
// damage (the next writable open drops it).
TEST_P(CheckTest, TornLastRecordIsANote) {
  Build();
  std::vector<uint8_t> bytes = testing::ReadBytes(LogFile());
  bytes.insert(bytes.end(), {0x50, 0x58, 0x52, 0x31, 0x01});
  testing::WriteBytes(LogFile(), bytes);
  auto [code, report] = Check();
  EXPECT_EQ(code, 0) << report.dump(2);
  const json& index = Part(report, "index");
  ASSERT_EQ(index["notes"].size(), 1u) << index.dump(2);
  EXPECT_NE(index["notes"][0]["message"].get<std::string>().find("torn"), std::string::npos);
}

// A vector removed from the index but not from the store.
TEST_P(CheckTest, VectorMissingFromTheIndexIsFoundAndRestored) {
  Build();
  std::vector<float> before;
  {
    auto db = Database::Open(Options(), false);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto v = (*db)->index().Get(3);
    ASSERT_TRUE(v.ok());
    before = *v;
    const int64_t three[] = {3};
    ASSERT_TRUE((*db)->index().Remove(three).ok());
  }
  auto [code, report] = Check();
  EXPECT_EQ(code, 1) << report.dump(2);
  const json& consistency = Part(report, "consistency");
  EXPECT_EQ(DamagedIds(consistency), std::vector<int64_t>{3}) << consistency.dump(2);
  EXPECT_NE(DamageText(consistency).find("no vector"), std::string::npos);
  EXPECT_TRUE(Part(report, "index")["ok"].get<bool>());

  auto [repaired, repair] = Check({"--repair"});
  EXPECT_EQ(repaired, 0) << repair.dump(2);
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto after = (*db)->index().Get(3);
  ASSERT_TRUE(after.ok()) << "restored from the stored base feature";
  ASSERT_EQ(after->size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_NEAR((*after)[i], before[i], 1e-5);
}

TEST_P(CheckTest, DeletedThumbnailIsFoundAndMadeAgain) {
  Build();
  const fs::path thumb = db_ / "thumbs" / "05" / "5.jpg";
  ASSERT_TRUE(fs::remove(thumb));
  auto [code, report] = Check();
  EXPECT_EQ(code, 1) << report.dump(2);
  const json& thumbs = Part(report, "thumbnails");
  EXPECT_EQ(DamagedIds(thumbs), std::vector<int64_t>{5}) << thumbs.dump(2);
  EXPECT_NE(DamageText(thumbs).find("missing"), std::string::npos);

  auto [repaired, repair] = Check({"--repair"});
  EXPECT_EQ(repaired, 0) << repair.dump(2);
  EXPECT_TRUE(fs::file_size(thumb) > 0);
}

TEST_P(CheckTest, AlteredUploadIsFoundAndReportedNotDeleted) {
  Build();
  std::optional<fs::path> stored;
  for (const auto& e : fs::recursive_directory_iterator(db_ / "images")) {
    if (e.is_regular_file()) stored = e.path();
  }
  ASSERT_TRUE(stored);
  std::vector<uint8_t> bytes = testing::ReadBytes(*stored);
  bytes[bytes.size() / 2] ^= 0x01;
  testing::WriteBytes(*stored, bytes);

  auto [code, report] = Check();
  EXPECT_EQ(code, 1) << report.dump(2);
  const json& uploads = Part(report, "uploads");
  EXPECT_EQ(DamagedIds(uploads), std::vector<int64_t>{upload_id_}) << uploads.dump(2);
  EXPECT_NE(DamageText(uploads).find("sha256"), std::string::npos) << uploads.dump(2);

  // A repair cannot restore it: it says so, and deletes nothing.
  auto [repaired, repair] = Check({"--repair"});
  EXPECT_EQ(repaired, 1) << repair.dump(2);
  bool listed = false;
  for (const json& l : repair["repair"]["lost"]) {
    listed = listed || (l["part"] == "uploads" &&
                        l["ids"].get<std::vector<int64_t>>() == std::vector<int64_t>{upload_id_});
  }
  EXPECT_TRUE(listed) << repair["repair"].dump(2);
  EXPECT_EQ(testing::ReadBytes(*stored), bytes);
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok());
  EXPECT_TRUE((*db)->store().Get(upload_id_).ok());
}

// A repair refuses while another process writes the database.
TEST_P(CheckTest, RepairRefusesWhileAWriterHasTheDatabase) {
  Build();
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  testing::CommandResult r = testing::RunCommand(
      {PIXSEEK_BINARY, "--home", home_.string(), "check", "--db", db_.string(), "--repair"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("open for writing by another process"), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Kinds, CheckTest, ::testing::Values("disk", "flat"),
                         [](const auto& info) { return info.param; });

// A disk graph with a damaged node block, then one truncated in a block:
// check names the file (and the ids it cannot read); a repair sets it
// aside, restores every vector from the stored base features and builds a
// new graph.
class DiskGraphCheckTest : public CheckTest {};

TEST_P(DiskGraphCheckTest, TruncatedBaseGraphBlockIsFoundAndRepaired) {
  constexpr int kImages = 1000;  // the disk index's min_base_vectors
  {
    auto db = Database::Open(Options(), true);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    const std::vector<uint8_t> thumb = testing::SyntheticImage(".jpg", 32, 24, 90, 90, 90, 1);
    std::mt19937 random(3);
    std::normal_distribution<float> normal;
    for (int i = 0; i < kImages; ++i) {
      std::vector<float> feature(kDim);
      double norm2 = 0;
      for (float& x : feature) {
        x = normal(random);
        norm2 += double{x} * x;
      }
      for (float& x : feature) x = static_cast<float>(x / std::sqrt(norm2));
      ImageRecord record;
      record.path = (tmp_.path() / "gone" / (std::to_string(i) + ".png")).string();
      auto id = (*db)->Insert(record, feature, thumb);
      ASSERT_TRUE(id.ok()) << id.status().ToString();
    }
    ASSERT_TRUE((*db)->Compact().ok());
  }
  // A flipped byte in a node block: check names the block's ids; a repair
  // sets the graph aside and builds a new one.
  fs::path base = db_ / "index" / "base-1.pxd";
  std::vector<uint8_t> graph = testing::ReadBytes(base);
  uint32_t nodes_per_block;
  std::memcpy(&nodes_per_block, graph.data() + 36, 4);
  graph[4096 * 3 + 10] ^= 0x01;  // block 2
  testing::WriteBytes(base, graph);
  {
    auto [code, report] = Check();
    EXPECT_EQ(code, 1) << report.dump(2);
    const json& index = Part(report, "index");
    EXPECT_NE(DamageText(index).find("fail their checksums"), std::string::npos) << index.dump(2);
    EXPECT_EQ(DamagedIds(index).size(), nodes_per_block) << index.dump(2);
    auto [repaired, repair] = Check({"--repair"});
    EXPECT_EQ(repaired, 0) << repair.dump(2);
  }

  base = db_ / "index" / "base-2.pxd";
  ASSERT_TRUE(fs::exists(base));
  fs::resize_file(base, 4096 + 4096 / 2);  // the header, then half of the first block

  auto [code, report] = Check();
  EXPECT_EQ(code, 1) << report.dump(2);
  const json& index = Part(report, "index");
  EXPECT_NE(DamageText(index).find(base.string()), std::string::npos) << index.dump(2);
  EXPECT_EQ(Part(report, "consistency")["damage"][0]["ids"].size(), size_t{kImages});
  // Files indexed in place that are gone are a note, not damage.
  EXPECT_TRUE(Part(report, "files")["ok"].get<bool>());
  EXPECT_FALSE(Part(report, "files")["notes"].empty());

  auto [repaired, repair] = Check({"--repair"});
  EXPECT_EQ(repaired, 0) << repair.dump(2);
  EXPECT_TRUE(fs::exists(db_ / "index" / "base-3.pxd")) << "a new disk graph";
  auto db = Database::Open(Options(), false);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->index().size(), size_t{kImages});
}

INSTANTIATE_TEST_SUITE_P(Disk, DiskGraphCheckTest, ::testing::Values("disk"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace pixseek
