// CPU-only tests of moving caches around (cache/shipping.h) and of what a shared cache meets:
// schema migration, many processes writing at once, a writer killed mid-insert, and a shipped
// layer that must never wait on the user DB's locks. Kernels are real (small, fast to compile)
// where the compiler matters and synthetic records where it does not.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cache/digest.h"
#include "cache/layered_cache.h"
#include "cache/shipping.h"
#include "cache/sqlite_store.h"
#include "jit/jit_runtime.h"
#include "cache_fixtures.h"
#include "temp_dir.h"
#include "jit/kernel_sources.h"
#include "jit/nvrtc_compiler.h"
#include "jitattn/error.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;
using Mode = SqliteStore::Mode;

// ---- helpers ----------------------------------------------------------------------------

using test::TempDir;

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A raw connection, for doing to a file what another tool or process would.
class RawDb {
 public:
  explicit RawDb(const std::string& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db_, flags, nullptr), SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  void exec(const std::string& sql) {
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << sql << ": " << (err ? err : "");
    sqlite3_free(err);
  }
  // Column 0 of the first row, as text.
  std::string one(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
    std::string out;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
  }
  void set_blob(const std::string& key, const std::string& blob) {
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db_, "UPDATE kernels SET binary = ?1 WHERE key = ?2", -1, &st, nullptr), SQLITE_OK);
    sqlite3_bind_blob64(st, 1, blob.data(), blob.size(), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, key.c_str(), -1, SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
  }

 private:
  sqlite3* db_ = nullptr;
};

using test::make_record;

// Flips one byte of a stored binary behind the store's back.
void flip_byte(const std::string& db, const KernelRecord& r) {
  std::string bad = r.binary;
  bad[bad.size() / 2] ^= 0x01;
  RawDb(db).set_blob(r.key, bad);
}

CurrentBuild build_of(const KernelRecord& r) { return CurrentBuild{r.compiler, r.source_hash, nullptr}; }

// What the real runtime would look up (the same as `jitattn verify` uses).
CurrentBuild this_build() {
  CurrentBuild cur;
  cur.compiler = jit::NvrtcCompiler::get().identity();
  cur.source_hash = jit::kernel_sources_hash();
  cur.expected_key = [id = cur.compiler](const KernelRecord& r) {
    const auto spec = jit::KernelSpec::parse(r.name);
    return spec ? jit::kernel_key(*spec, id) : std::string();
  };
  return cur;
}

// Small kernels, so that the tests that compile stay fast on a 2-core machine.
jit::KernelSpec small_spec(DType dtype, jit::BiasKind bias, bool lse) {
  jit::Signature s;
  s.dtype = s.out_dtype = dtype;
  s.head_dim = s.head_dim_v = 32;
  s.bias = bias;
  s.arch_sm = 80;
  s.lse = lse;
  s.align = 16;
  return jit::make_spec(s);
}

