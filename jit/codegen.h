// KernelSpec → CUDA source: a preamble of constexprs that picks the kernel family and the bias
// policy, over the embedded kernel_src headers. The algorithm lives in kernel_src/.
#pragma once
#include <string>

#include "jit/signature.h"

namespace jitattn::jit {

constexpr const char* kKernelEntry = "jitattn_kernel";

std::string generate_source(const KernelSpec& spec);

}  // namespace jitattn::jit
