// The CLI refuses arguments that would empty, replace or fake a cache, in fresh processes:
// gc's sizes and ages are parsed strictly, export --out never replaces anything but a DB file
// of its own, prewarm fails when nothing it compiles could be stored, and --max-kernels caps
// what the manifests expand to.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <utility>

#include "cache/sqlite_store.h"
#include "cli_run.h"
#include "cache_fixtures.h"
#include "temp_dir.h"

namespace jitattn::test {
namespace {

namespace fs = std::filesystem;
using cache::KernelRecord;
using cache::SqliteStore;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A user DB of `n` rows with made-up 4 KiB binaries (sound sizes and hashes), half for sm_80,
// half sm_90a.
void fill_user_db(const std::string& path, int n) {
  SqliteStore db(path, SqliteStore::Mode::ReadWrite);
  for (int i = 0; i < n; ++i) {
    const int64_t now = int64_t(std::time(nullptr));  // rows gc --older-than 30 keeps
    KernelRecord r = make_record("fwd.k" + std::to_string(i), 4096, uint64_t(i), now);
    r.target = i % 2 ? "sm_90a" : "sm_80";
    r.created_at = now;
    db.put(r);
  }
}

int64_t rows_of(const std::string& path) { return SqliteStore(path, SqliteStore::Mode::Inspect).row_count(); }

struct CliTest : testing::Test {
  TempDir dir{"jitattn_cli_test"};
  const std::string user = dir.file("user.sqlite");
  CliRun run(const std::string& args, const std::string& cache = "", uint64_t max_file_bytes = 0) {
    return cli("JITATTN_CACHE=" + (cache.empty() ? user : cache), args, dir.path, max_file_bytes);
  }
  // The kernel `jitattn show NAME` says calls with NAME's signature run under the environment
  // `env` (VAR=value ...): NAME itself when it prints no note; "" when show fails.
  std::string served_by(const std::string& env, const std::string& name) {
    const CliRun r = cli("JITATTN_CACHE=" + user + (env.empty() ? "" : " " + env), "show " + name, dir.path);
    EXPECT_EQ(r.rc, 0) << r.output;
    if (r.rc != 0) return "";
    const std::string note = "calls with this signature use ";
    const size_t at = r.output.find(note);
    if (at == std::string::npos) return name;
    const size_t from = at + note.size();
    return r.output.substr(from, r.output.find_first_of(" \n", from) - from);
  }
};

// 1e30 and inf overflowed to a negative size, 2^63-1 rounded past int64, '' fell back to
// --older-than 0: each deleted every row.
TEST_F(CliTest, GcRefusesSizesAndAgesThatDoNotParseStrictly) {
  fill_user_db(user, 4);
  for (const char* size : {"1e30", "inf", "9223372036854775807", "''", "-1", "1.5G", "12Q", "1025T", "0x10"}) {
    const CliRun r = run(std::string("gc --max-size ") + size);
    EXPECT_EQ(r.rc, 1) << size << ": " << r.output;
    EXPECT_TRUE(has(r.output, "--max-size '")) << size << ": " << r.output;
    EXPECT_TRUE(has(r.output, "must be an integer byte count with optional K, M, G or T suffix")) << r.output;
    ASSERT_EQ(rows_of(user), 4) << "gc --max-size " << size << " deleted rows: " << r.output;
  }
  for (const char* days : {"''", "inf", "nan", "1e30", "-1", "36501"}) {
    const CliRun r = run(std::string("gc --older-than ") + days);
    EXPECT_EQ(r.rc, 1) << days << ": " << r.output;
    EXPECT_TRUE(has(r.output, "--older-than '")) << r.output;
    ASSERT_EQ(rows_of(user), 4) << "gc --older-than " << days << " deleted rows: " << r.output;
  }
  // What the docs show still works, and keeps rows that fit.
  for (const char* ok : {"--max-size 500M", "--max-size 2G", "--max-size 1024T", "--max-size 64KiB", "--older-than 30",
                         "--older-than 0.5"}) {
    const CliRun r = run(std::string("gc ") + ok);
    EXPECT_EQ(r.rc, 0) << ok << ": " << r.output;
  }
  EXPECT_EQ(rows_of(user), 4);
}

// As root, export --force renamed its temporary over a device node; it created missing
// directories; and --out the user DB with --force replaced it by the rows exported (here only
// sm_90a's), losing the rest.
TEST_F(CliTest, ExportOutRefusesNonFilesMissingDirectoriesAndTheUserDb) {
  // Real kernels (export copies only binaries the cache can vouch for): four merge kernels, two
  // per arch, which NVRTC compiles in a fraction of a second.
  const std::string manifest = dir.file("m.json");
  std::ofstream(manifest) << R"({"kernels": [{"op": "merge", "dtype": ["f32", "bf16"], "head_dim": 64, "arch": ["sm_80", "sm_90a"]}]})";
  ASSERT_EQ(run("prewarm --manifest " + manifest).rc, 0);
  ASSERT_EQ(rows_of(user), 4);
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  std::vector<std::string> nodes = {fifo};
  const std::string dev = dir.file("null");
  if (geteuid() == 0 && mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) nodes.push_back(dev);
  for (const std::string& node : nodes) {
    const CliRun r = run("export --force --out " + node);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_TRUE(has(r.output, "--out '" + node + "': exists and is not a regular file")) << r.output;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  if (nodes.size() > 1) EXPECT_TRUE(fs::is_character_file(dev));

  const std::string deep = dir.file("no/such/dir/app.sqlite");
  CliRun r = run("export --out " + deep);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "is not an existing directory (export creates none)")) << r.output;
  EXPECT_FALSE(fs::exists(dir.path / "no"));
  r = run("export --out ''");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "--out '': must name the database file to write")) << r.output;

  for (const std::string& same : {user, dir.file("./user.sqlite"), (dir.path / "sub" / ".." / "user.sqlite").string()}) {
    if (same.find("sub") != std::string::npos) fs::create_directories(dir.path / "sub");
    r = run("export --force --arch sm_90a --out " + same);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_TRUE(has(r.output, "is the user cache (JITATTN_CACHE=" + user + ")")) << r.output;
    ASSERT_EQ(rows_of(user), 4) << "export --force over the user DB lost rows: " << r.output;
  }
  // An ordinary export, and replacing it with --force, still work.
  const std::string app = dir.file("app.sqlite");
  EXPECT_EQ(run("export --out " + app).rc, 0);
  r = run("export --force --arch sm_90a --out " + app);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(rows_of(app), 2);
}

