// The forward op: a validated ForwardPlan → the fwd kernel's Signature, its arguments
// (FwdParams), grid and block order, queued on the caller's stream.
#pragma once
#include <cuda.h>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// The fwd Signature of this plan on a device of `arch` (lse and dropout as the plan says).
Signature forward_signature(const ForwardPlan& p, const Arch& arch);

// Fetches (or compiles) the kernel and queues it; nothing when there is no query or sequence.
// Plans with few queries per sequence go to the decode op (jit/ops/decode.h).
void forward(const ForwardPlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
