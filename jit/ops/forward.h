// The forward op: a validated ForwardPlan → the fwd kernel's Signature, its arguments
// (FwdParams), grid and block order, queued on the caller's stream.
#pragma once
#include <cuda.h>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// The fwd Signature of this plan on a device of `arch` (lse and dropout as the plan says).
Signature forward_signature(const ForwardPlan& p, const Arch& arch);

// The Signature forward() runs for a plan with many queries per sequence: forward_signature's,
// but a plan whose views no tensor map can address (overlapping dimensions, rows of stride 0;
// whether one can does not depend on the box) takes the kernel for 4-byte aligned rows where
// the tma family (kernel_src/fwd_tma.cuh) would serve it.
Signature forward_kernel_signature(const ForwardPlan& p, const Arch& arch);

// Fetches (or compiles) the kernel and queues it; nothing when there is no query or sequence.
// Plans with few queries per sequence go to the decode op (jit/ops/decode.h).
void forward(const ForwardPlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
