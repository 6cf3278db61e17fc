// The CLI on AMD targets, on a machine without any GPU, in fresh processes: prewarm --arch with
// gfx targets (and a clear error for an unknown one), one DB holding NVIDIA and AMD rows side by
// side, exported, verified and then serving every row with JITATTN_JIT=off.
//
// The tests that compile need NVRTC and hiprtc; without them they skip, unless
// JITATTN_TEST_REQUIRE_HIPRTC=1 (tools/test.sh, CI), where a missing hiprtc fails.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "cache/sqlite_store.h"
#include "cli_run.h"
#include "temp_dir.h"

namespace jitattn::test {
namespace {

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

size_t count(const std::string& text, const std::string& word) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(word, at)) != std::string::npos; at += word.size()) ++n;
  return n;
}

struct AmdCliTest : testing::Test {
  TempDir dir{"jitattn_amd_cli_test"};
  const std::string user = dir.file("user.sqlite");
  CliRun run(const std::string& args, const std::string& env = "") {
    return cli("JITATTN_CACHE=" + user + " " + env, args, dir.path);
  }
  // Skips (or fails where CI requires hiprtc) unless both compilers load.
  bool compilers_or_skip() {
    const CliRun d = run("doctor");
    const bool nvrtc = has(d.output, "NVRTC         nvrtc "), hiprtc = has(d.output, "hiprtc        hiprtc ");
    if (nvrtc && hiprtc) return true;
    const char* req = std::getenv("JITATTN_TEST_REQUIRE_HIPRTC");
    if (req && std::string(req) == "1") ADD_FAILURE() << "NVRTC and hiprtc are required here:\n" << d.output;
    return false;
  }
};

TEST_F(AmdCliTest, UnknownArchIsRefusedNamingTheArgumentAndTheRule) {
  const std::string manifest = dir.file("m.jsonl");
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 64})" << "\n";
  for (const char* arch : {"gfx9000", "gfx90a:xnack-", "gfx", "sm_75"}) {
    const CliRun r = run("prewarm --arch gfx90a," + std::string(arch) + " --manifest " + manifest);
    EXPECT_EQ(r.rc, 1) << arch << ": " << r.output;
    EXPECT_TRUE(has(r.output, "--arch: \"" + std::string(arch) + "\" is not a known target: ")) << r.output;
    EXPECT_TRUE(has(r.output, "gfx908, gfx90a, gfx942, gfx1030 (AMD)")) << r.output;
    EXPECT_TRUE(has(r.output, "sm_NN or sm_NNa with NN from 80 to 255 (NVIDIA)")) << r.output;
    EXPECT_FALSE(has(r.output, "compiled ")) << r.output;
  }
  // In a manifest entry too.
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 64, "arch": "gfx1200"})" << "\n";
  const CliRun r = run("prewarm --manifest " + manifest);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "arch")) << r.output;
  EXPECT_TRUE(has(r.output, "gfx1200")) << r.output;
  EXPECT_TRUE(has(r.output, "gfx908, gfx90a, gfx942, gfx1030 (AMD)")) << r.output;
}

// A kernel the AMD backend cannot serve is refused with the reason, not compiled.
TEST_F(AmdCliTest, CudaOnlyKernelsAreRefusedForAmdTargets) {
  const std::string manifest = dir.file("m.jsonl");
  std::ofstream(manifest) << R"({"op": "decode", "dtype": "bf16", "head_dim": 128, "arch": "gfx90a"})" << "\n";
  const CliRun r = run("prewarm --manifest " + manifest);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "the decode kernels are CUDA-only")) << r.output;
}

