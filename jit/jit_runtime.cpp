#include "jit/jit_runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <system_error>
#include <thread>

#include "cache/digest.h"
#include "jit/codegen.h"
#include "jit/cubin.h"
#include "jit/cuda_driver.h"
#include "jit/hip_driver.h"
#include "jit/kernel_sources.h"
#include "jit/compiler.h"
#include "jit/recorder.h"
#include "jit/variant.h"
#include "jitattn/error.h"

namespace jitattn::jit {

namespace {
thread_local bool tl_background = false;  // this thread is one of prefetch_async's
}  // namespace

std::string kernel_key(const KernelSpec& spec, const std::string& compiler_identity) {
  std::string material = spec.name();
  material += '\n' + kernel_sources_hash() + '\n' + compiler_identity + '\n';
  for (const auto& o : compile_options(spec)) material += o + ' ';
  if (spec.sig.variant) material += '\n' + variant_code(spec.sig.variant)->canonical();  // the whole text, not its id
  // The generated source itself (its entry without the key, which is derived from this): a change
  // to jit/codegen.cpp or jit/variant.cpp that changes the code compiled is a new key by itself,
  // so no binary compiled from other code is ever served under this one.
  material += '\n' + cache::hash_hex(generate_source(spec));
  material += "\nformat " + std::to_string(kCacheFormatVersion);
  return cache::hash_hex(material);
}

std::string binding_problem(const cache::KernelRecord& r) {
  const auto spec = KernelSpec::parse(r.name);
  if (!spec) return "its name is not a canonical kernel name";
  return binary_problem(r.binary, kernel_entry(*spec, r.key), spec->sig.arch());
}

JitRuntime::JitRuntime(Env env)
    : env_(std::move(env)), cache_(env_.cache_ro, env_.cache_path, env_.cache_ro_sha256, binding_problem) {}

JitRuntime& JitRuntime::get() {
  static JitRuntime runtime(Env::get());
  return runtime;
}

const ContextInfo& JitRuntime::hip_context(int device) {
  const HipDriver& h = HipDriver::get();
  if (device < 0 || size_t(device) >= h.devices.size())
    throw Error(ErrorKind::cuda, "device=" + std::to_string(device) + " but this machine has " + std::to_string(h.devices.size()) +
                                     " AMD GPUs (and no CUDA driver)");
  const HipDevice& dev = h.devices[size_t(device)];
  if (!dev.arch)
    throw Error(ErrorKind::cuda, "AMD GPU " + std::to_string(device) + " is " + (dev.gcn_arch.empty() ? "of an unknown target" : dev.gcn_arch) +
                                     ", not a target jitattn compiles for (" + Arch::rule() + ")");
  if (const int rc = h.hipSetDevice(device); rc != 0)  // per thread, as a CUDA context is current per thread
    throw Error(ErrorKind::cuda, "hipSetDevice(" + std::to_string(device) + "): " + h.hipGetErrorString(rc));
  {
    std::shared_lock<std::shared_mutex> lock(ctx_mu_);
    for (const auto& info : contexts_)
      if (info->backend == Backend::hip && info->device == device) return *info;
  }
  auto info = std::make_unique<ContextInfo>();
  info->ctx = reinterpret_cast<CUcontext>(info.get());  // a token per device for the memory table
  info->backend = Backend::hip;
  info->device = device;
  info->arch = *dev.arch;
  std::unique_lock<std::shared_mutex> lock(ctx_mu_);
  for (const auto& other : contexts_)
    if (other->backend == Backend::hip && other->device == device) return *other;  // another thread was first
  contexts_.push_back(std::move(info));
  return *contexts_.back();
}

// The HIP module API's part of kernel(): a cached code object the runtime refuses is a corrupt
// row (dropped, the next layer or a compile serves), as for CUDA. Never run on an AMD GPU.
void JitRuntime::load_hip(LoadedKernel& loaded, cache::KernelRecord& rec, std::string& served_by) {
  const HipDriver& h = HipDriver::get();
  for (int attempt = 1;; ++attempt) {
    hip::hipModule_t module = nullptr;
    hip::hipFunction_t fn = nullptr;
    int rc = h.hipModuleLoadData(&module, rec.binary.data());
    const char* step = "hipModuleLoadData";
    if (rc == 0) {
      rc = h.hipModuleGetFunction(&fn, module, kernel_entry(loaded.spec, rec.key).c_str());
      step = "hipModuleGetFunction";
      if (rc != 0) h.hipModuleUnload(module);
    }
    if (rc == 0) {
      loaded.fn = reinterpret_cast<CUfunction>(fn);
      return;
    }
    const std::string why = std::string(step) + " failed: " + h.hipGetErrorString(rc);
    if (is_compiled(served_by) || attempt == 4) throw Error(ErrorKind::cuda, why + " (" + rec.name + ")");
    cache_.reject({rec, served_by}, why);
    rec = binary(loaded.spec, &served_by);
  }
}

const ContextInfo& JitRuntime::context(int device) {
  // No CUDA driver but an AMD GPU: the HIP backend (jit/hip_driver.h). Without AMD's kernel
  // driver ROCm is never loaded (a CPU-only process, a sanitizer run, stays free of it).
  if (!CudaDriver::get().available && amd_kernel_driver_present() && !HipDriver::get().devices.empty())
    return hip_context(device);
  const CudaDriver& d = CudaDriver::require();
  CUcontext ctx = nullptr;
  check_cuda(d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  if (!ctx) {
    int count = 0;
    check_cuda(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (device < 0 || device >= count)
      throw Error(ErrorKind::cuda, "device=" + std::to_string(device) + " but this machine has " + std::to_string(count) + " CUDA devices");
    CUdevice dev;
    check_cuda(d.cuDeviceGet(&dev, device), "cuDeviceGet");
    check_cuda(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");  // kept for the process
    check_cuda(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  }
  {
    std::shared_lock<std::shared_mutex> lock(ctx_mu_);
    for (const auto& info : contexts_)
      if (info->ctx == ctx) {
        if (info->device != device)
          throw Error(ErrorKind::cuda, "tensors are on device " + std::to_string(device) + " but the current CUDA context is on device " +
                      std::to_string(info->device));
        return *info;
      }
  }
  auto info = std::make_unique<ContextInfo>();
  info->ctx = ctx;
  CUdevice dev;
  check_cuda(d.cuCtxGetDevice(&dev), "cuCtxGetDevice");
  info->device = int(dev);
  int major = 0, minor = 0;
  check_cuda(d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute");
  check_cuda(d.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute");
  info->arch.sm = uint8_t(major * 10 + minor);
  check_cuda(d.cuDeviceGetAttribute(&info->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev), "cuDeviceGetAttribute");
  info->arch.specific = info->arch.sm == 90;  // Hopper kernels need sm_90a
  if (info->arch.sm < 80)
    throw Error(ErrorKind::cuda, "device " + std::to_string(info->device) + " is " + info->arch.name() + "; jitattn needs sm_80 or newer");
  if (info->device != device)
    throw Error(ErrorKind::cuda, "tensors are on device " + std::to_string(device) + " but the current CUDA context is on device " +
                std::to_string(info->device));
  std::unique_lock<std::shared_mutex> lock(ctx_mu_);
  contexts_.push_back(std::move(info));
  return *contexts_.back();
}

int JitRuntime::prefetch(const std::vector<Signature>& sigs, const ContextInfo& ctx) {
  if (env_.jit != JitPolicy::on) return 0;
  std::vector<KernelSpec> missing;
  {
    std::shared_lock<std::shared_mutex> lock(table_mu_);
    for (const Signature& s : sigs) {
      if (table_.count(MemKey{s, ctx.ctx})) continue;
      if (std::any_of(missing.begin(), missing.end(), [&](const KernelSpec& m) { return m.sig == s; })) continue;
      missing.push_back(make_spec(s));
    }
  }
  if (missing.size() < 2) return 0;  // a warm call ends here, having taken only the table's shared lock
  // What the threads compile reaches kernel() through the user DB; without a writable one, each
  // kernel() would compile again.
  const cache::SqliteStore* user = cache_.user();
  if (!user || !user->writable()) return 0;
  std::vector<std::thread> threads;
  threads.reserve(missing.size());
  try {
    for (const KernelSpec& spec : missing)
      threads.emplace_back([this, &spec] {
        try {
          if (validate_spec(spec).empty()) (void)binary(spec);
        } catch (...) {  // kernel() compiles it again and raises the error where the caller expects it
        }
      });
  } catch (const std::system_error&) {  // no thread to be had: kernel() fetches the rest in turn
  }
  for (auto& t : threads) t.join();
  return int(missing.size());
}

int JitRuntime::prefetch_async(const std::vector<Signature>& sigs, const ContextInfo& ctx) {
  if (env_.jit != JitPolicy::on) return 0;
  std::vector<MemKey> ask;
  {
    std::shared_lock<std::shared_mutex> lock(table_mu_);
    for (const Signature& s : sigs)
      if (!table_.count(MemKey{s, ctx.ctx})) ask.push_back(MemKey{s, ctx.ctx});
  }
  if (ask.empty()) return 0;  // a warm call ends here
  const cache::SqliteStore* user = cache_.user();
  if (!user || !user->writable()) return 0;  // what the threads compile would be lost
  std::vector<KernelSpec> missing;
  {
    std::lock_guard<std::mutex> lock(background_mu_);
    for (const MemKey& k : ask)
      if (requested_.insert(k).second) missing.push_back(make_spec(k.sig));
  }
  if (missing.empty()) return 0;
  // The threads use the compiler's process-wide instance: it must exist before the exit handler
  // that joins them is registered, so that the handler runs before it is destroyed.
  try {
    for (const KernelSpec& spec : missing) (void)compiler_for(Backend(spec.sig.backend));
  } catch (...) {
    return 0;  // no compiler: kernel() reports it
  }
  if (this == &get()) {
    static std::once_flag registered;
    std::call_once(registered, [] { std::atexit([] { get().join_background(); }); });
  }
  int started = 0;
  std::lock_guard<std::mutex> lock(background_mu_);
  for (KernelSpec& spec : missing) {
    const MemKey asked{spec.sig, ctx.ctx};
    try {
      background_.emplace_back([this, spec = std::move(spec)] {
        tl_background = true;
        try {
          if (validate_spec(spec).empty()) (void)binary(spec);
        } catch (...) {  // kernel() compiles it again and raises the error where the caller expects it
        }
      });
      ++started;
      stats_.background.fetch_add(1, std::memory_order_relaxed);
    } catch (const std::system_error&) {  // no thread to be had: kernel() compiles it when asked,
      requested_.erase(asked);             // and a later prefetch_async may try again
    }
  }
  return started;
}

void JitRuntime::join_background() {
  stopping_.store(true, std::memory_order_relaxed);
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(background_mu_);
    threads.swap(background_);
  }
  for (auto& t : threads)
    if (t.joinable()) t.join();
}

JitRuntime::~JitRuntime() { join_background(); }

const LoadedKernel& JitRuntime::kernel(const Signature& sig, const ContextInfo& ctx) {
  const MemKey mk{sig, ctx.ctx};
  {
    std::shared_lock<std::shared_mutex> lock(table_mu_);
    auto it = table_.find(mk);
    if (it != table_.end()) {
      stats_.memory_hits.fetch_add(1, std::memory_order_relaxed);
      return *it->second;
    }
  }
  // Slow path: find or compile the binary, then load it into this context.
  auto loaded = std::make_unique<LoadedKernel>();
  loaded->spec = make_spec(sig);
  const std::string problem = validate_spec(loaded->spec);
  if (!problem.empty()) throw Error(loaded->spec.name() + ": " + problem);
  // Recorded before the lookup, so a run under JITATTN_JIT=off still lists what it missed.
  if (!env_.record_path.empty()) Recorder::for_path(env_.record_path).record(sig);
  std::string served_by;
  cache::KernelRecord rec = binary(loaded->spec, &served_by);

  std::lock_guard<std::mutex> load_lock(load_mu_);
  {
    std::shared_lock<std::shared_mutex> lock(table_mu_);
    auto it = table_.find(mk);
    if (it != table_.end()) return *it->second;  // another thread loaded it meanwhile
  }
  if (sig.backend == uint8_t(Backend::hip)) {
    load_hip(*loaded, rec, served_by);  // LDS needs no opt-in; occupancy stays 1 (read by decode only)
    stats_.loads.fetch_add(1, std::memory_order_relaxed);
    std::unique_lock<std::shared_mutex> lock(table_mu_);
    auto& slot = table_[mk];
    slot = std::move(loaded);
    return *slot;
  }
  const CudaDriver& d = CudaDriver::require();
  // A cached binary the driver refuses (or that lacks its entry) is a corrupt row: it is
  // dropped and the next layer or a compile serves. A fresh compile that fails is an error.
  for (int attempt = 1;; ++attempt) {
    CUmodule module = nullptr;
    CUresult rc = d.cuModuleLoadData(&module, rec.binary.data());
    const char* step = "loading";
    if (rc == CUDA_SUCCESS) {
      rc = d.cuModuleGetFunction(&loaded->fn, module, kernel_entry(loaded->spec, rec.key).c_str());
      step = "cuModuleGetFunction";
      if (rc != CUDA_SUCCESS) d.cuModuleUnload(module);
    }
    if (rc == CUDA_SUCCESS) break;
    if (served_by == "nvrtc" || attempt == 4) check_cuda(rc, (std::string(step) + " " + rec.name).c_str());
    const char* name = nullptr;
    d.cuGetErrorName(rc, &name);
    cache_.reject({rec, served_by}, std::string(step) + " failed: " + (name ? name : "?"));
    rec = binary(loaded->spec, &served_by);
  }
  check_cuda(d.cuFuncSetAttribute(loaded->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, loaded->spec.smem_bytes()),
             ("setting the shared memory of " + rec.name).c_str());
  check_cuda(d.cuOccupancyMaxActiveBlocksPerMultiprocessor(&loaded->blocks_per_sm, loaded->fn, loaded->spec.threads(),
                                                           size_t(loaded->spec.smem_bytes())),
             ("the occupancy of " + rec.name).c_str());
  stats_.loads.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock<std::shared_mutex> lock(table_mu_);
  auto& slot = table_[mk];
  slot = std::move(loaded);
  return *slot;
}

cache::KernelRecord JitRuntime::binary(const KernelSpec& spec, std::string* served_by, std::string* not_stored) {
  if (not_stored) not_stored->clear();
  const Env& env = env_;
  // The key names the compiler (of the spec's backend: NVRTC or hiprtc). A deployment without it
  // cannot compute the key; there a row
  // compiled from this very kernel_src serves, whichever compiler wrote it, and a miss is an error.
  std::string identity;
  try {
    identity = compiler_for(Backend(spec.sig.backend)).identity();
  } catch (const Error& e) {
    // The row must be what its name says under the compiler it names: its key is the one that
    // compiler gives this spec (the entry symbol then ties the binary to that key).
    const cache::RowCheck key_of_name = [&](const cache::KernelRecord& r) {
      const std::string want = kernel_key(spec, r.compiler);
      return r.key == want ? std::string() : "its key is not the one " + r.compiler + " gives " + spec.name() + " (" + want + ")";
    };
    if (env.jit != JitPolicy::redo)
      if (auto hit = cache_.find_by_name(spec.name(), kernel_sources_hash(), key_of_name)) {
        stats_.db_hits.fetch_add(1, std::memory_order_relaxed);
        if (served_by) *served_by = hit->layer;
        return std::move(hit->record);
      }
    throw Error(e.kind(), std::string(e.what()) + "; and no cache layer holds " + spec.name() +
                " compiled from this kernel_src (" + kernel_sources_hash() + ")");
  }
  const std::string key = kernel_key(spec, identity);
  if (env.jit != JitPolicy::redo) {
    if (auto hit = cache_.find(key)) {
      stats_.db_hits.fetch_add(1, std::memory_order_relaxed);
      if (env.verbose) std::cerr << "jitattn: " << spec.name() << " from " << hit->layer << "\n";
      if (served_by) *served_by = hit->layer;
      return std::move(hit->record);
    }
  }
  if (env.jit == JitPolicy::off)
    throw Error(ErrorKind::cache_miss, "JITATTN_JIT=off and no cache layer holds " + spec.name() + " (key " + key + ", " + identity +
                "); to ship it, add this line to a manifest and run `jitattn prewarm --manifest FILE`: " +
                manifest_line(spec));

  // Single flight: concurrent first calls of one key wait for one compile.
  std::shared_future<Fetched> fut;
  bool owner = false;
  std::promise<Fetched> promise;
  {
    std::lock_guard<std::mutex> lock(inflight_mu_);
    auto it = inflight_.find(key);
    if (it != inflight_.end()) {
      fut = it->second;
    } else {
      fut = promise.get_future().share();
      inflight_.emplace(key, fut);
      owner = true;
    }
  }
  if (owner) {
    try {
      promise.set_value(compile_and_store(spec, key));
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    std::lock_guard<std::mutex> lock(inflight_mu_);
    inflight_.erase(key);
  }
  const Fetched& got = fut.get();
  if (served_by) *served_by = got.served_by;
  if (not_stored) *not_stored = got.not_stored;
  return got.record;
}

JitRuntime::Fetched JitRuntime::compile_and_store(const KernelSpec& spec, const std::string& key) {
  // Across processes too: one compiles, the others wait for its row (cache/claim.h). Only
  // processes that store take part; a readonly or redo process compiles for itself.
  std::unique_ptr<cache::KeyClaim> claim;
  if (env_.jit == JitPolicy::on) {
    claim = cache_.claim(key, kClaimTimeoutMs, tl_background ? &stopping_ : nullptr);
    if (claim && claim->abandoned())  // a background compile at exit: not worth waiting for
      throw Error(ErrorKind::compile, spec.name() + ": its prefetch was given up at exit while another process held the claim on " + key);
    if (claim && claim->held())
      if (auto hit = cache_.find(key)) {
        stats_.db_hits.fetch_add(1, std::memory_order_relaxed);
        stats_.claim_hits.fetch_add(1, std::memory_order_relaxed);
        return {std::move(hit->record), hit->layer};
      }
  }
  const Compiler& compiler = compiler_for(Backend(spec.sig.backend));
  CompiledKernel ck;
  try {
    ck = compiler.compile(spec, generate_source(spec, key));
  } catch (const Error& e) {
    // A user variant that does not compile: its own lines and NVRTC's messages, not generated code.
    const std::string user = spec.sig.variant ? user_errors(e.what()) : std::string();
    if (user.empty()) throw;
    throw Error(ErrorKind::compile, "the user variant of " + spec.name() + " does not compile:\n" + user);
  }
  stats_.compiles.fetch_add(1, std::memory_order_relaxed);
  cache::KernelRecord rec;
  rec.key = key;
  rec.name = spec.name();
  rec.target = spec.sig.arch().name();
  rec.compiler = compiler.identity();
  rec.binary = ck.cubin;
  rec.binary_hash = cache::sha256_hex(rec.binary);
  rec.size = int64_t(rec.binary.size());
  rec.source_hash = kernel_sources_hash();  // lets `jitattn verify` tell a stale row from a current one
  rec.registers = ck.registers;
  rec.shared_bytes = spec.smem_bytes();
  rec.compile_ms = ck.compile_ms;
  if (env_.verbose)
    std::cerr << "jitattn: compiled " << rec.name << " in " << ck.compile_ms << " ms, " << ck.registers << " registers\n";
  std::string not_stored;
  if (env_.jit != JitPolicy::readonly) cache_.store(rec, &not_stored);
  return {std::move(rec), compiled_by(Backend(spec.sig.backend)), std::move(not_stored)};
}

}  // namespace jitattn::jit
