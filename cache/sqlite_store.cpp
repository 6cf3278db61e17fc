// The SQLite kernel store (docs/design.md decision 5). See cache/sqlite_store.h for the contract.
#include "cache/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <system_error>
#include <thread>

#include "cache/digest.h"
#include "jitattn/error.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;

// Bump when the layout of `kernels` or `meta` changes, and teach migrate() the step; an older
// jitattn refuses a newer file rather than guessing at it.
constexpr int64_t kSchemaVersion = 3;
constexpr int kBusyTimeoutMs = 10000;
// touch() only refreshes a timestamp for eviction; waiting the full busy timeout behind
// another process's insert for that would cost far more than the information is worth.
constexpr int kTouchBusyTimeoutMs = 100;

// The current layout. On an older file the CREATEs and the INSERT do nothing; migrate() adds
// what is missing.
constexpr const char* kSchemaSql =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', '3');"
    "CREATE TABLE IF NOT EXISTS kernels("
    " key TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " compiler TEXT NOT NULL,"
    " binary BLOB NOT NULL,"
    " binary_hash TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " registers INTEGER,"
    " shared_bytes INTEGER,"
    " compile_ms REAL,"
    " created_at INTEGER,"
    " last_used_at INTEGER,"
    " source_hash TEXT);"
    "CREATE INDEX IF NOT EXISTS kernels_by_name ON kernels(name);";

// What PRAGMA table_info must say of each table, column by column, as kSchemaSql creates it.
// Schema 1 had the first 12 columns of kernels; 2 and 3 have all 13.
struct Column {
  const char* name;
  const char* type;
  bool notnull;
  int pk;
};
constexpr Column kMetaColumns[] = {{"key", "TEXT", false, 1}, {"value", "TEXT", false, 0}};
constexpr Column kKernelColumns[] = {
    {"key", "TEXT", false, 1},          {"name", "TEXT", true, 0},           {"target", "TEXT", true, 0},
    {"compiler", "TEXT", true, 0},      {"binary", "BLOB", true, 0},         {"binary_hash", "TEXT", true, 0},
    {"size", "INTEGER", true, 0},       {"registers", "INTEGER", false, 0},  {"shared_bytes", "INTEGER", false, 0},
    {"compile_ms", "REAL", false, 0},   {"created_at", "INTEGER", false, 0}, {"last_used_at", "INTEGER", false, 0},
    {"source_hash", "TEXT", false, 0}};
constexpr size_t kKernelColumnsV1 = 12;  // schema 1: everything but source_hash

// Column order shared by select_rows() and read_row(). A schema-1 file opened read-only has no
// source_hash column; select_rows() reads NULL in its place.
constexpr const char* kRowColumns =
    "key, name, target, compiler, binary_hash, registers, shared_bytes, compile_ms, created_at, last_used_at, size";

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_corruption(int rc) {
  const int primary = rc & 0xff;  // extended codes such as SQLITE_CORRUPT_INDEX share the low byte
  return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
}

std::string errmsg(sqlite3* db) { return db ? sqlite3_errmsg(db) : "out of memory"; }

[[noreturn]] void fail(sqlite3* db, const std::string& path, const std::string& what) {
  throw Error(ErrorKind::internal, "kernel cache " + path + ": " + what + ": " + errmsg(db));
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

void exec(sqlite3* db, const std::string& path, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    fail(db, path, std::string("\"") + sql + "\" failed");
  }
}

class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& path, const char* sql) : db_(db), path_(path), sql_(sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK) {
      fail(db, path, std::string("cannot prepare \"") + sql + "\"");
    }
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  void bind_text(int i, const std::string& s) {
    check_bind(sqlite3_bind_text64(st_, i, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  // Binaries are megabytes; the caller's string outlives the statement, so no copy is made.
  void bind_blob_static(int i, const std::string& s) {
    check_bind(sqlite3_bind_blob64(st_, i, s.data(), s.size(), SQLITE_STATIC));
  }
  void bind_int(int i, int64_t v) { check_bind(sqlite3_bind_int64(st_, i, v)); }
  void bind_real(int i, double v) { check_bind(sqlite3_bind_double(st_, i, v)); }
  void bind_null(int i) { check_bind(sqlite3_bind_null(st_, i)); }

  int step_rc() { return sqlite3_step(st_); }
  // True for a row, false when done; anything else is an error.
  bool step() {
    const int rc = step_rc();
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, path_, std::string("\"") + sql_ + "\" failed");
  }

  std::string text(int col) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, col));
    return p ? std::string(p, sqlite3_column_bytes(st_, col)) : std::string();
  }
  std::string blob(int col) {
    const void* p = sqlite3_column_blob(st_, col);
    const int n = sqlite3_column_bytes(st_, col);  // after column_blob, as sqlite requires
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }
  int64_t integer(int col) { return sqlite3_column_int64(st_, col); }
  double real(int col) { return sqlite3_column_double(st_, col); }

 private:
  void check_bind(int rc) {
    if (rc != SQLITE_OK) fail(db_, path_, std::string("cannot bind a parameter of \"") + sql_ + "\"");
  }

  sqlite3* db_;
  const std::string& path_;
  const char* sql_;
  sqlite3_stmt* st_ = nullptr;
};