// merge --out wrote through the same writer as export without export's check: --force renamed
// its temporary over a FIFO or device node, it created missing directories, and --out the user
// DB (however spelled, or through a symlink) replaced it by the merged rows.
TEST_F(CliTest, MergeOutRefusesWhatExportOutRefuses) {
  fill_user_db(user, 4);
  const std::string in = dir.file("in.sqlite");
  fill_user_db(in, 2);
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  std::vector<std::string> nodes = {fifo};
  const std::string dev = dir.file("null");
  if (geteuid() == 0 && mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) nodes.push_back(dev);
  for (const std::string& node : nodes) {
    const CliRun r = run("merge --force --out " + node + " " + in);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_TRUE(has(r.output, "--out '" + node + "': exists and is not a regular file; merge replaces only a database file"))
        << r.output;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  if (nodes.size() > 1) EXPECT_TRUE(fs::is_character_file(dev));

  CliRun r = run("merge --out " + dir.file("no/such/dir/all.sqlite") + " " + in);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "is not an existing directory (merge creates none)")) << r.output;
  EXPECT_FALSE(fs::exists(dir.path / "no"));
  r = run("merge --out '' " + in);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "--out '': must name the database file to write")) << r.output;

  fs::create_directories(dir.path / "sub");
  const std::string link = dir.file("link.sqlite");
  fs::create_symlink(user, link);
  for (const std::string& same : {user, dir.file("./user.sqlite"), (dir.path / "sub" / ".." / "user.sqlite").string(), link}) {
    r = run("merge --force --out " + same + " " + in);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_TRUE(has(r.output, "is the user cache (JITATTN_CACHE=" + user + "); merge writes a new database")) << r.output;
    ASSERT_EQ(rows_of(user), 4) << "merge --force over the user DB lost rows: " << r.output;
  }
  EXPECT_TRUE(fs::is_symlink(link));
  // An ordinary merge, and replacing its output with --force, still work. They need sound rows
  // (a merge whose rows are all skipped writes nothing): two real merge kernels.
  const std::string sound = dir.file("sound.sqlite"), manifest = dir.file("m.json");
  std::ofstream(manifest) << R"({"kernels": [{"op": "merge", "dtype": ["f32", "bf16"], "head_dim": 64, "arch": "sm_80"}]})";
  ASSERT_EQ(run("prewarm --manifest " + manifest, sound).rc, 0);
  const std::string all = dir.file("all.sqlite");
  EXPECT_EQ(run("merge --out " + all + " " + sound).rc, 0);
  r = run("merge --force --out " + all + " " + sound + " " + in);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(fs::is_regular_file(all));
  EXPECT_EQ(rows_of(all), 2);
}

