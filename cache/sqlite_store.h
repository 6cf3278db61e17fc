// The SQLite kernel store (docs/design.md decision 5).
//
// One SqliteStore is one database file. The user DB is opened read-write (WAL, busy timeout,
// BEGIN IMMEDIATE inserts); shipped DBs are opened read-only and immutable. Every row keeps the
// binary's SHA-256 and size; get() re-checks both and never returns a row that does not match
// (in a writable store the bad row is deleted, so the caller recompiles and replaces it). A
// caller that knows more about what a binary must be (jit/: a cubin whose entry symbol carries
// the row's key) passes a RowCheck, and a row failing it is treated the same way.
//
// Opening costs O(1) in the size of the file: the schema (column by column, and no triggers or
// views), schema_version and the header's page count against the file size are checked, never
// every page. Full checks
// (PRAGMA quick_check) run in integrity_problem(): `jitattn verify`, and recovery after a
// statement met a damaged page.
//
// Schema history (meta.schema_version): 1 — the first layout; 2 — adds kernels.source_hash;
// 3 — binary_hash is SHA-256 (64 hex chars) instead of XXH3-128, and binaries' entry symbols
// carry their key (rows of older versions fail the checks and are recompiled). A read-write open
// migrates an older file in place; read-only opens read it as it is; a newer file is refused and
// left untouched; so is another program's database (a table no kernel cache has), which every
// mode refuses; a file whose schema or schema_version is damaged is corrupt (a read-write open
// moves it aside, under the repair lock, and starts empty; a read-only open refuses it). Every
// connection runs with PRAGMA trusted_schema=OFF.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace jitattn::cache {

struct KernelRecord {
  std::string key;          // 32 hex chars: XXH3-128 of the key material (jit/kernel_key.h)
  std::string name;         // canonical kernel name, e.g. fwd.sm_90a.bf16.d128.v128.causal.lse.a16.m128n64w8
  std::string target;       // "sm_90a"
  std::string compiler;     // "nvrtc 13.0"
  std::string binary;       // cubin bytes
  std::string binary_hash;  // 64 hex chars: SHA-256 of `binary` (cache/digest.h)
  std::string source_hash;  // kernel_src hash the binary was compiled from; empty for rows of schema 1
  int64_t size = 0;         // bytes of `binary` as stored; filled by reads even when the binary is left out
  int registers = 0;        // per thread
  int shared_bytes = 0;     // dynamic + static shared memory per block
  double compile_ms = 0;
  int64_t created_at = 0;   // unix seconds
  int64_t last_used_at = 0; // unix seconds
};

// 32 lowercase hex chars of XXH3-128(data): cache keys.
std::string hash_hex(const void* data, size_t size);
inline std::string hash_hex(const std::string& s) { return hash_hex(s.data(), s.size()); }

// Why a row read with its binary cannot be vouched for by the store's own columns — the stored
// size is not the blob's length, or binary_hash is not its SHA-256 — or "" when it can.
std::string binary_problem(const KernelRecord& r);

// A caller's further check of a row read with its binary: "" when sound, else why not.
using RowCheck = std::function<std::string(const KernelRecord&)>;

class SqliteStore {
 public:
  // ReadWrite: the user DB; created, repaired (a corrupt file is moved aside) and migrated.
  // ReadOnly:  a shipped DB; immutable=1, so it takes no locks and never waits on anyone, and
  //            it must not change while open. It must be a regular file (a FIFO or a device is
  //            refused before SQLite could wait on it).
  // Inspect:   read-only with ordinary locking, for looking at a DB other processes may be
  //            writing (verify, ls, merge sources): it sees the WAL, and never repairs, migrates
  //            or moves anything.
  enum class Mode { ReadWrite, ReadOnly, Inspect };

  // ReadWrite creates the file (and its directory) and the schema if missing.
  // Throws jitattn::Error naming the path when it cannot be opened.
  SqliteStore(std::string path, Mode mode);
  // ReadOnly only, pinned: the file's SHA-256 must be `sha256` (64 hex chars), hashed through
  // the connection's own handle before anything else is read, so the file read is the file
  // hashed whatever is renamed over `path` meanwhile. "" pins nothing.
  SqliteStore(std::string path, Mode mode, const std::string& sha256);
  ~SqliteStore();
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // The row for `key` if present and sound: binary_problem() and then `check` (if given) find
  // nothing. A row that fails is deleted (ReadWrite, when the file can be written) or skipped,
  // and counted in dropped_rows().
  std::optional<KernelRecord> get(const std::string& key, const RowCheck& check = {});

