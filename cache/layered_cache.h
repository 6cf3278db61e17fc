// The lookup order of DESIGN decision 5 below the in-memory table: shipped read-only DBs
// (JITATTN_CACHE_RO, in order), then the user DB. Opening is lazy and failures degrade: a
// shipped DB that cannot be opened is skipped with a warning, and a user DB that cannot be
// opened leaves the cache memory-only, so a call never fails because of its cache.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/sqlite_store.h"

namespace jitattn::cache {

class LayeredCache {
 public:
  LayeredCache(std::vector<std::string> read_only_paths, std::string user_path);

  struct Hit {
    KernelRecord record;
    std::string layer;  // the path of the DB that served it
  };
  // First layer holding `key` with a sound binary. skip_user: look in shipped DBs only.
  std::optional<Hit> find(const std::string& key, bool skip_user = false);
  // For a process without NVRTC, which cannot compute keys: the first layer holding a sound row
  // named `name` that was compiled from kernel_src hash `source_hash` (by whichever compiler).
  std::optional<Hit> find_by_name(const std::string& name, const std::string& source_hash);
  // Writes to the user DB; false (with a warning) if it is unavailable.
  bool store(const KernelRecord& record);

  SqliteStore* user();  // null when unavailable
  std::vector<SqliteStore*> read_only();
  const std::vector<std::string>& read_only_paths() const { return ro_paths_; }
  const std::string& user_path() const { return user_path_; }

 private:
  void open_locked();
  std::mutex mu_;
  bool opened_ = false;
  std::vector<std::string> ro_paths_;
  std::string user_path_;
  std::vector<std::unique_ptr<SqliteStore>> ro_;
  std::unique_ptr<SqliteStore> user_;
};

}  // namespace jitattn::cache