jit::Env env_for(const std::string& user, std::vector<std::string> shipped = {}, jit::JitPolicy policy = jit::JitPolicy::on) {
  jit::Env e;
  e.cache_path = user;
  e.cache_ro = std::move(shipped);
  e.jit = policy;
  return e;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void expect_exited_cleanly(pid_t pid) {
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

// ---- export -----------------------------------------------------------------------------

TEST(ShippingExport, WritesACompactNonWalDbThatServesEveryRowReadOnly) {
  TempDir dir("jitattn_shipping_test");
  const std::string user = dir.file("user.sqlite"), out = dir.file("app.sqlite");
  std::vector<KernelRecord> rows;
  {
    SqliteStore store(user, Mode::ReadWrite);
    for (int i = 0; i < 6; ++i) {
      rows.push_back(make_record("fwd.k" + std::to_string(i), 20000 + 1000 * i, i));
      store.put(rows.back());
    }
    store.remove(rows[5].key);  // leaves free pages behind, which the export must not carry
    rows.pop_back();
    CopyReport rep;
    ShippedDbWriter writer(out, /*overwrite=*/false);
    EXPECT_FALSE(fs::exists(out)) << "an unfinished export must not sit at --out";
    copy_rows(store, writer.store(), rep);
    EXPECT_EQ(rep.added, 5);
    EXPECT_TRUE(rep.skipped.empty());
    EXPECT_GT(writer.finish(), 0);
  }
  ASSERT_TRUE(fs::exists(out));
  for (const char* suffix : {"-wal", "-shm", "-journal"}) EXPECT_FALSE(fs::exists(out + suffix)) << suffix;
  for (const auto& e : fs::directory_iterator(dir.path))  // no temporary left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  {
    RawDb raw(out, SQLITE_OPEN_READONLY);
    EXPECT_EQ(raw.one("PRAGMA journal_mode"), "delete");
    EXPECT_EQ(raw.one("PRAGMA freelist_count"), "0");  // vacuumed
    EXPECT_EQ(raw.one("SELECT value FROM meta WHERE key = 'schema_version'"), "3");
  }
  const std::string shipped_bytes = read_bytes(out);
  {
    SqliteStore ro(out, Mode::ReadOnly);
    EXPECT_EQ(ro.row_count(), 5);
    for (const auto& r : rows) {
      const auto got = ro.get(r.key);
      ASSERT_TRUE(got.has_value()) << r.name;
      EXPECT_EQ(got->binary, r.binary);
      EXPECT_EQ(got->source_hash, r.source_hash);
      EXPECT_EQ(got->size, int64_t(r.binary.size()));
      EXPECT_EQ(got->last_used_at, r.last_used_at);  // history travels with the row
    }
  }
  EXPECT_EQ(read_bytes(out), shipped_bytes);  // reading a shipped DB never writes it
  EXPECT_FALSE(fs::exists(out + "-wal"));

  // An existing --out is refused unless told, and left as it was.
  EXPECT_THROW(ShippedDbWriter(out, false), jitattn::Error);
  EXPECT_EQ(read_bytes(out), shipped_bytes);
  {
    ShippedDbWriter writer(out, /*overwrite=*/true);
    writer.add(rows[0]);
    writer.finish();
  }
  EXPECT_EQ(SqliteStore(out, Mode::ReadOnly).row_count(), 1);
}

// Exports to one new --out without --force, released together: exactly one may succeed and the
// others must fail saying why (checking that --out is free and renaming after let two succeed,
// the second silently replacing the first), and OUT.sha256 describes the file that won.
TEST(ShippingExport, WritersRacingToANewOutLeaveExactlyOneWinner) {
  TempDir dir("jitattn_shipping_test");
  constexpr int kWriters = 8, kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string out = dir.file("app" + std::to_string(round) + ".sqlite");
    int ready[2], go[2];
    ASSERT_EQ(::pipe(ready), 0);
    ASSERT_EQ(::pipe(go), 0);
    std::vector<pid_t> children;
    std::vector<KernelRecord> rows;
    for (int w = 0; w < kWriters; ++w) {
      rows.push_back(make_record("fwd.writer" + std::to_string(w), 3000, uint64_t(100 * round + w)));
      const pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        ::close(go[1]);
        int code = 0;
        try {
          ShippedDbWriter writer(out, /*overwrite=*/false);
          writer.add(rows.back());
          char c = 1, released;
          if (::write(ready[1], &c, 1) != 1) std::_Exit(3);
          if (::read(go[0], &released, 1) != 0) std::_Exit(3);  // returns 0 once the parent lets go
          writer.finish();
        } catch (const jitattn::Error& e) {
          code = std::string(e.what()).find("already exists") != std::string::npos ? 1 : 2;
          if (code == 2) std::fprintf(stderr, "writer %d: %s\n", w, e.what());
        }
        std::_Exit(code);
      }
      children.push_back(pid);
    }
    for (int w = 0; w < kWriters; ++w) {
      char c;
      ASSERT_EQ(::read(ready[0], &c, 1), 1);
    }
    ::close(go[1]);  // every writer's read returns now
    int won = 0, refused = 0;
    for (pid_t pid : children) {
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      ASSERT_TRUE(WIFEXITED(status));
      won += WEXITSTATUS(status) == 0;
      refused += WEXITSTATUS(status) == 1;
    }
    for (int fd : {ready[0], ready[1], go[0]}) ::close(fd);
    EXPECT_EQ(won, 1);
    EXPECT_EQ(refused, kWriters - 1);
    const std::string digest = sha256_file_hex(out);
    EXPECT_EQ(read_bytes(out + ".sha256"), digest + "  " + fs::path(out).filename().string() + "\n");
    EXPECT_EQ(SqliteStore(out, Mode::ReadOnly).row_count(), 1);
  }
  for (const auto& e : fs::directory_iterator(dir.path))  // no writer's temporary is left behind
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
}