// Rolls back unless commit() succeeded, so an exception never leaves the write lock held.
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& path) : db_(db), path_(path) {
    exec(db, path, "BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, path_, "COMMIT");
    done_ = true;
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool done_ = false;
};

KernelRecord read_row(Stmt& s, bool with_binary) {
  KernelRecord r;
  r.key = s.text(0);
  r.name = s.text(1);
  r.target = s.text(2);
  r.compiler = s.text(3);
  r.binary_hash = s.text(4);
  r.registers = static_cast<int>(s.integer(5));
  r.shared_bytes = static_cast<int>(s.integer(6));
  r.compile_ms = s.real(7);
  r.created_at = s.integer(8);
  r.last_used_at = s.integer(9);
  r.size = s.integer(10);
  r.source_hash = s.text(11);
  if (with_binary) r.binary = s.blob(12);
  return r;
}

// Runs `sql` and collects column 0 of every row. Returns sqlite's code instead of throwing,
// because while a file is being inspected a corruption code means "replace it", not "fail".
int query_column(sqlite3* db, const char* sql, std::vector<std::string>& out) {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    out.emplace_back(p ? p : "");
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

struct Inspection {
  bool corrupt = false;
  std::string why;            // sqlite's message, or what the schema check found
  bool schema_ready = false;  // both tables present and schema_version recorded
  bool has_kernels = false;
  int64_t version = 0;        // 0: none recorded
  bool has_source_hash = false;
};

// The recorded schema_version as a number, or 0 when it is not a positive decimal integer
// ("abc", "0", "-1", "2.5"): nothing any jitattn writes, so the file is damaged.
int64_t version_number(const std::string& v) {
  if (v.empty() || v.size() > 9) return 0;
  for (const char c : v)
    if (c < '0' || c > '9') return 0;
  return std::stoll(v);
}

[[noreturn]] void refuse_newer(const std::string& path, const std::string& v) {
  throw Error(ErrorKind::internal, "kernel cache " + path + " was written by a newer jitattn (schema_version " + v +
              ", this jitattn supports up to " + std::to_string(kSchemaVersion) +
              "); the file was left untouched");
}

[[noreturn]] void refuse_foreign(const std::string& path, const std::string& table) {
  throw Error(ErrorKind::internal, "kernel cache " + path + " is a SQLite database of something else (it has a table \"" +
              table + "\", which no jitattn kernel cache has), not a jitattn kernel cache; the file was left untouched. "
              "Point JITATTN_CACHE at a file of its own");
}

// Compares PRAGMA table_info(table) with `want` (its first `count` entries): "" when they agree
// column by column, else what differs. SQLite answers "no such column" on every lookup of a
// table whose schema lost a column, so this is found at open, where the file can be replaced.
std::string columns_problem(sqlite3* db, const char* table, const Column* want, size_t count, int* rc) {
  sqlite3_stmt* st = nullptr;
  const std::string sql = std::string("SELECT name, type, \"notnull\", pk FROM pragma_table_info('") + table + "')";
  *rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr);
  std::string problem;
  size_t i = 0;
  while (*rc == SQLITE_OK && (*rc = sqlite3_step(st)) == SQLITE_ROW) {
    *rc = SQLITE_OK;
    const auto* name = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    const auto* type = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
    const std::string got = std::string(name ? name : "") + " " + (type ? type : "") +
                            (sqlite3_column_int(st, 2) ? " NOT NULL" : "") + (sqlite3_column_int(st, 3) ? " PRIMARY KEY" : "");
    if (!problem.empty()) continue;
    if (i >= count) {
      problem = "unexpected column " + std::to_string(i) + " \"" + got + "\"";
    } else {
      const Column& c = want[i];
      const std::string expected = std::string(c.name) + " " + c.type + (c.notnull ? " NOT NULL" : "") + (c.pk ? " PRIMARY KEY" : "");
      if (got != expected) problem = "column " + std::to_string(i) + " is \"" + got + "\", expected \"" + expected + "\"";
    }
    ++i;
  }
  sqlite3_finalize(st);
  if (*rc == SQLITE_DONE) *rc = SQLITE_OK;
  if (*rc != SQLITE_OK) return "";
  if (problem.empty() && i < count) problem = "missing column " + std::string(want[i].name);
  return problem.empty() ? "" : "table " + std::string(table) + ": " + problem;
}

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// O(1) sign of a truncated file: the header's page count (when valid) against the file's size.
// A WAL that is not empty may hold pages the file has yet to receive, so then nothing is said.
// Read through the connection's own file handle, never a descriptor of our own: closing any
// descriptor of a file drops every POSIX lock the process holds on it (fcntl(2)), SQLite's
// included, and with its shared lock gone another process closing its connection took itself
// for the last one and deleted the -wal this one was about to commit into (rows stored by
// processes opening the file together were lost now and then).
std::string truncation_problem(sqlite3* db, const std::string& path) {
  std::error_code ec;
  const auto wal = fs::file_size(path + "-wal", ec);
  if (!ec && wal > 0) return "";
  sqlite3_file* f = nullptr;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f || !f->pMethods) return "";
  sqlite3_int64 size = 0;
  if (f->pMethods->xFileSize(f, &size) != SQLITE_OK || size < 100) return "";
  unsigned char h[100];
  if (f->pMethods->xRead(f, h, sizeof h, 0) != SQLITE_OK) return "";
  auto be32 = [&](int at) { return uint32_t(h[at]) << 24 | uint32_t(h[at + 1]) << 16 | uint32_t(h[at + 2]) << 8 | h[at + 3]; };
  if (std::memcmp(h, "SQLite format 3", 16) != 0) return "";  // not a database: sqlite says so itself
  const uint32_t page_size = (uint32_t(h[16]) << 8 | h[17]) == 1 ? 65536 : (uint32_t(h[16]) << 8 | h[17]);
  if (be32(24) != be32(92)) return "";  // the header's page count is stale (an old writer)
  const uint64_t want = uint64_t(be32(28)) * page_size;
  if (uint64_t(size) >= want) return "";
  return "truncated: its header says " + std::to_string(want) + " bytes, the file has " + std::to_string(size);
}

