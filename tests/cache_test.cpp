// CPU-only tests of the SQLite kernel store (cache/sqlite_store.h).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/digest.h"
#include "cache/sqlite_store.h"
#include "jitattn/error.h"
#include "cache_fixtures.h"
#include "read_only_file.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;
using Mode = SqliteStore::Mode;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Edits the file behind the store's back, the way a disk error or another tool would.
void raw_exec(const fs::path& db_path, const std::string& sql, const std::string* blob = nullptr) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  if (blob) sqlite3_bind_blob64(st, 1, blob->data(), blob->size(), SQLITE_TRANSIENT);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  EXPECT_EQ(rc, SQLITE_DONE) << sqlite3_errmsg(db);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// Several statements on one connection (PRAGMA writable_schema only holds for its connection).
void raw_exec_all(const fs::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << sql << ": " << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() /
           ("jitattn_cache_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir_);
    // A nested, not yet existing directory: ReadWrite must create it.
    db_path_ = (dir_ / "sub" / "kernels.sqlite").string();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  KernelRecord make_record(const std::string& name, size_t binary_size = 4096) {
    KernelRecord r;
    r.key = hash_hex("key material of " + name);
    r.name = name;
    r.target = "sm_90a";
    r.compiler = "nvrtc 13.0";
    r.binary.resize(binary_size);
    for (auto& c : r.binary) c = static_cast<char>(rng_());
    r.binary_hash = sha256_hex(r.binary);
    r.registers = 128;
    r.shared_bytes = 98304;
    r.compile_ms = 1234.5;
    r.created_at = 1700000000;
    r.last_used_at = 1700000100;
    return r;
  }

  std::vector<fs::path> corrupt_copies() const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(fs::path(db_path_).parent_path())) {
      if (e.path().filename().string().rfind("kernels.sqlite.corrupt-", 0) == 0) {
        out.push_back(e.path());
      }
    }
    return out;
  }

  // Database files moved aside, not counting their -wal, -shm and -journal.
  size_t moved_files() const {
    size_t n = 0;
    for (const auto& p : corrupt_copies()) {
      const std::string name = p.filename().string();
      n += name.find('-', name.rfind("corrupt-") + 8) == std::string::npos;
    }
    return n;
  }

  fs::path dir_;
  std::string db_path_;
  std::mt19937_64 rng_{12345};
};

void expect_same_row(const KernelRecord& a, const KernelRecord& b) {
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.target, b.target);
  EXPECT_EQ(a.compiler, b.compiler);
  EXPECT_EQ(a.binary, b.binary);
  EXPECT_EQ(a.binary_hash, b.binary_hash);
  EXPECT_EQ(a.registers, b.registers);
  EXPECT_EQ(a.shared_bytes, b.shared_bytes);
  EXPECT_DOUBLE_EQ(a.compile_ms, b.compile_ms);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.last_used_at, b.last_used_at);
}

TEST(HashHex, Is32LowercaseHexAndDiscriminates) {
  const std::string a = hash_hex("fwd.sm_90a.bf16.d128");
  const std::string b = hash_hex("fwd.sm_90a.bf16.d64");
  ASSERT_EQ(a.size(), 32u);
  for (char c : a) EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f')) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a, hash_hex(std::string("fwd.sm_90a.bf16.d128")));
  // XXH3-128 of the empty input, high 64 bits first (xxHash's canonical form).
  EXPECT_EQ(hash_hex("", 0), "99aa06d3014798d86001c324468d497f");
}

TEST_F(CacheTest, RoundTrip) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  const KernelRecord r = make_record("fwd.sm_90a.bf16.d128.v128.causal.lse.a16.m128n64w8", 100000);
  store.put(r);
  const auto got = store.get(r.key);
  ASSERT_TRUE(got.has_value());
  expect_same_row(*got, r);
  EXPECT_EQ(store.row_count(), 1);
  EXPECT_GT(store.file_bytes(), 0);
  EXPECT_EQ(store.dropped_rows(), 0);
  EXPECT_EQ(store.path(), db_path_);
  EXPECT_EQ(store.mode(), Mode::ReadWrite);
}

TEST_F(CacheTest, PutFillsZeroTimestampsAndReplaces) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  KernelRecord r = make_record("fwd.a");
  r.created_at = 0;
  r.last_used_at = 0;
  store.put(r);
  auto got = store.get(r.key);
  ASSERT_TRUE(got.has_value());
  EXPECT_GT(got->created_at, 1700000000);
  EXPECT_GT(got->last_used_at, 1700000000);

  r.registers = 96;
  store.put(r);
  EXPECT_EQ(store.row_count(), 1);
  EXPECT_EQ(store.get(r.key)->registers, 96);
}

