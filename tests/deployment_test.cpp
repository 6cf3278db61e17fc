// The deployment path end to end, through the CLI in fresh processes: compile, export, then a
// process with no NVRTC at all and JITATTN_JIT=off is served every kernel by the shipped DB.
#include <gtest/gtest.h>

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
  const std::string build_db = (dir / "build.sqlite").string(), app_db = (dir / "app.sqlite").string();

  // 1. Build machine: the demo compiles its kernels (and runs them where there is a GPU).
  CliRun r = cli("JITATTN_CACHE=" + build_db, "demo", dir);
  ASSERT_EQ(r.rc, 0) << r.output;
  const size_t kernels = count(r.output, "compiled by NVRTC") + count(r.output, "loaded from cache");
  ASSERT_GE(kernels, 3u) << r.output;

  // 2. Ship: a compact read-only DB.
  r = cli("JITATTN_CACHE=" + build_db, "export --out " + app_db, dir);
  ASSERT_EQ(r.rc, 0) << r.output;

  // 3. Production: no NVRTC, compiling forbidden, an empty user DB. Every kernel comes from app.sqlite.
  const std::string prod = "JITATTN_NVRTC=" + (dir / "no-such-libnvrtc.so").string() +
                           " JITATTN_JIT=off JITATTN_CACHE=" + (dir / "user.sqlite").string();
  r = cli(prod + " JITATTN_CACHE_RO=" + app_db, "demo", dir);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(count(r.output, "loaded from cache"), kernels) << r.output;
  EXPECT_EQ(count(r.output, "compiled by NVRTC"), 0u) << r.output;

  // Without the shipped DB the same process fails, saying why.
  r = cli(prod, "demo", dir);
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("cannot load NVRTC"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no cache layer holds"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