// Decides whether an opened file is a usable cache. Throws only for a file that must be left
// alone (newer schema) or for errors that say nothing about the file (I/O, permissions).
Inspection inspect(sqlite3* db, const std::string& path) {
  Inspection ins;
  auto corrupt = [&](std::string why) {
    ins.corrupt = true;
    ins.why = std::move(why);
    return ins;
  };

  // sqlite3_open_v2 reads nothing; the first statement is where a non-database shows up.
  std::vector<std::string> tables;
  int rc = query_column(db, "SELECT name FROM sqlite_master WHERE type = 'table'", tables);
  if (is_corruption(rc)) return corrupt(errmsg(db));
  if (rc != SQLITE_OK) fail(db, path, "cannot read the schema");
  bool has_meta = false;
  for (const auto& t : tables) {
    has_meta |= t == "meta";
    ins.has_kernels |= t == "kernels";
    // Another program's database, given as a cache by mistake: neither damaged (so never moved
    // aside) nor ours to migrate (tables added, journal mode changed). Left untouched. SQLite's
    // own tables (sqlite_sequence, sqlite_stat1) say nothing either way.
    if (t != "meta" && t != "kernels" && t.rfind("sqlite_", 0) != 0) refuse_foreign(path, t);
  }
  // A kernel cache has tables and indexes only: a trigger would run on touch() or put(), a view
  // could stand in for a table. trusted_schema=OFF limits what they may call; none is allowed.
  std::vector<std::string> code;
  rc = query_column(db, "SELECT type || ' ' || name FROM sqlite_master WHERE type NOT IN ('table', 'index')", code);
  if (is_corruption(rc)) return corrupt(errmsg(db));
  if (rc != SQLITE_OK) fail(db, path, "cannot read the schema");
  if (!code.empty()) return corrupt("the schema has a " + code.front() + ", which no kernel cache has");

  // The version is checked before anything that could call the file corrupt, so that a file
  // from a newer jitattn is never mistaken for a damaged one and moved aside.
  std::vector<std::string> version;
  if (has_meta) {
    rc = query_column(db, "SELECT value FROM meta WHERE key = 'schema_version'", version);
    if (is_corruption(rc)) return corrupt(errmsg(db));
    if (rc != SQLITE_OK) fail(db, path, "cannot read schema_version");
  }
  if (!version.empty()) {
    ins.version = version_number(version.front());
    if (ins.version == 0) return corrupt("schema_version '" + version.front() + "' is not a version number");
    if (ins.version > kSchemaVersion) refuse_newer(path, version.front());
  }

  // Column by column, so that a damaged schema page or a dropped column is corruption now and
  // not "no such column" on every lookup. Full page checks are integrity_problem()'s.
  if (has_meta) {
    const std::string problem = columns_problem(db, "meta", kMetaColumns, std::size(kMetaColumns), &rc);
    if (is_corruption(rc)) return corrupt(errmsg(db));
    if (rc != SQLITE_OK) fail(db, path, "cannot read the columns of table meta");
    if (!problem.empty()) return corrupt(problem);
  }
  if (ins.has_kernels) {
    // A file without a recorded version (created by a process killed before it recorded one)
    // may have either layout; migrate() completes it.
    size_t want = ins.version == 1 ? kKernelColumnsV1 : std::size(kKernelColumns);
    std::string problem = columns_problem(db, "kernels", kKernelColumns, want, &rc);
    if (!problem.empty() && ins.version == 0 && rc == SQLITE_OK) {
      want = kKernelColumnsV1;
      problem = columns_problem(db, "kernels", kKernelColumns, want, &rc);
    }
    if (is_corruption(rc)) return corrupt(errmsg(db));
    if (rc != SQLITE_OK) fail(db, path, "cannot read the columns of table kernels");
    if (!problem.empty()) return corrupt(problem);
    ins.has_source_hash = want == std::size(kKernelColumns);
  }
  if (std::string why = truncation_problem(db, path); !why.empty()) return corrupt(why);
  ins.schema_ready = has_meta && ins.has_kernels && !version.empty();
  return ins;
}

// Brings the file to the current layout: creates what is missing, then adds what each later
// version added. The caller holds the write lock, so the version is read again here: another
// process may have created or migrated the file since inspect() looked.
void migrate(sqlite3* db, const std::string& path) {
  std::vector<std::string> version;
  if (query_column(db, "SELECT value FROM meta WHERE key = 'schema_version'", version) == SQLITE_OK &&
      !version.empty()) {
    const int64_t n = version_number(version.front());
    if (n > kSchemaVersion) refuse_newer(path, version.front());  // a newer jitattn got there first
    if (n == 0) throw Error(ErrorKind::internal, "kernel cache " + path + ": schema_version '" + version.front() + "' is not a version number");
  }
  exec(db, path, kSchemaSql);
  std::vector<std::string> columns;
  if (query_column(db, "SELECT name FROM pragma_table_info('kernels')", columns) != SQLITE_OK) {
    fail(db, path, "cannot read the columns of table kernels");
  }
  bool has_source_hash = false;
  for (const auto& c : columns) has_source_hash |= c == "source_hash";
  // 1 -> 2: the kernel_src hash a binary came from, so verify can tell stale rows apart.
  if (!has_source_hash) exec(db, path, "ALTER TABLE kernels ADD COLUMN source_hash TEXT");
  // 2 -> 3: nothing to move. Older rows keep their XXH3 binary_hash and entry symbols without a
  // key, so they fail binary_problem() or the caller's RowCheck and are recompiled.
  exec(db, path, "UPDATE meta SET value = '3' WHERE key = 'schema_version'");
}

