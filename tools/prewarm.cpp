#include "tools/prewarm.h"

#include <CLI/CLI.hpp>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "cache/sqlite_store.h"
#include "jit/env.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"
#include "jit/hip_driver.h"
#include "jitattn/error.h"
#include "tools/manifest.h"

namespace jitattn::tools {

using jit::KernelSpec;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// "12.3 s" under a minute, "4 min 05 s" above: an ETA of 245.0 s reads worse than minutes.
std::string duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else std::snprintf(buf, sizeof buf, "%d min %02d s", int(s) / 60, int(s) % 60);
  return buf;
}

// Calls work(i) for every i < n on `jobs` threads, each taking the next index when it is free:
// compile times differ by 10x between small and large head dims, so static chunks would idle.
void parallel_for(size_t n, unsigned jobs, const std::function<void(size_t)>& work) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < jobs; ++t)
    threads.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) work(i);
    });
  for (auto& t : threads) t.join();
}

// What the user sees while prewarm runs. On a terminal: one progress line redrawn in place
// (and redrawn every quarter second, so elapsed time and ETA move during a long compile), with
// failures printed above it. Otherwise (a log, a pipe): one plain line per finished kernel, which
// greps and diffs well.
class Progress {
 public:
  Progress(size_t total, bool terminal) : total_(total), terminal_(terminal), t0_(Clock::now()) {
    if (!terminal_) return;
    // The bar takes what the counts leave of the line at their widest, so it keeps its width
    // as they grow and the line never wraps (which would break the \r redraw); at most 40.
    const int n = int(total_), widest = int(counts_text(total_, total_, n, n, n, "00 min 00 s", "00 min 00 s").size());
    bar_width_ = std::min(40, terminal_columns() - 1 - widest - 2);
    draw_locked();
    ticker_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stopped_; })) draw_locked();
    });
  }
  ~Progress() { finish(); }

  void done(const PrewarmResult& r) {
    std::lock_guard<std::mutex> lock(mu_);
    int& counter = r.outcome == PrewarmResult::Outcome::compiled ? compiled_
                   : r.outcome == PrewarmResult::Outcome::cached ? cached_
                                                                 : failed_;
    ++counter;
    if (terminal_) {
      if (r.outcome == PrewarmResult::Outcome::failed)
        std::printf("\r\033[KFAILED %s: %s\n", r.name.c_str(), first_line(r.detail).c_str());
      draw_locked();
      return;
    }
    switch (r.outcome) {
      case PrewarmResult::Outcome::compiled: std::printf("compiled %s in %.0f ms\n", r.name.c_str(), r.ms); break;
      case PrewarmResult::Outcome::cached: std::printf("cached %s (from %s)\n", r.name.c_str(), r.detail.c_str()); break;
      case PrewarmResult::Outcome::failed: std::printf("FAILED %s: %s\n", r.name.c_str(), first_line(r.detail).c_str()); break;
    }
    std::fflush(stdout);
  }

  // Stops the redraws and leaves the final bar on its own line.
  void finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      if (terminal_) {
        draw_locked();
        std::printf("\n");
        std::fflush(stdout);
      }
    }
    cv_.notify_all();
    if (ticker_.joinable()) ticker_.join();
  }

 private:
  static int terminal_columns() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
  }

  static std::string counts_text(size_t done, size_t total, int compiled, int cached, int failed,
                                 const std::string& elapsed, const std::string& eta) {
    char buf[200];
    std::snprintf(buf, sizeof buf, " %zu/%zu  compiled %d  cached %d  failed %d  %s  ETA %s", done, total, compiled,
                  cached, failed, elapsed.c_str(), eta.c_str());
    return buf;
  }

  // [#######.......] 37/120  compiled 30  cached 7  failed 0  12.3 s  ETA 28.0 s
  void draw_locked() {
    const size_t done = size_t(compiled_ + cached_ + failed_);
    const double elapsed = seconds_since(t0_);
    // Cached kernels take milliseconds and compiles seconds, so the rate is that of the kernels
    // that went to NVRTC (compiled or failed), and the rest are assumed to need it too; until one
    // has finished there is no estimate.
    const int slow = compiled_ + failed_;
    const std::string eta = done == total_ ? duration(0) : slow == 0 ? "-" : duration(elapsed / slow * double(total_ - done));
    const std::string counts = counts_text(done, total_, compiled_, cached_, failed_, duration(elapsed), eta);
    std::string bar;
    if (bar_width_ >= 5) {
      const size_t width = size_t(bar_width_), filled = total_ ? width * done / total_ : width;
      bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
    }
    std::printf("\r%s%s\033[K", bar.c_str(), counts.c_str());
    std::fflush(stdout);
  }

  const size_t total_;
  const bool terminal_;
  const Clock::time_point t0_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread ticker_;
  bool stopped_ = false;
  int bar_width_ = 0;
  int compiled_ = 0, cached_ = 0, failed_ = 0;
};

struct PrewarmArgs {
  std::vector<std::string> manifests;
  std::string archs;
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
  size_t max_kernels = kDefaultMaxKernels;
};

