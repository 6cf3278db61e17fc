// Queues a loaded forward kernel on a stream. No allocation, no synchronization.
#pragma once
#include "../kernel_src/params.h"
#include "jit/jit_runtime.h"

namespace jitattn::jit {

// Sets params.pairs_per_chunk (the block order), then queues the kernel.
void launch_forward(const LoadedKernel& kernel, FwdParams& params, CUstream stream);

}  // namespace jitattn::jit
