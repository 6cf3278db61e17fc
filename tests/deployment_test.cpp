// The deployment path end to end, through the CLI in fresh processes: compile, export, then a
// process with no NVRTC at all and JITATTN_JIT=off is served every kernel by the shipped DB.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <random>

#include "cli_run.h"

namespace {

namespace fs = std::filesystem;

using jitattn::test::cli;
using jitattn::test::CliRun;

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

TEST(Deployment, ShippedDbServesAProcessWithoutNvrtc) {
  const fs::path dir = fs::temp_directory_path() / ("jitattn_deploy_" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);  // a user cache others could write is not used
  const std::string build_db = (dir / "build.sqlite").string(), app_db = (dir / "app.sqlite").string();

  // 1. Build machine: the demo compiles its kernels (and runs them where there is a GPU).
  CliRun r = cli("JITATTN_CACHE=" + build_db, "demo", dir);
  ASSERT_EQ(r.rc, 0) << r.output;
  const size_t kernels = count(r.output, "compiled by NVRTC") + count(r.output, "loaded from cache");
  ASSERT_GE(kernels, 3u) << r.output;

  // 2. Ship: a compact read-only DB.
  r = cli("JITATTN_CACHE=" + build_db, "export --out " + app_db, dir);
  ASSERT_EQ(r.rc, 0) << r.output;

  // 3. Production: no NVRTC, compiling forbidden, an empty user DB. Every kernel comes from
  // app.sqlite, pinned by the digest export wrote next to it.
  std::string digest;
  std::ifstream(app_db + ".sha256") >> digest;
  ASSERT_EQ(digest.size(), 64u);
  EXPECT_NE(r.output.find("JITATTN_CACHE_RO=" + app_db + "@sha256:" + digest), std::string::npos) << r.output;
  const std::string prod = "JITATTN_NVRTC=" + (dir / "no-such-libnvrtc.so").string() +
                           " JITATTN_JIT=off JITATTN_CACHE=" + (dir / "user.sqlite").string();
  r = cli(prod + " JITATTN_CACHE_RO=" + app_db + "@sha256:" + digest, "demo", dir);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(count(r.output, "loaded from cache"), kernels) << r.output;
  EXPECT_EQ(count(r.output, "compiled by NVRTC"), 0u) << r.output;

  // A pin the file does not match: the layer is refused, so nothing serves.
  std::string wrong = digest;
  wrong[0] = wrong[0] == 'f' ? '0' : 'f';
  r = cli(prod + " JITATTN_CACHE_RO=" + app_db + "@sha256:" + wrong, "demo", dir);
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("not the pinned " + wrong), std::string::npos) << r.output;

  // Without the shipped DB the same process fails, saying why.
  r = cli(prod, "demo", dir);
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("cannot load NVRTC"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no cache layer holds"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

// Two real rows of one DB with their (binary, binary_hash, size) swapped: each row agrees with
// itself, so only the entry symbol, which carries the key, tells that the binary is foreign.
TEST(Deployment, VerifyReportsAForeignCubinUnderARealKey) {
  const fs::path dir = fs::temp_directory_path() / ("jitattn_deploy_" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);  // a user cache others could write is not used
  const std::string db = (dir / "kernels.sqlite").string(), manifest = (dir / "m.json").string();
  std::ofstream(manifest) << R"({"dtype": "f32", "head_dim": 32, "bias": ["none", "causal"], "arch": "sm_80"})";
  CliRun r = cli("JITATTN_CACHE=" + db, "prewarm --manifest " + manifest + " --jobs 2", dir);
  ASSERT_EQ(r.rc, 0) << r.output;
  r = cli("JITATTN_CACHE=" + db, "verify " + db, dir);
  ASSERT_EQ(r.rc, 0) << r.output;

  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h,
                         "CREATE TEMP TABLE t AS SELECT key, binary, binary_hash, size FROM kernels;"
                         "UPDATE kernels SET binary = (SELECT binary FROM t WHERE t.key != kernels.key),"
                         " binary_hash = (SELECT binary_hash FROM t WHERE t.key != kernels.key),"
                         " size = (SELECT size FROM t WHERE t.key != kernels.key);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(h);
  sqlite3_close(h);

  r = cli("JITATTN_CACHE=" + db, "verify " + db, dir);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_EQ(count(r.output, "CORRUPT"), 2u) << r.output;
  EXPECT_NE(r.output.find("defines no function"), std::string::npos) << r.output;
  // And the runtime would not serve it: asked the way a call asks, the row fails its checks.
  r = cli("JITATTN_JIT=off JITATTN_CACHE=" + db, "doctor --kernel fwd.sm_80.f32.d32.v32.causal.nolse.a4.simt_m16n32w4", dir);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("failed its checks"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
