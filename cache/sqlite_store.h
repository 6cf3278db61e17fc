// The SQLite kernel store (DESIGN decision 5).
//
// One SqliteStore is one database file. The user DB is opened read-write (WAL, busy timeout,
// BEGIN IMMEDIATE inserts); shipped DBs are opened read-only and immutable. Every row keeps the
// binary's XXH3-128 hash; get() re-hashes the blob and never returns a row that does not match
// (in a writable store the bad row is deleted, so the caller recompiles and replaces it).
#pragma once
#include <atomic>
#include <cstdint>
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
  std::string binary_hash;  // 32 hex chars: XXH3-128 of `binary`
  int registers = 0;        // per thread
  int shared_bytes = 0;     // dynamic + static shared memory per block
  double compile_ms = 0;
  int64_t created_at = 0;   // unix seconds
  int64_t last_used_at = 0; // unix seconds
};

// 32 lowercase hex chars of XXH3-128(data).
std::string hash_hex(const void* data, size_t size);
inline std::string hash_hex(const std::string& s) { return hash_hex(s.data(), s.size()); }

class SqliteStore {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  // ReadWrite creates the file (and its directory) and the schema if missing.
  // Throws jitattn::Error naming the path when it cannot be opened.
  SqliteStore(std::string path, Mode mode);
  ~SqliteStore();
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // The row for `key` if present and its binary matches binary_hash. A row that fails the
  // check is deleted (ReadWrite) or skipped (ReadOnly), and counted in dropped_rows().
  std::optional<KernelRecord> get(const std::string& key);

  // Inserts or replaces the row (BEGIN IMMEDIATE). Throws in ReadOnly mode.
  void put(const KernelRecord& record);

  // Sets last_used_at = now for `key` (best effort, ignores busy errors).
  void touch(const std::string& key);

  bool remove(const std::string& key);

  // Rows without their binaries (binary left empty), ordered by name.
  std::vector<KernelRecord> list();
  // The row for a canonical name (any key), with the binary; nullopt if none.
  std::optional<KernelRecord> find_by_name(const std::string& name);

  int64_t row_count();
  int64_t file_bytes() const;  // size of the database file on disk
  const std::string& path() const { return path_; }
  Mode mode() const { return mode_; }
  int64_t dropped_rows() const { return dropped_; }

 private:
  // get() without the lock: the row if its binary matches its hash, else drops it (see get()).
  std::optional<KernelRecord> fetch_checked(const std::string& key);

  std::string path_;
  Mode mode_;
  sqlite3* db_ = nullptr;
  std::atomic<int64_t> dropped_{0};  // read by dropped_rows() without taking mu_
  mutable std::mutex mu_;  // one connection, shared by every caller of this store
};

}  // namespace jitattn::cache
