// CPU-only tests of what the cache vouches for (README "Trust"): a binary is served only as the
// kernel its key names, shipped DBs can be pinned by digest, a user cache others could write is
// not used, an unwritable or damaged cache degrades instead of failing calls, and processes that
// want the same kernel compile it once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/claim.h"
#include "cache/digest.h"
#include "cache/layered_cache.h"
#include "cache/shipping.h"
#include "cache/sqlite_store.h"
#include "jit/codegen.h"
#include "jit/cubin.h"
#include "jit/jit_runtime.h"
#include "jit/kernel_sources.h"
#include "jit/nvrtc_compiler.h"
#include "jitattn/error.h"
#include "cache_fixtures.h"
#include "child_process.h"
#include "read_only_file.h"
#include "temp_dir.h"
#include "test_env.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;
using Mode = SqliteStore::Mode;
using test::TempDir;

jit::KernelSpec small_spec(jit::BiasKind bias) {
  jit::Signature s;
  s.dtype = s.out_dtype = DType::f16;
  s.head_dim = s.head_dim_v = 32;
  s.bias = bias;
  s.arch_sm = 80;
  s.align = 16;
  return jit::make_spec(s);
}

KernelRecord synthetic(const std::string& name, uint64_t seed) { return test::make_record(name, 3000, seed); }

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool has_corrupt_copy(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".corrupt-") != std::string::npos) return true;
  return false;
}

// ---- binding a binary to its key --------------------------------------------------------

TEST(CacheBinding, CubinCheckWantsTheEntrySymbolOfItsKey) {
  const jit::KernelSpec spec = small_spec(jit::BiasKind::none);
  const std::string key = hash_hex("some key"), other = hash_hex("another key");
  const std::string cubin = jit::NvrtcCompiler::get().compile(spec, jit::generate_source(spec, key)).cubin;
  EXPECT_EQ(jit::cubin_problem(cubin, jit::kernel_entry(spec, key)), "");
  EXPECT_NE(jit::cubin_problem(cubin, jit::kernel_entry(spec, other)), "");
  EXPECT_NE(jit::cubin_problem(cubin, jit::kernel_entry(spec, "")), "");  // the old, key-less name
  EXPECT_NE(jit::cubin_problem(cubin.substr(0, cubin.size() / 3), jit::kernel_entry(spec, key)), "");
  EXPECT_NE(jit::cubin_problem("", jit::kernel_entry(spec, key)), "");
  EXPECT_NE(jit::cubin_problem(std::string(4096, '\x7f'), jit::kernel_entry(spec, key)), "");
}

// Two real rows with their binaries swapped, each row's hash and size made to agree: every
// column checks out, but neither binary is the kernel its key names.
TEST(CacheBinding, SwappedBinariesAreReportedByVerifyAndNeverServed) {
  TempDir dir("jitattn_trust_test");
  const std::string db = dir.file("kernels.sqlite");
  const jit::KernelSpec a = small_spec(jit::BiasKind::none), b = small_spec(jit::BiasKind::causal);
  {
    jit::JitRuntime rt(test::env_for(db, jit::JitPolicy::on));
    rt.binary(a);
    rt.binary(b);
  }
  {
    SqliteStore store(db, Mode::ReadWrite);
    const std::string id = jit::NvrtcCompiler::get().identity();
    KernelRecord ra = *store.get(jit::kernel_key(a, id)), rb = *store.get(jit::kernel_key(b, id));
    std::swap(ra.binary, rb.binary);
    ra.binary_hash.clear();  // put() fills in the hash of what it is given
    rb.binary_hash.clear();
    store.put(ra);
    store.put(rb);
  }
  CurrentBuild cur;
  cur.compiler = jit::NvrtcCompiler::get().identity();
  cur.source_hash = jit::kernel_sources_hash();
  cur.binding = jit::binding_problem;
  const VerifyReport rep = verify(db, cur);
  EXPECT_FALSE(rep.ok());
  ASSERT_EQ(rep.corrupt.size(), 2u);
  EXPECT_NE(rep.corrupt[0].why.find("defines no function"), std::string::npos) << rep.corrupt[0].why;
  {  // nor are they shipped or merged
    ShippedDbWriter w(dir.file("merged.sqlite"), false);
    const CopyReport merged = merge_into(w.store(), {db}, jit::binding_problem);
    EXPECT_EQ(merged.added, 0);
    EXPECT_EQ(merged.skipped.size(), 2u);
  }

  jit::JitRuntime deployed(test::env_for(db, jit::JitPolicy::off));
  EXPECT_THROW(deployed.binary(a), jitattn::Error);
  EXPECT_THROW(deployed.binary(b), jitattn::Error);
  EXPECT_EQ(deployed.stats().db_hits.load(), 0);
}

