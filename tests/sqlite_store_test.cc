// Tests of the SQLite MetadataStore against real database files.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pixseek/metadata_store.h"
#include "test_util.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using pixseek::testing::ReadBytes;
using pixseek::testing::TempDir;
using pixseek::testing::WriteBytes;

ImageRecord MakeRecord(int i, const std::string& label = "cats") {
  ImageRecord r;
  r.path = "/data/images/" + label + "/img" + std::to_string(i) + ".jpg";
  r.name = "img" + std::to_string(i) + ".jpg";
  r.sha256 = std::string(60, 'a') + std::to_string(1000 + i);
  r.size_bytes = 1000 + i;
  r.format = "jpeg";
  r.width = 640 + i;
  r.height = 480;
  r.exif_datetime = i % 2 == 0 ? "2021:05:01 10:00:00" : "";
  r.label = label;
  r.added_at = 1700000000 + i;
  return r;
}

void ExpectSameRecord(const ImageRecord& a, const ImageRecord& b) {
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.sha256, b.sha256);
  EXPECT_EQ(a.size_bytes, b.size_bytes);
  EXPECT_EQ(a.format, b.format);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.exif_datetime, b.exif_datetime);
  EXPECT_EQ(a.label, b.label);
  EXPECT_EQ(a.added_at, b.added_at);
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  fs::path file() const { return dir_.path() / "meta.db"; }

  std::unique_ptr<MetadataStore> Open() {
    auto store = OpenSqliteStore(file());
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return nullptr;
    return std::move(store).value();
  }

  TempDir dir_;
};

TEST_F(SqliteStoreTest, InsertGetRemove) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->Count(), 0);
  ImageRecord r = MakeRecord(1);
  r.id = 999;  // ignored
  r.name = "ünïcödé naïve.jpg";
  auto id = store->Insert(r);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_GT(*id, 0);
  auto got = store->Get(*id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->id, *id);
  ExpectSameRecord(*got, r);
  EXPECT_EQ(*store->Count(), 1);

  EXPECT_EQ(store->Get(*id + 1).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store->Remove(*id).ok());
  EXPECT_EQ(store->Remove(*id).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Get(*id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store->Count(), 0);

  // AUTOINCREMENT: a removed id is never handed out again.
  auto next = store->Insert(MakeRecord(2));
  ASSERT_TRUE(next.ok());
  EXPECT_GT(*next, *id);
}

TEST_F(SqliteStoreTest, EmptyPathRejected) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ImageRecord r = MakeRecord(1);
  r.path.clear();
  EXPECT_EQ(store->Insert(r).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, DuplicatePathIsAlreadyExists) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(MakeRecord(1)).ok());
  ImageRecord again = MakeRecord(1);
  again.sha256 = "different";
  auto dup = store->Insert(again);
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(dup.status().message().find(again.path), std::string::npos);
  EXPECT_EQ(*store->Count(), 1);
  // The same content under another path is fine.
  ImageRecord copy = MakeRecord(1);
  copy.path += ".copy";
  EXPECT_TRUE(store->Insert(copy).ok());
}

TEST_F(SqliteStoreTest, FindByPathAndSha256) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(*store->Insert(MakeRecord(i)));
  auto by_path = store->FindByPath(MakeRecord(3).path);
  ASSERT_TRUE(by_path.ok());
  ASSERT_TRUE(by_path->has_value());
  EXPECT_EQ((*by_path)->id, ids[3]);
  ExpectSameRecord(**by_path, MakeRecord(3));
  auto missing = store->FindByPath("/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  auto by_hash = store->FindBySha256(MakeRecord(4).sha256);
  ASSERT_TRUE(by_hash.ok() && by_hash->has_value());
  EXPECT_EQ((*by_hash)->id, ids[4]);
  EXPECT_FALSE(store->FindBySha256("ff")->has_value());
}

TEST_F(SqliteStoreTest, GetManyKeepsOrderAndSkipsUnknown) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(*store->Insert(MakeRecord(i)));
  std::vector<int64_t> ask = {ids[2], 12345, ids[0], ids[3]};
  auto got = store->GetMany(ask);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0].id, ids[2]);
  EXPECT_EQ((*got)[1].id, ids[0]);
  EXPECT_EQ((*got)[2].id, ids[3]);
  EXPECT_TRUE(store->GetMany({})->empty());
}

