#include "jit/hiprtc_compiler.h"

#include <dlfcn.h>

#include <chrono>
#include <mutex>

#include "jit/env.h"
#include "jit/hip_api.h"
#include "jit/hip_driver.h"
#include "jit/kernel_sources.h"
#include "jitattn/error.h"

namespace jitattn::jit {

struct HiprtcCompiler::Api {
  hip::hiprtcGetErrorString_t error_string;
  hip::hiprtcCreateProgram_t create;
  hip::hiprtcDestroyProgram_t destroy;
  hip::hiprtcCompileProgram_t compile;
  hip::hiprtcGetProgramLogSize_t log_size;
  hip::hiprtcGetProgramLog_t log;
  hip::hiprtcGetCodeSize_t code_size;
  hip::hiprtcGetCode_t code;
};

namespace {
template <class F>
void bind(void* lib, F& fn, const char* name, const std::string& path) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) throw Error(ErrorKind::compile, path + " has no symbol " + name);
}
}  // namespace

HiprtcCompiler::HiprtcCompiler() : api_(new Api) {
  std::vector<std::string> candidates;
  if (!Env::get().hip_path.empty()) candidates = {Env::get().hip_path};  // a cache key names what it loads: no fallback
  else candidates = {"libhiprtc.so.6", "libamdhip64.so.5", "/opt/rocm/lib/libhiprtc.so.6", "/opt/rocm/lib/libamdhip64.so.5"};
  void* lib = nullptr;
  std::string tried;
  for (const auto& p : candidates) {
    lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib && dlsym(lib, "hiprtcCompileProgram")) {
      path_ = p;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + p;
    lib = nullptr;
  }
  if (!lib)
    throw Error(ErrorKind::compile, "cannot load hiprtc (tried " + tried +
                                        "); install ROCm's hiprtc (Debian 12: libamdhip64-5, rocm-device-libs) or set JITATTN_HIP");
  bind(lib, api_->error_string, "hiprtcGetErrorString", path_);
  bind(lib, api_->create, "hiprtcCreateProgram", path_);
  bind(lib, api_->destroy, "hiprtcDestroyProgram", path_);
  bind(lib, api_->compile, "hiprtcCompileProgram", path_);
  bind(lib, api_->log_size, "hiprtcGetProgramLogSize", path_);
  bind(lib, api_->log, "hiprtcGetProgramLog", path_);
  bind(lib, api_->code_size, "hiprtcGetCodeSize", path_);
  bind(lib, api_->code, "hiprtcGetCode", path_);
  // ROCm 5's hiprtcVersion answers 9.0 (the CUDA version it imitates); the runtime's version is
  // the compiler's (ROCm ships them together), asked without a device.
  int v = 0;
  auto runtime_version = reinterpret_cast<hip::hipRuntimeGetVersion_t>(dlsym(lib, "hipRuntimeGetVersion"));
  if (runtime_version && runtime_version(&v) == 0 && v > 0) {
    identity_ = "hiprtc " + hip_version_string(v);
  } else {
    int major = 0, minor = 0;
    if (auto version = reinterpret_cast<hip::hiprtcVersion_t>(dlsym(lib, "hiprtcVersion"))) version(&major, &minor);
    identity_ = "hiprtc " + std::to_string(major) + "." + std::to_string(minor);
  }
}

HiprtcCompiler& HiprtcCompiler::get() {
  static HiprtcCompiler compiler;  // a throwing constructor is retried on the next call
  return compiler;
}

std::vector<std::string> HiprtcCompiler::options(const KernelSpec& spec) {
  return {"--offload-arch=" + spec.sig.arch().name(), "-std=c++17", "-O3"};
}

CompiledKernel HiprtcCompiler::compile(const KernelSpec& spec, const std::string& source,
                                       const std::vector<std::string>& extra_options) const {
  const auto t0 = std::chrono::steady_clock::now();
  // One compile at a time per process: ROCm 5.2's hiprtc (comgr, in-process clang) is not safe to
  // call from several threads. Two first compiles at once aborted ("Option 'h' registered more
  // than once") or crashed in 3 of 20 `jitattn prewarm --jobs 4` runs, and two threads crashed
  // again after some 280 compiles. Prewarm still overlaps NVRTC compiles, the cache and other
  // processes; the AMD compile tests run as several ctest processes.
  static std::mutex compile_mu;
  const std::lock_guard<std::mutex> one_at_a_time(compile_mu);
  const auto& files = kernel_sources();
  std::vector<const char*> header_text, header_names;
  for (const auto& f : files) {
    header_names.push_back(f.name);
    header_text.push_back(f.text);
  }
  const std::string name = spec.name();
  hip::hiprtcProgram prog = nullptr;
  int rc = api_->create(&prog, source.c_str(), (name + ".hip").c_str(), int(files.size()), header_text.data(), header_names.data());
  if (rc != 0) throw Error(ErrorKind::compile, name + ": hiprtcCreateProgram failed: " + api_->error_string(rc));
  std::vector<std::string> opts = options(spec);
  opts.insert(opts.end(), extra_options.begin(), extra_options.end());
  std::vector<const char*> argv;
  for (const auto& o : opts) argv.push_back(o.c_str());
  rc = api_->compile(prog, int(argv.size()), argv.data());

  CompiledKernel out;
  size_t log_size = 0;
  api_->log_size(prog, &log_size);
  if (log_size > 1) {
    out.log.resize(log_size);
    api_->log(prog, out.log.data());
    out.log.resize(out.log.find('\0') == std::string::npos ? out.log.size() : out.log.find('\0'));
  }
  if (rc != 0) {
    api_->destroy(&prog);
    throw Error(ErrorKind::compile, "compiling " + name + " with " + identity_ + " failed (" + api_->error_string(rc) + "):\n" + out.log);
  }
  size_t size = 0;
  api_->code_size(prog, &size);
  out.cubin.resize(size);
  api_->code(prog, out.cubin.data());
  api_->destroy(&prog);
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace jitattn::jit