// What the runtime does when the driver refuses a cached binary: the row goes, from the user DB
// for good and from a shipped layer for this process, and the next layer serves.
TEST(CacheBinding, RejectedRowIsNeverServedAgain) {
  TempDir dir("jitattn_trust_test");
  const std::string shipped = dir.file("app.sqlite"), user = dir.file("user.sqlite");
  const KernelRecord r = synthetic("fwd.rejected", 1);
  {
    ShippedDbWriter w(shipped, false);
    w.add(r);
    w.finish();
  }
  LayeredCache layers({shipped}, user);
  layers.store(r);
  auto hit = layers.find(r.key);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->layer, shipped);
  layers.reject(*hit, "CUDA_ERROR_INVALID_IMAGE");
  hit = layers.find(r.key);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->layer, user);
  layers.reject(*hit, "CUDA_ERROR_NOT_FOUND");
  EXPECT_FALSE(layers.find(r.key).has_value());
  EXPECT_EQ(layers.user()->row_count(), 0);
}

// ---- degrade, never fail ----------------------------------------------------------------

TEST(CacheDegrade, ReadOnlyUserDbServesHitsUnderEveryPolicy) {
  TempDir dir("jitattn_trust_test");
  const std::string seed = dir.file("seed.sqlite");
  const jit::KernelSpec spec = small_spec(jit::BiasKind::causal);
  { jit::JitRuntime(test::env_for(seed, jit::JitPolicy::on)).binary(spec); }
  for (jit::JitPolicy policy : {jit::JitPolicy::on, jit::JitPolicy::off, jit::JitPolicy::readonly, jit::JitPolicy::redo}) {
    SCOPED_TRACE(jit::to_string(policy));
    const std::string db = dir.file(std::string("user-") + jit::to_string(policy) + ".sqlite");
    fs::copy_file(seed, db);
    test::ReadOnlyFile read_only(db);
    if (!read_only.ok()) GTEST_SKIP() << "cannot make a file unwritable here";
    jit::JitRuntime rt(test::env_for(db, policy));
    std::string served;
    ASSERT_NO_THROW(rt.binary(spec, &served));
    EXPECT_EQ(served, policy == jit::JitPolicy::redo ? "nvrtc" : db);
    ASSERT_NO_THROW(rt.binary(spec, &served));  // and again: every hit, not just the first
  }
}

// A read that meets a damaged page (no open reads every page any more) recovers the user DB:
// quick_check confirms the damage, the file is moved aside, and the cache carries on empty.
TEST(CacheDegrade, DamagedPageMetByALookupIsMovedAsideNotThrown) {
  TempDir dir("jitattn_trust_test");
  const std::string db = dir.file("kernels.sqlite");
  std::vector<KernelRecord> rows;
  {
    SqliteStore store(db, Mode::ReadWrite);
    for (int i = 0; i < 40; ++i) {
      rows.push_back(synthetic("fwd.k" + std::to_string(i), uint64_t(i)));
      store.put(rows.back());
    }
  }
  test::damage_root_page(db, "kernels");

  LayeredCache layers({}, db);
  ASSERT_NE(layers.user(), nullptr);
  ASSERT_NO_THROW(EXPECT_FALSE(layers.find(rows[7].key).has_value()));
  EXPECT_TRUE(has_corrupt_copy(dir.path));
  EXPECT_TRUE(layers.store(rows[7]));
  EXPECT_TRUE(layers.find(rows[7].key).has_value());
}

// ---- trust ------------------------------------------------------------------------------

TEST(CacheTrust, PinnedShippedDbWithAnotherDigestIsRefused) {
  TempDir dir("jitattn_trust_test");
  const std::string out = dir.file("app.sqlite");
  const KernelRecord r = synthetic("fwd.pinned", 2);
  std::string digest;
  {
    ShippedDbWriter w(out, false);
    w.add(r);
    w.finish();
    digest = w.digest();
  }
  EXPECT_EQ(digest, sha256_file_hex(out));
  EXPECT_EQ(slurp(out + ".sha256"), digest + "  app.sqlite\n");  // what `sha256sum -c` reads

  LayeredCache pinned({out}, dir.file("user.sqlite"), {digest});
  ASSERT_TRUE(pinned.find(r.key).has_value());
  std::string wrong = digest;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  LayeredCache mismatched({out}, dir.file("user2.sqlite"), {wrong});
  EXPECT_FALSE(mismatched.find(r.key).has_value());
  EXPECT_TRUE(mismatched.read_only().empty());

  CurrentBuild cur;
  cur.sha256 = wrong;
  EXPECT_FALSE(verify(out, cur).ok());
  cur.sha256 = digest;
  EXPECT_TRUE(verify(out, cur).ok());
}

