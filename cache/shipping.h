// Moving kernel caches between machines (docs/design.md decision 5, issue 5): export a compact DB to ship
// with a deployment, merge DBs, verify one, and evict from the user DB (gc).
//
// Nothing here knows how keys are made: what "current" means for verify comes in as a
// CurrentBuild, which the CLI fills from jit/ and tests fill by hand.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cache/sqlite_store.h"

namespace jitattn::cache {

// A row that was left out or found wanting, and why.
struct RowProblem {
  std::string source;  // the DB it came from
  std::string key;
  std::string name;
  std::string why;
};

// Writes a DB for deployment. Rows go to a temporary file next to `out`; finish() makes it
// self-contained and compact (journal_mode=DELETE, VACUUM) and renames it to `out`, so a
// half-written export never sits at `out`. Dropping an unfinished writer removes the temporary.
class ShippedDbWriter {
 public:
  // Throws if `out` exists and !overwrite, before any work is done.
  ShippedDbWriter(std::string out, bool overwrite);
  ~ShippedDbWriter();
  ShippedDbWriter(const ShippedDbWriter&) = delete;
  ShippedDbWriter& operator=(const ShippedDbWriter&) = delete;

  // Throws if the record's binary does not match its binary_hash.
  void add(const KernelRecord& record);
  SqliteStore& store() { return *store_; }
  // Returns the size of the finished file, and writes OUT.sha256 (`sha256sum -c` form).
  int64_t finish();
  // SHA-256 of the finished file: what JITATTN_CACHE_RO=OUT@sha256:HEX pins.
  const std::string& digest() const { return digest_; }

 private:
  void remove_temp();
  std::string out_, tmp_, digest_;
  bool overwrite_;
  std::unique_ptr<SqliteStore> store_;
};

struct CopyReport {
  int64_t added = 0;
  int64_t already_present = 0;  // same key already in the destination with a sound binary
  int64_t bytes = 0;            // binary bytes added
  std::vector<RowProblem> skipped;
};

// Copies every row of `source` for which keep(row) holds (all rows without a filter) into
// `dest`. A row that fails binary_problem() or `check` (CurrentBuild::binding's kind of check)
// is skipped and reported, never copied.
void copy_rows(SqliteStore& source, SqliteStore& dest, CopyReport& report,
               const std::function<bool(const KernelRecord&)>& keep = nullptr, const RowCheck& check = {});

// copy_rows() from each DB at `sources` (opened read-only). A source that cannot be opened, or
// that is `dest` itself, throws jitattn::Error naming it.
CopyReport merge_into(SqliteStore& dest, const std::vector<std::string>& sources, const RowCheck& check = {});

// What the running build would compile today. Empty fields are not checked.
struct CurrentBuild {
  std::string compiler;     // NVRTC identity, e.g. "nvrtc 13.0"
  std::string source_hash;  // jit::kernel_sources_hash()
  // The key this build gives a row's name, or "" when the name is not one it can parse. A row
  // whose key matches is current however old it is (this is how rows of schema 1, which have
  // no source_hash, are judged).
  std::function<std::string(const KernelRecord&)> expected_key;
  // What the runtime checks of a binary beyond the store's size and SHA-256 (jit: a cubin whose
  // entry symbol carries the row's key). A row failing it would never be launched: corrupt.
  RowCheck binding;
  // The pinned SHA-256 of the whole file (JITATTN_CACHE_RO=FILE@sha256:HEX); "" for none.
  std::string sha256;
  // The identity this build compiles a row's target with ("nvrtc 13.0", "hiprtc 5.2.21153"; ""
  // where that compiler is unavailable: not checked). Set, it replaces `compiler`, so a DB holding
  // NVIDIA and AMD rows side by side is judged row by row.
  std::function<std::string(const KernelRecord&)> compiler_of;
};

struct VerifyReport {
  std::string path;
  bool opened = false;  // false: not readable as a kernel cache; `problem` says why
  std::string problem;  // also set when reading the rows failed partway
  int64_t schema_version = 0;
  int64_t rows = 0;
  int64_t bytes = 0;                // binary bytes of all rows
  std::vector<RowProblem> corrupt;  // fails binary_problem() or CurrentBuild::binding: would never be loaded
  std::vector<RowProblem> stale;    // sound, but this build would never look it up
  bool ok() const { return opened && problem.empty() && corrupt.empty(); }
};

// Checks the schema, every page (quick_check), the pinned digest, and every row (size, SHA-256,
// binding), without changing the file, as the runtime will read it. A user DB (shipped false) is
// opened with SqliteStore::Mode::Inspect, so a live one can be verified while others use it, its
// WAL included, as the runtime's read-write open sees it. A shipped DB is opened as the runtime
// opens JITATTN_CACHE_RO (SqliteStore::Mode::ReadOnly, immutable=1), which never reads a -wal
// file: one that is not empty holds changes the runtime would not see, and is a problem.
VerifyReport verify(const std::string& path, const CurrentBuild& current, bool shipped = false);

struct GcReport {
  SqliteStore::Eviction evicted;
  // SqliteStore::db_bytes(): in WAL mode the file alone can be far smaller than the DB until a
  // checkpoint, so the file size would say little.
  int64_t db_bytes_before = 0;
  int64_t db_bytes_after = 0;
};
// Least recently used rows go until the DB, after VACUUM, is at most max_bytes.
GcReport gc_to_size(SqliteStore& store, int64_t max_bytes);
// Rows not used for `days` days go.
GcReport gc_older_than(SqliteStore& store, double days);

}  // namespace jitattn::cache