// Without --force nothing at --out is replaced, a dangling symbolic link included (which a check
// that follows links took for nothing there).
TEST(ShippingExport, DanglingLinkAtOutIsNotReplacedWithoutForce) {
  TempDir dir("jitattn_shipping_test");
  const std::string out = dir.file("app.sqlite");
  ShippedDbWriter writer(out, /*overwrite=*/false);
  writer.add(make_record("fwd.a", 3000, 1));
  fs::create_symlink(dir.file("nowhere"), out);  // appears while the export runs
  EXPECT_THROW(writer.finish(), jitattn::Error);
  EXPECT_TRUE(fs::is_symlink(out));
  EXPECT_FALSE(fs::exists(out + ".sha256"));
  EXPECT_THROW(ShippedDbWriter(out, /*overwrite=*/false), jitattn::Error);
}

TEST(ShippingExport, ShippedDbServesARealKernelWithZeroCompiles) {
  TempDir dir("jitattn_shipping_test");
  const std::string user = dir.file("user.sqlite"), out = dir.file("app.sqlite");
  const jit::KernelSpec spec = small_spec(DType::f16, jit::BiasKind::causal, true);
  {
    jit::JitRuntime rt(env_for(user));
    rt.binary(spec);
    ASSERT_EQ(rt.stats().compiles.load(), 1);
    SqliteStore src(user, Mode::Inspect);
    ShippedDbWriter writer(out, false);
    CopyReport rep;
    copy_rows(src, writer.store(), rep);
    writer.finish();
  }
  // A deployment: another machine's empty user DB, the shipped file, and no compiling allowed.
  jit::JitRuntime deployed(env_for(dir.file("elsewhere.sqlite"), {out}, jit::JitPolicy::off));
  std::string served;
  const auto rec = deployed.binary(spec, &served);
  EXPECT_EQ(served, out);
  EXPECT_EQ(deployed.stats().compiles.load(), 0);
  EXPECT_EQ(rec.source_hash, jit::kernel_sources_hash());
  const VerifyReport rep = verify(out, this_build());
  EXPECT_TRUE(rep.ok()) << rep.problem;
  EXPECT_TRUE(rep.stale.empty());
}

// ---- merge ------------------------------------------------------------------------------

