// KernelSpec → CUDA source: a preamble of constexprs that picks the kernel family and the bias
// policy, over the embedded kernel_src headers. The algorithm lives in kernel_src/.
#pragma once
#include <string>

#include "jit/signature.h"

namespace jitattn::jit {

// The kernel's entry point: "jitattn_" + the op + "_" + the cache key the binary is stored
// under (jitattn_fwd_<32 hex>, ...), so profilers can tell the kernels apart and a binary
// compiled for another key has no such symbol: the loader looks it up by this name
// (jit/jit_runtime.cpp), and jit/cubin.h checks for it before the driver sees the binary.
// An empty key gives "jitattn_<op>", which no cache row accepts (listings, compile-only tests).
std::string kernel_entry(const KernelSpec& spec, const std::string& key);

std::string generate_source(const KernelSpec& spec, const std::string& key = "");

}  // namespace jitattn::jit