// A user cache that cannot be written (a directory, /dev/null, a path under a regular file)
// left the runtime memory-only: prewarm compiled, stored nothing and exited 0.
// On sm_90a the backward's dK/dV kernel is the tma family (warp-specialized) at head dims 64 and
// 128; a JITATTN_BWD_TILE the tma family cannot take is a wgmma (cp.async) experiment where that
// family takes it, else an mma.sync one, run instead of being refused. JITATTN_BWD_FAMILY picks
// any of the three.
TEST_F(CliTest, AForcedBackwardTileTheTmaFamilyCannotTakeRunsOnWgmmaOrMma) {
  const std::string tma = "bwd.sm_90a.bf16.d128.v128.causal.lse.a16.tma_m64n128w12";
  const std::string wgmma = "bwd.sm_90a.bf16.d128.v128.causal.lse.a16.wgmma_m64n128w8";
  const std::string m32 = "bwd.sm_90a.bf16.d128.v128.causal.lse.a16.mma_m32n128w8";
  EXPECT_EQ(served_by("", m32), tma);
  EXPECT_EQ(served_by("", "bwd.sm_90a.bf16.d64.v64.causal.lse.a16.mma_m32n128w8"),
            "bwd.sm_90a.bf16.d64.v64.causal.lse.a16.tma_m64n128w12");
  EXPECT_EQ(served_by("JITATTN_BWD_TILE=m64n128w8", "bwd.sm_90a.bf16.d64.v64.causal.lse.a16.mma_m32n128w8"),
            "bwd.sm_90a.bf16.d64.v64.causal.lse.a16.wgmma_m64n128w8");  // a tile of the cp.async form
  EXPECT_EQ(served_by("JITATTN_BWD_TILE=m32n128w8", m32), m32);
  EXPECT_EQ(served_by("JITATTN_BWD_TILE=m64n128w8", m32), wgmma);  // a wgmma tile
  EXPECT_EQ(served_by("JITATTN_BWD_FAMILY=wgmma", m32), wgmma);
  EXPECT_EQ(served_by("JITATTN_BWD_FAMILY=tma", m32), tma);
  EXPECT_EQ(served_by("JITATTN_BWD_FAMILY=mma", m32), "bwd.sm_90a.bf16.d128.v128.causal.lse.a16.mma_m64n128w8");
}