TEST(ShippingMerge, CombinesTwoDbsKeepsOneCopyPerKeyAndSkipsBadRows) {
  TempDir dir("jitattn_shipping_test");
  const std::string a = dir.file("a.sqlite"), b = dir.file("b.sqlite"), out = dir.file("merged.sqlite");
  const KernelRecord r1 = make_record("fwd.r1", 5000, 1), r2 = make_record("fwd.r2", 6000, 2),
                     r3 = make_record("fwd.r3", 7000, 3), r4 = make_record("fwd.r4", 8000, 4);
  {
    SqliteStore sa(a, Mode::ReadWrite);
    sa.put(r1);
    sa.put(r2);
    SqliteStore sb(b, Mode::ReadWrite);
    sb.put(r2);
    sb.put(r3);
    sb.put(r4);
  }
  flip_byte(b, r4);

  ShippedDbWriter writer(out, false);
  const CopyReport rep = merge_into(writer.store(), {a, b});
  EXPECT_EQ(rep.added, 3);
  EXPECT_EQ(rep.already_present, 1);
  ASSERT_EQ(rep.skipped.size(), 1u);
  EXPECT_EQ(rep.skipped[0].name, "fwd.r4");
  EXPECT_EQ(rep.skipped[0].source, b);
  EXPECT_THROW(merge_into(writer.store(), {writer.store().path()}), jitattn::Error);
  writer.finish();

  SqliteStore merged(out, Mode::ReadOnly);
  EXPECT_EQ(merged.row_count(), 3);
  for (const auto* r : {&r1, &r2, &r3}) ASSERT_TRUE(merged.get(r->key).has_value()) << r->name;
  EXPECT_FALSE(merged.get(r4.key).has_value());
  EXPECT_TRUE(verify(out, build_of(r1)).ok());
}

// ---- verify -----------------------------------------------------------------------------

TEST(ShippingVerify, FlippedByteIsCorruptOtherCompilerOrSourceIsStale) {
  TempDir dir("jitattn_shipping_test");
  const std::string db = dir.file("kernels.sqlite");
  const KernelRecord good = make_record("fwd.good", 4000, 1);
  const KernelRecord flipped = make_record("fwd.flipped", 4000, 2);
  KernelRecord old_compiler = make_record("fwd.old_compiler", 4000, 3);
  old_compiler.compiler = "nvrtc 12.4";
  KernelRecord old_source = make_record("fwd.old_source", 4000, 4);
  old_source.source_hash = hash_hex("last month's kernel_src");
  {
    SqliteStore store(db, Mode::ReadWrite);
    for (const KernelRecord& r : {good, flipped, old_compiler, old_source}) store.put(r);
  }
  EXPECT_TRUE(verify(db, build_of(good)).ok());
  flip_byte(db, flipped);
  const std::string before = read_bytes(db);

  const VerifyReport rep = verify(db, build_of(good));
  EXPECT_TRUE(rep.opened);
  EXPECT_EQ(rep.schema_version, 3);
  EXPECT_EQ(rep.rows, 4);
  EXPECT_FALSE(rep.ok());
  ASSERT_EQ(rep.corrupt.size(), 1u);
  EXPECT_EQ(rep.corrupt[0].name, "fwd.flipped");
  std::set<std::string> stale;
  for (const auto& p : rep.stale) stale.insert(p.name);
  EXPECT_EQ(stale, (std::set<std::string>{"fwd.old_compiler", "fwd.old_source"}));
  for (const auto& p : rep.stale) EXPECT_NE(p.why.find(p.name == "fwd.old_compiler" ? "nvrtc 12.4" : "kernel_src"), std::string::npos) << p.why;
  EXPECT_EQ(read_bytes(db), before) << "verify must not repair or drop anything";
  EXPECT_EQ(SqliteStore(db, Mode::Inspect).row_count(), 4);

  // A file from a newer jitattn is reported, not touched.
  RawDb(db).exec("UPDATE meta SET value = '7' WHERE key = 'schema_version'");
  const VerifyReport newer = verify(db, build_of(good));
  EXPECT_FALSE(newer.opened);
  EXPECT_NE(newer.problem.find("newer"), std::string::npos) << newer.problem;
  EXPECT_FALSE(verify(dir.file("missing.sqlite"), {}).ok());
}

