// KernelSpec → CUDA source: a preamble of constexprs that picks the kernel family and the bias
// policy, over the embedded kernel_src headers. The algorithm lives in kernel_src/.
#pragma once
#include <string>

#include "jit/signature.h"

namespace jitattn::jit {

// The kernel's entry point: "jitattn_" + the op (jitattn_fwd, jitattn_bwd, ...), so profilers
// can tell the kernels apart.
std::string kernel_entry(const KernelSpec& spec);

std::string generate_source(const KernelSpec& spec);

}  // namespace jitattn::jit