// The sm_90a forward's families: tma by default, padded head dims (96) included; wgmma (cp.async)
// under JITATTN_FWD_FAMILY=wgmma, which serves multiples of 64 only (96 falls to mma.sync there).
// JITATTN_FWD_FAMILY=tma names the default's choice.
TEST_F(CliTest, TheForwardFamilyFollowsJitattnFwdFamily) {
  const std::string tma = "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.tma_m128n128w12";
  const std::string wgmma = "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.wgmma_m128n128w8";
  EXPECT_EQ(served_by("", wgmma), tma);
  EXPECT_EQ(served_by("JITATTN_FWD_FAMILY=wgmma", wgmma), wgmma);
  EXPECT_EQ(served_by("JITATTN_FWD_FAMILY=mma", tma), "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.mma_m128n64w4");
  const std::string padded = "fwd.sm_90a.bf16.d96.v96.causal.lse.a16.tma_m128n128w12";
  EXPECT_EQ(served_by("", padded), padded);
  EXPECT_EQ(served_by("JITATTN_FWD_FAMILY=tma", padded), padded);
  EXPECT_EQ(served_by("JITATTN_FWD_FAMILY=wgmma", padded).rfind("fwd.sm_90a.bf16.d96.v96.causal.lse.a16.mma_", 0), 0u)
      << served_by("JITATTN_FWD_FAMILY=wgmma", padded);
  EXPECT_EQ(served_by("JITATTN_FWD_FAMILY=mma", padded).rfind("fwd.sm_90a.bf16.d96.v96.causal.lse.a16.mma_", 0), 0u)
      << served_by("JITATTN_FWD_FAMILY=mma", padded);
  // A forced tile the tma kernel cannot take runs on cp.async wgmma at 128, on mma.sync at 96.
  EXPECT_EQ(served_by("JITATTN_TILE=m128n64w4", tma), "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.wgmma_m128n64w4");
  EXPECT_EQ(served_by("JITATTN_TILE=m128n64w4", padded), "fwd.sm_90a.bf16.d96.v96.causal.lse.a16.mma_m128n64w4");
}

// show --compile compiles as a first call would, prints NVRTC's time (per phase where NVRTC
// reports them) and stores nothing; --cubin writes the binary. Times are printed, never checked.
TEST_F(CliTest, ShowCompilePrintsTimesAndStoresNothing) {
  const std::string name = "bwd_pre.sm_80.f16.d32.v32.none.nolse.a16.simt_m4n1w4", cubin = dir.file("k.cubin");
  const CliRun r = run("show " + name + " --compile --repeat 2 --cubin " + cubin);
  if (has(r.output, "cannot load NVRTC")) GTEST_SKIP() << "no NVRTC: " << r.output;
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(has(r.output, "run 1 ")) << r.output;
  EXPECT_TRUE(has(r.output, "run 2 ")) << r.output;
  EXPECT_TRUE(has(r.output, "nothing stored")) << r.output;
  EXPECT_GT(fs::file_size(cubin), 0u);
  EXPECT_FALSE(fs::exists(user) && rows_of(user) > 0) << r.output;
  EXPECT_EQ(run("show " + name + " --repeat 2").rc, 2);  // --repeat needs --compile
}

// The binary was written through an unchecked ofstream: a --cubin that cannot be written (here a
// directory that does not exist) printed the path and exited 0.
TEST_F(CliTest, ShowCompileFailsWhenTheCubinCannotBeWritten) {
  const std::string name = "bwd_pre.sm_80.f16.d32.v32.none.nolse.a16.simt_m4n1w4", cubin = dir.file("no/such/dir/k.cubin");
  const CliRun r = run("show " + name + " --compile --cubin " + cubin);
  if (has(r.output, "cannot load NVRTC")) GTEST_SKIP() << "no NVRTC: " << r.output;
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "--cubin " + cubin + ": cannot write")) << r.output;
  EXPECT_FALSE(has(r.output, "  cubin       " + cubin)) << r.output;
}

