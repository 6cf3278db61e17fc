// Queues a loaded forward kernel on a stream. No allocation, no synchronization.
#pragma once
#include "../kernel_src/params.h"
#include "jit/jit_runtime.h"

namespace jitattn::jit {

void launch_forward(const LoadedKernel& kernel, const FwdParams& params, CUstream stream);

}  // namespace jitattn::jit
