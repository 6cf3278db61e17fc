// Export, merge, verify and gc of kernel caches. See cache/shipping.h for the contract.
#include "cache/shipping.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <system_error>

#include "cache/digest.h"
#include "jitattn/error.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// A DB file's companions. A leftover -wal next to a file we put in place would be replayed
// into it by the next opener, so they go whenever their main file is replaced or abandoned.
void remove_companions(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"-wal", "-shm", "-journal"}) fs::remove(path + suffix, ec);
}

[[noreturn]] void refuse_overwrite(const std::string& out) {
  throw Error(ErrorKind::internal, out + " already exists; pass --force to replace it");
}

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// ---- export -------------------------------------------------------------------------------

ShippedDbWriter::ShippedDbWriter(std::string out, bool overwrite) : out_(std::move(out)), overwrite_(overwrite) {
  if (!overwrite_ && exists(out_)) refuse_overwrite(out_);
  // Unique per writer, so two exports to one path never share a temporary.
  tmp_ = out_ + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}());
  remove_temp();
  store_ = std::make_unique<SqliteStore>(tmp_, SqliteStore::Mode::ReadWrite);
}

ShippedDbWriter::~ShippedDbWriter() {
  store_.reset();
  remove_temp();  // nothing left after finish(); the whole temporary after a failure
}

void ShippedDbWriter::remove_temp() {
  std::error_code ec;
  fs::remove(tmp_, ec);
  remove_companions(tmp_);
}

void ShippedDbWriter::add(const KernelRecord& record) { store_->put(record); }

int64_t ShippedDbWriter::finish() {
  store_->make_shippable();
  store_.reset();  // closed, so nothing of it lives outside the one file any more
  if (!overwrite_ && exists(out_)) refuse_overwrite(out_);  // appeared while we were writing
  if (overwrite_) remove_companions(out_);
  std::error_code ec;
  fs::rename(tmp_, out_, ec);
  if (ec) throw Error(ErrorKind::internal, "cannot move " + tmp_ + " to " + out_ + ": " + ec.message());
  remove_companions(tmp_);
  // The digest a deployment pins (JITATTN_CACHE_RO=FILE@sha256:HEX), next to the file in the
  // form `sha256sum -c` reads.
  digest_ = sha256_file_hex(out_);
  const std::string sidecar = out_ + ".sha256";
  if (FILE* f = std::fopen(sidecar.c_str(), "w")) {
    std::fprintf(f, "%s  %s\n", digest_.c_str(), fs::path(out_).filename().c_str());
    if (std::fclose(f) != 0) throw Error(ErrorKind::internal, "cannot write " + sidecar);
  } else {
    throw Error(ErrorKind::internal, "cannot write " + sidecar);
  }
  const auto size = fs::file_size(out_, ec);
  return ec ? 0 : int64_t(size);
}

// ---- merge --------------------------------------------------------------------------------

void copy_rows(SqliteStore& source, SqliteStore& dest, CopyReport& report,
               const std::function<bool(const KernelRecord&)>& keep, const RowCheck& check) {
  source.scan([&](const KernelRecord& r) {
    if (keep && !keep(r)) return;
    std::string why = binary_problem(r);
    if (why.empty() && check) why = check(r);
    if (!why.empty()) {
      report.skipped.push_back({source.path(), r.key, r.name, std::move(why)});
      return;
    }
    if (dest.get(r.key, check)) {  // a bad row there is dropped by get() and replaced below
      ++report.already_present;
      return;
    }
    dest.put(r);
    ++report.added;
    report.bytes += int64_t(r.binary.size());
  });
}

CopyReport merge_into(SqliteStore& dest, const std::vector<std::string>& sources, const RowCheck& check) {
  CopyReport report;
  for (const auto& path : sources) {
    std::error_code ec;
    // Reading a DB while writing it through another connection would hold its lock forever.
    if (fs::equivalent(path, dest.path(), ec)) throw Error(ErrorKind::internal, path + " is the destination itself");
    SqliteStore source(path, SqliteStore::Mode::Inspect);
    copy_rows(source, dest, report, nullptr, check);
  }
  return report;
}

// ---- verify -------------------------------------------------------------------------------

namespace {

// Why a sound row would never be looked up by this build, or "" if it would.
std::string staleness(const KernelRecord& r, const CurrentBuild& current) {
  const std::string compiler = current.compiler_of ? current.compiler_of(r) : current.compiler;
  if (!compiler.empty() && r.compiler != compiler)
    return "compiled by " + r.compiler + ", this jitattn compiles " + r.target + " with " + compiler;
  if (!current.source_hash.empty() && !r.source_hash.empty() && r.source_hash != current.source_hash)
    return "compiled from kernel_src " + r.source_hash + ", this jitattn's is " + current.source_hash;
  const std::string want = current.expected_key ? current.expected_key(r) : std::string();
  if (!want.empty()) {
    if (want == r.key) return "";
    return "stored under key " + r.key + " but this jitattn looks it up as " + want +
           " (compile options or cache format changed)";
  }
  if (r.source_hash.empty()) return "kernel_src hash unknown (row written before schema 2)";
  return "";
}

}  // namespace

VerifyReport verify(const std::string& path, const CurrentBuild& current) {
  VerifyReport rep;
  rep.path = path;
  std::unique_ptr<SqliteStore> store;
  try {
    store = std::make_unique<SqliteStore>(path, SqliteStore::Mode::Inspect);
  } catch (const std::exception& e) {
    rep.problem = e.what();
    return rep;
  }
  rep.opened = true;
  rep.schema_version = store->schema_version();
  if (!current.sha256.empty()) {
    const std::string actual = sha256_file_hex(path);
    if (actual != current.sha256) rep.problem = "its SHA-256 is " + actual + ", not the pinned " + current.sha256;
  }
  // Every page, which no ordinary open reads (cache/sqlite_store.h).
  if (std::string why = store->integrity_problem(); !why.empty() && rep.problem.empty()) rep.problem = why;
  try {
    store->scan([&](const KernelRecord& r) {
      ++rep.rows;
      rep.bytes += int64_t(r.binary.size());
      std::string bad = binary_problem(r);
      if (bad.empty() && current.binding) bad = current.binding(r);
      if (!bad.empty()) {
        rep.corrupt.push_back({path, r.key, r.name, std::move(bad)});
        return;
      }
      std::string why = staleness(r, current);
      if (!why.empty()) rep.stale.push_back({path, r.key, r.name, std::move(why)});
    });
  } catch (const std::exception& e) {  // a damaged page under the rows
    if (rep.problem.empty()) rep.problem = e.what();
  }
  return rep;
}

// ---- gc -----------------------------------------------------------------------------------

GcReport gc_to_size(SqliteStore& store, int64_t max_bytes) {
  GcReport rep;
  rep.db_bytes_before = store.db_bytes();
  rep.evicted = store.evict_lru_to_size(max_bytes);
  rep.db_bytes_after = store.db_bytes();
  return rep;
}

GcReport gc_older_than(SqliteStore& store, double days) {
  GcReport rep;
  rep.db_bytes_before = store.db_bytes();
  rep.evicted = store.evict_unused_since(now_seconds() - int64_t(days * 86400));
  rep.db_bytes_after = store.db_bytes();
  return rep;
}

}  // namespace jitattn::cache