TEST_F(CacheTest, PutRejectsMismatchedHash) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  KernelRecord r = make_record("fwd.a");
  r.binary_hash = sha256_hex("something else");
  EXPECT_THROW(store.put(r), jitattn::Error);
  EXPECT_EQ(store.row_count(), 0);
}

TEST_F(CacheTest, MissingKeyIsNullopt) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_FALSE(store.get(hash_hex("nothing")).has_value());
  EXPECT_FALSE(store.find_by_name("nothing").has_value());
  EXPECT_EQ(store.row_count(), 0);
}

TEST_F(CacheTest, FlippedByteIsDroppedNeverReturned) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  const KernelRecord r = make_record("fwd.flipped");
  store.put(r);
  std::string bad = r.binary;
  bad[bad.size() / 2] ^= 0x01;
  raw_exec(db_path_, "UPDATE kernels SET binary = ?1 WHERE key = '" + r.key + "'", &bad);

  EXPECT_FALSE(store.get(r.key).has_value());
  EXPECT_EQ(store.dropped_rows(), 1);
  EXPECT_EQ(store.row_count(), 0);
  EXPECT_FALSE(store.get(r.key).has_value());
  EXPECT_EQ(store.dropped_rows(), 1);  // gone, not dropped again

  store.put(r);  // what the caller does next: recompile and store
  ASSERT_TRUE(store.get(r.key).has_value());
}

TEST_F(CacheTest, ReadOnlyServesRowsAndRefusesWrites) {
  std::vector<KernelRecord> rows = {make_record("fwd.b"), make_record("bwd.a"), make_record("fwd.a")};
  {
    SqliteStore rw(db_path_, Mode::ReadWrite);
    for (const auto& r : rows) rw.put(r);
  }
  ASSERT_FALSE(fs::exists(db_path_ + "-shm"));  // the writer checkpointed and cleaned up
  SqliteStore ro(db_path_, Mode::ReadOnly);
  EXPECT_EQ(ro.mode(), Mode::ReadOnly);
  EXPECT_EQ(ro.row_count(), 3);
  // immutable=1: no shared-memory index, no locks, nothing written next to the file.
  EXPECT_FALSE(fs::exists(db_path_ + "-shm"));
  EXPECT_FALSE(fs::exists(db_path_ + "-wal"));
  for (const auto& r : rows) {
    const auto got = ro.get(r.key);
    ASSERT_TRUE(got.has_value()) << r.name;
    expect_same_row(*got, r);
  }
  ASSERT_TRUE(ro.find_by_name("fwd.b").has_value());
  EXPECT_EQ(ro.find_by_name("fwd.b")->binary, rows[0].binary);
  EXPECT_THROW(ro.put(make_record("fwd.c")), jitattn::Error);
  EXPECT_THROW(ro.remove(rows[0].key), jitattn::Error);
  ro.touch(rows[0].key);  // best effort: a no-op, not an error
  EXPECT_EQ(ro.row_count(), 3);
}

TEST_F(CacheTest, ReadOnlyCoexistsWithWriter) {
  SqliteStore rw(db_path_, Mode::ReadWrite);
  const KernelRecord r = make_record("fwd.a");
  rw.put(r);
  // A checkpoint makes the row visible to an immutable reader, which ignores the -wal file.
  raw_exec(db_path_, "PRAGMA wal_checkpoint(TRUNCATE)");
  SqliteStore ro(db_path_, Mode::ReadOnly);
  ASSERT_TRUE(ro.get(r.key).has_value());
  rw.put(make_record("fwd.b"));  // the reader holds no lock that could block this
  EXPECT_EQ(rw.row_count(), 2);
}

TEST_F(CacheTest, ReadOnlyMissingFileThrowsNamingPath) {
  try {
    SqliteStore ro(db_path_, Mode::ReadOnly);
    FAIL() << "expected jitattn::Error";
  } catch (const jitattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(db_path_), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(db_path_));
}