// A live user DB copied with its -wal and shipped: verify read it with the WAL (3 rows, ok) while
// the runtime, opening a shipped layer immutable, never reads a -wal (2 rows). Verified as
// shipped it is read the runtime's way, and the WAL is a problem; as a user DB it is fine.
TEST(ShippingVerify, ShippedDbWithANonEmptyWalIsCheckedAsTheRuntimeSeesIt) {
  TempDir dir("jitattn_shipping_test");
  const std::string live = dir.file("user.sqlite"), copy = dir.file("app.sqlite");
  const KernelRecord a = make_record("fwd.a", 3000, 1), b = make_record("fwd.b", 3000, 2), c = make_record("fwd.c", 3000, 3);
  {
    SqliteStore store(live, Mode::ReadWrite);
    store.put(a);
    store.put(b);
    RawDb(live).exec("PRAGMA wal_checkpoint(TRUNCATE)");
    store.put(c);  // in the WAL only, while the store stays open
    ASSERT_GT(fs::file_size(live + "-wal"), 0u);
    fs::copy_file(live, copy);
    fs::copy_file(live + "-wal", copy + "-wal");
  }
  EXPECT_EQ(SqliteStore(copy, Mode::ReadOnly).row_count(), 2);  // what the runtime serves

  const VerifyReport shipped = verify(copy, build_of(a), /*shipped=*/true);
  EXPECT_TRUE(shipped.opened);
  EXPECT_FALSE(shipped.ok());
  EXPECT_EQ(shipped.rows, 2);
  EXPECT_NE(shipped.problem.find("-wal is not empty"), std::string::npos) << shipped.problem;
  EXPECT_TRUE(verify(copy, build_of(a), /*shipped=*/false).ok());
  EXPECT_EQ(verify(copy, build_of(a), /*shipped=*/false).rows, 3);

  // A shipped DB as export writes it has no WAL, and passes.
  const std::string exported = dir.file("exported.sqlite");
  {
    ShippedDbWriter w(exported, false);
    w.add(a);
    w.finish();
  }
  EXPECT_TRUE(verify(exported, build_of(a), /*shipped=*/true).ok());
}

// ---- gc ---------------------------------------------------------------------------------

TEST(ShippingGc, BySizeEvictsLeastRecentlyUsedFirst) {
  TempDir dir("jitattn_shipping_test");
  const std::string db = dir.file("kernels.sqlite");
  constexpr int kRows = 20;
  constexpr size_t kSize = 64 * 1024;
  SqliteStore store(db, Mode::ReadWrite);
  std::vector<KernelRecord> rows;
  // Inserted in a shuffled order, so insertion order cannot pass for recency.
  std::vector<int> order(kRows);
  for (int i = 0; i < kRows; ++i) order[size_t(i)] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  for (int i : order) {
    rows.push_back(make_record("fwd.k" + std::to_string(i), kSize, uint64_t(i), 1700000000 + i));
    store.put(rows.back());
  }
  // Using the oldest row makes it the newest: it must survive.
  const std::string oldest_key = make_record("fwd.k0", kSize, 0).key;
  store.touch(oldest_key);

  const int64_t max_bytes = 10 * int64_t(kSize) + 32 * 1024;
  ASSERT_GT(store.db_bytes(), max_bytes);
  const GcReport rep = gc_to_size(store, max_bytes);
  EXPECT_LE(store.db_bytes(), max_bytes);
  EXPECT_LE(store.file_bytes(), max_bytes);
  const int64_t left = store.row_count();
  EXPECT_EQ(rep.evicted.rows, kRows - left);
  EXPECT_EQ(rep.evicted.bytes, (kRows - left) * int64_t(kSize));
  EXPECT_GE(left, 8) << "evicted far more than the limit needs";
  EXPECT_LT(rep.db_bytes_after, rep.db_bytes_before);

  // The survivors are k0 (just used) and the most recently used of the rest.
  std::set<std::string> want = {"fwd.k0"};
  for (int i = kRows - 1; int64_t(want.size()) < left; --i) want.insert("fwd.k" + std::to_string(i));
  std::set<std::string> got;
  for (const auto& r : store.list()) got.insert(r.name);
  EXPECT_EQ(got, want);
  EXPECT_TRUE(verify(db, build_of(rows[0])).ok());

  // Under the limit already: nothing goes.
  EXPECT_EQ(gc_to_size(store, max_bytes).evicted.rows, 0);
  // A limit below an empty DB empties it and stops.
  EXPECT_EQ(gc_to_size(store, 1).evicted.rows, left);
  EXPECT_EQ(store.row_count(), 0);
}

