#include "jit/nvrtc_compiler.h"

#include <dlfcn.h>
#include <nvrtc.h>

#include <chrono>
#include <cstdlib>
#include <regex>

#include "jit/codegen.h"
#include "jit/env.h"
#include "jit/kernel_sources.h"
#include "jitattn/error.h"

namespace jitattn::jit {

struct NvrtcCompiler::Api {
  decltype(&::nvrtcVersion) version;
  decltype(&::nvrtcGetErrorString) error_string;
  decltype(&::nvrtcCreateProgram) create;
  decltype(&::nvrtcDestroyProgram) destroy;
  decltype(&::nvrtcCompileProgram) compile;
  decltype(&::nvrtcGetProgramLogSize) log_size;
  decltype(&::nvrtcGetProgramLog) log;
  decltype(&::nvrtcGetCUBINSize) cubin_size;
  decltype(&::nvrtcGetCUBIN) cubin;
};

namespace {
std::vector<std::string> candidate_paths() {
  const std::string& forced = Env::get().nvrtc_path;
  if (!forced.empty()) return {forced};
  std::vector<std::string> dirs = {""};
  if (const std::string& home = Env::get().cuda_home; !home.empty()) {
    dirs.push_back(home + "/lib64/");
    dirs.push_back(home + "/lib/");  // the PyPI wheel layout
  }
  dirs.push_back("/usr/local/cuda/lib64/");
  std::vector<std::string> paths;
  for (const char* lib : {"libnvrtc.so.13", "libnvrtc.so.12"})
    for (const auto& d : dirs) paths.push_back(d + lib);
  return paths;
}

template <class F>
void bind(void* lib, F& fn, const char* name, const std::string& path) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) throw Error(ErrorKind::compile, path + " has no symbol " + name);
}
}  // namespace

NvrtcCompiler::NvrtcCompiler() : api_(new Api) {
  void* lib = nullptr;
  std::string tried;
  for (const auto& p : candidate_paths()) {
    lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      path_ = p;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + p;
  }
  if (!lib)
    throw Error(ErrorKind::compile, "cannot load NVRTC (tried " + tried + "); install the CUDA toolkit's NVRTC or set JITATTN_NVRTC");
  bind(lib, api_->version, "nvrtcVersion", path_);
  bind(lib, api_->error_string, "nvrtcGetErrorString", path_);
  bind(lib, api_->create, "nvrtcCreateProgram", path_);
  bind(lib, api_->destroy, "nvrtcDestroyProgram", path_);
  bind(lib, api_->compile, "nvrtcCompileProgram", path_);
  bind(lib, api_->log_size, "nvrtcGetProgramLogSize", path_);
  bind(lib, api_->log, "nvrtcGetProgramLog", path_);
  bind(lib, api_->cubin_size, "nvrtcGetCUBINSize", path_);
  bind(lib, api_->cubin, "nvrtcGetCUBIN", path_);
  int major = 0, minor = 0;
  api_->version(&major, &minor);
  identity_ = "nvrtc " + std::to_string(major) + "." + std::to_string(minor);
}

NvrtcCompiler& NvrtcCompiler::get() {
  static NvrtcCompiler compiler;  // a throwing constructor is retried on the next call
  return compiler;
}

std::vector<std::string> NvrtcCompiler::options(const KernelSpec& spec) {
  return {"--gpu-architecture=" + spec.sig.arch().name(), "-std=c++17", "--ptxas-options=--verbose",
          "-default-device"};
}

CompiledKernel NvrtcCompiler::compile(const KernelSpec& spec, const std::string& source,
                                      const std::vector<std::string>& extra_options) const {
  const auto t0 = std::chrono::steady_clock::now();
  const auto& files = kernel_sources();
  std::vector<const char*> header_text, header_names;
  for (const auto& f : files) {
    header_names.push_back(f.name);
    header_text.push_back(f.text);
  }
  const std::string name = spec.name();
  nvrtcProgram prog;
  nvrtcResult rc = api_->create(&prog, source.c_str(), (name + ".cu").c_str(), int(files.size()),
                                header_text.data(), header_names.data());
  if (rc != NVRTC_SUCCESS) throw Error(ErrorKind::compile, name + ": nvrtcCreateProgram failed: " + api_->error_string(rc));
  const auto opts = options(spec);
  std::vector<const char*> argv;
  for (const auto& o : opts) argv.push_back(o.c_str());
  for (const auto& o : extra_options) argv.push_back(o.c_str());
  rc = api_->compile(prog, int(argv.size()), argv.data());

  CompiledKernel out;
  size_t log_size = 0;
  api_->log_size(prog, &log_size);
  if (log_size > 1) {
    out.log.resize(log_size);
    api_->log(prog, out.log.data());
    out.log.resize(log_size - 1);
  }
  if (rc != NVRTC_SUCCESS) {
    api_->destroy(&prog);
    throw Error(ErrorKind::compile, "compiling " + name + " with " + identity_ + " failed (" + api_->error_string(rc) + "):\n" + out.log);
  }
  size_t size = 0;
  api_->cubin_size(prog, &size);
  out.cubin.resize(size);
  api_->cubin(prog, out.cubin.data());
  api_->destroy(&prog);

  static const std::regex regs(R"(Used (\d+) registers)");
  std::smatch m;
  if (std::regex_search(out.log, m, regs)) out.registers = std::stoi(m[1]);
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace jitattn::jit
