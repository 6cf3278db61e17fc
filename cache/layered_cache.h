// The lookup order of docs/design.md decision 5 below the in-memory table: shipped read-only DBs
// (JITATTN_CACHE_RO, in order), then the user DB. Opening is lazy and failures degrade: a
// shipped DB that cannot be opened, or whose pinned SHA-256 differs, is skipped with a warning;
// a user DB that cannot be opened, or that lies in a directory other users could write to (as
// ssh treats its files), leaves the cache memory-only; a layer whose reads fail midway is
// dropped (the user DB is moved aside and restarted when quick_check finds it damaged). A call
// never fails because of its cache.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cache/claim.h"
#include "cache/sqlite_store.h"

namespace jitattn::cache {

// Why the user DB at `db_path` must not be used ("" when it may): its directory or the file is
// owned by another user (root excepted) or writable by group or others.
std::string untrusted_location(const std::string& db_path);

// Opens a shipped DB read-only. It must be a regular file. With a pin (64 hex chars) the file's
// SHA-256 must match it, and SQLite then reads the very file that was hashed (it is hashed through
// SQLite's own handle), whatever is renamed over the path meanwhile. Throws jitattn::Error saying why not.
std::unique_ptr<SqliteStore> open_shipped(const std::string& path, const std::string& sha256);

class LayeredCache {
 public:
  // read_only_sha256[i] pins read_only_paths[i] (64 hex chars; "" or missing: not pinned).
  // row_check runs on every row a layer returns (jit/: the cubin's entry symbol carries its key).
  LayeredCache(std::vector<std::string> read_only_paths, std::string user_path,
               std::vector<std::string> read_only_sha256 = {}, RowCheck row_check = {});

  struct Hit {
    KernelRecord record;
    std::string layer;  // the path of the DB that served it
  };
  // First layer holding `key` with a sound binary. skip_user: look in shipped DBs only.
  std::optional<Hit> find(const std::string& key, bool skip_user = false);
  // For a process without NVRTC, which cannot compute keys: the first layer holding a sound row
  // named `name` that was compiled from kernel_src hash `source_hash` (by whichever compiler)
  // and passes `extra` too.
  std::optional<Hit> find_by_name(const std::string& name, const std::string& source_hash, const RowCheck& extra = {});
  // Writes to the user DB; false (with a warning when the write itself failed) if it is
  // unavailable or not writable, and then `why` (when given) says which.
  bool store(const KernelRecord& record, std::string* why = nullptr);
  // A row that hit() returned but the driver would not load (or had no entry function): removed
  // from the user DB, and never served again by a shipped layer in this process.
  void reject(const Hit& hit, const std::string& why);

  // The cross-process claim on compiling `key` (cache/claim.h), next to the user DB; null
  // when there is no user DB (nothing to share, nothing to wait for).
  std::unique_ptr<KeyClaim> claim(const std::string& key, int timeout_ms, const std::atomic<bool>* abandon = nullptr);

  SqliteStore* user();  // null when unavailable
  std::vector<SqliteStore*> read_only();
  const std::vector<std::string>& read_only_paths() const { return ro_paths_; }
  const std::string& user_path() const { return user_path_; }

 private:
  void open_locked();
  // A user-layer read threw: drop the layer, and move the file aside if quick_check finds damage.
  void recover_user_locked(const std::string& why);
  std::vector<SqliteStore*> layers_locked(bool with_user);
  void drop_shipped_locked(SqliteStore* store, const std::string& why);

  std::mutex mu_;
  bool opened_ = false;
  std::vector<std::string> ro_paths_, ro_sha256_;
  std::string user_path_;
  RowCheck row_check_;
  std::vector<std::unique_ptr<SqliteStore>> ro_;
  std::vector<SqliteStore*> ro_dropped_;  // kept open (callers may hold them), never searched
  std::unique_ptr<SqliteStore> user_;
  std::set<std::pair<std::string, std::string>> rejected_;  // (layer path, key)
};

}  // namespace jitattn::cache