// Switches the file to WAL. Switching needs an exclusive lock, and SQLite answers "busy" at once
// instead of calling the busy handler while this connection holds its shared lock (that could
// deadlock), so processes that open a new cache together must retry here: without it all but
// one of them ran without a user cache and every kernel they compiled was lost.
void set_wal(sqlite3* db, const std::string& path) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (int attempt = 0;; ++attempt) {
    const int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return;
    const int primary = rc & 0xff;
    if ((primary != SQLITE_BUSY && primary != SQLITE_LOCKED) || std::chrono::steady_clock::now() >= deadline)
      fail(db, path, "\"PRAGMA journal_mode=WAL\" failed");
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + attempt % 20));
  }
}

int open_db(const std::string& filename, int flags, DbPtr& db) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(filename.c_str(), &raw, flags, nullptr);
  db.reset(raw);  // sqlite hands back a handle even on failure; it carries the message
  // A DB file is input: its schema must not get to run SQL functions with side effects through
  // views, triggers or defaults.
  if (rc == SQLITE_OK) return sqlite3_exec(raw, "PRAGMA trusted_schema=OFF", nullptr, nullptr, nullptr);
  return rc;
}

using FileId = SqliteStore::FileId;

// The file at `path` now; {} when there is none.
FileId file_id_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {uint64_t(st.st_dev), uint64_t(st.st_ino)};
}

// Serializes repairs of one user DB across processes (docs/design.md decision 5): flock(2) on
// PATH.locks/repair.lock, in the directory the compile claims use (cache/claim.h). Every
// read-write open holds it shared while it opens, inspects and migrates the file; moving a
// damaged file aside holds it exclusively. So
//  - one process at a time moves the file, and one that waited looks again first: the file it
//    found damaged may have been replaced by a healthy one meanwhile, whose rows other processes
//    are storing (eight processes opening a damaged DB together used to each move aside whatever
//    was at PATH, healthy DBs just created included, losing their rows);
//  - no file is moved while another process is halfway through opening it, whose SQLite would
//    then take up the -wal and -shm of the file created in its place ("disk I/O error").
// A connection that is already open is not protected, nor needs to be: a file is moved only when
// it is damaged, and its -wal and -shm go with it, under the descriptors that use them.
// The lock file is never removed, so every process locks the same inode (KeyClaim removes its
// files and must check for that; this one need not).
class RepairLock {
 public:
  explicit RepairLock(const std::string& db_path) : path_(db_path + ".locks/repair.lock"), dir_(db_path + ".locks") {}
  ~RepairLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  RepairLock(const RepairLock&) = delete;
  RepairLock& operator=(const RepairLock&) = delete;

  // Takes the lock (shared or exclusive; a held shared lock is converted, which flock does by
  // letting go first, so two converting processes never deadlock). Polled against a deadline,
  // so a holder that is stopped costs an error, never a hang. False, with `why`, when the lock
  // file cannot be made (a directory this process may not write, where nothing can be moved
  // either) or the wait ran out.
  bool acquire(bool exclusive, std::string* why) {
    if (fd_ < 0) {
      if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) return failed(why, "cannot create " + dir_);
      fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd_ < 0) return failed(why, "cannot open " + path_);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRepairLockTimeoutMs);
    for (int attempt = 0;; ++attempt) {
      if (::flock(fd_, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) {
        exclusive_ = exclusive;
        return true;
      }
      if (errno != EWOULDBLOCK) return failed(why, "cannot lock " + path_);
      if (std::chrono::steady_clock::now() >= deadline) {
        *why = "another process held " + path_ + " for " + std::to_string(kRepairLockTimeoutMs / 1000) + " s";
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1 + attempt % 5));
    }
  }
  bool exclusive() const { return exclusive_; }

 private:
  bool failed(std::string* why, const std::string& what) {
    *why = what + ": " + std::strerror(errno);
    return false;
  }

  // Opening, inspecting and migrating wait on SQLite's busy timeout at most a few times over.
  static constexpr int kRepairLockTimeoutMs = 6 * kBusyTimeoutMs;
  std::string path_, dir_;
  int fd_ = -1;
  bool exclusive_ = false;
};

// Moves an unreadable cache (and its journal files, which belong to it and would otherwise be
// applied to the fresh file) out of the way, keeping it for a bug report instead of deleting it.
// The caller holds the repair lock exclusively; `damaged` is the file it found damaged, and
// nothing is moved (false) if another file stands at `path` now.
bool move_aside_files(const std::string& path, const FileId& damaged, const std::string& why) {
  const std::string base = path + ".corrupt-" + std::to_string(now_seconds());
  std::string dest = base;
  for (int n = 1; exists(dest); ++n) dest = base + "." + std::to_string(n);

  if (file_id_of(path) != damaged) return false;
  std::error_code ec;
  fs::rename(path, dest, ec);
  if (ec) {
    throw Error(ErrorKind::internal, "kernel cache " + path + " is unreadable (" + why + ") and could not be moved to " +
                dest + ": " + ec.message());
  }
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const std::string from = path + suffix;
    if (!exists(from)) continue;
    fs::rename(from, dest + suffix, ec);
    if (ec) {
      throw Error(ErrorKind::internal, "kernel cache " + path + ": could not move " + from + " to " + dest + suffix +
                  ": " + ec.message());
    }
  }
  std::cerr << "jitattn: kernel cache " << path << " is unreadable (" << why << "); moved it to "
            << dest << " and started an empty cache\n";
  return true;
}

