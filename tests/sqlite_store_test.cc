// Tests of the SQLite MetadataStore's own file handling (damaged, foreign and
// newer files). The behaviour every store shares is in metadata_store_test.cc.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include "pixseek/metadata_store.h"
#include "test_util.h"

namespace pixseek {
namespace {

namespace fs = std::filesystem;
using pixseek::testing::ReadBytes;
using pixseek::testing::TempDir;
using pixseek::testing::WriteBytes;

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

// The schema version 1 that pixseek shipped before base features, as it
// created it: the store must bring such a file up to date on open.
constexpr const char* kVersionOneSchema =
    "PRAGMA application_id = 1347963697;"  // 0x50584B31, "PXK1"
    "CREATE TABLE images ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  path TEXT NOT NULL,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  sha256 TEXT NOT NULL,"
    "  size_bytes INTEGER NOT NULL DEFAULT 0,"
    "  format TEXT NOT NULL DEFAULT '',"
    "  width INTEGER NOT NULL DEFAULT 0,"
    "  height INTEGER NOT NULL DEFAULT 0,"
    "  exif_datetime TEXT NOT NULL DEFAULT '',"
    "  label TEXT NOT NULL DEFAULT '',"
    "  added_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX images_path ON images(path);"
    "CREATE INDEX images_sha256 ON images(sha256);"
    "CREATE INDEX images_label ON images(label, id);"
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "PRAGMA user_version = 1;"
    "INSERT INTO images (path, sha256, label) VALUES ('/old/a.jpg', 'abc', 'cats');"
    "INSERT INTO settings (key, value) VALUES ('model', 'mobilenet');";

int64_t UserVersion(const fs::path& file) {
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  int64_t version = -1;
  if (sqlite3_open(file.c_str(), &db) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    version = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return version;
}

TEST_F(SqliteStoreTest, VersionOneFileGetsTheFeaturesTable) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, kVersionOneSchema, nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  ASSERT_EQ(UserVersion(file()), 1);

  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(UserVersion(file()), 3);  // features (2), then leases and jobs (3)
  auto old = store->FindByPath("/old/a.jpg");
  ASSERT_TRUE(old.ok() && old->has_value());
  EXPECT_EQ((*old)->label, "cats");
  EXPECT_EQ(**store->GetSetting("model"), "mobilenet");
  EXPECT_EQ(*store->CountFeatures(), 0u);
  const std::vector<float> feature = {0.25f, -0.5f, 1.0f};
  ASSERT_TRUE(store->PutFeatures(std::vector<int64_t>{(*old)->id}, 3, feature).ok());
  EXPECT_EQ(*store->GetFeature((*old)->id), feature);
  auto fresh = store->Insert(ImageRecord{.path = "/new/b.jpg", .sha256 = "def"}, feature);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(*store->CountFeatures(), 2u);
  store.reset();
  // Up to date now: a second open changes nothing.
  store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->CountFeatures(), 2u);
}

TEST_F(SqliteStoreTest, UnopenablePathIsAnError) {
  auto store = OpenSqliteStore(dir_.path() / "missing-dir" / "meta.db");
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound) << store.status().ToString();
}

}  // namespace
}  // namespace pixseek