TEST(ShippingGc, ByAgeRemovesRowsNotUsedForThatLong) {
  TempDir dir("jitattn_shipping_test");
  SqliteStore store(dir.file("kernels.sqlite"), Mode::ReadWrite);
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const int64_t day = 86400;
  store.put(make_record("fwd.40_days", 30000, 1, now - 40 * day));
  store.put(make_record("fwd.10_days", 30000, 2, now - 10 * day));
  store.put(make_record("fwd.today", 30000, 3, now - 60));

  GcReport rep = gc_older_than(store, 30);
  EXPECT_EQ(rep.evicted.rows, 1);
  EXPECT_EQ(rep.evicted.bytes, 30000);
  EXPECT_FALSE(store.find_by_name("fwd.40_days").has_value());
  rep = gc_older_than(store, 5);
  EXPECT_EQ(rep.evicted.rows, 1);
  EXPECT_LT(rep.db_bytes_after, rep.db_bytes_before);
  ASSERT_EQ(store.row_count(), 1);
  EXPECT_TRUE(store.find_by_name("fwd.today").has_value());
}

// ---- schema migration -------------------------------------------------------------------

// The layout jitattn wrote before source_hash existed, verbatim.
constexpr const char* kSchemaV1 =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
    "INSERT INTO meta(key, value) VALUES('schema_version', '1');"
    "CREATE TABLE kernels(key TEXT PRIMARY KEY, name TEXT NOT NULL, target TEXT NOT NULL,"
    " compiler TEXT NOT NULL, binary BLOB NOT NULL, binary_hash TEXT NOT NULL, size INTEGER NOT NULL,"
    " registers INTEGER, shared_bytes INTEGER, compile_ms REAL, created_at INTEGER, last_used_at INTEGER);"
    "CREATE INDEX kernels_by_name ON kernels(name);";

void insert_v1_row(const std::string& db, const KernelRecord& r) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(h,
                               "INSERT INTO kernels VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)", -1,
                               &st, nullptr),
            SQLITE_OK);
  sqlite3_bind_text(st, 1, r.key.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, r.name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, r.target.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 4, r.compiler.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob64(st, 5, r.binary.data(), r.binary.size(), SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 6, r.binary_hash.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 7, int64_t(r.binary.size()));
  sqlite3_bind_int(st, 8, r.registers);
  sqlite3_bind_int(st, 9, r.shared_bytes);
  sqlite3_bind_double(st, 10, r.compile_ms);
  sqlite3_bind_int64(st, 11, r.created_at);
  sqlite3_bind_int64(st, 12, r.last_used_at);
  EXPECT_EQ(sqlite3_step(st), SQLITE_DONE) << sqlite3_errmsg(h);
  sqlite3_finalize(st);
  sqlite3_close(h);
}