// SQLite URI filenames give '?', '#' and '%' a meaning; everything else is taken literally.
std::string uri_escape(const std::string& p) {
  std::string out;
  for (const char c : p) {
    if (c == '?' || c == '#' || c == '%') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// A user DB this process may not write (SQLite fell back to read-only), in WAL mode, in a
// directory it may not write either (another user's, a read-only mount): reading it needs its
// WAL index, the -shm file, which cannot be created there, so every statement failed with
// "attempt to write a readonly database" and the DB served nothing. Reopened immutable=1 (no
// WAL index, no locks) when that is so and its -wal is empty or absent: there is then nothing
// the immutable view misses. A -wal that is not empty belongs to a writer elsewhere, and an
// immutable read of a file being checkpointed could see it half-written: that stays an error.
void open_unwritable(DbPtr& db, const std::string& path) {
  std::vector<std::string> probe;
  const int rc = query_column(db.get(), "SELECT count(*) FROM sqlite_master", probe);
  if ((rc & 0xff) != SQLITE_READONLY && (rc & 0xff) != SQLITE_CANTOPEN) return;  // readable as it is, or not this
  std::error_code ec;
  const auto wal = fs::file_size(path + "-wal", ec);
  if (!ec && wal > 0) fail(db.get(), path, "cannot be read without creating its -shm, and its -wal is not empty");
  DbPtr immutable;
  const std::string uri = "file://" + uri_escape(fs::absolute(path, ec).string()) + "?immutable=1";
  if (open_db(uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX, immutable) != SQLITE_OK)
    fail(immutable.get(), path, "cannot open read-only");
  db = std::move(immutable);
}

}  // namespace

std::string hash_hex(const void* data, size_t size) {
  const XXH128_hash_t h = XXH3_128bits(data, size);
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, static_cast<uint64_t>(h.high64),
                static_cast<uint64_t>(h.low64));
  return buf;
}

namespace {

// A shipped DB is opened only if it is a regular file: SQLite opening a FIFO would wait for a
// writer forever, and hashing /dev/zero would never end. stat(2), not open(2): closing a
// descriptor of our own would drop the POSIX locks of any connection this process has on the
// same file (see truncation_problem()).
void require_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error(ErrorKind::internal, "kernel cache " + path + " cannot be opened: " + std::strerror(errno) +
                " (read-only caches are never created)");
  }
  if (!S_ISREG(st.st_mode)) throw Error(ErrorKind::internal, "kernel cache " + path + " is not a regular file (a FIFO, device or directory is never read)");
}

// SHA-256 of the main file of `db`, read through the connection's own file handle: the bytes
// hashed are the bytes SQLite reads, whatever the path names by now (the handle stays on the
// file it opened; a name checked before and after could not see a file renamed over it and
// back in between).
std::string sha256_of_open_file(sqlite3* db, const std::string& path) {
  sqlite3_file* f = nullptr;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f || !f->pMethods)
    throw Error(ErrorKind::internal, "kernel cache " + path + ": SQLite gives no handle on the file to hash");
  sqlite3_int64 size = 0;
  if (f->pMethods->xFileSize(f, &size) != SQLITE_OK) fail(db, path, "cannot read the size to check its digest");
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  for (sqlite3_int64 at = 0; at < size;) {
    const int n = int(std::min<sqlite3_int64>(sqlite3_int64(buf.size()), size - at));
    if (f->pMethods->xRead(f, buf.data(), n, at) != SQLITE_OK)
      throw Error(ErrorKind::internal, "kernel cache " + path + ": cannot read it to check its digest");
    sha.update(buf.data(), size_t(n));
    at += n;
  }
  return sha.hex();
}

}  // namespace

SqliteStore::SqliteStore(std::string path, Mode mode) : SqliteStore(std::move(path), mode, std::string()) {}

