// Queues a loaded kernel on a stream: the grid each op's kernel expects. No allocation, no
// synchronization.
#pragma once
#include "../kernel_src/merge_params.h"
#include "../kernel_src/params.h"
#include "jit/jit_runtime.h"

namespace jitattn::jit {

// Sets params.pairs_per_chunk (the block order), then queues the kernel.
void launch_forward(const LoadedKernel& kernel, FwdParams& params, CUstream stream);

// bwd_pre, bwd/bwd_kv, bwd_dq or bwd_post, by kernel.spec.sig.op.
void launch_backward(const LoadedKernel& kernel, BwdParams& params, CUstream stream);

// merge_attentions: one thread per 16 bytes of partial-output row (kernel_src/merge.cuh).
void launch_merge(const LoadedKernel& kernel, MergeParams& params, CUstream stream);

}  // namespace jitattn::jit
