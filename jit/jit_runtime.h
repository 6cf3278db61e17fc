// Signature → loaded CUfunction, through the layers of docs/design.md decision 5:
//   memory table (per CUDA context) → shipped DBs → user DB → NVRTC (one compile per key).
// kernel() is the hot path of every call: one hash, one shared-lock lookup, no allocation.
#pragma once
#include <atomic>
#include <cuda.h>

#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/layered_cache.h"
#include "jit/env.h"
#include "jit/signature.h"

namespace jitattn::jit {

// XXH3-128 over canonical name ‖ kernel_src hash ‖ compiler identity ‖ options ‖ the user
// variant's text ‖ the generated source (jit/codegen.h, entry without the key) ‖ format version.
std::string kernel_key(const KernelSpec& spec, const std::string& compiler_identity);
// Bumped when what a key stands for changes outside the source compiled (how a binary is loaded
// or checked). Changes to the generated code need no bump: its text is in the key.
// 3: the entry name carries the key (jit/codegen.h kernel_entry).
// 4: a user snippet that can end without returning is an error (jit/variant.cpp variant_source).
constexpr int kCacheFormatVersion = 4;

// Why a cached row's binary would not load as the kernel its row names, checked before the
// driver sees it: "" when it is a cubin defining kernel_entry(spec of r.name, r.key). Every
// cache layer's rows pass through it (and `jitattn verify` reports a failing row as corrupt).
std::string binding_problem(const cache::KernelRecord& r);

// How long a process waits for another process compiling the same key (cache/claim.h) before
// compiling it too.
constexpr int kClaimTimeoutMs = 300000;

// What JitRuntime::binary's `served_by` says for a binary compiled now: "nvrtc" or "hiprtc".
inline const char* compiled_by(Backend backend) { return backend == Backend::hip ? "hiprtc" : "nvrtc"; }
inline bool is_compiled(const std::string& served_by) { return served_by == "nvrtc" || served_by == "hiprtc"; }

struct LoadedKernel {
  CUfunction fn = nullptr;
  KernelSpec spec;
  int blocks_per_sm = 1;  // how many of its blocks an SM holds at once (the occupancy calculator)
};

// The CUDA context a call runs in, and what we need to know about its device. On AMD (no CUDA
// driver, a HIP device: jit/hip_driver.h) `ctx` is a token per device, not a CUcontext, and
// sm_count stays 1 (only the CUDA-only decode op and SwiGLU's grid cap read it).
struct ContextInfo {
  CUcontext ctx = nullptr;
  Backend backend = Backend::cuda;
  int device = 0;
  Arch arch;
  int sm_count = 1;
};

struct JitStats {
  std::atomic<int64_t> compiles{0}, memory_hits{0}, db_hits{0}, loads{0};
  std::atomic<int64_t> background{0};  // kernels prefetch_async started finding or compiling
  std::atomic<int64_t> claim_hits{0};  // compiles skipped: another process stored the row while this one waited for its claim
};

class JitRuntime {
 public:
  // The process-wide runtime, configured from the environment (jit/env.h).
  static JitRuntime& get();
  // A separate runtime with its own cache layers and policy (tests, tools).
  explicit JitRuntime(Env env);

  // The current context (or device `device`'s primary context, made current, when none is).
  // Throws if the current context belongs to another device than `device`. Without a CUDA
  // driver, AMD device `device` made current through HIP (never run on AMD hardware).
  const ContextInfo& context(int device);

  // The kernel for `sig` loaded in `ctx`. Hot path: lookup only, once warm.
  const LoadedKernel& kernel(const Signature& sig, const ContextInfo& ctx);

  // For an op whose call needs several kernels (the backward): finds or compiles, one thread each,
  // the binaries of those of `sigs` not loaded in `ctx` yet, so that a never-seen call waits for
  // its slowest compile rather than for their sum; kernel() then finds them in the user DB.
  // Only under JITATTN_JIT=on with a writable user DB (where a compile is stored), and only when
  // two or more are missing.
  // Errors are left for kernel() to raise, in the caller's order. Returns how many were missing.
  int prefetch(const std::vector<Signature>& sigs, const ContextInfo& ctx);

  // As prefetch, without waiting: the binaries of those of `sigs` not loaded in `ctx` and not
  // asked for before by prefetch_async are found or compiled on background threads, one each
  // (also when only one is missing), and land in the user DB; a kernel() or binary() of one of
  // them meanwhile waits for its compile rather than starting another. The threads are joined
  // at exit (an atexit handler registered after the compiler exists, so before it is destroyed)
  // or when this runtime is destroyed; a thread then waiting for another process's claim on its
  // key (cache/claim.h) gives that kernel up rather than hold the exit. Returns how many it started.
  int prefetch_async(const std::vector<Signature>& sigs, const ContextInfo& ctx);
  ~JitRuntime();

  // The binary for a spec, from the cache layers or compiled (honouring JITATTN_JIT). Works
  // without a GPU; this is what `jitattn prewarm` calls. `served_by` names the layer or the compiler (compiled_by).
  // `not_stored`, for a binary compiled now (by this call or one it waited for), says why it
  // could not be stored in the user DB (no user DB, opened read-only, a write that failed); it is
  // empty when it was stored, served from a layer, or JITATTN_JIT=readonly stores nothing.
  cache::KernelRecord binary(const KernelSpec& spec, std::string* served_by = nullptr, std::string* not_stored = nullptr);

  cache::LayeredCache& cache() { return cache_; }
  const Env& env() const { return env_; }
  JitStats& stats() { return stats_; }

 private:
  struct Fetched {
    cache::KernelRecord record;
    std::string served_by;  // a layer's path, or "nvrtc"
    std::string not_stored;  // compiled, but not stored in the user DB because of this
  };
  Fetched compile_and_store(const KernelSpec& spec, const std::string& key);

  struct MemKey {
    Signature sig;
    CUcontext ctx;
    bool operator==(const MemKey& o) const { return sig == o.sig && ctx == o.ctx; }
  };
  struct MemKeyHash {
    size_t operator()(const MemKey& k) const { return k.sig.hash() ^ (reinterpret_cast<size_t>(k.ctx) * 0x9e3779b97f4a7c15ull); }
  };

  Env env_;
  cache::LayeredCache cache_;
  JitStats stats_;

  std::shared_mutex table_mu_;
  std::unordered_map<MemKey, std::unique_ptr<LoadedKernel>, MemKeyHash> table_;

  std::mutex load_mu_;  // serializes module loads (slow path only)

  std::mutex inflight_mu_;
  std::map<std::string, std::shared_future<Fetched>> inflight_;

  std::mutex background_mu_;
  std::vector<std::thread> background_;                                // prefetch_async's threads
  std::unordered_set<MemKey, MemKeyHash> requested_;                   // and what they were asked for
  // Set when the threads are joined (exit, destruction): a background thread then stops waiting
  // for another process's claim on its key (up to kClaimTimeoutMs) and gives that kernel up.
  std::atomic<bool> stopping_{false};
  void join_background();

  std::shared_mutex ctx_mu_;
  std::vector<std::unique_ptr<ContextInfo>> contexts_;
  const ContextInfo& hip_context(int device);
  void load_hip(LoadedKernel& loaded, cache::KernelRecord& rec, std::string& served_by);
};

}  // namespace jitattn::jit