TEST_F(CacheTest, TextFileIsMovedAside) {
  fs::create_directories(fs::path(db_path_).parent_path());
  const std::string text = "this is not a database, just some text that happens to be here\n";
  write_bytes(db_path_, text);

  EXPECT_THROW(SqliteStore(db_path_, Mode::ReadOnly), jitattn::Error);
  EXPECT_EQ(read_bytes(db_path_), text);

  SqliteStore store(db_path_, Mode::ReadWrite);
  const auto aside = corrupt_copies();
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(read_bytes(aside[0]), text);

  const KernelRecord r = make_record("fwd.a");
  store.put(r);
  ASSERT_TRUE(store.get(r.key).has_value());
  EXPECT_EQ(store.row_count(), 1);
}

TEST_F(CacheTest, TruncatedFileIsRecovered) {
  {
    SqliteStore store(db_path_, Mode::ReadWrite);
    for (int i = 0; i < 32; ++i) store.put(make_record("fwd.k" + std::to_string(i), 16384));
  }
  const auto full = fs::file_size(db_path_);
  ASSERT_GT(full, 32u * 16384u);
  fs::resize_file(db_path_, full / 2);

  EXPECT_THROW(SqliteStore(db_path_, Mode::ReadOnly), jitattn::Error);

  SqliteStore store(db_path_, Mode::ReadWrite);
  ASSERT_EQ(corrupt_copies().size(), 1u);
  EXPECT_EQ(fs::file_size(corrupt_copies()[0]), full / 2);
  EXPECT_EQ(store.row_count(), 0);
  const KernelRecord r = make_record("fwd.after");
  store.put(r);
  ASSERT_TRUE(store.get(r.key).has_value());
}

TEST_F(CacheTest, NewerSchemaThrowsAndLeavesFileAlone) {
  {
    SqliteStore store(db_path_, Mode::ReadWrite);
    store.put(make_record("fwd.a"));
  }
  raw_exec(db_path_, "UPDATE meta SET value = '999' WHERE key = 'schema_version'");
  const std::string before = read_bytes(db_path_);
  ASSERT_FALSE(before.empty());

  try {
    SqliteStore store(db_path_, Mode::ReadWrite);
    FAIL() << "expected jitattn::Error";
  } catch (const jitattn::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(db_path_), std::string::npos) << msg;
    EXPECT_NE(msg.find("newer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("999"), std::string::npos) << msg;
  }
  EXPECT_THROW(SqliteStore(db_path_, Mode::ReadOnly), jitattn::Error);
  EXPECT_EQ(read_bytes(db_path_), before);
  EXPECT_TRUE(corrupt_copies().empty());
}

TEST_F(CacheTest, ListIsOrderedByNameWithoutBinaries) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  for (const char* name : {"fwd.c", "bwd.z", "fwd.a", "fwd.b"}) store.put(make_record(name));
  const auto rows = store.list();
  ASSERT_EQ(rows.size(), 4u);
  const std::vector<std::string> want = {"bwd.z", "fwd.a", "fwd.b", "fwd.c"};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].name, want[i]);
    EXPECT_TRUE(rows[i].binary.empty());
    EXPECT_EQ(rows[i].binary_hash.size(), 64u);
    EXPECT_EQ(rows[i].key, hash_hex("key material of " + want[i]));
    EXPECT_EQ(rows[i].registers, 128);
  }
}

TEST_F(CacheTest, FindByNameTouchAndRemove) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  const KernelRecord r = make_record("fwd.a");
  store.put(r);
  const auto found = store.find_by_name("fwd.a");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->key, r.key);
  EXPECT_EQ(found->binary, r.binary);

  store.touch(r.key);
  EXPECT_GT(store.get(r.key)->last_used_at, r.last_used_at);
  store.touch(hash_hex("no such key"));  // nothing to update is not an error

  EXPECT_TRUE(store.remove(r.key));
  EXPECT_FALSE(store.remove(r.key));
  EXPECT_EQ(store.row_count(), 0);
}

// Runs body(i) in n forked processes that all start at once (300 ms from now); the number of
// them that failed (threw, or did not exit 0).
int failures_of_processes_started_together(int n, const std::function<void(int)>& body) {
  const auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  std::vector<pid_t> children;
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) return n;
    if (pid == 0) {
      std::this_thread::sleep_until(start);
      int code = 0;
      try {
        body(i);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "process %d: %s\n", i, e.what());
        code = 1;
      }
      std::_Exit(code);
    }
    children.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    failed += !(::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  return failed;
}

