// Queues a loaded kernel on a stream: `blocks` blocks of the spec's threads and shared memory,
// one kernel argument (the op's params struct, passed by value). No allocation, no
// synchronization. Each op (jit/ops/) says how many blocks its kernels take.
#pragma once
#include <cstdint>

#include "jit/jit_runtime.h"

namespace jitattn::jit {

// Throws jitattn::Error if `blocks` exceeds the grid's 2^31 - 1 or the launch fails; queues
// nothing for blocks <= 0.
void launch(const LoadedKernel& kernel, void* params, int64_t blocks, CUstream stream);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace jitattn::jit
