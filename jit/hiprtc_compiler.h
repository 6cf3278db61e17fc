// hiprtc, loaded at run time: JITATTN_HIP, then libhiprtc.so.6 (ROCm 6), then libamdhip64.so.5
// (ROCm 5, whose runtime library exports the hiprtc calls; Debian 12's 5.2.3). Compiles the same
// kernel_src/ as NVRTC for a gfx target (--offload-arch), without an AMD GPU.
#pragma once
#include "jit/compiler.h"

namespace jitattn::jit {

class HiprtcCompiler : public Compiler {
 public:
  // The process-wide compiler; throws jitattn::Error if no hiprtc library can be loaded.
  static HiprtcCompiler& get();

  Backend backend() const override { return Backend::hip; }
  // "hiprtc 5.2.21153": the HIP runtime's version where the library reports it, else hiprtc's.
  const std::string& identity() const override { return identity_; }
  const std::string& library_path() const override { return path_; }

  // --offload-arch=<gfx>, the standard, -O3; part of the cache key.
  static std::vector<std::string> options(const KernelSpec& spec);

  CompiledKernel compile(const KernelSpec& spec, const std::string& source,
                         const std::vector<std::string>& extra_options = {}) const override;

 private:
  HiprtcCompiler();
  struct Api;
  Api* api_;
  std::string path_, identity_;
};

}  // namespace jitattn::jit
