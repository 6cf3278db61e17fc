// What every `jitattn` subcommand shares: formatting, error reporting, and the cache layers
// opened for looking.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cache/sqlite_store.h"
#include "jit/env.h"

namespace jitattn::tools {

std::string human_bytes(double bytes);   // "1.5 MiB"
std::string date(int64_t unix_seconds);  // "2026-11-25 20:31", "-" for 0

// Runs a command, turning any exception into `jitattn: error: ...` lines and exit code 1.
int guarded(const std::function<int()>& command);

// One cache layer, opened for looking only: shipped DBs read-only, the user DB with
// Mode::Inspect, so doctor, ls, show and verify never create, migrate or repair anything, and a
// DB that cannot be opened shows why instead of being skipped. A user DB the runtime would not
// use (cache::untrusted_location) is not opened either, and says so.
struct Layer {
  std::string path;
  bool shipped = false;
  std::unique_ptr<cache::SqliteStore> store;  // null when it could not be opened
  std::string problem;                        // why not
  bool absent = false;                        // a user DB not created yet: nothing wrong
  const char* kind() const { return shipped ? "shipped, read-only" : "user"; }
};

// In lookup order: JITATTN_CACHE_RO's DBs, then the user DB.
std::vector<Layer> open_layers(const jit::Env& env);

}  // namespace jitattn::tools