// Processes that start together on a machine without a cache (a server's workers, prewarm jobs,
// parallel test shards) all create the same new file: each must end up with a working cache and
// its rows stored, none may fall back to memory.
TEST_F(CacheTest, ProcessesCreatingTheFileTogetherAllStore) {
  constexpr int kProcesses = 32;
  std::vector<KernelRecord> rows;
  for (int i = 0; i < kProcesses; ++i) rows.push_back(make_record("fwd.process" + std::to_string(i)));
  EXPECT_EQ(failures_of_processes_started_together(kProcesses, [&](int i) {
              SqliteStore store(db_path_, Mode::ReadWrite);
              store.put(rows[size_t(i)]);
              for (int k = 0; k < 20; ++k) SqliteStore again(db_path_, Mode::ReadWrite);  // reopening races too
            }),
            0);
  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_EQ(store.row_count(), kProcesses);
}

// Processes that start together on a damaged file (here its schema_version) each find it damaged.
// Exactly one may move it aside: the others used to move aside, one after another, the healthy
// files just created in its place, losing the rows stored in them, and a connection halfway
// through its open failed on the -wal of the next file ("disk I/O error").
TEST_F(CacheTest, ProcessesOpeningADamagedFileTogetherMoveItAsideOnce) {
  constexpr int kProcesses = 16, kRows = 5;
  { SqliteStore(db_path_, Mode::ReadWrite).put(make_record("fwd.before")); }
  raw_exec(db_path_, "UPDATE meta SET value = 'x' WHERE key = 'schema_version'");
  std::vector<KernelRecord> rows;
  for (int i = 0; i < kProcesses * kRows; ++i) rows.push_back(make_record("fwd.r" + std::to_string(i), 2000));
  EXPECT_EQ(failures_of_processes_started_together(kProcesses, [&](int i) {
              for (int k = 0; k < kRows; ++k) SqliteStore(db_path_, Mode::ReadWrite).put(rows[size_t(i * kRows + k)]);
            }),
            0);
  EXPECT_EQ(moved_files(), 1u);  // the damaged file
  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_EQ(store.row_count(), kProcesses * kRows);
}

// What a process does when it waited for the repair lock: the file it found damaged may have
// been replaced by then, and the file now at the path is left alone; so is a file that a fresh
// look finds sound.
TEST_F(CacheTest, MoveAsideMovesOnlyTheFileFoundDamaged) {
  SqliteStore::FileId damaged;
  {
    SqliteStore store(db_path_, Mode::ReadWrite);
    store.put(make_record("fwd.old"));
    damaged = store.file_id();
  }
  EXPECT_NE(damaged, SqliteStore::FileId{});
  test::damage_root_page(db_path_, "kernels");
  // Another process repaired it meanwhile, and stored a row in the new file.
  const std::string elsewhere = db_path_ + ".corrupt-1";  // as the other process named it
  fs::rename(db_path_, elsewhere);
  const KernelRecord r = make_record("fwd.new");
  SqliteStore::FileId healthy;
  {
    SqliteStore store(db_path_, Mode::ReadWrite);
    store.put(r);
    healthy = store.file_id();
  }
  EXPECT_NE(healthy, damaged);
  EXPECT_FALSE(SqliteStore::move_aside(db_path_, damaged, "found damaged before the wait"));
  EXPECT_FALSE(SqliteStore::move_aside(db_path_, healthy, "a read failed once"));  // sound on a second look
  EXPECT_EQ(moved_files(), 1u);  // only the one moved by "another process"
  EXPECT_TRUE(SqliteStore(db_path_, Mode::ReadWrite).get(r.key).has_value());

  test::damage_root_page(db_path_, "kernels");
  EXPECT_TRUE(SqliteStore::move_aside(db_path_, healthy, "damaged now"));
  EXPECT_FALSE(fs::exists(db_path_));
  EXPECT_EQ(moved_files(), 2u);
}

TEST_F(CacheTest, ReopenKeepsRows) {
  const KernelRecord r = make_record("fwd.a");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  SqliteStore store(db_path_, Mode::ReadWrite);
  const auto got = store.get(r.key);
  ASSERT_TRUE(got.has_value());
  expect_same_row(*got, r);
  EXPECT_TRUE(corrupt_copies().empty());
}

TEST_F(CacheTest, PathWithUriCharactersOpensReadOnly) {
  db_path_ = (dir_ / "we?ird#na%me" / "kernels.sqlite").string();
  const KernelRecord r = make_record("fwd.a");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  SqliteStore ro(db_path_, Mode::ReadOnly);
  ASSERT_TRUE(ro.get(r.key).has_value());
}

