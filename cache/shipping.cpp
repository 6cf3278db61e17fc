// Export, merge, verify and gc of kernel caches. See cache/shipping.h for the contract.
#include "cache/shipping.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <random>
#include <system_error>

#include "cache/digest.h"
#include "jitattn/error.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;

// Anything at `p`, a dangling symbolic link included: what a write without --force must not replace.
bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
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
  fs::remove_all(tmp_ + ".locks", ec);  // the repair lock of its read-write open (cache/sqlite_store.cpp)
}

void ShippedDbWriter::add(const KernelRecord& record) { store_->put(record); }

namespace {

// Puts `from` at `to` only if nothing is there, atomically: of two exports racing to a new --out
// exactly one wins (checking first and renaming after let both "succeed", the second silently
// replacing the first). renameat2(RENAME_NOREPLACE) where the filesystem has it, else link(2),
// which fails with EEXIST just the same, and unlink. Throws, saying --force replaces it, when
// anything (a dangling symbolic link included) is at `to`.
void rename_no_replace(const std::string& from, const std::string& to) {
  if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return;
  int err = errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {  // no RENAME_NOREPLACE here
    if (::link(from.c_str(), to.c_str()) == 0) {
      ::unlink(from.c_str());
      return;
    }
    err = errno;
  }
  if (err == EEXIST) {
    throw Error(ErrorKind::internal, to + " already exists (written by another export or merge meanwhile?); "
                "pass --force to replace it");
  }
  throw Error(ErrorKind::internal, "cannot move " + from + " to " + to + ": " + std::strerror(err));
}

}  // namespace

int64_t ShippedDbWriter::finish() {
  store_->make_shippable();
  store_.reset();  // closed, so nothing of it lives outside the one file any more
  // Hashed before it is put in place: the digest is of the file this writer wrote, whatever
  // another writer does to `out` afterwards.
  digest_ = sha256_file_hex(tmp_);
  std::error_code ec;
  const auto size = fs::file_size(tmp_, ec);
  const int64_t bytes = ec ? 0 : int64_t(size);
  remove_companions(tmp_);
  if (overwrite_) {
    remove_companions(out_);
    fs::rename(tmp_, out_, ec);
    if (ec) throw Error(ErrorKind::internal, "cannot move " + tmp_ + " to " + out_ + ": " + ec.message());
  } else {
    rename_no_replace(tmp_, out_);  // the loser of a race throws here, and leaves `out` alone
  }
  // The digest a deployment pins (JITATTN_CACHE_RO=FILE@sha256:HEX), next to the file in the
  // form `sha256sum -c` reads; through a temporary too, so that a reader never sees half of it.
  const std::string sidecar = out_ + ".sha256", sidecar_tmp = tmp_ + ".sha256";
  if (FILE* f = std::fopen(sidecar_tmp.c_str(), "w")) {
    std::fprintf(f, "%s  %s\n", digest_.c_str(), fs::path(out_).filename().c_str());
    if (std::fclose(f) != 0) throw Error(ErrorKind::internal, "cannot write " + sidecar_tmp);
  } else {
    throw Error(ErrorKind::internal, "cannot write " + sidecar_tmp);
  }
  fs::rename(sidecar_tmp, sidecar, ec);
  if (ec) {
    fs::remove(sidecar_tmp, ec);
    throw Error(ErrorKind::internal, "cannot write " + sidecar);
  }
  return bytes;
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

VerifyReport verify(const std::string& path, const CurrentBuild& current, bool shipped) {
  VerifyReport rep;
  rep.path = path;
  std::unique_ptr<SqliteStore> store;
  try {
    store = std::make_unique<SqliteStore>(path, shipped ? SqliteStore::Mode::ReadOnly : SqliteStore::Mode::Inspect);
  } catch (const std::exception& e) {
    rep.problem = e.what();
    return rep;
  }
  rep.opened = true;
  rep.schema_version = store->schema_version();
  // A user DB copied while in use, with its -wal: read with the WAL it has more rows than the
  // runtime, reading it shipped, would ever serve. What follows counts what the runtime sees.
  std::error_code ec;
  if (const auto wal = fs::file_size(path + "-wal", ec); shipped && !ec && wal > 0) {
    rep.problem = path + "-wal is not empty (" + std::to_string(wal) + " bytes): a shipped DB is read immutable, "
                  "without its WAL, so the changes in it would never be served (the rows below are what would be); "
                  "ship a file written by `jitattn export` or `merge`, or checkpoint it first";
  }
  if (!current.sha256.empty()) {
    const std::string actual = sha256_file_hex(path);
    if (actual != current.sha256 && rep.problem.empty())
      rep.problem = "its SHA-256 is " + actual + ", not the pinned " + current.sha256;
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