TEST(ShippingSchema, V1DatabaseIsReadAsItIsAndMigratedOnReadWriteOpen) {
  TempDir dir("jitattn_shipping_test");
  const std::string db = dir.file("v1.sqlite");
  RawDb(db).exec(kSchemaV1);
  const KernelRecord a = make_record("fwd.a", 3000, 1), b = make_record("fwd.b", 5000, 2);
  insert_v1_row(db, a);
  insert_v1_row(db, b);
  const std::string v1_bytes = read_bytes(db);

  {  // Read-only opens read a v1 file as it is, and never change it.
    SqliteStore ro(db, Mode::ReadOnly);
    EXPECT_EQ(ro.schema_version(), 1);
    const auto got = ro.get(a.key);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->binary, a.binary);
    EXPECT_TRUE(got->source_hash.empty());
    EXPECT_EQ(got->size, 3000);
    ASSERT_EQ(ro.list().size(), 2u);
    EXPECT_EQ(ro.list()[1].size, 5000);
    const VerifyReport rep = verify(db, build_of(a));
    EXPECT_TRUE(rep.ok());
    EXPECT_EQ(rep.schema_version, 1);
    EXPECT_EQ(rep.stale.size(), 2u);  // no source_hash: cannot be confirmed current
  }
  EXPECT_EQ(read_bytes(db), v1_bytes);

  {  // Read-write migrates in place and keeps every row.
    SqliteStore rw(db, Mode::ReadWrite);
    EXPECT_EQ(rw.schema_version(), 3);
    for (const auto* r : {&a, &b}) {
      const auto got = rw.get(r->key);
      ASSERT_TRUE(got.has_value()) << r->name;
      EXPECT_EQ(got->binary, r->binary);
      EXPECT_EQ(got->created_at, r->created_at);
      EXPECT_TRUE(got->source_hash.empty());
    }
    KernelRecord c = make_record("fwd.c", 2000, 3);
    rw.put(c);
    EXPECT_EQ(rw.get(c.key)->source_hash, c.source_hash);
  }
  RawDb raw(db);
  EXPECT_EQ(raw.one("SELECT value FROM meta WHERE key = 'schema_version'"), "3");
  EXPECT_EQ(raw.one("SELECT count(*) FROM pragma_table_info('kernels') WHERE name = 'source_hash'"), "1");
  EXPECT_EQ(SqliteStore(db, Mode::ReadOnly).row_count(), 3);
  // Opening again migrates nothing twice.
  EXPECT_EQ(SqliteStore(db, Mode::ReadWrite).schema_version(), 3);
}

// ---- many processes ---------------------------------------------------------------------