// Another program's database given as JITATTN_CACHE used to be migrated in place (meta and
// kernels added, journal_mode switched to WAL). It is refused, naming the path, and left as it is:
// not moved aside as corrupt either.
TEST_F(CacheTest, ForeignDatabaseIsRefusedAndLeftUntouched) {
  fs::create_directories(fs::path(db_path_).parent_path());
  raw_exec_all(db_path_, "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users(name) VALUES('ada');");
  const std::string before = read_bytes(db_path_);
  for (const Mode mode : {Mode::ReadWrite, Mode::ReadOnly, Mode::Inspect}) {
    try {
      SqliteStore store(db_path_, mode);
      ADD_FAILURE() << "opened a foreign database";
    } catch (const jitattn::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(db_path_), std::string::npos) << msg;
      EXPECT_NE(msg.find("not a jitattn kernel cache"), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(read_bytes(db_path_), before);
  EXPECT_TRUE(corrupt_copies().empty());
  EXPECT_FALSE(fs::exists(db_path_ + "-wal"));
}

// ---- binding a binary to its row --------------------------------------------------------

TEST_F(CacheTest, ZeroByteBlobIsNeverReturned) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  KernelRecord r = make_record("fwd.empty");
  store.put(r);
  // A blob emptied along with its hash and size: every column agrees, and it is still nothing.
  raw_exec(db_path_, "UPDATE kernels SET binary = X'', size = 0, binary_hash = '" + sha256_hex("") + "'");
  EXPECT_FALSE(store.get(r.key).has_value());
  EXPECT_EQ(store.dropped_rows(), 1);
  r.binary.clear();
  r.binary_hash.clear();
  EXPECT_THROW(store.put(r), jitattn::Error);
}

TEST_F(CacheTest, StoredSizeMustMatchTheBlob) {
  SqliteStore store(db_path_, Mode::ReadWrite);
  const KernelRecord r = make_record("fwd.size");
  store.put(r);
  raw_exec(db_path_, "UPDATE kernels SET size = size + 1");
  EXPECT_FALSE(store.get(r.key).has_value());
  EXPECT_EQ(store.dropped_rows(), 1);
}

// ---- damage that used to throw on every lookup -----------------------------------------

TEST_F(CacheTest, DamagedSchemaPageIsMovedAsideAndRebuilt) {
  const KernelRecord r = make_record("fwd.a");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  // The schema text as a damaged page would leave it: a column renamed, so every lookup of the
  // real name says "no such column".
  raw_exec_all(db_path_, "PRAGMA writable_schema=ON;"
                         "UPDATE sqlite_master SET sql = replace(sql, 'binary_hash', 'binary_hsh') WHERE name = 'kernels';");
  EXPECT_THROW(SqliteStore(db_path_, Mode::ReadOnly), jitattn::Error);  // refused, not served half-readable
  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_EQ(corrupt_copies().size(), 1u);
  EXPECT_FALSE(store.get(r.key).has_value());
  store.put(r);
  EXPECT_TRUE(store.get(r.key).has_value());
}

TEST_F(CacheTest, DroppedColumnIsMovedAsideAndRebuilt) {
  const KernelRecord r = make_record("fwd.a");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  raw_exec(db_path_, "ALTER TABLE kernels DROP COLUMN registers");
  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_EQ(corrupt_copies().size(), 1u);
  EXPECT_EQ(store.row_count(), 0);
  store.put(r);
  EXPECT_EQ(store.get(r.key)->registers, r.registers);
}

TEST_F(CacheTest, BadSchemaVersionIsMovedAsideAndRebuilt) {
  for (const std::string bad : {"abc", "0", "-1", "2.5", ""}) {
    SCOPED_TRACE("schema_version '" + bad + "'");
    const KernelRecord r = make_record("fwd.a");
    { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
    raw_exec(db_path_, "UPDATE meta SET value = '" + bad + "' WHERE key = 'schema_version'");
    EXPECT_THROW(SqliteStore(db_path_, Mode::ReadOnly), jitattn::Error);
    const size_t aside = corrupt_copies().size();
    SqliteStore store(db_path_, Mode::ReadWrite);
    EXPECT_EQ(corrupt_copies().size(), aside + 1);
    EXPECT_EQ(store.schema_version(), 3);
    EXPECT_EQ(store.row_count(), 0);
    store.put(r);
    EXPECT_TRUE(store.get(r.key).has_value());
  }
}

TEST_F(CacheTest, TriggerOrViewInTheSchemaIsRefused) {
  const KernelRecord r = make_record("fwd.a");
  for (const std::string sql : {"CREATE TRIGGER t AFTER UPDATE ON kernels BEGIN DELETE FROM meta; END;",
                                "CREATE VIEW v AS SELECT * FROM kernels;"}) {
    SCOPED_TRACE(sql);
    { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
    raw_exec_all(db_path_, sql);
    EXPECT_THROW(SqliteStore(db_path_, Mode::ReadOnly), jitattn::Error);
    const size_t aside = corrupt_copies().size();
    SqliteStore store(db_path_, Mode::ReadWrite);
    EXPECT_EQ(corrupt_copies().size(), aside + 1);
    EXPECT_EQ(store.row_count(), 0);
  }
}

// ---- open cost --------------------------------------------------------------------------

// Opening reads the schema, not every page: a damaged page that no lookup touches (here the
// name index) leaves the file in service, and integrity_problem() (verify) still finds it.
TEST_F(CacheTest, OpenSkipsFullChecksThatIntegrityProblemRuns) {
  const KernelRecord r = make_record("fwd.a");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  test::damage_root_page(db_path_, "kernels_by_name");

  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_TRUE(corrupt_copies().empty());
  ASSERT_TRUE(store.get(r.key).has_value());
  EXPECT_NE(store.integrity_problem(), "");
}

// ---- a file that cannot be written ------------------------------------------------------

// A user DB the process may not write (another user's, a read-only mount) used to open and then
// throw on every hit, from touch(). Now the hit is served and nothing is stored.
TEST_F(CacheTest, ReadOnlyFileServesHitsAndStoresNothing) {
  const KernelRecord r = make_record("fwd.a"), r2 = make_record("fwd.b");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  test::ReadOnlyFile read_only(db_path_);
  if (!read_only.ok()) GTEST_SKIP() << "cannot make a file unwritable here";
  SqliteStore store(db_path_, Mode::ReadWrite);
  EXPECT_FALSE(store.writable());
  ASSERT_TRUE(store.get(r.key).has_value());
  store.touch(r.key);
  ASSERT_TRUE(store.get(r.key).has_value());
  EXPECT_THROW(store.put(r2), jitattn::Error);
  EXPECT_EQ(store.row_count(), 1);
}

// The same in a directory the process may not write either (another user's, a read-only mount),
// the file cleanly closed, so without a -shm: a WAL file cannot be read without creating one, and
// every statement said "attempt to write a readonly database", serving nothing. It is now read
// immutable, since there is no WAL to miss.
TEST_F(CacheTest, ReadOnlyFileInAReadOnlyDirectoryServesHits) {
  const KernelRecord r = make_record("fwd.a");
  { SqliteStore(db_path_, Mode::ReadWrite).put(r); }
  ASSERT_FALSE(fs::exists(db_path_ + "-shm"));
  const std::string dir = fs::path(db_path_).parent_path().string();
  fs::remove_all(db_path_ + ".locks");
  bool unwritable = false;
  std::unique_ptr<test::ReadOnlyFile> file_lock, dir_lock;
  if (::geteuid() == 0) {  // root writes anything but an immutable file or directory
    file_lock = std::make_unique<test::ReadOnlyFile>(db_path_);
    dir_lock = std::make_unique<test::ReadOnlyFile>(dir);
    unwritable = file_lock->ok() && dir_lock->ok();
  } else {
    unwritable = ::chmod(db_path_.c_str(), 0444) == 0 && ::chmod(dir.c_str(), 0555) == 0;
  }
  if (unwritable) {
    SqliteStore store(db_path_, Mode::ReadWrite);
    EXPECT_FALSE(store.writable());
    ASSERT_TRUE(store.get(r.key).has_value());
    store.touch(r.key);
    EXPECT_EQ(store.row_count(), 1);
    EXPECT_THROW(store.put(make_record("fwd.b")), jitattn::Error);
    EXPECT_FALSE(fs::exists(db_path_ + "-shm"));
  }
  dir_lock.reset();
  file_lock.reset();
  ::chmod(dir.c_str(), 0700);
  ::chmod(db_path_.c_str(), 0644);
  if (!unwritable) GTEST_SKIP() << "cannot make a directory unwritable here";
}

}  // namespace
}  // namespace jitattn::cache