// A user cache that cannot be opened for writing (a directory, /dev/null, an unwritable file
// at JITATTN_CACHE) leaves the runtime memory-only, so every compile would be thrown away and
// prewarm would still exit 0. Refused before anything is compiled, with the reason.
void require_storable(jit::JitRuntime& rt) {
  const jit::Env& env = rt.env();
  if (env.jit == jit::JitPolicy::readonly || env.jit == jit::JitPolicy::off) return;  // nothing is stored anyway
  if (const cache::SqliteStore* user = rt.cache().user()) {
    if (user->writable()) return;
    throw Error("prewarm: nothing could be stored, the user cache (JITATTN_CACHE=" + env.cache_path +
                ") is unusable: it is opened read-only (no write permission, or a read-only file system)");
  }
  std::string why = "it cannot be opened";
  try {
    cache::SqliteStore probe(env.cache_path, cache::SqliteStore::Mode::ReadWrite);
  } catch (const std::exception& e) {
    why = e.what();
  }
  throw Error("prewarm: nothing could be stored, the user cache (JITATTN_CACHE=" + env.cache_path +
              ") is unusable: " + why);
}

// The targets of the GPUs this machine has: CUDA devices through the driver, AMD ones through
// the HIP runtime (jit/hip_driver.h); none without either.
std::vector<jit::Arch> device_archs() {
  std::vector<jit::Arch> archs;
  auto add = [&](const jit::Arch& a) {
    if (std::find(archs.begin(), archs.end(), a) == archs.end()) archs.push_back(a);
  };
  const jit::CudaDriver& d = jit::CudaDriver::get();
  int count = 0;
  if (d.available && d.cuDeviceGetCount(&count) == CUDA_SUCCESS)
    for (int i = 0; i < count; ++i) {
      CUdevice dev;
      int major = 0, minor = 0;
      if (d.cuDeviceGet(&dev, i) != CUDA_SUCCESS ||
          d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev) != CUDA_SUCCESS ||
          d.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev) != CUDA_SUCCESS)
        continue;
      const int sm = major * 10 + minor;
      if (sm >= 80) add(jit::Arch{uint8_t(sm), sm == 90, jit::Backend::cuda});
    }
  if (jit::amd_kernel_driver_present())
    for (const jit::HipDevice& dev : jit::HipDriver::get().devices)
      if (dev.arch) add(*dev.arch);
  return archs;
}

// "sm_80 60, sm_90a 60": how many kernels each target gets.
std::string per_arch(const std::vector<KernelSpec>& specs) {
  std::map<std::string, int> counts;
  for (const auto& s : specs) ++counts[s.sig.arch().name()];
  std::string out;
  for (const auto& [arch, n] : counts) out += (out.empty() ? "" : ", ") + arch + " " + std::to_string(n);
  return out;
}

int run_prewarm(const PrewarmArgs& a) {
  // Without --arch, entries without "arch" take the targets of this machine's GPUs, NVIDIA and AMD.
  const auto specs = read_manifests(a.manifests, a.archs.empty() ? device_archs() : parse_arch_list(a.archs), a.max_kernels);
  std::string manifests;
  for (const auto& m : a.manifests) manifests += (manifests.empty() ? "" : ", ") + m;
  if (specs.empty()) {
    std::printf("prewarm: %s lists no kernels\n", manifests.c_str());
    return 0;
  }
  jit::JitRuntime& rt = jit::JitRuntime::get();
  require_storable(rt);
  // The compiler of every backend the kernels target (NVRTC, hiprtc): even a cache lookup needs
  // it, every key names the compiler.
  std::string nvrtc;
  std::set<jit::Backend> backends;
  for (const auto& s : specs) backends.insert(jit::Backend(s.sig.backend));
  for (jit::Backend b : backends) {
    const char* what = b == jit::Backend::hip ? "hiprtc" : "NVRTC";
    try {
      const auto& c = jit::compiler_for(b);
      nvrtc += (nvrtc.empty() ? "" : ", ") + c.identity() + " (" + c.library_path() + ")";
    } catch (const std::exception& e) {
      throw Error(std::string(what) + " unavailable: " + e.what() + " (every cache key names the compiler)");
    }
  }
  const jit::Env& env = rt.env();
  const unsigned jobs = unsigned(std::max<size_t>(1, std::min<size_t>(a.jobs, specs.size())));
  std::printf("prewarm: %zu kernels (%s) from %s, %u jobs, %s, user cache %s%s\n", specs.size(), per_arch(specs).c_str(),
              manifests.c_str(), jobs, nvrtc.c_str(), env.cache_path.c_str(),
              env.jit == jit::JitPolicy::on ? "" : (std::string(", JITATTN_JIT=") + jit::to_string(env.jit)).c_str());
  std::fflush(stdout);

  Progress progress(specs.size(), isatty(STDOUT_FILENO) != 0);
  const PrewarmSummary sum = prewarm(rt, specs, jobs, [&](const PrewarmResult& r) { progress.done(r); });
  progress.finish();

  std::printf("prewarm: %d compiled, %d already cached, %d failed in %s (%.1f variants/s)\n", sum.compiled, sum.cached,
              sum.failed, duration(sum.seconds).c_str(), sum.seconds > 0 ? double(specs.size()) / sum.seconds : 0.0);
  if (sum.compiled == 0 && sum.failed == 0)
    std::printf("prewarm: nothing to compile, all %zu kernels were already cached\n", specs.size());
  if (env.jit == jit::JitPolicy::readonly && sum.compiled > 0)
    std::printf("prewarm: JITATTN_JIT=readonly, so nothing compiled was stored\n");
  if (sum.failed == 0) return 0;

  std::printf("prewarm: %d of %zu kernels failed:\n", sum.failed, specs.size());
  for (const auto& f : sum.failures) std::printf("  %s: %s\n", f.name.c_str(), first_line(f.detail).c_str());
  std::fflush(stdout);
  // The whole messages (NVRTC logs) go to stderr, so stdout stays one line per kernel.
  for (const auto& f : sum.failures)
    if (f.detail.find('\n') != std::string::npos) std::fprintf(stderr, "\n%s:\n%s\n", f.name.c_str(), f.detail.c_str());
  return 1;
}

}  // namespace