// The pinned file and another swapped back and forth over its name (renameat2 RENAME_EXCHANGE,
// by a child process) while this process opens the pin again and again. Hashing by path and then
// letting SQLite open the path accepted the other file now and then (298 of 20000 opens), and a
// stat of the path before and after cannot see two swaps in between. Hashed through SQLite's own
// handle, an open either serves the pinned rows or is refused.
TEST(CacheTrust, PinnedDbSwappedDuringTheOpenIsNeverServedAsThePinnedOne) {
  TempDir dir("jitattn_trust_test");
  const std::string shipped = dir.file("app.sqlite"), other = dir.file("other.sqlite");
  std::string pin;
  const KernelRecord pinned_row = synthetic("fwd.pinned", 5), other_row = synthetic("fwd.other", 6);
  for (const auto& [path, row] : {std::pair{shipped, pinned_row}, std::pair{other, other_row}}) {
    ShippedDbWriter w(path, false);
    w.add(row);
    w.finish();
    if (path == shipped) pin = w.digest();
  }
  const pid_t swapper = ::fork();
  ASSERT_GE(swapper, 0);
  if (swapper == 0) {
    for (;;) ::syscall(SYS_renameat2, AT_FDCWD, shipped.c_str(), AT_FDCWD, other.c_str(), RENAME_EXCHANGE);
  }
  int served = 0, refused = 0, impostor = 0;
  for (int i = 0; i < 3000; ++i) {
    try {
      auto store = open_shipped(shipped, pin);
      if (store->get(pinned_row.key)) ++served;
      else ++impostor;
    } catch (const jitattn::Error&) {
      ++refused;
    }
  }
  ::kill(swapper, SIGKILL);
  ASSERT_EQ(::waitpid(swapper, nullptr, 0), swapper);
  EXPECT_EQ(impostor, 0) << served << " served, " << refused << " refused";
  EXPECT_GT(served + refused, 0);
}

// A pinned layer that is not a regular file used to hang the process: the hash read /dev/zero
// without end, and a FIFO waited for a writer. Now it is refused at once, pinned or not.
TEST(CacheTrust, PinnedLayerThatIsNotARegularFileIsRefusedNotHashed) {
  TempDir dir("jitattn_trust_test");
  const std::string fifo = dir.file("app.sqlite");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string zeros(64, '0');
  for (const std::string& path : {fifo, std::string("/dev/zero")}) {
    for (const std::string& pin : {zeros, std::string()}) {
      SCOPED_TRACE(path + (pin.empty() ? " unpinned" : " pinned"));
      const std::string err = dir.file("stderr");
      EXPECT_TRUE(test::finishes_in_child(err, 10, [&] {
        try {
          open_shipped(path, pin);
          std::fprintf(stderr, "opened\n");
          std::_Exit(4);
        } catch (const jitattn::Error& e) {
          std::fprintf(stderr, "%s\n", e.what());
        }
        LayeredCache layers({path}, dir.file("user.sqlite"), {pin});
        if (!layers.read_only().empty()) std::_Exit(5);
      })) << test::file_text(err);
      EXPECT_NE(test::file_text(err).find("is not a regular file"), std::string::npos) << test::file_text(err);
    }
  }
}

TEST(CacheTrust, CacheRoTakesPinnedAndPlainDbs) {
  const std::string hex(64, 'a');
  jit::Env env;
  jit::parse_cache_ro("/a/one.sqlite:/b/two.sqlite@sha256:" + std::string(64, 'A') + "::three.sqlite", env);
  ASSERT_EQ(env.cache_ro, (std::vector<std::string>{"/a/one.sqlite", "/b/two.sqlite", "three.sqlite"}));
  EXPECT_EQ(env.cache_ro_sha256, (std::vector<std::string>{"", hex, ""}));
  jit::Env bad;
  EXPECT_THROW(jit::parse_cache_ro("x.sqlite@sha256:1234", bad), jitattn::Error);
  EXPECT_THROW(jit::parse_cache_ro("x.sqlite@sha256:" + std::string(64, 'g'), bad), jitattn::Error);
}