SqliteStore::SqliteStore(std::string path, Mode mode, const std::string& sha256) : path_(std::move(path)), mode_(mode) {
  DbPtr db;
  if (!sha256.empty() && mode_ != Mode::ReadOnly)
    throw Error(ErrorKind::internal, "kernel cache " + path_ + ": only a read-only store is pinned");

  if (mode_ != Mode::ReadWrite) {
    std::error_code ec;
    if (mode_ == Mode::ReadOnly) {
      require_regular_file(path_);
    } else if (!fs::is_regular_file(path_, ec)) {
      throw Error(ErrorKind::internal, "kernel cache " + path_ +
                  " does not exist or is not a file (read-only caches are never created)");
    }
    // ReadOnly, immutable=1: no locks, no journal lookups, so a shipped cache can sit on a
    // read-only filesystem and readers never wait on anyone. It assumes nobody writes the file
    // meanwhile (and ignores a -wal file), which is what shipped caches are for.
    // Inspect: plain read-only, so a live WAL database is seen as its writers left it.
    const std::string uri = "file://" + uri_escape(fs::absolute(path_, ec).string()) +
                            (mode_ == Mode::ReadOnly ? "?immutable=1" : "?mode=ro");
    const int rc = open_db(uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX, db);
    if (is_corruption(rc)) {
      throw Error(ErrorKind::internal, "kernel cache " + path_ + " is not a valid SQLite database: " + errmsg(db.get()));
    }
    if (rc != SQLITE_OK) fail(db.get(), path_, "cannot open read-only");
    if (mode_ == Mode::Inspect) sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
    // Before anything of the file is used (but its header): a pinned file is hashed through
    // this connection's handle, so the file read from now on is the file hashed.
    if (!sha256.empty()) {
      const std::string actual = sha256_of_open_file(db.get(), path_);
      if (actual != sha256) throw Error(ErrorKind::internal, "its SHA-256 is " + actual + ", not the pinned " + sha256);
    }
    const Inspection ins = inspect(db.get(), path_);
    if (ins.corrupt) {
      throw Error(ErrorKind::internal, "kernel cache " + path_ + " is corrupt (" + ins.why + "); " +
                  (mode_ == Mode::ReadOnly ? "a read-only cache is never repaired, replace the file"
                                           : "opened only to look at it, so nothing was changed (the runtime moves a "
                                             "damaged user cache aside and starts an empty one)"));
    }
    if (!ins.has_kernels) {
      throw Error(ErrorKind::internal, "kernel cache " + path_ + " is a SQLite database but not a jitattn kernel cache "
                  "(it has no kernels table)");
    }
    schema_version_ = ins.version;
    has_source_hash_ = ins.has_source_hash;
    db_ = db.release();
    return;
  }

  const fs::path parent = fs::path(path_).parent_path();
  if (!parent.empty()) {
    // Directories it creates are the user's alone (0700, whatever the umask lets through for
    // others): a cache directory others can write is not used (cache/layered_cache.h).
    std::error_code ec;
    std::vector<fs::path> missing;  // deepest first
    for (fs::path p = parent; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) missing.push_back(p);
    for (auto it = missing.rbegin(); it != missing.rend() && !ec; ++it) {
      // false without an error: another process created it meanwhile, and it is theirs to set.
      if (fs::create_directory(*it, ec)) fs::permissions(*it, fs::perms::owner_all, ec);
    }
    if (!ec && !fs::is_directory(parent, ec)) ec = std::make_error_code(std::errc::not_a_directory);
    if (ec) {
      throw Error(ErrorKind::internal, "kernel cache " + path_ + ": cannot create directory " + parent.string() + ": " +
                  ec.message());
    }
  }

  // Held, shared, until the file is open, inspected and migrated; taken exclusively to move a
  // damaged file aside (see RepairLock). Without it (a directory this process may not write)
  // the file is opened all the same, but never moved.
  RepairLock lock(path_);
  std::string lock_problem;
  const bool locked = lock.acquire(/*exclusive=*/false, &lock_problem);
  Inspection ins;
  bool replaced = false;
  for (;;) {
    const int rc = open_db(
        path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, db);
    std::string why;
    if (rc == SQLITE_OK && sqlite3_db_readonly(db.get(), "main") == 1) open_unwritable(db, path_);
    if (rc == SQLITE_OK) {
      sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
      ins = inspect(db.get(), path_);
      if (!ins.corrupt) break;
      why = ins.why;
    } else if (is_corruption(rc)) {
      why = errmsg(db.get());
    } else {
      fail(db.get(), path_, "cannot open");
    }
    // Under the lock no other jitattn moves the file, so this is the one just found damaged.
    const FileId damaged = file_id_of(path_);
    db.reset();  // the file must be closed before it can be renamed
    if (replaced) {
      throw Error(ErrorKind::internal, "kernel cache " + path_ + " is still unreadable after replacing it: " + why);
    }
    if (!locked || !lock.exclusive()) {
      // Others may have found the same damage: wait for the lock alone, then look again (the
      // loop reopens whatever is at the path now, which a repairer before us may have replaced).
      if (!locked || !lock.acquire(/*exclusive=*/true, &lock_problem)) {
        throw Error(ErrorKind::internal, "kernel cache " + path_ + " is unreadable (" + why +
                    ") and cannot be moved aside: " + lock_problem);
      }
      continue;
    }
    // Found damaged with the lock held exclusively: this process repairs it.
    move_aside_files(path_, damaged, why);
    replaced = true;
  }

  // A file the process may not write (permissions, a read-only mount) still serves its rows:
  // nothing is migrated or stored, and a lookup's timestamp is skipped.
  if (sqlite3_db_readonly(db.get(), "main") == 1) {
    if (!ins.schema_ready) throw Error(ErrorKind::internal, "kernel cache " + path_ + " is read-only and has no kernel cache schema yet");
    std::cerr << "jitattn: kernel cache " << path_ << " is not writable: serving its kernels, storing none\n";
    file_id_ = file_id_of(path_);
    schema_version_ = ins.version;
    has_source_hash_ = ins.has_source_hash;
    db_ = db.release();
    return;
  }

  // WAL lets readers in other processes carry on while one process inserts a kernel.
  set_wal(db.get(), path_);
  exec(db.get(), path_, "PRAGMA synchronous=NORMAL");
  // Only a new or older file pays for the write lock; every later open just reads. The
  // migration is one transaction, so a process killed halfway leaves the old layout intact.
  if (!ins.schema_ready || ins.version < kSchemaVersion || !ins.has_source_hash) {
    Transaction tx(db.get(), path_);
    migrate(db.get(), path_);
    tx.commit();
  }
  file_id_ = file_id_of(path_);  // still under the lock: the file this connection has open
  schema_version_ = kSchemaVersion;
  has_source_hash_ = true;
  writable_ = true;
  db_ = db.release();
}

SqliteStore::~SqliteStore() { sqlite3_close_v2(db_); }

void SqliteStore::require_writable(const std::string& what) const {
  if (!writable_) throw Error(ErrorKind::internal, "kernel cache " + path_ + " is opened read-only; cannot " + what);
}

std::string binary_problem(const KernelRecord& r) {
  if (r.binary.empty()) return "the binary is empty";
  if (r.size != int64_t(r.binary.size()))
    return "the stored size is " + std::to_string(r.size) + " bytes but the binary has " + std::to_string(r.binary.size());
  if (r.binary_hash.size() != 64) return "binary_hash is not a SHA-256 (a row written before schema 3)";
  const std::string actual = sha256_hex(r.binary);
  if (actual != r.binary_hash) return "the binary does not match its SHA-256 (stored " + r.binary_hash + ", actual " + actual + ")";
  return "";
}

std::string SqliteStore::select_rows(bool with_binary, const char* tail) const {
  std::string sql = "SELECT ";
  sql += kRowColumns;
  sql += has_source_hash_ ? ", source_hash" : ", NULL";
  if (with_binary) sql += ", binary";
  sql += " FROM kernels ";
  sql += tail;
  return sql;
}

