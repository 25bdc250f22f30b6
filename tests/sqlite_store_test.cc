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

TEST_F(SqliteStoreTest, UnopenablePathIsAnError) {
  auto store = OpenSqliteStore(dir_.path() / "missing-dir" / "meta.db");
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound) << store.status().ToString();
}

}  // namespace
}  // namespace pixseek