TEST_F(SqliteStoreTest, ListPaging) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<int64_t> cats, dogs;
  for (int i = 0; i < 25; ++i) {
    bool cat = i % 3 != 0;
    auto id = store->Insert(MakeRecord(i, cat ? "cats" : "dogs"));
    ASSERT_TRUE(id.ok());
    (cat ? cats : dogs).push_back(*id);
  }
  // Walk all records 10 at a time.
  std::vector<int64_t> seen;
  ListOptions options;
  options.limit = 10;
  for (;;) {
    auto page = store->List(options);
    ASSERT_TRUE(page.ok());
    EXPECT_LE(page->size(), 10u);
    if (page->empty()) break;
    for (const auto& r : *page) seen.push_back(r.id);
    options.after_id = page->back().id;
  }
  auto all = store->AllIds();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(seen, *all);
  EXPECT_EQ(seen.size(), 25u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));

  // Only dogs, 3 at a time.
  ListOptions dog_options;
  dog_options.label = "dogs";
  dog_options.limit = 3;
  std::vector<int64_t> dog_seen;
  for (;;) {
    auto page = store->List(dog_options);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    for (const auto& r : *page) {
      EXPECT_EQ(r.label, "dogs");
      dog_seen.push_back(r.id);
    }
    dog_options.after_id = page->back().id;
  }
  EXPECT_EQ(dog_seen, dogs);

  ListOptions none;
  none.limit = 0;
  EXPECT_TRUE(store->List(none)->empty());
  ListOptions birds;
  birds.label = "birds";
  EXPECT_TRUE(store->List(birds)->empty());
  ListOptions tail;
  tail.after_id = cats.back();
  tail.label = "cats";
  EXPECT_TRUE(store->List(tail)->empty());
}

TEST_F(SqliteStoreTest, Settings) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  auto missing = store->GetSetting("model");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  ASSERT_TRUE(store->SetSetting("model", "mobilenet").ok());
  ASSERT_TRUE(store->SetSetting("dimension", "1280").ok());
  ASSERT_TRUE(store->SetSetting("model", "clip").ok());  // overwrite
  EXPECT_EQ(**store->GetSetting("model"), "clip");
  EXPECT_EQ(**store->GetSetting("dimension"), "1280");
  ASSERT_TRUE(store->SetSetting("empty", "").ok());
  EXPECT_EQ(**store->GetSetting("empty"), "");
}

TEST_F(SqliteStoreTest, ReopenKeepsEverything) {
  std::vector<int64_t> ids;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 10; ++i) ids.push_back(*store->Insert(MakeRecord(i)));
    ASSERT_TRUE(store->Remove(ids[4]).ok());
    ASSERT_TRUE(store->SetSetting("model", "mobilenet").ok());
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->Count(), 9);
  EXPECT_EQ(**store->GetSetting("model"), "mobilenet");
  auto r = store->Get(ids[7]);
  ASSERT_TRUE(r.ok());
  ExpectSameRecord(*r, MakeRecord(7));
  EXPECT_EQ(store->Get(ids[4]).status().code(), StatusCode::kNotFound);
  // A third open of the same file side by side works (WAL readers/writers).
  auto other = Open();
  ASSERT_NE(other, nullptr);
  auto id = other->Insert(MakeRecord(50));
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(store->Get(*id).ok());
}

TEST_F(SqliteStoreTest, GarbageFileIsDataLoss) {
  std::vector<uint8_t> garbage(8192);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 37 + 11);
  WriteBytes(file(), garbage);
  auto store = OpenSqliteStore(file());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
  EXPECT_NE(store.status().message().find(file().string()), std::string::npos);
  EXPECT_EQ(ReadBytes(file()), garbage);  // left alone
}

TEST_F(SqliteStoreTest, ForeignSqliteDatabaseIsDataLoss) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE recipes(name TEXT)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(file());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
  EXPECT_NE(store.status().message().find("not a pixseek"), std::string::npos);
}

TEST_F(SqliteStoreTest, DamagedSchemaIsDataLoss) {
  ASSERT_NE(Open(), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE settings", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(file());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
}

TEST_F(SqliteStoreTest, NewerSchemaIsRefused) {
  ASSERT_NE(Open(), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(file());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition) << store.status().ToString();
}

TEST_F(SqliteStoreTest, UnopenablePathIsAnError) {
  auto store = OpenSqliteStore(dir_.path() / "missing-dir" / "meta.db");
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound) << store.status().ToString();
}

TEST_F(SqliteStoreTest, ConcurrentInserts) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 8, kPerThread = 40;
  std::vector<std::vector<int64_t>> ids(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto id = store->Insert(MakeRecord(t * 1000 + i, "t" + std::to_string(t)));
        if (!id.ok()) {
          ++failures;
          continue;
        }
        ids[t].push_back(*id);
        auto got = store->Get(*id);
        if (!got.ok() || got->label != "t" + std::to_string(t)) ++failures;
        if (!store->Count().ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*store->Count(), kThreads * kPerThread);
  std::set<int64_t> unique;
  for (const auto& v : ids) unique.insert(v.begin(), v.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace pixseek