// As ssh treats ~/.ssh: a user cache that someone else could write is not used at all.
TEST(CacheTrust, UserCacheOthersCouldWriteIsNotUsed) {
  TempDir dir("jitattn_trust_test");
  const fs::path shared = dir.path / "shared";
  fs::create_directories(shared);
  const std::string db = (shared / "kernels.sqlite").string();
  const KernelRecord r = synthetic("fwd.trust", 3);
  { SqliteStore(db, Mode::ReadWrite).put(r); }

  ::chmod(shared.c_str(), 0775);
  EXPECT_NE(untrusted_location(db), "");
  {
    LayeredCache layers({}, db);
    EXPECT_EQ(layers.user(), nullptr);
    EXPECT_FALSE(layers.find(r.key).has_value());
    EXPECT_FALSE(layers.store(synthetic("fwd.other", 4)));
  }
  ::chmod(shared.c_str(), 0755);
  ::chmod(db.c_str(), 0666);
  EXPECT_NE(untrusted_location(db), "");
  ::chmod(db.c_str(), 0644);
  EXPECT_EQ(untrusted_location(db), "");
  EXPECT_TRUE(LayeredCache({}, db).find(r.key).has_value());

  if (::geteuid() == 0) {  // only root can hand a file to another user
    ASSERT_EQ(::chown(db.c_str(), 65534, 65534), 0);
    EXPECT_NE(untrusted_location(db).find("owned by uid 65534"), std::string::npos);
    EXPECT_EQ(LayeredCache({}, db).user(), nullptr);
    ASSERT_EQ(::chown(db.c_str(), 0, 0), 0);
    ASSERT_EQ(::chown(shared.c_str(), 65534, 65534), 0);
    EXPECT_EQ(LayeredCache({}, db).user(), nullptr);
  }
}

// ---- one compile per key across processes -----------------------------------------------

// Eight processes want the same sixteen kernels at once; "compiling" one takes 20 ms and is
// counted in a shared file. With the claim each key is compiled exactly once.
TEST(CacheClaim, EightProcessesWantingSixteenKeysCompileEachOnce) {
  TempDir dir("jitattn_trust_test");
  const std::string db = dir.file("kernels.sqlite"), tally = dir.file("compiles");
  { SqliteStore(db, Mode::ReadWrite); }
  std::vector<KernelRecord> rows;
  for (int k = 0; k < 16; ++k) rows.push_back(synthetic("fwd.k" + std::to_string(k), uint64_t(k)));
  const auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  std::vector<pid_t> children;
  for (int p = 0; p < 8; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::this_thread::sleep_until(start);
      LayeredCache layers({}, db);
      for (const KernelRecord& r : rows) {
        if (layers.find(r.key)) continue;
        auto claim = layers.claim(r.key, 10000);
        if (!claim || !claim->held()) ::_exit(2);
        if (layers.find(r.key)) continue;  // another process stored it while we waited
        if (FILE* f = std::fopen(tally.c_str(), "a")) {
          std::fputc('x', f);
          std::fclose(f);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!layers.store(r)) ::_exit(3);
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  EXPECT_EQ(slurp(tally).size(), 16u);
  EXPECT_EQ(SqliteStore(db, Mode::Inspect).row_count(), 16);
  // Every holder removed its key's lock file; only the repair lock, which is never removed
  // (cache/sqlite_store.cpp), stays.
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(db + ".locks")) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"repair.lock"});
}

TEST(CacheClaim, KilledHolderNeverLeavesAKeyStuck) {
  TempDir dir("jitattn_trust_test");
  const std::string locks = dir.file("kernels.sqlite.locks"), key = hash_hex("stuck?");
  for (const bool kill_it : {false, true}) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      KeyClaim claim(locks, key, 1000);
      const char ok = claim.held() ? 1 : 0;
      if (::write(ready[1], &ok, 1) != 1) ::_exit(1);
      ::pause();  // holds the claim until killed
      ::_exit(0);
    }
    char ok = 0;
    ASSERT_EQ(::read(ready[0], &ok, 1), 1);
    ::close(ready[0]);
    ::close(ready[1]);
    ASSERT_EQ(ok, 1);
    if (kill_it) {
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
      KeyClaim mine(locks, key, 5000);
      EXPECT_TRUE(mine.held());  // the kernel released the dead holder's lock
    } else {
      KeyClaim mine(locks, key, 100);  // a live holder: the wait runs out, never hangs
      EXPECT_FALSE(mine.held());
      EXPECT_TRUE(mine.waited());
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
}

}  // namespace
}  // namespace jitattn::cache