// A live user DB copied with its non-empty -wal, to ship: verify read it with the WAL (3 rows,
// ok), the runtime reads a shipped DB without (2 rows). Verify now reads it as the runtime does.
TEST_F(CliTest, VerifyReadsAShippedDbAsTheRuntimeDoes) {
  const std::string app = dir.file("app.sqlite");
  {
    SqliteStore live(user, SqliteStore::Mode::ReadWrite);
    for (int i = 0; i < 2; ++i) live.put(make_record("fwd.k" + std::to_string(i), 4096, uint64_t(i)));
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(user.c_str(), &raw), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(raw, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(raw);
    live.put(make_record("fwd.k2", 4096, 2));
    fs::copy_file(user, app);
    fs::copy_file(user + "-wal", app + "-wal");
  }
  const CliRun r = run("verify " + app);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, app + ": schema 3, 2 rows")) << r.output;
  EXPECT_TRUE(has(r.output, "-wal is not empty")) << r.output;
  // (Its made-up binaries are no cubins, so verify fails either way; what matters is what it read.)
  const CliRun u = run("verify " + user);  // the user DB itself is read with its WAL, as the runtime does
  EXPECT_TRUE(has(u.output, user + ": schema 3, 3 rows")) << u.output;
  EXPECT_FALSE(has(u.output, "-wal is not empty")) << u.output;
}

// ls, show, doctor --kernel, import and gc opened a user DB the runtime refuses (a directory
// others can write): they listed rows calls would never get, and import and gc wrote it.
TEST_F(CliTest, ToolsApplyTheRuntimesRuleToAUserDbOthersCanWrite) {
  const fs::path shared = dir.path / "shared";
  fs::create_directories(shared);
  const std::string db = (shared / "kernels.sqlite").string(), other = dir.file("other.sqlite");
  fill_user_db(db, 4);
  fill_user_db(other, 2);
  ASSERT_EQ(::chmod(shared.c_str(), 0777), 0);
  CliRun r = run("ls", db);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, db + " (user): not used (" + shared.string() + " is writable by group or others)")) << r.output;
  r = run("doctor --kernel bwd_pre.sm_80.f16.d32.v32.none.nolse.a16.simt_m4n1w4", db);
  EXPECT_TRUE(has(r.output, "not used (")) << r.output;
  r = run("gc --older-than 0", db);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "gc: not writing user cache " + db)) << r.output;
  r = run("import " + other, db);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "import: not writing user cache " + db)) << r.output;
  ::chmod(shared.c_str(), 0700);
  EXPECT_EQ(rows_of(db), 4);
  EXPECT_EQ(run("ls", db).rc, 0);
}

// ls on a damaged user DB said "a read-only cache is never repaired" (of the user DB, which the
// runtime does repair) and exited 0.
TEST_F(CliTest, LsOfADamagedUserDbSaysWhatHappensAndFails) {
  fill_user_db(user, 2);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(user.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "UPDATE meta SET value = 'x' WHERE key = 'schema_version'", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(raw);
  const CliRun r = run("ls");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "nothing was changed")) << r.output;
  EXPECT_FALSE(has(r.output, "a read-only cache is never repaired")) << r.output;
  EXPECT_EQ(run("ls", dir.file("not-yet.sqlite")).rc, 0);  // a user DB not created yet is no failure
}

// merge of inputs whose rows are all skipped (here made-up binaries, no cubins) wrote an empty DB
// and its .sha256 and exited 0; export refuses that, and so does merge now.
TEST_F(CliTest, MergeOfOnlySkippedRowsWritesNothing) {
  const std::string in = dir.file("in.sqlite"), out = dir.file("merged.sqlite");
  fill_user_db(in, 2);
  const CliRun r = run("merge --out " + out + " " + in);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "nothing written to " + out)) << r.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".sha256"));
}