TEST(ShippingConcurrency, EightProcessesCompilingOverlappingSetsIntoOneDb) {
  TempDir dir("jitattn_shipping_test");
  const std::string db = dir.file("kernels.sqlite");
  std::vector<jit::KernelSpec> specs;
  for (DType dt : {DType::f16, DType::bf16})
    for (jit::BiasKind bias : {jit::BiasKind::none, jit::BiasKind::causal})
      for (bool lse : {false, true}) specs.push_back(small_spec(dt, bias, lse));
  ASSERT_EQ(specs.size(), 8u);

  // Process i compiles specs i..i+2 (mod 8): every kernel is wanted by three processes at once,
  // and is compiled by one of them (cache/claim.h); the others wait for its row.
  const std::string tally = dir.file("compiles");
  std::vector<pid_t> children;
  for (int i = 0; i < 8; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      try {
        jit::JitRuntime rt(env_for(db));
        for (int j = 0; j < 3; ++j) rt.binary(specs[size_t((i + j) % 8)]);
        if (FILE* f = std::fopen(tally.c_str(), "a")) {
          std::fputs(std::string(size_t(rt.stats().compiles.load()), 'x').c_str(), f);
          std::fclose(f);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", i, e.what());
        rc = 1;
      }
      ::_exit(rc);  // no gtest teardown, no static destructors in the child
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) expect_exited_cleanly(pid);
  EXPECT_EQ(read_bytes(tally).size(), specs.size()) << "compiles across the 8 processes";

  SqliteStore store(db, Mode::Inspect);
  std::map<std::string, int> count;
  for (const auto& r : store.list()) ++count[r.name];
  EXPECT_EQ(count.size(), specs.size());
  for (const auto& spec : specs) EXPECT_EQ(count[spec.name()], 1) << spec.name();
  const VerifyReport rep = verify(db, this_build());
  EXPECT_TRUE(rep.ok()) << rep.problem;
  EXPECT_EQ(rep.rows, 8);
  EXPECT_TRUE(rep.stale.empty());
}

TEST(ShippingConcurrency, WriterKilledMidInsertLeavesAConsistentDb) {
  TempDir dir("jitattn_shipping_test");
  const std::string db = dir.file("kernels.sqlite");
  std::mt19937 rng(2024);
  for (int round = 0; round < 20; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready[0]);
      try {
        SqliteStore store(db, Mode::ReadWrite);
        std::mt19937_64 child_rng(uint64_t(round) * 7919 + 1);
        const char go = 1;
        if (::write(ready[1], &go, 1) != 1) ::_exit(1);
        for (uint64_t n = 0;; ++n) {  // until killed; a few keys repeat, so replaces happen too
          const std::string name = "fwd.r" + std::to_string(round) + "." + std::to_string(child_rng() % 64);
          store.put(make_record(name, 1 + child_rng() % (64 * 1024), child_rng()));
        }
      } catch (...) {
        ::_exit(1);
      }
    }
    ::close(ready[1]);
    char go = 0;
    ASSERT_EQ(::read(ready[0], &go, 1), 1) << "the writer died before it started";
    ::close(ready[0]);
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 30000)(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the writer stopped by itself, status " << status;

    const VerifyReport rep = verify(db, {});
    ASSERT_TRUE(rep.ok()) << "round " << round << ": " << rep.problem << " " << rep.corrupt.size() << " corrupt";
  }
  SqliteStore store(db, Mode::ReadWrite);  // opens without moving anything aside
  EXPECT_GT(store.row_count(), 0);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename().string().find(".corrupt-"), std::string::npos) << e.path();
  const VerifyReport rep = verify(db, {});
  EXPECT_TRUE(rep.ok()) << rep.problem;
  EXPECT_TRUE(rep.corrupt.empty());
}

// ---- the shipped layer never waits ------------------------------------------------------

TEST(ShippingReadOnly, NeverBlocksOnTheUserDbsLock) {
  TempDir dir("jitattn_shipping_test");
  const std::string user = dir.file("user.sqlite"), shipped = dir.file("app.sqlite");
  const KernelRecord r = make_record("fwd.shipped", 50000, 1);
  {
    ShippedDbWriter writer(shipped, false);
    writer.add(r);
    writer.finish();
  }
  LayeredCache layers({shipped}, user);
  ASSERT_NE(layers.user(), nullptr);  // opens every layer now, before the lock is taken
  layers.user()->put(make_record("fwd.user", 1000, 2));

  RawDb locker(user);
  locker.exec("BEGIN EXCLUSIVE");
  locker.exec("DELETE FROM kernels");  // holds the write lock with a change pending

  auto t0 = std::chrono::steady_clock::now();
  {
    SqliteStore ro(shipped, Mode::ReadOnly);
    ASSERT_TRUE(ro.get(r.key).has_value());
  }
  EXPECT_LT(ms_since(t0), 100.0) << "opening and reading the shipped DB waited";

  t0 = std::chrono::steady_clock::now();
  const auto hit = layers.find(r.key);
  EXPECT_LT(ms_since(t0), 100.0) << "the layered lookup waited on the user DB";
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->layer, shipped);

  // Even a lock on the shipped file itself does not stop an immutable reader.
  RawDb shipped_locker(shipped);
  shipped_locker.exec("BEGIN EXCLUSIVE");
  t0 = std::chrono::steady_clock::now();
  {
    SqliteStore ro(shipped, Mode::ReadOnly);
    ASSERT_TRUE(ro.get(r.key).has_value());
  }
  EXPECT_LT(ms_since(t0), 100.0);
  shipped_locker.exec("ROLLBACK");
  locker.exec("ROLLBACK");
}

}  // namespace
}  // namespace jitattn::cache