std::optional<KernelRecord> SqliteStore::fetch_checked(const std::string& key, const RowCheck& check) {
  KernelRecord r;
  {
    const std::string sql = select_rows(/*with_binary=*/true, "WHERE key = ?1");
    Stmt s(db_, path_, sql.c_str());
    s.bind_text(1, key);
    if (!s.step()) return std::nullopt;
    r = read_row(s, /*with_binary=*/true);
  }
  std::string problem = binary_problem(r);
  if (problem.empty() && check) problem = check(r);
  if (problem.empty()) return r;

  ++dropped_;
  bool deleted = false;
  if (writable_) {
    // Best effort: the caller recompiles and put() replaces the row anyway, so a busy or
    // unwritable file is no reason to fail this lookup.
    Stmt del(db_, path_, "DELETE FROM kernels WHERE key = ?1");
    del.bind_text(1, key);
    deleted = del.step_rc() == SQLITE_DONE;
  }
  std::cerr << "jitattn: kernel cache " << path_ << ": kernel " << r.name << " (key " << key
            << ") cannot be vouched for: " << problem << "; "
            << (deleted ? "deleted the row, it will be recompiled" : "ignoring it") << "\n";
  return std::nullopt;
}

std::optional<KernelRecord> SqliteStore::get(const std::string& key, const RowCheck& check) {
  std::lock_guard<std::mutex> lock(mu_);
  return fetch_checked(key, check);
}

void SqliteStore::put(const KernelRecord& record) {
  require_writable("store kernel " + record.name);
  if (record.binary.empty()) throw Error(ErrorKind::internal, "kernel cache " + path_ + ": kernel " + record.name + " has an empty binary");
  const std::string hash = sha256_hex(record.binary);
  // A row whose hash does not match would only be dropped by the next get(); refuse it now,
  // where the caller's bug is visible.
  if (!record.binary_hash.empty() && record.binary_hash != hash) {
    throw Error(ErrorKind::internal, "kernel cache " + path_ + ": kernel " + record.name + " has binary_hash " +
                record.binary_hash + " but its binary hashes to " + hash);
  }
  const int64_t now = now_seconds();

  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_, path_);
  {
    Stmt s(db_, path_,
           "INSERT OR REPLACE INTO kernels(key, name, target, compiler, binary, binary_hash, size,"
           " registers, shared_bytes, compile_ms, created_at, last_used_at, source_hash)"
           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    s.bind_text(1, record.key);
    s.bind_text(2, record.name);
    s.bind_text(3, record.target);
    s.bind_text(4, record.compiler);
    s.bind_blob_static(5, record.binary);
    s.bind_text(6, hash);
    s.bind_int(7, static_cast<int64_t>(record.binary.size()));
    s.bind_int(8, record.registers);
    s.bind_int(9, record.shared_bytes);
    s.bind_real(10, record.compile_ms);
    s.bind_int(11, record.created_at != 0 ? record.created_at : now);
    s.bind_int(12, record.last_used_at != 0 ? record.last_used_at : now);
    // NULL rather than '': "unknown", the same as a row carried over from schema 1.
    if (record.source_hash.empty()) s.bind_null(13);
    else s.bind_text(13, record.source_hash);
    s.step();
  }
  tx.commit();
}

void SqliteStore::touch(const std::string& key) {
  if (!writable_) return;  // a read-only file has nowhere to record use
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, path_, "UPDATE kernels SET last_used_at = ?1 WHERE key = ?2");
  s.bind_int(1, now_seconds());
  s.bind_text(2, key);
  sqlite3_busy_timeout(db_, kTouchBusyTimeoutMs);
  const int rc = s.step_rc();
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // The timestamp only steers eviction: whatever kept it from being written (a busy writer, a
  // file that became read-only or was moved, a full disk) must not fail the hit it belongs to.
  if (rc != SQLITE_DONE && (rc & 0xff) == SQLITE_READONLY) writable_ = false;
}

bool SqliteStore::remove(const std::string& key) {
  require_writable("remove key " + key);
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, path_, "DELETE FROM kernels WHERE key = ?1");
  s.bind_text(1, key);
  s.step();
  return sqlite3_changes(db_) > 0;
}

std::vector<KernelRecord> SqliteStore::list() {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string sql = select_rows(/*with_binary=*/false, "ORDER BY name, key");
  Stmt s(db_, path_, sql.c_str());
  std::vector<KernelRecord> rows;
  while (s.step()) rows.push_back(read_row(s, /*with_binary=*/false));
  return rows;
}

std::optional<KernelRecord> SqliteStore::find_by_name(const std::string& name, const RowCheck& check) {
  std::lock_guard<std::mutex> lock(mu_);
  // Keys first, then each row through the hash check: a bad row may be deleted, which must
  // not happen under a SELECT still walking the same table.
  std::vector<std::string> keys;
  {
    Stmt s(db_, path_,
           "SELECT key FROM kernels WHERE name = ?1 ORDER BY last_used_at DESC, key");
    s.bind_text(1, name);
    while (s.step()) keys.push_back(s.text(0));
  }
  for (const auto& key : keys) {
    if (auto r = fetch_checked(key, check)) return r;
  }
  return std::nullopt;
}

void SqliteStore::scan(const std::function<void(const KernelRecord&)>& fn) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string sql = select_rows(/*with_binary=*/true, "ORDER BY name, key");
  Stmt s(db_, path_, sql.c_str());
  while (s.step()) fn(read_row(s, /*with_binary=*/true));
}