std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

std::vector<KernelSpec> read_manifests(const std::vector<std::string>& manifests, const std::vector<jit::Arch>& archs,
                                       size_t max_kernels) {
  std::vector<KernelSpec> specs;
  std::set<std::string> seen;
  for (const auto& path : manifests) {
    for (KernelSpec& spec : read_manifest(path, archs, max_kernels))
      if (seen.insert(spec.name()).second) specs.push_back(std::move(spec));
    if (specs.size() > max_kernels)
      throw Error("the manifests up to " + path + " stand for " + std::to_string(specs.size()) +
                  " kernels, more than the limit of " + std::to_string(max_kernels) + "; raise it with --max-kernels N");
  }
  return specs;
}

void add_max_kernels_option(CLI::App& cmd, size_t& max_kernels) {
  cmd.add_option("--max-kernels", max_kernels,
                 "refuse manifests that stand for more kernels than this (default " + std::to_string(kDefaultMaxKernels) + ")")
      ->check(CLI::PositiveNumber);
}

PrewarmSummary prewarm(jit::JitRuntime& rt, const std::vector<KernelSpec>& specs, unsigned jobs,
                       const std::function<void(const PrewarmResult&)>& on_done) {
  PrewarmSummary sum;
  std::vector<PrewarmResult> results(specs.size());
  std::mutex mu;
  const auto t0 = Clock::now();
  parallel_for(specs.size(), std::max(1u, jobs), [&](size_t i) {
    PrewarmResult r;
    r.name = specs[i].name();
    const auto t = Clock::now();
    try {
      std::string served_by, not_stored;
      rt.binary(specs[i], &served_by, &not_stored);
      r.outcome = jit::is_compiled(served_by) ? PrewarmResult::Outcome::compiled : PrewarmResult::Outcome::cached;
      if (r.outcome == PrewarmResult::Outcome::cached) r.detail = served_by;
      // Compiled but not kept (the DB turned read-only, the disk or a file size limit was hit
      // after the open): the kernel is not prewarmed, so it fails like a compile error.
      if (!not_stored.empty()) {
        r.outcome = PrewarmResult::Outcome::failed;
        r.detail = "compiled, but could not be stored in the user cache: " + not_stored;
      }
    } catch (const std::exception& e) {
      r.outcome = PrewarmResult::Outcome::failed;
      r.detail = e.what();
    }
    r.ms = seconds_since(t) * 1e3;
    std::lock_guard<std::mutex> lock(mu);
    ++(r.outcome == PrewarmResult::Outcome::compiled ? sum.compiled
       : r.outcome == PrewarmResult::Outcome::cached ? sum.cached
                                                     : sum.failed);
    if (on_done) on_done(r);
    results[i] = std::move(r);
  });
  sum.seconds = seconds_since(t0);
  for (auto& r : results)
    if (r.outcome == PrewarmResult::Outcome::failed) sum.failures.push_back(std::move(r));
  return sum;
}

Subcommand add_prewarm_command(CLI::App& app) {
  auto args = std::make_shared<PrewarmArgs>();  // outlives this function: parsing fills it later
  CLI::App* cmd = app.add_subcommand("prewarm", "compile the kernels of manifests into the user cache");
  cmd->add_option("--manifest,-m", args->manifests, "manifest file, JSON or JSON Lines (docs/manifest.md); repeatable")
      ->required();
  cmd->add_option("--arch", args->archs, "targets for entries without \"arch\", e.g. sm_80,sm_90a,gfx90a,gfx1030 (default: this machine's GPUs)");
  cmd->add_option("--jobs,-j", args->jobs, "parallel compiles (default: hardware threads)")->check(CLI::PositiveNumber);
  add_max_kernels_option(*cmd, args->max_kernels);
  return {cmd, [args] { return run_prewarm(*args); }};
}

}  // namespace jitattn::tools
