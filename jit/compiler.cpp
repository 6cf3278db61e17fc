#include "jit/compiler.h"

#include "jit/hiprtc_compiler.h"
#include "jit/nvrtc_compiler.h"

namespace jitattn::jit {

const Compiler& compiler_for(Backend backend) {
  if (backend == Backend::hip) return HiprtcCompiler::get();
  return NvrtcCompiler::get();
}

std::vector<std::string> compile_options(const KernelSpec& spec) {
  return spec.sig.backend == uint8_t(Backend::hip) ? HiprtcCompiler::options(spec) : NvrtcCompiler::options(spec);
}

}  // namespace jitattn::jit