  // Inserts or replaces the row (BEGIN IMMEDIATE). Throws unless ReadWrite. Zero timestamps
  // become now; others are kept, so copying a row between DBs keeps its history.
  void put(const KernelRecord& record);

  // Sets last_used_at = now for `key`. Best effort: a busy, read-only or otherwise unwritable
  // file skips the timestamp and never fails the lookup that called it.
  void touch(const std::string& key);

  bool remove(const std::string& key);

  // Rows without their binaries (binary left empty), ordered by name.
  std::vector<KernelRecord> list();
  // The most recently used sound row (see get()) for a canonical name (any key), with the binary.
  std::optional<KernelRecord> find_by_name(const std::string& name, const RowCheck& check = {});

  // Every row with its binary, ordered by name, unchecked: the caller decides what a bad hash
  // means (verify reports it, merge skips it). Rows are read one at a time, so a large DB is
  // never held in memory. `fn` must not call back into this store (it holds the lock).
  void scan(const std::function<void(const KernelRecord&)>& fn);

  // What an eviction removed: rows, and the bytes of their binaries.
  struct Eviction {
    int64_t rows = 0;
    int64_t bytes = 0;
  };
  // Deletes rows not used since `cutoff` (unix seconds), then VACUUMs if any went.
  Eviction evict_unused_since(int64_t cutoff);
  // Deletes least recently used rows until the DB, after VACUUM, is at most max_bytes (all rows
  // go if even an empty DB is larger). ReadWrite only.
  Eviction evict_lru_to_size(int64_t max_bytes);

  // Rewrites the file without free pages, then checkpoints so the file on disk shrinks too.
  void vacuum();
  // Leaves WAL for journal_mode=DELETE and VACUUMs: one self-contained file that a shipped,
  // immutable open reads correctly. Needs to be the only connection (an export's new file).
  void make_shippable();

  // PRAGMA quick_check, linear in the file: "" when sound, else its first complaint or sqlite's
  // error. For verify and for recovery, never for an ordinary open.
  std::string integrity_problem();

  // Which file a path named: st_dev and st_ino. A renamed file keeps its id, a new one at the
  // same path has another.
  struct FileId {
    uint64_t dev = 0, ino = 0;
    bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
    bool operator!=(const FileId& o) const { return !(*this == o); }
  };
  // The file this store opened (ReadWrite; {} for the other modes).
  FileId file_id() const { return file_id_; }

  // Moves a damaged cache file (and its -wal/-shm/-journal) aside as PATH.corrupt-<time>, kept
  // for a bug report; the next ReadWrite open starts an empty file. Only under the repair lock
  // (PATH.locks/repair.lock, see sqlite_store.cpp), only while PATH is still `damaged` (the file
  // the caller found damaged: another process may have replaced it with a healthy one already),
  // and only if a fresh look under the lock (the open's checks, then quick_check) still finds
  // damage. True if it moved the file; false if it was already replaced or is sound. Throws if
  // it cannot take the lock or move the file.
  static bool move_aside(const std::string& path, FileId damaged, const std::string& why);

  int64_t row_count();
  int64_t file_bytes() const;  // size of the database file on disk
  int64_t db_bytes();          // page_count · page_size: the size the file has once checkpointed
  int64_t schema_version() const { return schema_version_; }
  const std::string& path() const { return path_; }
  Mode mode() const { return mode_; }
  // False for ReadOnly and Inspect, and for a ReadWrite store whose file turned out read-only
  // (permissions, a read-only mount): it then serves hits and stores nothing (read immutable
  // when its directory cannot take the WAL index either and it has no WAL to miss).
  bool writable() const { return writable_; }
  int64_t dropped_rows() const { return dropped_; }

 private:
  // get() without the lock: the row if its binary matches its hash, else drops it (see get()).
  std::optional<KernelRecord> fetch_checked(const std::string& key, const RowCheck& check);
  void require_writable(const std::string& what) const;
  // "SELECT <row columns> FROM kernels <tail>", spelled for this file's schema.
  std::string select_rows(bool with_binary, const char* tail) const;

  std::string path_;
  Mode mode_;
  FileId file_id_;
  std::atomic<bool> writable_{false};  // cleared by touch() when the file turns out read-only
  sqlite3* db_ = nullptr;
  int64_t schema_version_ = 0;
  bool has_source_hash_ = false;  // false only for a schema-1 file opened read-only
  std::atomic<int64_t> dropped_{0};  // read by dropped_rows() without taking mu_
  mutable std::mutex mu_;  // one connection, shared by every caller of this store
};

}  // namespace jitattn::cache