namespace {

int64_t pragma_int(sqlite3* db, const std::string& path, const char* sql) {
  Stmt s(db, path, sql);
  return s.step() ? s.integer(0) : 0;
}

int64_t page_bytes(sqlite3* db, const std::string& path) {
  return pragma_int(db, path, "PRAGMA page_count") * pragma_int(db, path, "PRAGMA page_size");
}

// Bytes of the pages that hold data: what VACUUM would leave, give or take partly filled pages.
int64_t used_bytes(sqlite3* db, const std::string& path) {
  return (pragma_int(db, path, "PRAGMA page_count") - pragma_int(db, path, "PRAGMA freelist_count")) *
         pragma_int(db, path, "PRAGMA page_size");
}

void vacuum_db(sqlite3* db, const std::string& path) {
  exec(db, path, "VACUUM");
  // In WAL mode VACUUM writes the compact copy into the WAL; only a checkpoint shrinks the file.
  // A reader elsewhere may hold the checkpoint back; the file then shrinks at a later one.
  exec(db, path, "PRAGMA wal_checkpoint(TRUNCATE)");
}

}  // namespace

SqliteStore::Eviction SqliteStore::evict_unused_since(int64_t cutoff) {
  require_writable("evict rows");
  std::lock_guard<std::mutex> lock(mu_);
  Eviction ev;
  {
    Transaction tx(db_, path_);
    {
      Stmt s(db_, path_, "SELECT count(*), coalesce(sum(size), 0) FROM kernels WHERE last_used_at < ?1");
      s.bind_int(1, cutoff);
      s.step();
      ev.rows = s.integer(0);
      ev.bytes = s.integer(1);
    }
    Stmt d(db_, path_, "DELETE FROM kernels WHERE last_used_at < ?1");
    d.bind_int(1, cutoff);
    d.step();
    tx.commit();
  }
  if (ev.rows > 0) vacuum_db(db_, path_);
  return ev;
}

SqliteStore::Eviction SqliteStore::evict_lru_to_size(int64_t max_bytes) {
  require_writable("evict rows");
  std::lock_guard<std::mutex> lock(mu_);
  Eviction ev;
  // Free pages count towards the file, but VACUUM hands them back, so rows go only while the
  // pages in use exceed the limit; once the file is compact and still too large, at least one
  // more row goes per round. Every round after the first deletes a row, so this ends.
  bool compact = false;
  while (page_bytes(db_, path_) > max_bytes) {
    int64_t deleted = 0;
    {
      Transaction tx(db_, path_);
      std::vector<std::pair<std::string, int64_t>> lru;  // key, size; least recently used first
      {
        Stmt s(db_, path_, "SELECT key, size FROM kernels ORDER BY last_used_at, created_at, key");
        while (s.step()) lru.emplace_back(s.text(0), s.integer(1));
      }
      for (const auto& [key, size] : lru) {
        if (used_bytes(db_, path_) <= max_bytes && (deleted > 0 || !compact)) break;
        Stmt d(db_, path_, "DELETE FROM kernels WHERE key = ?1");
        d.bind_text(1, key);
        d.step();
        ++deleted;
        ++ev.rows;
        ev.bytes += size;
      }
      tx.commit();
    }
    if (compact && deleted == 0) break;  // no rows left: even an empty DB is over the limit
    vacuum_db(db_, path_);
    compact = true;
  }
  return ev;
}

void SqliteStore::vacuum() {
  require_writable("vacuum");
  std::lock_guard<std::mutex> lock(mu_);
  vacuum_db(db_, path_);
}

void SqliteStore::make_shippable() {
  require_writable("rewrite it for shipping");
  std::lock_guard<std::mutex> lock(mu_);
  {
    // Leaving WAL needs the only connection; sqlite answers with the mode it is in afterwards.
    Stmt s(db_, path_, "PRAGMA journal_mode=DELETE");
    if (!s.step() || s.text(0) != "delete") {
      throw Error(ErrorKind::internal, "kernel cache " + path_ + ": cannot leave WAL mode (is another process using it?)");
    }
  }
  exec(db_, path_, "VACUUM");
}

std::string SqliteStore::integrity_problem() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> check;
  const int rc = query_column(db_, "PRAGMA quick_check(1)", check);
  if (rc != SQLITE_OK) return "quick_check: " + errmsg(db_);
  if (check.empty() || check.front() != "ok") return "quick_check: " + (check.empty() ? std::string("no result") : check.front());
  return "";
}

bool SqliteStore::move_aside(const std::string& path, FileId damaged, const std::string& why) {
  RepairLock lock(path);
  std::string problem;
  if (!lock.acquire(/*exclusive=*/true, &problem)) {
    throw Error(ErrorKind::internal, "kernel cache " + path + " is damaged (" + why + ") and cannot be moved aside: " + problem);
  }
  if (file_id_of(path) != damaged) return false;  // another process replaced it first
  // A fresh look, under the lock: the open's checks, then every page.
  std::string damage;
  {
    DbPtr db;
    std::error_code ec;
    const int rc = open_db("file://" + uri_escape(fs::absolute(path, ec).string()) + "?mode=ro",
                           SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX, db);
    if (is_corruption(rc)) {
      damage = errmsg(db.get());
    } else if (rc != SQLITE_OK) {
      fail(db.get(), path, "cannot open read-only");
    } else {
      sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
      const Inspection ins = inspect(db.get(), path);
      if (ins.corrupt) {
        damage = ins.why;
      } else {
        std::vector<std::string> check;
        const int qc = query_column(db.get(), "PRAGMA quick_check(1)", check);
        if (qc != SQLITE_OK) damage = "quick_check: " + errmsg(db.get());
        else if (check.empty() || check.front() != "ok") damage = "quick_check: " + (check.empty() ? std::string("no result") : check.front());
      }
    }
  }
  if (damage.empty()) return false;
  return move_aside_files(path, damaged, damage);
}

int64_t SqliteStore::row_count() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, path_, "SELECT count(*) FROM kernels");
  s.step();
  return s.integer(0);
}

int64_t SqliteStore::file_bytes() const {
  std::error_code ec;
  const auto n = fs::file_size(path_, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

int64_t SqliteStore::db_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return page_bytes(db_, path_);
}

}  // namespace jitattn::cache
