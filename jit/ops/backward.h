// The backward op: a validated BackwardPlan → a chain of JIT kernels on the caller's stream
//   default:        bwd_pre (delta, zeroed dQ accumulator) → bwd (dK, dV, dQ atomics) → bwd_post (dQ)
//   deterministic:  bwd_pre (delta) → bwd_kv (dK, dV) → bwd_dq (dQ, no atomics)
// and, when dK/dV are summed in fp32 (shared key rows, or rows no sequence sees that one memset
// cannot zero), bwd_post once more for each of them.
#pragma once
#include <cuda.h>

#include <cstddef>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// Scratch the backward of this forward needs (delta, the dQ accumulator, the dK/dV sums when
// the call may need them), in bytes. Uses only the shapes and the bias.
size_t backward_workspace_bytes(const ForwardPlan& p, bool deterministic);

void backward(const BackwardPlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
