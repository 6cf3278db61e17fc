// The compiler seam (docs/design.md decision 23): one Compiler per backend — NVRTC for CUDA
// (jit/nvrtc_compiler.h), hiprtc for HIP (jit/hiprtc_compiler.h) — each loaded at run time.
// The runtime, the CLI and the cache see only this interface: a spec's backend picks it.
#pragma once
#include <string>
#include <vector>

#include "jit/signature.h"

namespace jitattn::jit {

struct CompiledKernel {
  std::string cubin;  // the binary: a CUDA cubin or an AMDGPU code object
  std::string log;    // the compiler's log (NVRTC's includes ptxas' resource report)
  int registers = 0;  // parsed from the ptxas report (0 where the compiler gives none)
  double compile_ms = 0;
};

class Compiler {
 public:
  virtual ~Compiler() = default;
  virtual Backend backend() const = 0;
  // "nvrtc 13.0", "hiprtc 5.2.21153": part of every cache key.
  virtual const std::string& identity() const = 0;
  virtual const std::string& library_path() const = 0;
  // Compiles the generated source against the embedded kernel_src headers; a failure throws
  // jitattn::Error (ErrorKind::compile) carrying the canonical name and the compiler's log.
  // `extra_options` are not part of the cache key (measurement only; never stored).
  virtual CompiledKernel compile(const KernelSpec& spec, const std::string& source,
                                 const std::vector<std::string>& extra_options = {}) const = 0;
};

// The process-wide compiler of a backend; throws jitattn::Error (ErrorKind::compile) saying what
// was tried when its library cannot be loaded.
const Compiler& compiler_for(Backend backend);

// The options a spec compiles with, by its backend; part of the cache key.
std::vector<std::string> compile_options(const KernelSpec& spec);

}  // namespace jitattn::jit
