// NVRTC, loaded at run time (docs/design.md decision 1): JITATTN_NVRTC, then libnvrtc.so.13, then .12,
// also under $CUDA_HOME/lib64 and /usr/local/cuda/lib64.
#pragma once
#include <string>
#include <vector>

#include "jit/compiler.h"

namespace jitattn::jit {

class NvrtcCompiler : public Compiler {
 public:
  // The process-wide compiler; throws jitattn::Error if no NVRTC library can be loaded.
  static NvrtcCompiler& get();

  // "nvrtc 13.0": part of every cache key.
  Backend backend() const override { return Backend::cuda; }
  const std::string& identity() const override { return identity_; }
  const std::string& library_path() const override { return path_; }

  // The NVRTC options for a spec (arch, standard, ...); part of the cache key.
  static std::vector<std::string> options(const KernelSpec& spec);

  // Compiles the generated source against the embedded kernel_src headers. A failure throws
  // jitattn::Error carrying the kernel's canonical name and NVRTC's log.
  //
  // `extra_options` follow options(spec) and are not part of the cache key, so they are for
  // measurement only (`jitattn show --compile` passes `--time=FILE`): a binary compiled with any
  // must never be stored. NVRTC records its options in the cubin (.note.nv.tkinfo), so such a
  // binary differs from the stored one there, and only there when the options leave the code alone.
  CompiledKernel compile(const KernelSpec& spec, const std::string& source,
                         const std::vector<std::string>& extra_options = {}) const override;

 private:
  NvrtcCompiler();
  struct Api;
  Api* api_;
  std::string path_, identity_;
};

}  // namespace jitattn::jit