TEST_F(AmdCliTest, OneDbHoldsNvidiaAndAmdRowsAndShipsThem) {
  if (!compilers_or_skip()) GTEST_SKIP() << "needs NVRTC and hiprtc";
  const std::string manifest = dir.file("m.jsonl"), shipped = dir.file("app.sqlite");
  // The forward (f16, causal) and the merge, per target: 2 kernels x 3 targets.
  std::ofstream(manifest) << R"({"dtype": "f16", "head_dim": 64, "bias": "causal"})" << "\n"
                          << R"({"op": "merge", "dtype": "f16", "head_dim": 64})" << "\n";
  CliRun r = run("prewarm --arch sm_80,gfx90a,gfx1030 --manifest " + manifest);
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(has(r.output, "6 kernels (gfx1030 2, gfx90a 2, sm_80 2)")) << r.output;
  EXPECT_TRUE(has(r.output, "6 compiled, 0 already cached, 0 failed")) << r.output;
  EXPECT_TRUE(has(r.output, "compiled fwd.gfx90a.f16.d64.v64.causal.nolse.a16.simt_")) << r.output;
  EXPECT_TRUE(has(r.output, "compiled fwd.gfx1030.f16.d64.v64.causal.nolse.a16.simt_")) << r.output;
  EXPECT_TRUE(has(r.output, "compiled fwd.sm_80.f16.d64.v64.causal.nolse.a16.mma_")) << r.output;

  r = run("ls");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(count(r.output, " gfx90a "), 2u) << r.output;
  EXPECT_EQ(count(r.output, " gfx1030 "), 2u) << r.output;
  EXPECT_EQ(count(r.output, " sm_80 "), 2u) << r.output;
  r = run("ls --target gfx90a");
  EXPECT_EQ(count(r.output, " gfx90a "), 2u) << r.output;
  EXPECT_EQ(count(r.output, " sm_80 "), 0u) << r.output;

  r = run("export --out " + shipped);
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(has(r.output, "export: wrote 6 kernels")) << r.output;
  {
    cache::SqliteStore db(shipped, cache::SqliteStore::Mode::Inspect);
    EXPECT_EQ(db.row_count(), 6);
  }
  r = run("verify " + shipped);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(has(r.output, "6 rows")) << r.output;
  EXPECT_TRUE(has(r.output, ": ok\n")) << r.output;
  EXPECT_FALSE(has(r.output, "stale")) << r.output;
  EXPECT_FALSE(has(r.output, "not checked")) << r.output;  // both compilers' keys were recomputed

  // A fresh machine with only the shipped DB: every row is served, nothing compiles.
  r = cli("JITATTN_CACHE=" + dir.file("fresh.sqlite") + " JITATTN_CACHE_RO=" + shipped + " JITATTN_JIT=off",
          "prewarm --arch sm_80,gfx90a,gfx1030 --manifest " + manifest, dir.path);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(has(r.output, "0 compiled, 6 already cached, 0 failed")) << r.output;

  // An AMD row's binary swapped for another target's is caught by verify (EF_AMDGPU_MACH).
  {
    cache::SqliteStore db(user, cache::SqliteStore::Mode::ReadWrite);
    std::optional<cache::KernelRecord> a, b;
    for (const auto& row : db.list()) {
      if (row.target == "gfx90a" && row.name.rfind("fwd.", 0) == 0) a = db.get(row.key);
      if (row.target == "gfx1030" && row.name.rfind("fwd.", 0) == 0) b = db.get(row.key);
    }
    ASSERT_TRUE(a && b);
    a->binary = b->binary;  // a sound size and hash, the wrong target and entry
    a->size = b->size;
    a->binary_hash = b->binary_hash;
    db.put(*a);
  }
  r = run("verify " + user);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(has(r.output, "CORRUPT fwd.gfx90a.")) << r.output;
  EXPECT_TRUE(has(r.output, "not for gfx90a")) << r.output;
}

// ROCm 5.2's hiprtc is not thread-safe: two threads compiling first at once aborted ("Option 'h'
// registered more than once") or crashed in 3 of 20 runs of this command before HiprtcCompiler
// compiled one kernel at a time. Fresh processes, so each run's first compiles race again.
TEST_F(AmdCliTest, ConcurrentFirstCompilesInAFreshProcessDoNotCrash) {
  if (!compilers_or_skip()) GTEST_SKIP() << "needs NVRTC and hiprtc";
  const std::string manifest = dir.file("m.jsonl");
  std::ofstream(manifest) << R"({"dtype": ["f16", "bf16"], "head_dim": 32, "bias": ["none", "causal"]})" << "\n";
  for (int run = 0; run < 12; ++run) {
    const std::string db = dir.file("run" + std::to_string(run) + ".sqlite");
    const CliRun r = cli("JITATTN_CACHE=" + db, "prewarm --jobs 4 --arch gfx90a --manifest " + manifest, dir.path);
    ASSERT_EQ(r.rc, 0) << "run " << run << ":\n" << r.output;
    ASSERT_TRUE(has(r.output, "4 compiled, 0 already cached, 0 failed")) << r.output;
  }
}

}  // namespace
}  // namespace jitattn::test