TEST_F(CliTest, PrewarmFailsWhenNothingCouldBeStored) {
  const std::string manifest = dir.file("m.jsonl"), file = dir.file("a_file");
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 32, "arch": "sm_80"})" << "\n";
  std::ofstream(file) << "x";
  for (const std::string& db : {dir.path.string(), std::string("/dev/null"), file + "/kernels.sqlite"}) {
    const CliRun r = run("prewarm --manifest " + manifest, db);
    EXPECT_EQ(r.rc, 1) << db << ": " << r.output;
    EXPECT_TRUE(has(r.output, "prewarm: nothing could be stored, the user cache (JITATTN_CACHE=" + db + ") is unusable: "))
        << db << ": " << r.output;
    EXPECT_FALSE(has(r.output, "compiled fwd.")) << db << ": " << r.output;
  }
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  EXPECT_TRUE(fs::is_regular_file(file));
}

TEST_F(CliTest, PrewarmFailsWhenTheUserDbIsUnreadable) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads a mode 000 file (PrewarmFailsWhenNothingCouldBeStored covers the rest)";
  const std::string manifest = dir.file("m.jsonl");
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 32, "arch": "sm_80"})" << "\n";
  fill_user_db(user, 1);
  ASSERT_EQ(chmod(user.c_str(), 0), 0);
  const CliRun r = run("prewarm --manifest " + manifest);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "prewarm: nothing could be stored")) << r.output;
}

TEST_F(CliTest, PrewarmMaxKernelsCapsWhatTheManifestsExpandTo) {
  const std::string six = dir.file("six.json"), other = dir.file("other.jsonl");
  std::ofstream(six) << R"({"dtype": ["f16", "bf16", "f32"], "head_dim": [32, 64], "arch": "sm_80"})";
  std::ofstream(other) << R"({"dtype": "f16", "head_dim": [96, 128], "arch": "sm_80"})" << "\n";
  CliRun r = run("prewarm --max-kernels 5 --manifest " + six);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "the entry stands for 6 kernels (dtype 3 x head_dim 2), more than the limit of 5")) << r.output;
  r = run("prewarm --max-kernels 7 --manifest " + six + " --manifest " + other);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "the manifests up to " + other + " stand for 8 kernels, more than the limit of 7")) << r.output;
  EXPECT_FALSE(has(r.output, "compiled fwd.")) << r.output;
  r = run("prewarm --max-kernels 0 --manifest " + six);
  EXPECT_EQ(r.rc, 2) << r.output;  // a usage error
}

// The user DB opened for writing, then every store failed (the disk filled, the file turned
// read-only): prewarm compiled, kept nothing and exited 0. Here a file size limit (RLIMIT_FSIZE,
// which binds root too) lets the open through but not the kernel's rows.
TEST_F(CliTest, PrewarmFailsWhenACompiledKernelCouldNotBeStored) {
  const std::string manifest = dir.file("m.jsonl");
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 32, "arch": "sm_80"})" << "\n";
  { SqliteStore db(user, SqliteStore::Mode::ReadWrite); }  // the schema, checkpointed: opening writes nothing more
  // Room for the DB and SQLite's 32 KiB WAL index, not for the kernel's binary (68 KiB).
  const uint64_t limit = std::max<uint64_t>(fs::file_size(user), 32768) + 8192;
  CliRun r = run("prewarm --manifest " + manifest, "", limit);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "FAILED fwd.sm_80.f16.d32.v32.")) << r.output;
  EXPECT_TRUE(has(r.output, "compiled, but could not be stored in the user cache: ")) << r.output;
  EXPECT_TRUE(has(r.output, "prewarm: 0 compiled, 0 already cached, 1 failed")) << r.output;
  EXPECT_EQ(rows_of(user), 0);
  // Without the limit the same run stores it.
  r = run("prewarm --manifest " + manifest);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(rows_of(user), 1);
}

// A user DB the process may only read opens read-only, so nothing would be stored: refused before
// compiling, like one that cannot be opened.
TEST_F(CliTest, PrewarmFailsWhenTheUserDbIsReadOnly) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes a mode 0444 file (PrewarmFailsWhenACompiledKernelCouldNotBeStored binds root)";
  const std::string manifest = dir.file("m.jsonl");
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 32, "arch": "sm_80"})" << "\n";
  fill_user_db(user, 1);
  ASSERT_EQ(chmod(user.c_str(), 0444), 0);
  const CliRun r = run("prewarm --manifest " + manifest);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "prewarm: nothing could be stored")) << r.output;
  EXPECT_TRUE(has(r.output, "it is opened read-only")) << r.output;
  EXPECT_FALSE(has(r.output, "compiled fwd.")) << r.output;
}

// export --manifest read manifests with prewarm's limit but had no --max-kernels to raise it,
// though its error said to.
TEST_F(CliTest, ExportMaxKernelsCapsWhatTheManifestsExpandTo) {
  const std::string six = dir.file("six.json"), other = dir.file("other.jsonl"), app = dir.file("app.sqlite");
  std::ofstream(six) << R"({"op": "merge", "dtype": ["f16", "bf16", "f32"], "head_dim": [32, 64], "arch": "sm_80"})";
  std::ofstream(other) << R"({"op": "merge", "dtype": "f16", "head_dim": [96, 128], "arch": "sm_80"})" << "\n";
  CliRun r = run("export --out " + app + " --max-kernels 5 --manifest " + six);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "the entry stands for 6 kernels (dtype 3 x head_dim 2), more than the limit of 5")) << r.output;
  r = run("export --out " + app + " --max-kernels 7 --manifest " + six + " --manifest " + other);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "the manifests up to " + other + " stand for 8 kernels, more than the limit of 7")) << r.output;
  EXPECT_FALSE(fs::exists(app)) << r.output;
  r = run("export --out " + app + " --max-kernels 0 --manifest " + six);
  EXPECT_EQ(r.rc, 2) << r.output;  // a usage error
  r = run("export --out " + app + " --max-kernels 8 --manifest " + six + " --manifest " + other);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(rows_of(app), 8);
}

// bench --decode checks its shape before it looks for a GPU, so a bad one is a usage error
// (exit 2) naming the option, here as on the GPU host; its options need --decode.
TEST_F(CliTest, BenchDecodeRefusesShapesThatAreNoDecodeStep) {
  const std::pair<const char*, const char*> cases[] = {
      {"--batch -1", "--batch -1 must be >= 1"},
      {"--batch 0", "--batch 0 must be >= 1"},
      {"--heads 32 --kv-heads 5", "--heads 32 is not a multiple of --kv-heads 5"},
      {"--kv-heads 0", "--kv-heads 0 must be >= 1"},
      {"--heads -4", "--heads -4 must be >= 1"},
      {"--head-dim 100", "--head-dim 100 must be a multiple of 8 in [8, 256]"},
      {"--queries 0", "--queries 0 must be >= 1"},
      {"--kv-lens 4096,-5", "--kv-lens: -5 must be in [1, 2^31)"},
      {"--page-size -1", "--page-size -1 must be >= 0"},
      {"--layouts dense,sparse", "--layouts: 'sparse' is not dense, dense_hm, padded or paged"},
      {"--layouts paged --page-size 0", "--layouts paged needs --page-size >= 1"},
  };
  for (const auto& [args, reason] : cases) {
    const CliRun r = run(std::string("bench --decode ") + args);
    EXPECT_EQ(r.rc, 2) << args << ": " << r.output;
    EXPECT_TRUE(has(r.output, std::string("jitattn: error: ") + reason)) << args << ": " << r.output;
    EXPECT_FALSE(has(r.output, "needs a CUDA GPU")) << args << ": " << r.output;
  }
  for (const char* args : {"bench --batch 8", "bench --kv-lens 4096", "bench --decode --masks", "bench --decode --bwd"}) {
    const CliRun r = run(args);
    EXPECT_EQ(r.rc, 2) << args << ": " << r.output;
  }
}

}  // namespace
}  // namespace jitattn::test
